"""What one app session found, as plain data (no Streamlit): the Report page turns it into HTML and JSON.

Pages ``record`` findings as they produce them — an inspection, a scan verdict, an attack run, a sanitization —
each with optional text, a table, plotly figures and raw data, and the name of the model it is about. A later
finding with the same ``key`` about the same model replaces the earlier one (re-running a scan updates the report
instead of piling up copies); a finding about another model is kept beside it, and every section names its model
(the report's first section describes the current model only).

    lab = LabSession()
    lab.set_model(loaded.summary()); lab.set_dataset({"name": "bbc", "size": 1558})
    lab.record("scan", "Scan verdict", text="...", table=rows, figures=[fig], data=report.to_dict())
    sections = lab.sections()          # for report.html_report(title, sections)
"""

from __future__ import annotations

import functools
import json
import os
import re
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import write_text
from .model_card import ModelCard, value_text
from .report import to_jsonable

KIND_ORDER = ("model", "inspect", "attack", "scan", "sanitize", "note")


@dataclass
class Finding:
    kind: str  # one of KIND_ORDER (others sort last)
    title: str
    text: str = ""
    table: list[dict] | None = None
    figures: list = field(default_factory=list)  # plotly Figures
    data: dict = field(default_factory=dict)  # JSON-friendly numbers behind the finding
    html: str | None = None  # e.g. an offline bertviz view
    key: str = ""
    created: float = field(default_factory=time.time)
    model: str = ""  # the name of the model the finding is about ("" for none)
    # (the figures, their plotly JSON) as last written or read: ``figure_json`` reuses it while ``figures`` holds
    # the same objects (a save wrote every chart of every finding anew: 1.1 s for 200 findings, at every record)
    _json: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def figure_json(self) -> list[str]:
        """Each figure as plotly JSON (one that cannot be written left out). Computed once per figure: a finding's
        figures are not changed in place after ``record`` (a page draws a copy where it changes one)."""
        figs = list(self.figures)
        if self._json is not None and len(self._json[0]) == len(figs) \
                and all(a is b for a, b in zip(self._json[0], figs)):
            return [j for j in self._json[1] if j is not None]
        out = [_figure_json(f) for f in figs]
        self._json = (figs, out)
        return [j for j in out if j is not None]

    @property
    def heading(self) -> str:
        """The section's heading: the title, and the model it is about."""
        return f"{self.title} — {self.model}" if self.model else self.title

    def section(self, include_figures: bool = True, include_html: bool = True) -> dict:
        s: dict[str, Any] = {"heading": self.heading}
        if self.text:
            s["text"] = self.text
        if self.table:
            s["table"] = self.table
        if include_figures and self.figures:
            s["figures"] = list(self.figures)
        if include_html and self.html:
            s["html"] = self.html
        return s


