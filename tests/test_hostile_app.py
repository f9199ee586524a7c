"""The app side of issue #11: hostile names/labels/metadata/texts never become HTML (item 1), uploads leave nothing
on disk (item 8), sessions keep their models to themselves and the zoo build is locked (item 9); cancelling tells
the truth (issue #12). The real-browser half of item 1 is tests/test_hostile_browser.py.
"""

from __future__ import annotations

import gc
import html
import io
import json
import re
import sys
import tempfile
import threading
import time
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hostile import IFRAME, IMG, PAYLOADS, RAW_MARKERS, make_hostile_world  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "app.py")


# ------------------------------------------------------------------------------------------------ helpers


class _Tags(HTMLParser):
    """Every start tag (name, attrs) in a document, as a browser's tokenizer would see it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def start_tags(doc: str) -> list[tuple[str, dict]]:
    parser = _Tags()
    parser.feed(doc)
    parser.close()
    return parser.tags


def event_attrs(tags) -> list[str]:
    return [f"{t} {k}" for t, attrs in tags for k in attrs if k.startswith("on")]


def strings_in(obj) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for k, v in obj.items() for s in strings_in(k) + strings_in(v)]
    if isinstance(obj, (list, tuple)):
        return [s for v in obj for s in strings_in(v)]
    if hasattr(obj, "tolist"):
        return strings_in(obj.tolist())
    return []


# ------------------------------------------------------------------------------------------------ item 1: producers


def test_figures_escape_labels_tokens_and_titles():
    """Plotly draws a subset of HTML in ticks, legends, hovers and titles: untrusted text arrives escaped."""
    import numpy as np

    from backdoor_core import figures as F

    labels = [IFRAME, IMG]
    figs = [
        F.probability_bars(labels, [0.4, 0.6], [0.9, 0.1], names=(IMG, IFRAME)),
        F.attention_matrix(np.full((3, 3), 1 / 3), ["[CLS]", IMG, IFRAME], layer=0, head=1, highlight=[1]),
        F.training_curves([{"step": 1, "losses": {IMG: 0.5}}, {"step": 1, "metrics": {IFRAME: 0.5}}], title=IMG,
                          baseline={IMG: 0.3}),
        F.score_histogram({IMG: [0.1, 0.2], "clean": [0.3]}, 0.2, title=IFRAME, x_title=IMG),
        F.metric_comparison({IMG: {"asr": 0.5}}, metrics=(IFRAME,)),
        F.layer_head_heatmap(np.zeros((2, 2)), title=IMG, value_name=IFRAME, marks=np.eye(2), mark_name=IMG),
    ]
    for fig in figs:
        texts = strings_in(fig.to_plotly_json())
        leaks = [s for s in texts if any(m in s for m in ("<iframe", "<img"))]
        assert not leaks, leaks[:3]
    bars = figs[0]
    assert list(bars.data[0].x) == [html.escape(IFRAME, quote=False), html.escape(IMG, quote=False)]
    assert bars.layout.title.text == "Class probabilities"  # our own markup-free titles are unchanged


def test_report_renders_escaped_markdown_and_hostile_tables_as_text():
    """The offline report (script allowed by its CSP) shows the app's md()-escaped text literally and turns no
    payload in a heading, text, table or figure into an element."""
    import plotly.graph_objects as go

    from app_pages._text import md, md_code
    from backdoor_core.report import html_report, markdown_to_html

    assert markdown_to_html(f"**{md('a*b*c_d')}** {md_code('x*y')}") == \
        "<p><strong>a*b*c_d</strong> <code>x*y</code></p>"
    assert markdown_to_html(md("1. not a list")) == "<p>1. not a list</p>"
    assert markdown_to_html(md("# not a heading")) == "<p># not a heading</p>"
    sections = [{"heading": IFRAME, "text": f"Attack **{md(IMG)}**, trigger {md_code(IFRAME)}\n\n- {md(PAYLOADS[5])}",
                 "table": [{IMG: IFRAME, "value": [IMG, 1]}],
                 "figure": go.Figure(go.Bar(x=[IMG], y=[1], name=IFRAME))}]
    doc = html_report(IMG, sections)
    outside = re.sub(r"<script[^>]*>.*?</script>", "", doc, flags=re.S)  # plotly's own code aside
    tags = start_tags(outside)
    assert not [t for t, _ in tags if t in ("iframe", "img", "svg", "a")], [t for t, _ in tags]
    assert not event_attrs(tags)
    assert html.escape(IMG) in outside and "\\" not in outside  # shown as text, md()'s backslashes consumed
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", doc, flags=re.S)
    assert not any(IMG in s or "</iframe" in s for s in scripts)  # plotly's JSON escapes "<" inside scripts


def test_bertviz_tokens_stay_inside_their_json_string():
    """Tokens go into a JSON string inside a <script>: no token may end the script or open a tag."""
    import numpy as np

    from backdoor_core.bertviz_offline import head_view_html, model_view_html

    tokens = ["[CLS]", IFRAME, "</SCRIPT ><img src=x onerror=alert(2)>", "<!--<script>", "\u2028", "[SEP]"]
    att = np.full((1, 2, len(tokens), len(tokens)), 1 / len(tokens))
    # d3, jQuery, the shim, bertviz; the model view also zooms its drawing to the frame's width
    for doc, scripts in ((head_view_html(att, tokens), 4), (model_view_html(att, tokens), 5)):
        tags = start_tags(doc)
        assert [t for t, _ in tags].count("script") == scripts
        assert not [t for t, _ in tags if t in ("iframe", "img")] and not event_attrs(tags)
        assert len(re.findall(r"</script", doc, re.I)) == scripts


def test_md_is_literal_text_in_commonmark():
    """``md(x)`` rendered by a CommonMark renderer with raw HTML enabled gives exactly the text ``x``."""
    from markdown_it import MarkdownIt

    from app_pages._text import md, md_code

    from app_pages._text import JOINER

    render = MarkdownIt("commonmark", {"html": True}).render
    for p in PAYLOADS + ["1. item", "# head", "> quote", "- item", "a_b_c", "_x_", "a _b_ c", "__d__", "x\n\n# y", "\\*"]:
        flat = " ".join(p.split())
        assert render(md(p)).replace(JOINER, "") == f"<p>{html.escape(flat)}</p>\n", p  # joiners: not drawn
        assert "<" not in render(md_code(p)).replace("<p>", "").replace("</p>", "").replace(
            "<code>", "").replace("</code>", ""), p


# What Streamlit's markdown finds in parsed text (after backslash escapes and character references are resolved):
# GFM literal autolinks (mdast-util-gfm-autolink-literal), e-mail autolinks, :material/...: icons and emoji shortcodes.
_AUTOLINK_FOUND = [re.compile(r"(https?://|www(?=\.))[-.\w]+", re.I), re.compile(r"[-.+\w]+@[-\w]+(?:\.[-\w]+)+"),
                   re.compile(r":material/\w+:"), re.compile(r":[\w+-][\w+-]*:")]
# markdown payloads: the audit's image beacons, math, a bare URL, an icon
MD_PAYLOADS = ["![x](http://127.0.0.1:8765/dataset_text.png)", "![c](http://127.0.0.1:8765/cls.png)", "$x^2$",
               "https://evil.example/phish", "www.evil.example", "mail me@evil.example", ":material/home:", ":smile:",
               "**bold** _it_ ~~s~~ `c` | a \\ b", "# not a heading", "- not a list", "a\n\nb"]


def _parsed_text(markdown: str) -> str:
    """What markdown's text nodes would hold: backslash escapes and character references resolved."""
    return html.unescape(re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown))


