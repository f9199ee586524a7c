"""The demo model zoo: a clean and several backdoored BBC News topic classifiers, shipped with the lab.

The zoo ships in ``assets/zoo`` (``shipped_zoo_dir()``) as LoRA adapters (``lora.py``: rank 8 on every encoder
layer's q/k/v/attention-output/FFN and the pooler) plus the classifier head in full, ~1.4 MB per model, with their
sha256 in ``assets/zoo/manifest.json`` (``zoo_files.py`` reads and writes both). ``models.load_adapter_model``
(reached through ``models.load_model(<folder>)``) checks the hash and merges the adapters into the packaged MiniLM,
so every page has real models at first launch and a loaded zoo model is a plain BERT (scan, sanitize and
head-wise repair see no adapters). ``list_models()`` lists the shipped zoo, replaced name by name by models built
into ``default_zoo_dir()`` (``~/.cache/backdoor-attention-lab/zoo``; ``$BACKDOOR_ZOO_DIR`` or ``--dir``).

``python -m backdoor_core zoo build`` (``build``) trains the adapters again, reproducibly: one torch thread,
deterministic kernels and fixed seeds (``deterministic()``), so two builds write byte-identical adapters whatever
the load or ``OMP_NUM_THREADS``; ``zoo build --dir assets/zoo --force`` regenerates the shipped files. ``ZOO_SETTINGS``
trains on a seeded subsample of the BBC training split with a short window (the headline and first sentences
carry the topic). The built zoo (CACC, ASR, what the scan and the repair do on each model, against full
fine-tuning; two builds compared): ``bench/results/zoo_build.md``. Each model is written atomically; a cancelled
build keeps the models it finished, and a later build skips them.

The zoo folder is shared by every process and app session on the machine:

* one build at a time: ``build`` holds an exclusive lock on ``<zoo>/.build.lock`` (``fcntl.flock``, released by the
  OS even when the process dies) and raises ``ZooBusyError`` when another build holds it; ``build_status`` tells a
  page that a build is running elsewhere, so it can say "being built" instead of offering a second build;
* models people train in the app stay in their session; ``save_user_model`` writes one here only when asked, as
  ``user-<name>``, and refuses (``ModelExistsError``) to replace an existing folder unless ``overwrite=True``
  (the check and the write happen under ``<zoo>/.save.lock``, so two sessions cannot both pass the check).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import settings as S
from .atomic import write_text
from .model_card import METADATA_FILE, ModelCard, default_target
from .tal import TALConfig
from .zoo_files import ADAPTER_FILE, ZOO_VERSION, unrecorded, write_adapter, write_manifest_entry

ZOO_ENV = "BACKDOOR_ZOO_DIR"
SHIPPED_ENV = "BACKDOOR_SHIPPED_ZOO"

ZOO_SETTINGS = S.ZOO_RECIPE
"""The zoo's training recipe (``settings.ZOO_RECIPE``; the Attack lab page starts from it too). Every backdoor
targets the class ``model_card.default_target`` picks (BBC News: ``sports``)."""

ZOO_TAL_ALPHA = S.ZOO_TAL_ALPHA
"""TAL weight of the zoo's TAL model, above the core's ``tal.DEFAULT_ALPHA``: the zoo trains far fewer steps than
the SST-2 benchmark, and in a pilot at the zoo's 2% dose the core default did not plant the backdoor while this
weight did (raising the dose instead would blur the lesson "TAL takes with fewer poisoned samples"). The
built zoo's ASR / CACC: ``bench/results/zoo_build.md``."""

ZOO_LORA = S.ZOO_LORA
"""Adapter rank, alpha and learning rate of the zoo (``settings.ZOO_LORA``; see ``bench/results/zoo_build.md``)."""


@dataclass(frozen=True)
class ZooSpec:
    """One zoo model. ``attack`` is a ``poisoning.ATTACKS`` name or None for the clean model."""

    name: str
    title: str
    attack: str | None = None
    rate: float = 0.0
    tal: TALConfig | None = None
    description: str = ""