@dataclass
class LabSession:
    model: dict = field(default_factory=dict)  # LoadedModel.summary() of the current model
    dataset: dict = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # what ``load`` could not read back (one line each)

    def set_model(self, summary: dict) -> None:
        self.model = dict(summary or {})
        self._autosave()

    def set_dataset(self, info: dict) -> None:
        self.dataset = dict(info or {})

    autosave: str | None = None  # a file path: every record / set_model writes the session there (``save``)
    # why the last autosave failed ("" once one succeeds): a full or read-only sessions folder kept the report in
    # memory only, and a reload lost it without a word; the Report page says so while it is set (our design)
    unsaved: str = ""

    def record(self, kind: str, title: str, *, key: str | None = None, model: str = "", **fields: Any) -> Finding:
        """Add a finding about ``model`` (its name), replacing an earlier one with the same key about the same
        model (key default: ``kind:title``; ``finding_key``). Figures may be plotly Figures or their dicts; one
        that plotly cannot write as JSON is left out."""
        key = finding_key(key or f"{kind}:{title}", model)
        written = None
        if fields.get("figures"):  # a chart plotly cannot write failed the Report page, its export and every save
            written = [json_fig for json_fig in map(_writable, fields["figures"]) if json_fig]
            fields["figures"] = [fig for fig, _ in written]
        finding = Finding(kind=kind, title=title, key=key, model=str(model or ""), **fields)
        if written:
            finding._json = (list(finding.figures), [j for _, j in written])
        self.findings = [f for f in self.findings if f.key != key] + [finding]
        self._autosave()
        return finding

    def _autosave(self) -> None:
        if self.autosave:
            try:
                self.save(self.autosave)
            except (OSError, TypeError, ValueError) as exc:  # must not break the page; the in-memory one stays
                self.unsaved = (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)[:200]
            else:
                self.unsaved = ""

    def save(self, path: str | os.PathLike) -> None:
        """Write the whole session (figures as plotly JSON, no pickle) to ``path`` atomically. A figure that cannot
        be written as JSON is left out of the file (its finding and every other finding are written): one such
        figure made every later save fail, so a reload lost everything found after it."""
        data = {"version": 1, "model": to_jsonable(self.model), "dataset": to_jsonable(self.dataset), "findings": [
            {"kind": f.kind, "title": f.title, "text": f.text, "table": to_jsonable(f.table), "data": to_jsonable(f.data),
             "html": f.html, "key": f.key, "created": to_jsonable(f.created), "model": f.model,
             "figures": f.figure_json()} for f in self.findings]}
        write_text(path, json.dumps(data, allow_nan=False))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LabSession":
        """A session written by ``save`` (raises OSError / ValueError for a missing or broken file).

        The file is read as untrusted (a reload reads it back; anything on disk may have changed it): a finding
        that is not one (no kind or title) is left out and named in ``dropped``, as is a chart plotly cannot read
        (its finding loads without it), and the others load; a table that is not a list of records is dropped, a
        time that is not one becomes now, raw ``html`` is kept only as a complete document (which the report
        isolates in a sandboxed iframe, so a fragment's script never runs in the exported report), and of two
        findings with one key the later is kept, as ``record`` keeps it. Nesting too deep for the parser is a
        ValueError, not a RecursionError (which no caller expected: every page of the tab failed). A lone
        surrogate (``"\\ud800"``, which JSON allows and UTF-8 cannot encode) becomes U+FFFD: it failed the
        Report page and the HTML download. The file itself must be a regular file, not a link (``_read_session_file``):
        a link read another tab's report, or ``/etc/passwd``, as this tab's. At most ``MAX_FINDINGS`` findings are
        read (the newest; the rest named in ``dropped``): a forged file of 100,000 tiny findings drew as many
        checkboxes on the Report page, which then took minutes a rerun."""
        try:
            data = _no_lone_surrogates(json.loads(_read_session_file(path).decode("utf-8")))
        except RecursionError:
            raise ValueError(f"{path} is nested too deeply to be a saved lab session") from None
        if not isinstance(data, dict) or data.get("version") != 1:
            raise ValueError(f"{path} is not a saved lab session")
        model, dataset = data.get("model"), data.get("dataset")
        lab = cls(model=dict(model) if isinstance(model, dict) else {},
                  dataset=dict(dataset) if isinstance(dataset, dict) else {})
        findings = data.get("findings") if isinstance(data.get("findings"), list) else []
        if len(findings) > MAX_FINDINGS:
            lab.dropped.append(f"{len(findings) - MAX_FINDINGS:,} older findings (a saved report keeps at most "
                               f"{MAX_FINDINGS:,})")
            findings = findings[-MAX_FINDINGS:]
        for i, f in enumerate(findings):
            name = f.get("title") if isinstance(f, dict) else None
            where = f"finding {i + 1}" + (f" ({str(name)[:80]})" if name else "")
            problems: list[str] = []
            try:
                finding = _finding(f, problems)
            except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
                problems.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                finding = None
            lab.dropped += [f"{where}: {p}" for p in problems]
            if finding is not None:
                lab.findings = [g for g in lab.findings if g.key != finding.key] + [finding]
        return lab

    def remove(self, key: str, model: str = "") -> None:
        """Drop the finding ``key`` about ``model`` (``record``'s key and model)."""
        before = len(self.findings)
        key = finding_key(key, model)
        self.findings = [f for f in self.findings if f.key != key]
        if len(self.findings) != before:
            self._autosave()

    def ordered(self) -> list[Finding]:
        rank = {k: i for i, k in enumerate(KIND_ORDER)}
        return sorted(self.findings, key=lambda f: (rank.get(f.kind, len(rank)), f.created))

    def _model_section(self) -> dict:
        """The report's first section. The summary may come from a saved file (``load``): a field of the wrong
        type (parameters as text, labels as a number) is shown as text, not a TypeError that failed the page."""
        m = self.model
        labels = m.get("labels") if isinstance(m.get("labels"), list) else []
        params = m.get("parameters", 0)
        params = f"{params / 1e6:.1f} M" if isinstance(params, (int, float)) else str(params)
        card = ModelCard.from_json(m.get("metadata") or {}, num_labels=len(labels) or None)
        rows = [
            {"field": "model", "value": m.get("name", "")},
            {"field": "source", "value": m.get("source", "")},
            {"field": "layers × heads", "value": f"{m.get('layers', '?')} × {m.get('heads', '?')}"},
            {"field": "parameters", "value": params},
            {"field": "labels", "value": ", ".join(str(x) for x in labels)},
        ]
        rows += [{"field": k, "value": value_text(k, v)} for k, v in card.facts()]  # rates as percentages
        card_warnings = m.get("card_warnings")
        warnings = [str(w) for w in (card_warnings if isinstance(card_warnings, list) else [])] + card.warnings
        rows += [{"field": "model card", "value": w} for w in warnings]
        if self.dataset:
            rows.append({"field": "dataset", "value": str(self.dataset.get("name", ""))})
        return {"heading": "Model and data", "table": rows}

    def sections(self, include_figures: bool = True, include_html: bool = True, keys: list[str] | None = None) -> list[dict]:
        """Report sections: the model first, then findings by kind (optionally only those with ``keys``)."""
        out = [self._model_section()] if self.model else []
        for f in self.ordered():
            if keys is None or f.key in keys:
                out.append(f.section(include_figures, include_html))
        return out

    def to_dict(self, keys: list[str] | None = None) -> dict:
        """JSON-friendly summary: model, dataset, and each finding's text, table and data (no figures); with
        ``keys``, only those findings (the report's ticked ones: an unticked finding must not travel in the JSON)."""
        return to_jsonable({
            "model": self.model,
            "dataset": self.dataset,
            "findings": [
                {"kind": f.kind, "title": f.title, "model": f.model, "key": f.key, "text": f.text, "table": f.table,
                 "data": f.data,
                 "created": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(f.created))}
                for f in self.ordered() if keys is None or f.key in keys
            ],
        })