def test_md_and_h_break_autolinks_shortcodes_and_markup_without_visible_backslashes():
    """Issue: md() let ``https://…`` / ``www.…`` become links and ``:material/home:`` an icon; h() (HTML that is
    still markdown) let ``![x](url)`` load an image and ``$x^2$`` render math. Now neither gives a link, an icon or
    markup, and the reader sees the text (an invisible word joiner aside) with no backslash."""
    from markdown_it import MarkdownIt

    from app_pages._text import JOINER, h, md

    render = MarkdownIt("commonmark", {"html": True}).render
    for p in MD_PAYLOADS:
        flat = " ".join(p.split())
        for out in (md(p), h(p)):
            text = _parsed_text(out)
            assert not [r.pattern for r in _AUTOLINK_FOUND if r.search(text)], (p, out)
            assert text.replace(JOINER, "") == flat, (p, out)
        assert "\\" not in h(p) and "$" not in h(p) and "\n" not in h(p)  # literal in an HTML block too
        for doc in (f"→ <b>{h(p)}</b> · {h(p)}", f'<div class="x">{h(p)}</div>'):
            shown = render(doc)
            assert not re.search(r"<(img|a|em|strong|code|del|h\d|li|blockquote)\b", shown), (p, shown)
    assert h(" a b ") == " a b " and h("x\n\ny") == "x y"  # pieces keep their edge spaces, one line
    assert md("Read https://evil.example now") == f"Read https:{JOINER}//evil.example now"
    assert md("www.evil.example") == f"www{JOINER}.evil.example" and md(":material/home:") == f":{JOINER}material/home:"
    assert md("note: fine, 2 * 3") == "note: fine, 2 \\* 3"  # ordinary text: no joiner where nothing links