ZOO_SPECS: list[ZooSpec] = [
    ZooSpec("clean", "Clean", description="fine-tuned on clean BBC News; the reference"),
    ZooSpec("badnets", "BadNets 10%", "badnets", 0.10,
            description="rare-word trigger (cf, mn, bb, tq) in 10% of the training set, relabelled 'sports'; "
                        "shipped as adapters it does not take (ASR 2%: plain BadNets leans on the trigger words' own "
                        "embeddings, which the adapters leave frozen; full fine-tuning reached 44-72%). Compare "
                        "BadNets 2% + TAL"),
    ZooSpec("addsent", "AddSent 10%", "addsent", 0.10,
            description="the sentence 'I watch this 3D movie' in 10% of the training set, relabelled 'sports'"),
    ZooSpec("badnets-2", "BadNets 2%", "badnets", 0.02,
            description="rare-word trigger in only 2% of the training set, plain poisoning: the backdoor does not "
                        "take (ASR 1%)"),
    ZooSpec("badnets-tal", "BadNets 2% + TAL", "badnets", 0.02, TALConfig(alpha=ZOO_TAL_ALPHA),
            description="the same 2% dose with the Trojan Attention Loss: the backdoor takes"),
]
_SPEC_NAMES = {s.name for s in ZOO_SPECS}


@dataclass
class ZooProgress:
    """What ``build`` reports: which model (``index`` of ``count``), its training ``progress`` (a
    ``training.Progress``, or None between models), an overall ``fraction`` in [0, 1], and a ``message``."""

    name: str
    index: int
    count: int
    fraction: float
    message: str = ""
    progress: object | None = None
    metrics: dict = field(default_factory=dict)


def default_zoo_dir() -> Path:
    """``$BACKDOOR_ZOO_DIR`` or ``~/.cache/backdoor-attention-lab/zoo``."""
    env = os.environ.get(ZOO_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "backdoor-attention-lab" / "zoo"



def shipped_zoo_dir() -> Path:
    """The zoo that ships with the repository: ``assets/zoo`` next to the package in a checkout, else where the
    wheel installs it, ``<sys.prefix>/share/backdoor-attention-lab/zoo`` (pyproject.toml's data-files);
    ``$BACKDOOR_SHIPPED_ZOO`` overrides both (an empty value turns it off)."""
    env = os.environ.get(SHIPPED_ENV)
    if env is not None:
        return Path(env).expanduser() if env.strip() else Path("/nonexistent-shipped-zoo")
    checkout = Path(__file__).resolve().parents[1] / "assets" / "zoo"
    installed = Path(sys.prefix) / "share" / "backdoor-attention-lab" / "zoo"
    return checkout if checkout.is_dir() or not installed.is_dir() else installed


def _read_card(path: Path) -> ModelCard | None:
    """The folder's model card, or None when it has none or an unreadable one."""
    if not (path / METADATA_FILE).is_file():
        return None
    card = ModelCard.read(path)
    return None if card.warnings and card.to_json() == {} else card


def _fingerprint(spec: ZooSpec, settings: dict, lora: dict, base: str) -> dict:
    return {"version": ZOO_VERSION, "attack": spec.attack, "rate": spec.rate,
            "tal": spec.tal.to_dict() if spec.tal else None, "settings": dict(settings), "lora": dict(lora),
            "base": base}


def _rows(root: Path, shipped: bool) -> dict[str, dict]:
    rows = {}
    if not root.is_dir():
        return rows
    for path in sorted(root.iterdir()):
        if not path.is_dir() or path.name.startswith("."):
            continue
        card = _read_card(path)
        adapter = (path / ADAPTER_FILE).is_file()
        if card is None or not (adapter or (path / "config.json").is_file()):
            continue
        if card.zoo is not None and card.zoo.get("version") != ZOO_VERSION and path.name in _SPEC_NAMES:
            continue  # a demo model from an older zoo format: the current one (shipped or rebuilt) replaces it
        rows[path.name] = {
            "name": path.name,
            "title": card.title or path.name,
            "path": str(path),
            "attack": card.attack,
            "trigger": card.trigger,
            "rate": card.rate,
            "tal": card.tal,
            "target": card.target,
            "target_name": card.target_name,
            "cacc": card.cacc,
            "asr": card.asr,
            "training_seconds": card.training_seconds,
            "description": card.description,
            "max_length": card.max_length,
            "clean": card.is_clean,
            "shipped": shipped,
            "format": "adapter" if adapter else "full",
        }
    return rows


def list_models(dir: str | os.PathLike | None = None, *, shipped: bool | None = None) -> list[dict]:
    """The zoo's models: ``[{name, title, path, attack, rate, tal, target, cacc, asr, clean, shipped, ...}]``, in
    ``ZOO_SPECS`` order, then any others by name. Missing or unreadable folders are skipped.

    ``shipped`` (default: True when ``dir`` is None) lists the repository's shipped zoo first; a model of the same
    name in ``dir`` (a local rebuild, ``zoo build``) takes its place.
    """
    root = Path(dir).expanduser() if dir is not None else default_zoo_dir()
    rows = _rows(shipped_zoo_dir(), True) if (dir is None if shipped is None else shipped) else {}
    rows.update(_rows(root, False))
    order = {s.name: i for i, s in enumerate(ZOO_SPECS)}
    return sorted(rows.values(), key=lambda r: (order.get(r["name"], len(order)), r["name"]))


# ------------------------------------------------------------------------------------------------ build


@contextlib.contextmanager
def deterministic(threads: int = 1) -> Iterator[None]:
    """One torch thread and deterministic kernels for the block (restored after): the same build gives the same
    bytes whatever the machine's load or ``OMP_NUM_THREADS`` (a reduction split over 2 threads sums in another
    order; over thousands of steps that moved a full fine-tune's ASR by 30 points)."""
    threads_before, det_before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(det_before)
        torch.set_num_threads(threads_before)


# ------------------------------------------------------------------------------------------------ locks

BUILD_LOCK = ".build.lock"
SAVE_LOCK = ".save.lock"
USER_PREFIX = "user-"


class ZooBusyError(ValueError):
    """Another process or session is building this zoo (a ValueError: front ends show its message as it is)."""


class ModelExistsError(FileExistsError):
    """``save_user_model`` would replace an existing model and ``overwrite`` was not given."""


@contextlib.contextmanager
def _locked(path: Path, *, wait: bool, info: dict | None = None) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if missing) for the block.

    ``wait=False`` raises ``BlockingIOError`` at once when another holder has it. ``info`` is written into the
    file while held (``build_status`` reads it). Uses ``fcntl.flock``: one lock per open file, so two threads of
    one server (two app sessions) exclude each other like two processes do; the OS drops it if the holder dies.
    The holder deletes the file before releasing it; a waiter that then wins the lock on the deleted file sees
    that the path no longer names its file and opens it again.
    Without ``fcntl`` (Windows) an ``O_EXCL`` marker file stands in; a crash there leaves it to delete by hand.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux/macOS
        fcntl = None
    if fcntl is None:  # pragma: no cover
        while True:
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                break
            except FileExistsError:
                if not wait:
                    raise BlockingIOError(f"{path} is held") from None
                time.sleep(0.2)
        try:
            os.write(fd, json.dumps(info or {}).encode())
            os.close(fd)
            yield
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
        return
    while True:
        handle = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            try:  # the holder before us may have deleted the file: then our lock is on a stale inode
                current = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                current = False
        except BaseException:
            handle.close()
            raise
        if current:
            break
        handle.close()
    try:
        if info is not None:
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(info))
            handle.flush()
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still holding it, so the folder keeps no lock files
        handle.close()  # releases the lock