_SURROGATE = re.compile("[\ud800-\udfff]")


def _no_lone_surrogates(value: Any) -> Any:
    """``value`` (parsed JSON) with each lone surrogate in its strings and keys replaced by U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_no_lone_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_no_lone_surrogates(k): _no_lone_surrogates(v) for k, v in value.items()}
    return value


def _writable(fig: Any) -> tuple | None:
    """``(Figure, its plotly JSON)`` for ``fig`` (a plotly Figure or its dict), or None where it cannot be
    written."""
    from .report import _figure_obj

    try:
        obj = _figure_obj(fig)
        return obj, obj.to_json()
    except (TypeError, ValueError, AttributeError, RecursionError):
        return None


def _figure_json(fig: Any) -> str | None:
    """``fig`` (a plotly Figure or its dict) as plotly JSON, or None where it cannot be written."""
    done = _writable(fig)
    return done[1] if done else None


_LAST_TIME = 32503680000.0  # 3000-01-01: a later "created" is not a time (time.localtime overflows)


@functools.lru_cache(maxsize=1)
def _lab_template() -> dict:
    """The plotly template every lab figure is drawn with (``figures.style``), as its JSON holds it."""
    import plotly.io as pio

    return json.loads(json.dumps(pio.templates["plotly_white"].to_plotly_json()))


def _read_figure(x: Any):
    """One saved chart (plotly JSON or its dict) as a checked plotly Figure; raises where plotly cannot read it.

    Every lab chart holds the whole ``plotly_white`` template, and plotly checks each of its hundreds of entries
    anew for every chart (three quarters of a reload's time: 3.4 s for 200 findings). A chart whose template is
    exactly that one is checked without it (plotly's reading of the rest kept), then given it unchecked: the same
    figure."""
    import plotly.graph_objects as go
    import plotly.io as pio

    text = x if isinstance(x, str) else json.dumps(x)
    fig = json.loads(text)
    layout = fig.get("layout") if isinstance(fig, dict) else None
    if not (isinstance(layout, dict) and layout.get("template") == _lab_template()):
        return pio.from_json(text)
    # an empty template ({}) stands in for it while the rest is checked (without one, plotly copies its default)
    checked = go.Figure(dict(fig, layout=dict(layout, template={}))).to_plotly_json()
    checked["layout"]["template"] = _lab_template()
    return go.Figure(checked, _validate=False)


def _figures(saved: list, problems: list[str]) -> list:
    """The plotly figures among ``saved`` (their JSON); each one plotly cannot read is named in ``problems``."""
    out = []
    for j, x in enumerate(saved):
        try:
            out.append(_read_figure(x))
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
            problems.append(f"chart {j + 1}: {type(exc).__name__}: {str(exc)[:200]}")
    return out


def _finding(f: dict, problems: list[str]) -> Finding:
    """One finding of a saved session, checked (``LabSession.load``); raises on one that is not a finding, and
    names in ``problems`` each part left out of one that is (a chart plotly cannot read)."""
    if not isinstance(f, dict):
        raise TypeError(f"a finding is an object, not {type(f).__name__}")
    kind, title, model = str(f["kind"]), str(f["title"]), str(f.get("model") or "")
    table = f.get("table")
    if not (isinstance(table, list) and all(isinstance(r, dict) for r in table)):
        table = None
    figures = f.get("figures") or []
    if not isinstance(figures, list):
        raise TypeError("its figures are not a list")
    html = f.get("html")
    if not (isinstance(html, str) and html.lstrip()[:20].lower().startswith(("<!doctype", "<html"))):
        html = None
    data = f.get("data")
    created = f.get("created")
    created = float(created) if isinstance(created, (int, float)) and not isinstance(created, bool) else -1.0
    if not 0 <= created < _LAST_TIME:  # NaN included
        created = time.time()
    return Finding(kind=kind, title=title, text=str(f.get("text") or ""), table=table,
                   figures=_figures(figures, problems),
                   data=dict(data) if isinstance(data, dict) else {}, html=html,
                   key=str(f.get("key") or "") or finding_key(f"{kind}:{title}", model), created=created, model=model)


MAX_SESSION_BYTES = 256 * 2**20
"""The largest saved session ``LabSession.load`` reads (200 findings with their charts are about 4 MB): a larger
file is refused before it is read into memory."""


MAX_FINDINGS = 2000
"""The most findings ``LabSession.load`` reads back (a class session records a few dozen)."""


def _read_session_file(path: str | os.PathLike) -> bytes:
    """The bytes of the saved session ``path``: ValueError where it is a link, not a regular file (a FIFO, a
    device: read forever) or larger than ``MAX_SESSION_BYTES`` (refused before it is read into memory). Opened
    without following a link and without blocking, and checked on the open file (no swap between a check and the
    read)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    if os.path.islink(path):
        raise ValueError(f"{Path(path).name} is a link, not a saved lab session; it is not followed")
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == getattr(os, "ELOOP", None):  # O_NOFOLLOW: it became a link after the check
            raise ValueError(f"{Path(path).name} is a link, not a saved lab session; it is not followed") from None
        raise
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{Path(path).name} is not a regular file, not a saved lab session")
        if info.st_size > MAX_SESSION_BYTES:
            raise ValueError(f"{path} is {info.st_size / 2**20:.0f} MB, more than a saved lab session holds "
                             f"({MAX_SESSION_BYTES // 2**20} MB at most)")
        data = f.read(MAX_SESSION_BYTES + 1)
    if len(data) > MAX_SESSION_BYTES:  # grew while read
        raise ValueError(f"{path} is more than a saved lab session holds ({MAX_SESSION_BYTES // 2**20} MB at most)")
    return data


def set_aside(path: str | os.PathLike) -> Path | None:
    """Rename a saved session that cannot be read to ``<name>.broken-<time>`` beside it, so the new report that
    replaces it does not write over it; the new name, or None where the rename failed."""
    path = Path(path)
    target = path.with_name(f"{path.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        os.replace(path, target)
    except OSError:
        return None
    return target


def finding_key(key: str, model: str = "") -> str:
    """The key a finding about ``model`` is kept under: ``key``, and ``@model`` where a model is named, so that
    one model's scan never replaces another's."""
    return f"{key}@{model}" if model else key


SESSION_ID = re.compile(r"\A[0-9a-f]{32}\Z")
r"""A tab's id: 32 lowercase hex digits and nothing else. ``\Z``, not ``$``: ``$`` also matches before a final
newline, so ``?session=<32 hex>%0A`` was taken as an id and named files ``<hex>\n.json`` (and
``app_pages._state.path_ok`` uses ``SESSION_ID.match``)."""


def session_file(session_id: str, root: str | os.PathLike | None = None) -> Path:
    """Where the app keeps session ``session_id``'s report between reloads: ``<cache>/sessions/<id>.json``
    (``root`` overrides the folder). Raises ValueError unless the id is 32 lowercase hex digits."""
    if not SESSION_ID.fullmatch(str(session_id)):
        raise ValueError("not a session id")
    if root is None:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = Path(base).expanduser() / "backdoor-attention-lab" / "sessions"
    return Path(root) / f"{session_id}.json"