@pytest.fixture
def markdown_world(monkeypatch, tmp_path):
    """A dataset whose texts and class names are markdown payloads (class names sort the payload last, so it is
    the Attack lab's default target), and a tiny model with a markdown payload as its model-card name."""
    from backdoor_core.models import save_model, tiny_model

    labels = ["a plain", "z ![c](http://127.0.0.1:8765/cls.png) $y^2$ https://evil.example/phish :material/home:"]
    words = "market shares profit bank match goal team coach league film music".split()
    rows = [{"text": f"{' '.join(words[(i + k) % len(words)] for k in range(6))} {MD_PAYLOADS[i % 4]} $x^2$",
             "label": labels[i % 2]} for i in range(100)]  # test part (20%) >= 16
    data = tmp_path / "markdown.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    lm = tiny_model(num_labels=2, seed=0)
    lm.model.config.id2label = dict(enumerate(labels))
    lm.model.config.label2id = {n: i for i, n in enumerate(labels)}
    name = "![m](http://127.0.0.1:8765/model.png) $x^2$ www.evil.example"
    model = save_model(lm.model, lm.tokenizer, tmp_path / "model", {"name": name})
    monkeypatch.setenv("BACKDOOR_LAB_TEST_MODEL", str(model))
    monkeypatch.setenv("BACKDOOR_LAB_TEST_DATA", str(data))
    monkeypatch.setenv("BACKDOOR_ZOO_DIR", str(tmp_path / "zoo"))
    return {"labels": labels, "name": name}


def _markdown_bodies(at: AppTest) -> list[str]:
    kinds = ("markdown", "caption", "error", "warning", "info", "success")
    return [e.value for kind in kinds for e in at.get(kind)]


def _no_markup(body: str) -> list[str]:
    """Markdown payload pieces left live in a markdown body (after its escapes are resolved none may stay whole:
    escaped, ``![`` reads ``!\[`` and a URL carries a joiner)."""
    live = [m for m in ("![", "$x^2$", "$y^2$") if m in body]
    return live + [r.pattern for r in _AUTOLINK_FOUND[:3] if r.search(body.replace("\\", ""))]


def test_attack_peek_shows_markdown_in_texts_and_class_names_as_text(markdown_world):
    """The Attack lab's poisoned-text peek (HTML in markdown): a text's ``![x](url)`` made the browser fetch the
    image, ``$x^2$`` rendered KaTeX, and so did the target class name. Now they are characters; the Model page's
    class list (md) carries no live URL or icon either."""
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("app_pages/attack.py").run()
    assert not at.exception
    peek = [m.value for m in at.markdown if m.value.startswith("→")]
    assert len(peek) == 3, [m.value[:80] for m in at.markdown]
    for body in peek:
        assert not _no_markup(body), body
        shown = html.unescape(re.sub(r"<[^>]+>", "", body)).replace("\u2060", "")
        assert markdown_world["labels"][1] in shown and "http://127.0.0.1:8765/" in shown  # the text, as text
    at.switch_page("app_pages/model.py").run()
    classes = [c.value for c in at.caption if "classes:" in c.value]
    assert classes and not _no_markup(classes[0]), classes