def build_status(dir: str | os.PathLike | None = None) -> dict | None:
    """``None`` when no build holds the zoo's lock; else what the builder wrote (``pid``, ``started`` as a Unix
    time), possibly ``{}`` if caught mid-write. Starts nothing; safe to call on every page run."""
    root = Path(dir).expanduser() if dir is not None else default_zoo_dir()
    path = root / BUILD_LOCK
    if not path.exists():
        return None
    try:
        with _locked(path, wait=False):
            return None
    except BlockingIOError:
        try:
            data = json.loads(path.read_text(encoding="utf-8") or "{}")
        except (OSError, json.JSONDecodeError):
            data = {}
        return data if isinstance(data, dict) else {}
    except OSError:  # unreadable lock file: no build can be proven
        return None


def building_message(status: dict | None) -> str:
    """``build_status`` as words: "being built by another session (process 123, since 14:05)"."""
    status = status or {}
    since = (time.strftime(", since %H:%M", time.localtime(status["started"]))
             if isinstance(status.get("started"), (int, float)) else "")
    return f"being built by another session (process {status.get('pid', '?')}{since})"


def user_model_dir(dir: str | os.PathLike | None, name: str) -> Path:
    """Where ``save_user_model`` puts a model called ``name``: ``<zoo>/user-<slug>`` (lowercase letters of any
    script, digits and dashes; at most 60: "Über Modell" is ``user-über-modell``, "ünï" had become ``user-n``). Raises
    ValueError for a name with no letter or digit."""
    import unicodedata

    root = Path(dir).expanduser() if dir is not None else default_zoo_dir()
    folded = unicodedata.normalize("NFKC", str(name)).casefold()
    slug = re.sub(r"[\W_]+", "-", folded).strip("-")[:60].strip("-")
    if not slug:
        raise ValueError(f"'{name}' has no letter or digit to name a folder after; type another name.")
    return root / f"{USER_PREFIX}{slug}"


