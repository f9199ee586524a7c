"""One table of defaults (``backdoor_core.settings``): the CLI's options, the core's signatures and registries, and
the app's widgets all take their defaults from it — the same objects, not copies that can drift (the Detect page
once defaulted to rel_threshold 0.3 while the core and the CLI used 0.1)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from backdoor_core import settings as S


def _subparser_defaults(command: str) -> dict:
    from backdoor_core.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return {a.dest: a.default for a in sub.choices[command]._actions}


def _default(fn, name):
    return inspect.signature(fn).parameters[name].default


def test_cli_defaults_are_the_settings_objects():
    scan = _subparser_defaults("scan")
    assert scan["frr"] is S.FRR and scan["rel_threshold"] is S.REL_THRESHOLD
    assert scan["max_fraction"] is S.MAX_FRACTION and scan["n_clean"] is S.SCAN_CLEAN_BUDGET
    assert scan["max_length"] is None  # the model card's rule (tested in test_model_card / test_app_pages)
    sanitize = _subparser_defaults("sanitize")
    assert sanitize["n_clean"] is S.CLEAN_BUDGET and sanitize["n_eval"] is S.CLI_EVAL_TEXTS
    attack = _subparser_defaults("attack")
    for dest, value in (("rate", S.POISON_RATE), ("epochs", S.EPOCHS), ("lr", S.LR), ("batch_size", S.BATCH_SIZE),
                        ("max_length", S.MAX_LENGTH), ("alpha", S.TAL_ALPHA), ("heads", S.TAL_HEADS),
                        ("num_triggers", S.NUM_TRIGGERS), ("seed", S.SEED)):
        assert attack[dest] is value, dest
    assert attack["target"] is None  # the model card's target rule
    assert _subparser_defaults("inspect")["max_length"] is None


def test_core_defaults_are_the_settings_objects():
    from backdoor_core import attention, detection, head_safety, sanitize, scan, tal, trigger_search, zoo
    from backdoor_core.baselines import fineprune, pure, strip
    from backdoor_core.baselines.finetune import default_config as finetune_config
    from backdoor_core.defenses import DEFENSES
    from backdoor_core.training import TrainConfig

    for fn in (scan.scan_model, head_safety.evaluate_heads):
        assert _default(fn, "rel_threshold") is S.REL_THRESHOLD
        assert _default(fn, "max_fraction") is S.MAX_FRACTION
    assert _default(scan.scan_model, "frr") is S.FRR and _default(scan.scan_model, "refine") is S.REFINE
    assert _default(scan.scan_model, "max_length") is S.MAX_LENGTH
    assert detection.DEFAULT_FRR is S.FRR and detection.DEFAULT_FEATURES is S.FEATURES
    assert attention.DEFAULT_MAX_LENGTH is S.MAX_LENGTH
    knobs = DEFENSES["alignment"].knobs
    for key, value in (("beta", S.BETA), ("frr", S.FRR), ("rel_threshold", S.REL_THRESHOLD),
                       ("max_fraction", S.MAX_FRACTION), ("lr", S.SANITIZE_LR), ("epochs", S.SANITIZE_EPOCHS),
                       ("kind", S.ALIGN_KIND), ("refine", S.REFINE), ("ffn_lr_scale", S.REPAIR_FFN_LR_SCALE),
                       ("retain", S.RETAIN_WEIGHT), ("exclude_direction", S.EXCLUDE_DIRECTION),
                       ("labels_leave_target", S.LABELS_LEAVE_TARGET), ("weak_verdict", S.WEAK_VERDICT),
                       ("weak_top_k", S.WEAK_TOP_K), ("min_heads", S.REPAIR_MIN_HEADS),
                       ("repair_seeds", S.REPAIR_SEEDS), ("ffn_mix", S.REPAIR_FFN_MIX),
                       ("exclude_min_excess", S.EXCLUDE_MIN_EXCESS),
                       ("reset", S.RESET), ("reset_top_k", S.RESET_TOP_K)):
        assert knobs[key] is value, key
    assert _default(sanitize.sanitize_heads, "repair_seeds") is S.REPAIR_SEEDS
    assert _default(sanitize.sanitize_heads, "exclude_direction") is S.EXCLUDE_DIRECTION
    assert _default(sanitize.sanitize_heads, "labels_leave_target") is S.LABELS_LEAVE_TARGET
    assert _default(sanitize.sanitize_heads, "ffn_mix") is S.REPAIR_FFN_MIX
    assert _default(sanitize.sanitize_heads, "exclude_min_excess") is S.EXCLUDE_MIN_EXCESS
    assert _default(sanitize.target_exclusion_labels, "min_excess") is S.EXCLUDE_MIN_EXCESS
    assert _default(head_safety.repair_heads, "weak_verdict") is S.WEAK_VERDICT
    assert _default(head_safety.repair_heads, "weak_top_k") is S.WEAK_TOP_K
    assert _default(head_safety.repair_heads, "min_heads") is S.REPAIR_MIN_HEADS
    assert _default(head_safety.reset_heads, "top_k") is S.RESET_TOP_K
    assert DEFENSES["fineprune"].knobs["prune_fraction"] is S.PRUNE_FRACTION is fineprune.DEFAULT_PRUNE_FRACTION
    assert DEFENSES["pure"].knobs["lam"] is S.PURE_LAMBDA is pure.DEFAULT_LAMBDA
    assert DEFENSES["pure"].knobs["max_fraction"] is S.PURE_MAX_FRACTION is pure.DEFAULT_MAX_FRACTION
    assert strip.DEFAULT_REPEATS is S.STRIP_REPEATS
    assert sanitize.DEFAULT_BETA is S.BETA and sanitize.DEFAULT_CLEAN_BUDGET is S.CLEAN_BUDGET
    assert sanitize.default_config().lr is S.SANITIZE_LR and finetune_config().epochs is S.BASELINE_EPOCHS
    assert sanitize.default_config().group_by_length is S.REPAIR_GROUP_BY_LENGTH
    cfg = TrainConfig()
    assert (cfg.lr, cfg.epochs, cfg.batch_size, cfg.max_length) == (S.LR, S.EPOCHS, S.BATCH_SIZE, S.MAX_LENGTH)
    assert cfg.lr is S.LR and cfg.max_length is S.MAX_LENGTH
    assert tal.DEFAULT_ALPHA is S.TAL_ALPHA and tal.DEFAULT_HEADS is S.TAL_HEADS
    assert zoo.ZOO_SETTINGS is S.ZOO_RECIPE and zoo.ZOO_TAL_ALPHA is S.ZOO_TAL_ALPHA
    assert trigger_search.COMPLETE_MIN_FLIPS is S.TRIGGER_COMPLETE_MIN_FLIPS


def test_the_documented_values():
    """The README's defaults (a change here must change the README too)."""
    assert (S.REL_THRESHOLD, S.FRR, S.MAX_FRACTION, S.MAX_LENGTH, S.BETA) == (0.1, 0.05, 0.25, 128, 5.0)
    assert (S.CLEAN_BUDGET, S.POOL_BUDGET) == (300, 200)