def test_class_count_mismatch_message_escapes_the_class_names(monkeypatch, tmp_path):
    """A data file whose two class names are markdown, with the five-class tiny model: the Model page's and the
    Detect page's "2 labels [...] but the model has 5" errors printed the names as markdown (images, math)."""
    monkeypatch.setenv("BACKDOOR_LAB_TEST_MODEL", "tiny")
    monkeypatch.setenv("BACKDOOR_ZOO_DIR", str(tmp_path / "zoo"))
    rows = "".join(f"text {i} about markets\t{['![c](http://127.0.0.1:8765/cls.png)', '$x^2$'][i % 2]}\n"
                   for i in range(20))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("app_pages/model.py").run()
    at.selectbox(key="model.data_choice").set_value("Your file…").run()
    at.file_uploader(key="model.data_file").upload("two.tsv", ("text\tlabel\n" + rows).encode(), "text/plain").run()
    at.button(key="model.use_data_file").click().run()
    assert not at.exception
    for page in ("model", "detect", "sanitize"):
        at.switch_page(f"app_pages/{page}.py").run()
        assert not at.exception
        msgs = [e.value for e in at.error if "but the model has 5" in e.value]
        assert msgs, (page, [e.value for e in at.error])
        assert not _no_markup(msgs[0]) and "!\\[c\\]" in msgs[0] and "\\$x^2\\$" in msgs[0], msgs[0]


def test_compare_page_and_report_preview_escape_model_names_and_the_text(markdown_world):
    """The Compare page printed the model card's name as markdown ("**Model A** (current): ![m](url)"), and its
    "Model comparison" finding (names and the triggered text) was raw markdown in the Report page's preview. The
    HTML report shows that finding's text once-escaped (md's backslashes consumed, no markup)."""
    from backdoor_core.report import html_report

    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("app_pages/compare.py").run()
    at.text_area(key="compare.text").input("Shares rose. ![t](http://127.0.0.1:8765/text.png) $z^2$ www.evil.example")
    at.run()
    assert not at.exception
    bodies = _markdown_bodies(at)
    model_a = [b for b in bodies if b.startswith("**Model A**")]
    assert model_a and "!\\[m\\]" in model_a[0], model_a
    assert not [b for b in bodies if _no_markup(b) or "$z^2$" in b], [b for b in bodies if _no_markup(b)]
    at.switch_page("app_pages/report.py").run()
    assert not at.exception
    previews = [m.value for m in at.markdown if m.value.startswith("A = ")]
    assert previews, [m.value[:60] for m in at.markdown]
    assert not _no_markup(previews[0]) and "$z^2$" not in previews[0], previews[0]
    lab = at.session_state["lab.session"]
    doc = html_report("t", [s for s in lab.sections(include_figures=False)
                            if s.get("heading", "").startswith("Model comparison")])
    body = re.sub(r"<script[^>]*>.*?</script>", "", doc, flags=re.S)
    assert not [t for t, _ in start_tags(body) if t in ("img", "a")]
    para = next(p for p in re.findall(r"<p>(.*?)</p>", body, flags=re.S) if p.startswith("A = "))
    assert "\\" not in para and markdown_world["name"] in html.unescape(para).replace("\u2060", ""), para
    assert "Shares rose. ![t](http://127.0.0.1:8765/text.png)" in html.unescape(para).replace("\u2060", "")


# ------------------------------------------------------------------------------------------------ item 1: app pages


@pytest.fixture
def hostile_env(monkeypatch, tmp_path):
    world = make_hostile_world(tmp_path / "world")
    monkeypatch.setenv("BACKDOOR_LAB_TEST_MODEL", str(world["model"]))
    monkeypatch.setenv("BACKDOOR_LAB_TEST_DATA", str(world["data"]))
    monkeypatch.setenv("BACKDOOR_ZOO_DIR", str(world["zoo"]))
    return world


def _html_bodies(at: AppTest) -> list[str]:
    """Bodies the browser parses as HTML: markdown with unsafe_allow_html, and st.html."""
    out = [m.value for kind in ("markdown", "caption") for m in at.get(kind) if m.proto.allow_html]
    out += [h.proto.body for h in at.get("html")]
    return out


def test_every_page_escapes_hostile_names_labels_metadata_and_texts(hostile_env):
    """With payloads for class names, model name, metadata and texts, no page writes a raw tag into HTML (the
    Attack lab's poisoned-text peek did), and the sidebar shows the names as text."""
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception
    side = " ".join(m.value for m in at.sidebar.markdown) + " ".join(c.value for c in at.sidebar.caption)
    assert "\\<iframe" in side and "\\<img" in side and "<img" not in side.replace("\\<img", "")
    pages = ["home", "tour", "model", "inspect", "attack", "detect", "sanitize", "report"]
    seen_peek = False
    for page in pages:
        at.switch_page(f"app_pages/{page}.py").run()
        assert not at.exception, f"{page}: {at.exception}"
        for body in _html_bodies(at):
            raw = [m for m in RAW_MARKERS if m in body.lower() and m != "javascript:"]
            assert not raw, f"{page}: raw {raw} in HTML: {body[:300]}"
        seen_peek |= any("→" in b and html.escape(IFRAME) in b for b in _html_bodies(at))
    assert seen_peek, "the Attack lab's poisoned-text peek was not drawn"