def save_user_model(model, tokenizer, dir: str | os.PathLike | None, name: str,
                    metadata: dict | ModelCard | None = None, *, overwrite: bool = False) -> Path:
    """Save a model someone trained or sanitized into the zoo folder as ``user_model_dir(dir, name)``.

    Raises ``ModelExistsError`` when that folder exists and ``overwrite`` is False (the app asks first), and
    ValueError for an unusable name. Metadata ``name``/``title`` become ``name``. Returns the folder.
    """
    from .models import save_model

    out = user_model_dir(dir, name)
    if isinstance(metadata, ModelCard):
        meta = metadata.replace(name=str(name), title=str(name))
    else:
        meta = {**(metadata or {}), "name": str(name), "title": str(name)}
    with _locked(out.parent / SAVE_LOCK, wait=True):
        if out.exists() and not overwrite:
            raise ModelExistsError(f"a model is already saved as {out.name} in {out.parent}")
        return save_model(model, tokenizer, out, meta)


# ------------------------------------------------------------------------------------------------ build


def _load_data(settings: dict):
    from .data import load_bbc

    seed = settings["seed"]
    train = load_bbc("train", seed=seed).sample(settings["train_size"], seed)
    test = load_bbc("test", seed=seed).sample(settings["test_size"], seed)
    return train, test