# ------------------------------------------------------------------------------------------------ the app

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture()
def app_env(monkeypatch, tmp_path):
    monkeypatch.setenv("BACKDOOR_LAB_TEST_MODEL", "tiny")
    monkeypatch.setenv("BACKDOOR_ZOO_DIR", str(tmp_path / "zoo"))


def test_page_widgets_take_their_defaults_from_settings(app_env, monkeypatch):
    """Change a setting and the page's widget default follows: the pages hold no copies."""
    from streamlit.testing.v1 import AppTest

    sentinels = {"FRR": 0.07, "REL_THRESHOLD": 0.35, "MAX_FRACTION": 0.3, "QUICK_CLEAN_BUDGET": 123,
                 "POOL_CLEAN": 77, "POOL_TRIGGERED": 11, "CLEAN_BUDGET": 111, "EVAL_TEXTS": 99,
                 "DEMO_POISON_RATE": 0.03, "ZOO_TAL_ALPHA": 4.5, "REFINE": False}
    for name, value in sentinels.items():
        monkeypatch.setattr(S, name, value)
    monkeypatch.setattr(S, "ZOO_RECIPE", {**S.ZOO_RECIPE, "epochs": 3, "max_length": 96, "train_size": 500})
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("app_pages/detect.py").run()
    assert not at.exception
    state = at.session_state
    assert state["detect.frr"] == 0.07 and state["detect.rel"] == 0.35 and state["detect.max_frac"] == 0.3
    assert state["detect.n_clean"] == 123 and state["detect.pool_clean"] == 77 and state["detect.pool_trig"] == 11
    assert state["detect.refine"] is False
    at.switch_page("app_pages/sanitize.py").run()
    assert not at.exception
    assert state["sanitize.n_clean"] == 111 and state["sanitize.n_test"] == 99
    at.switch_page("app_pages/attack.py").run()
    assert not at.exception
    assert state["attack.rate"] == pytest.approx(3.0) and state["attack.alpha"] == 4.5
    assert state["attack.epochs"] == 3 and state["attack.max_len"] == 96 and state["attack.n_train"] == 500