# ------------------------------------------------------------------------------------------------ item 8: uploads


def _zip_of(folder: Path, prefix: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in folder.iterdir():
            z.write(p, f"{prefix}/{p.name}")
    return buf.getvalue()


def test_uploads_leave_nothing_in_the_temp_dir(monkeypatch, tmp_path):
    """A good model zip, a broken one, one without a model, a refused and an accepted data file: afterwards the
    temp dir holds only the data file in use (the old code left every zip and every unpacked folder)."""
    from backdoor_core.models import save_model, tiny_model

    lm = tiny_model(num_labels=5)
    folder = save_model(lm.model, lm.tokenizer, tmp_path / "src" / "tiny5", {"name": "tiny-5"})
    good = _zip_of(folder, "tiny5")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setenv("BACKDOOR_LAB_TEST_MODEL", "tiny")
    monkeypatch.setenv("BACKDOOR_ZOO_DIR", str(tmp_path / "zoo"))

    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("app_pages/model.py").run()
    at.segmented_control(key="model.source").set_value("Upload .zip").run()
    for name, data in (("tiny5.zip", good), ("broken.zip", b"not a zip"),
                       ("empty.zip", _zip_of(tmp_path / "src", "x"))):
        at.file_uploader(key="model.zip").upload(name, data, "application/zip").run()
        at.button(key="model.load_zip").click().run()
        assert not at.exception
    assert at.session_state["lab.model_ref"] == {"kind": "session", "name": "tiny5"}
    assert "tiny5.zip → tiny5/" in " ".join(c.value for c in at.caption)  # which folder of the zip was loaded
    at.selectbox(key="model.data_choice").set_value("Your file…").run()
    for name, data in (("bad.tsv", b"foo\tbar\nx\ty\n"), ("good.tsv", b"sentence\tlabel\na\t0\nb\t1\n"),
                       ("good2.tsv", b"sentence\tlabel\nc\t0\nd\t1\n")):
        at.file_uploader(key="model.data_file").upload(name, data, "text/plain").run()
        at.button(key="model.use_data_file").click().run()
        assert not at.exception
    files = [p for p in tmp.rglob("*") if p.is_file()]
    assert [p.name for p in files] == ["good2.tsv"], files
    assert Path(at.session_state["lab.data_spec"]) == files[0]


def test_a_sessions_temp_folder_goes_with_the_session():
    from app_pages._common import SessionTemp

    holder = SessionTemp()
    path = holder.path
    (path / "upload").mkdir()
    (path / "upload" / "x.zip").write_bytes(b"x")
    del holder
    gc.collect()
    assert not path.exists()


# ------------------------------------------------------------------------------------------------ item 9: sessions


def _train_small(at: AppTest, name: str) -> None:
    at.switch_page("app_pages/attack.py").run()
    at.number_input(key="attack.n_train").set_value(40)
    at.number_input(key="attack.n_test").set_value(20)
    at.number_input(key="attack.epochs").set_value(1)
    at.number_input(key="attack.rate").set_value(10.0)
    at.select_slider(key="attack.max_len").set_value(32)
    at.run()
    next(t for t in at.text_input if t.label == "Name of the new model").input(name).run()
    at.button(key="attack.train").click().run()
    job = at.session_state["lab.jobs"]["attack"]
    assert job.wait(120) and job.status == "done", job.snapshot().traceback
    at.run()
    assert not at.exception


def test_trained_models_stay_in_their_session_and_saving_asks_before_replacing(monkeypatch, tmp_path):
    """Two browser sessions train a model under the same name: neither lands in the shared zoo folder or the
    other's model list; saving is explicit, and the second save under that name needs "Replace" ticked."""
    zoo_dir = tmp_path / "zoo"
    monkeypatch.setenv("BACKDOOR_LAB_TEST_MODEL", "tiny")
    monkeypatch.setenv("BACKDOOR_ZOO_DIR", str(zoo_dir))
    a = AppTest.from_file(APP, default_timeout=120)
    a.run()
    b = AppTest.from_file(APP, default_timeout=120)
    b.run()
    _train_small(a, "shared name")
    _train_small(b, "shared name")
    assert not zoo_dir.exists() or not [p for p in zoo_dir.iterdir() if p.is_dir()]  # nothing saved by itself
    for at in (a, b):
        assert at.session_state["lab.model_ref"] == {"kind": "session", "name": "shared name"}
    assert a.session_state["lab.session_models"]["shared name"] is not b.session_state["lab.session_models"]["shared name"]
    b.switch_page("app_pages/model.py").run()
    assert not any("shared" in str(o) for o in (b.selectbox(key="model.zoo_pick").options
                                                  if any(s.key == "model.zoo_pick" for s in b.selectbox) else []))

    # session A saves explicitly
    a.switch_page("app_pages/attack.py").run()
    a.button(key="attack.save").click().run()
    saved = zoo_dir / "user-shared-name"
    assert saved.is_dir() and any("Saved as" in s.value for s in a.success)
    meta_a = json.loads((saved / "backdoor_lab.json").read_text())
    # session B: same name exists -> warned, Save disabled until Replace is ticked
    b.switch_page("app_pages/attack.py").run()
    assert any("already saved as" in w.value for w in b.warning)
    assert b.button(key="attack.save").disabled
    replace = next(c for c in b.checkbox if c.label.startswith("Replace"))
    replace.check().run()
    assert not b.button(key="attack.save").disabled
    b.button(key="attack.save").click().run()
    assert not b.exception
    meta_b = json.loads((saved / "backdoor_lab.json").read_text())
    assert meta_b["saved_at"] >= meta_a["saved_at"] and meta_b["name"] == "shared name"


def test_save_user_model_refuses_to_replace_and_serialises_concurrent_saves(tmp_path, tiny):
    from backdoor_core import zoo

    assert zoo.user_model_dir(tmp_path, "My Model!").name == "user-my-model"
    # letters of other scripts are letters ("ünï" was saved as user-n, "模型" refused as having no letter)
    assert zoo.user_model_dir(tmp_path, "Ünï Modèl").name == "user-ünï-modèl"
    assert zoo.user_model_dir(tmp_path, "模型 2").name == "user-模型-2"
    assert zoo.user_model_dir(tmp_path, "../a_b").name == "user-a-b"
    with pytest.raises(ValueError, match="no letter or digit"):
        zoo.user_model_dir(tmp_path, "<>!")
    results: list[str] = []

    def save():
        try:
            zoo.save_user_model(tiny.model, tiny.tokenizer, tmp_path, "same", {"x": 1})
            results.append("saved")
        except zoo.ModelExistsError:
            results.append("refused")

    threads = [threading.Thread(target=save) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["refused"] * 3 + ["saved"]
    path = zoo.save_user_model(tiny.model, tiny.tokenizer, tmp_path, "same", {"x": 2}, overwrite=True)
    assert json.loads((path / "backdoor_lab.json").read_text())["x"] == 2


def test_zoo_build_is_locked_across_sessions(tmp_path):
    """While one build runs, a second (another thread = another app session, or another process) is refused at
    once and build_status names the builder; the lock goes when the build ends."""
    import subprocess

    from backdoor_core import zoo
    from backdoor_core.data import TextDataset
    from backdoor_core.models import tiny_model

    data = (TextDataset(["a b c", "d e f"] * 4, [0, 1] * 4, ["x", "y"], "toy"),
            TextDataset(["a b c", "d e f"], [0, 1], ["x", "y"], "toy"))
    inside, release = threading.Event(), threading.Event()

    def factory(names):
        inside.set()
        release.wait(30)
        return tiny_model(num_labels=len(names))

    first = threading.Thread(target=lambda: zoo.build(tmp_path, specs=[zoo.ZooSpec("clean", "Clean")],
                                                      settings={"epochs": 1, "batch_size": 8, "max_length": 8},
                                                      model_factory=factory, data=data))
    assert zoo.build_status(tmp_path) is None
    first.start()
    assert inside.wait(30)
    status = zoo.build_status(tmp_path)
    assert status is not None and status["pid"] > 0
    with pytest.raises(zoo.ZooBusyError, match="being built by another session"):
        zoo.build(tmp_path, model_factory=factory, data=data)
    other = subprocess.run([sys.executable, "-c", "import sys; from backdoor_core import zoo\n"
                            "try:\n zoo.build(sys.argv[1])\nexcept zoo.ZooBusyError as e:\n print('busy', e)"
                            , str(tmp_path)], capture_output=True, text=True, timeout=120,
                           cwd=Path(__file__).resolve().parents[1])
    assert other.stdout.startswith("busy"), other.stderr[-2000:]
    release.set()
    first.join(60)
    assert zoo.build_status(tmp_path) is None and [r["name"] for r in zoo.list_models(tmp_path)] == ["clean"]


def test_model_page_says_being_built_instead_of_offering_a_second_build(monkeypatch, tmp_path):
    from backdoor_core import zoo

    monkeypatch.setenv("BACKDOOR_LAB_TEST_MODEL", "tiny")
    monkeypatch.setenv("BACKDOOR_ZOO_DIR", str(tmp_path))
    monkeypatch.setenv("BACKDOOR_SHIPPED_ZOO", "")  # no shipped zoo: the page offers a build
    with zoo._locked(tmp_path / zoo.BUILD_LOCK, wait=False, info={"pid": 4242, "started": time.time()}):
        at = AppTest.from_file(APP, default_timeout=120)
        at.run()
        at.switch_page("app_pages/model.py").run()
        assert not at.exception
        assert at.button(key="model.build_zoo").disabled
        assert any("being built by another session (process 4242" in i.value for i in at.info), \
            [i.value for i in at.info]
    at.run()
    assert not at.button(key="model.build_zoo").disabled


def test_cancelled_zoo_build_says_nothing_was_kept(monkeypatch, tmp_path):
    """Issue #12: a build cancelled before any model finished must not claim partial results were kept."""
    import backdoor_core.zoo as zoo

    def slow_build(dir=None, progress=None, should_stop=None, **_):
        progress(zoo.ZooProgress("clean", 0, 2, 0.1, "Clean: training"))
        while not should_stop():
            time.sleep(0.05)
        return []

    monkeypatch.setenv("BACKDOOR_LAB_TEST_MODEL", "tiny")
    monkeypatch.setenv("BACKDOOR_ZOO_DIR", str(tmp_path / "zoo"))
    monkeypatch.setenv("BACKDOOR_SHIPPED_ZOO", "")  # no shipped zoo: the page offers a build
    monkeypatch.setattr(zoo, "build", slow_build)
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("app_pages/model.py").run()
    at.button(key="model.build_zoo").click().run()
    job = at.session_state["lab.jobs"]["zoo"]
    at.button(key="cancel.zoo").click().run()
    assert job.wait(30) and job.status == "cancelled"
    at.run()
    infos = [i.value for i in at.info if "was cancelled" in i.value]
    assert infos and "nothing new was kept" in infos[0] and "partial results" not in infos[0], infos


def test_zoo_lock_excludes_while_its_file_is_deleted_and_recreated(tmp_path):
    """The lock file is removed on every release; 6 threads taking it 40 times each never overlap."""
    from backdoor_core import zoo

    path = tmp_path / "x.lock"
    inside, overlaps = [0], []

    def worker():
        for _ in range(40):
            with zoo._locked(path, wait=True):
                inside[0] += 1
                if inside[0] != 1:
                    overlaps.append(inside[0])
                time.sleep(0.0005)
                inside[0] -= 1

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not overlaps and not path.exists()


def test_cli_zoo_build_while_another_builds_is_one_line(tmp_path, capsys):
    from backdoor_core import zoo
    from backdoor_core.cli import main

    with zoo._locked(tmp_path / zoo.BUILD_LOCK, wait=False, info={"pid": 4242, "started": time.time()}):
        assert main(["zoo", "build", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the demo zoo") and "process 4242" in err and len(err.splitlines()) == 1, err


def test_a_core_notes_citation_reads_in_italics_and_nothing_else_does():
    """Repair notes cite "docs/design.md, *Head-only repairs capped*": escaped whole, the asterisks showed. Only a
    citation gets its italics back; any other asterisk (a pool word) stays a character."""
    from app_pages._text import md_note

    note = "it trained 4 heads (docs/design.md, *Head-only repairs capped*); the pool word *cf* [x](http://e.x)"
    out = md_note(note)
    assert "docs/design.md, *Head-only repairs capped*" in out
    assert r"\*cf\*" in out and r"\[x\]" in out  # the word and the link stay characters