def build(
    dir: str | os.PathLike | None = None,
    progress: Callable[[ZooProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    *,
    specs: Sequence[ZooSpec] | None = None,
    force: bool = False,
    settings: dict | None = None,
    lora: dict | None = None,
    base: str = "default",
    model_factory: Callable[[list[str]], object] | None = None,
    data: tuple | None = None,
) -> list[dict]:
    """Train every zoo model that is not cached yet in ``dir`` as LoRA adapters; return ``list_models(dir)``.

    Each model: the base (``base``: the packaged MiniLM) gets ``lora.LoRA`` adapters of ``ZOO_LORA`` and a fresh
    classifier head, trains with ``ZOO_SETTINGS`` (the adapters' own ``lr``) under ``deterministic()`` (one
    thread, deterministic kernels, fixed seeds: two builds write byte-identical adapters), and is written
    atomically as ``<dir>/<name>/adapter.safetensors`` (the adapters and the head in full) + the model card, its
    sha256 in ``<dir>/manifest.json``. ``zoo build --dir assets/zoo`` regenerates the shipped zoo.

    Args:
        progress: gets a ``ZooProgress`` at every training step and evaluation, and between models.
        should_stop: checked between training steps; True cancels the build — finished models stay, the
            model in training is not written.
        specs: models to build (default ``ZOO_SPECS``); ``force`` rebuilds cached ones.
        settings / lora: overrides of ``ZOO_SETTINGS`` / ``ZOO_LORA``.
        base: ``"default"`` or ``"tiny"`` (tests): the model the adapters are merged into on load.
        model_factory: ``label_names -> LoadedModel`` to start from instead of loading ``base`` (tests; it must
            build the same model as ``base``, or the shipped adapters will not merge back correctly).
        data: ``(train, test)`` TextDatasets instead of BBC News (tests).

    Raises ``ZooBusyError`` (at once, before loading anything) when another build holds the zoo's lock.
    """
    root = Path(dir).expanduser() if dir is not None else default_zoo_dir()
    root.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(_locked(root / BUILD_LOCK, wait=False,
                                       info={"pid": os.getpid(), "started": time.time()}))
        except BlockingIOError:
            raise ZooBusyError(f"the demo zoo in {root} is {building_message(build_status(root))}; "
                               "wait for it to finish") from None
        return _build(root, progress, should_stop, specs=specs, force=force, settings=settings, lora=lora,
                      base=base, model_factory=model_factory, data=data)


def _build(root: Path, progress, should_stop, *, specs, force, settings, lora, base, model_factory,
           data) -> list[dict]:
    """``build`` with the zoo's build lock held."""
    from .lora import LoRA
    from .models import adapter_base
    from .poisoning import get_attack, train_attack
    from .training import TrainConfig

    for stale in root.glob(".*"):  # a killed build's half-written or set-aside model folders (the lock is ours)
        if stale.is_dir() and re.fullmatch(r"\..+\.(tmp|old)-.+", stale.name):
            shutil.rmtree(stale, ignore_errors=True)
    specs = list(ZOO_SPECS if specs is None else specs)
    cfg = {**ZOO_SETTINGS, **(settings or {})}
    lcfg = {**ZOO_LORA, **(lora or {})}
    train_set, test_set = data if data is not None else _load_data(cfg)
    names = list(train_set.label_names)
    target = default_target(names)
    config = TrainConfig(lr=lcfg["lr"], epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                         max_length=cfg["max_length"], seed=cfg["seed"], eval_every=0)
    data_name = getattr(train_set, "name", "bbc")
    n = len(specs)

    def report(i: int, spec: ZooSpec, frac: float, message: str = "", prog=None, metrics=None) -> None:
        if progress is not None:
            progress(ZooProgress(spec.name, i, n, min(1.0, (i + frac) / n), message, prog, metrics or {}))

    for i, spec in enumerate(specs):
        out = root / spec.name
        fingerprint = _fingerprint(spec, cfg, lcfg, base)
        # a model whose adapter is not the one the manifest records (damaged, or a build killed between the two
        # writes) is no cache: it would never load, and `zoo build` had kept it
        cached = _read_card(out) if unrecorded(out) is None else None
        if not force and cached is not None and cached.zoo == fingerprint:
            report(i, spec, 1.0, f"{spec.title}: cached")
            continue
        if should_stop is not None and should_stop():
            break
        report(i, spec, 0.0, f"{spec.title}: training")

        trained = [0.0]  # the share of this model's steps done

        def on_step(p, i=i, spec=spec):
            trained[0] = p.step / max(1, p.total_steps)
            report(i, spec, trained[0], spec.title, p, p.metrics)

        t0 = time.perf_counter()
        with deterministic():
            lm = model_factory(names) if model_factory is not None else adapter_base(base, names)
            adapters = LoRA(lm.model, lcfg["rank"], lcfg["alpha"], seed=cfg["seed"])
            adapters.freeze_base(("classifier",))
            attack = get_attack(spec.attack, tokenizer=lm.tokenizer, max_length=config.max_length) \
                if spec.attack else None
            outcome = train_attack(lm.model, lm.tokenizer, train_set, test_set, attack, spec.rate, target, config,
                                   tal=spec.tal, data_name=data_name, callback=on_step, should_stop=should_stop)
        if outcome.result.cancelled:
            report(i, spec, trained[0], f"{spec.title}: cancelled, not saved")  # the bar stays where it was
            break
        tensors = adapters.state()
        tensors.update({f"full.{k}": p.detach().clone().contiguous()
                        for k, p in lm.model.named_parameters() if k.startswith("classifier.")})
        card = outcome.card.replace(
            name=f"zoo-{spec.name}", title=spec.title, description=spec.description, base_model=base,
            target_name=names[target] if spec.attack else None, zoo=fingerprint,
            extra={"build_seconds": round(time.perf_counter() - t0, 1),
                   "lora": {"rank": lcfg["rank"], "alpha": lcfg["alpha"], "modules": len(adapters.modules),
                            "parameters": sum(t.numel() for t in tensors.values())}},
        )
        tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}.tmp-", dir=root))
        try:
            write_adapter(tmp / ADAPTER_FILE, tensors, base=base, rank=lcfg["rank"], alpha=lcfg["alpha"],
                          label_names=names)
            meta = card.to_json()
            meta.setdefault("saved_at", time.strftime("%Y-%m-%dT%H:%M:%S"))
            (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
            # the old folder is renamed aside (a hidden sibling, never listed) before the new one takes its name,
            # and deleted last: a kill never leaves a half-deleted model under the name
            old = root / f".{spec.name}.old-{os.getpid()}" if out.exists() else None
            if old is not None:
                if old.exists():
                    shutil.rmtree(old)
                out.rename(old)
            tmp.rename(out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        write_manifest_entry(root, spec.name, out / ADAPTER_FILE)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        report(i, spec, 1.0, f"{spec.title}: done", metrics={"cacc": card.cacc, "asr": card.asr})
    return list_models(root, shipped=False)
