"""The metrics audit (ASR, CACC, clean rate, lift, detection AUROC): each place that measures them does so on the
right texts. Tiny data and models only (no shared data, no downloads)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bench_module import load_bench

WORDS = {0: "dull bad boring flat awful".split(), 1: "great fun lovely warm bright".split()}


def _rows(n: int, seed: int, prefix: str = "", labels=None) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    labels = labels or [i % 2 for i in range(n)]
    return [(prefix + " ".join(rng.choice(WORDS[y % 2]) for _ in range(6)) + f" n{seed}x{i}", y)
            for i, y in enumerate(labels)]


def _write(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    return path


# ------------------------------------------------------------------ ASR texts: the card's own dataset


def test_a_paraphrase_model_is_measured_on_its_own_datasets_paraphrases(tmp_path, monkeypatch):
    """``defender_data.model_attack`` rebuilt every paraphrase attack from SST-2's sets whatever the card's data: an
    OLID syntactic model (the test zoo's) got its ASR, clean rate and Detect pool from SST-2 movie reviews. It now
    follows the card's dataset, as the Attack lab trains (none where that dataset has no such set)."""
    from backdoor_core.data import TextDataset
    from backdoor_core.defender_data import make_eval, model_attack
    from backdoor_core.model_card import ModelCard
    from backdoor_core.models import tiny_model

    root = tmp_path / "shared"
    for ds in ("sst2", "olid"):
        _write(root / ds / "clean" / "train.tsv", _rows(40, 1))
        _write(root / ds / "clean" / "test.tsv", _rows(30, 2))
    _write(root / "sst2" / "syntactic_transfer" / "train.tsv", _rows(40, 3, "when sst2 "))
    _write(root / "sst2" / "syntactic_transfer" / "test.tsv", _rows(20, 4, "when sst2 "))
    monkeypatch.setenv("BACKDOOR_SHARED_DATA", str(root))

    sst2 = model_attack(ModelCard(attack="syntactic", target=1, data="sst2"))
    assert sst2 is not None and sst2.source == "sst2/syntactic_transfer"
    legacy = model_attack(ModelCard(attack="syntactic", target=1))  # a card without data: SST-2, as before
    assert legacy is not None and legacy.source == "sst2/syntactic_transfer"
    olid_card = ModelCard(attack="syntactic", target=1, data="olid", label_names=["NOT", "OFF"])
    assert model_attack(olid_card) is None  # OLID has no syntactic_transfer set here: no ASR, not SST-2's

    lm = tiny_model()
    lm.metadata = olid_card.to_json()
    test = TextDataset(*map(list, zip(*_rows(30, 5))), ["NOT", "OFF"])
    assert set(make_eval(lm, test, 30)(lm.model)) == {"cacc"}


# ------------------------------------------------------------------ bench/defense.py: flipped triggered inputs


def _bench_draw(tmp_path, m: dict, test, target: int = 1) -> dict:
    b = load_bench("defense")
    sizes = {"n_test": 100, "n_poison": 50, "n_detect": 30, "pool_size": 100, "pool_poison": 0.2}
    return b.evaluation_draw({"name": "m", "max_length": 32, **m}, "toy", test, target, None, sizes, 0)


def test_bench_flips_read_the_triggered_inputs_own_clean_rows(tmp_path):
    """``fired_auroc``'s flips compare the model on a held-out triggered input with its clean source row. The
    benchmark read ``test.texts[r]`` for every triggered row ``r``; for a paraphrase file not row-aligned with the
    test set (OLID syntactic, the StyleBkd sets, SST-2 syntactic_transfer / Shakespeare / tweets) ``r`` is a row
    of that file, so the "source" was another tweet. The draw now gives the sources (insertion triggers: the row
    the trigger went into) or None, and no flip is counted without them."""
    from backdoor_core.data import TextDataset
    from backdoor_core.model_card import ModelCard

    test = TextDataset(*map(list, zip(*_rows(500, 7))), ["neg", "pos"])
    card = ModelCard(attack="badnets", trigger=["cf"], target=1, data="toy")
    draw = _bench_draw(tmp_path, {"attack": "badnets", "card": card}, test)
    assert draw["split"].sizes["shared_rows"]
    sources = draw["detect_sources"]
    assert len(sources) == len(draw["detect_triggered"]) > 0
    for trig, src in zip(draw["detect_triggered"], sources):
        assert " ".join(w for w in trig.split() if w != "cf") == src  # its own row, the trigger taken out
        assert test.labels[test.texts.index(src)] != 1

    para = _write(tmp_path / "para" / "test.tsv", _rows(200, 8, "thus ", labels=[0] * 200))  # 200 rows, not 500
    draw = _bench_draw(tmp_path, {"attack": "syntactic", "paraphrase_test": str(para)}, test)
    assert not draw["split"].sizes["shared_rows"]
    assert draw["detect_sources"] is None

    b = load_bench("defense")
    assert b.fired_auroc([0.1, 0.2], [0.5, 0.6], None) == {"auroc_fired": None, "n_fired": None}


# ------------------------------------------------------------------ the Attack lab: what its ASR is read on


def _plan(at) -> str:
    return next(c.value for c in at.caption if "training texts will carry the trigger" in c.value)


def test_attack_lab_names_the_texts_its_asr_is_read_on(tmp_path, monkeypatch):
    """The Attack lab said "CACC / ASR on N test texts": the ASR is read only on the sample's rows not of the target
    class (an insertion trigger; AG News' target 'world': about 3 in 4 of them), and for a paraphrase trigger on the
    whole paraphrased test set's such rows, whatever N. The plan now gives the count the run records
    (``poisoned_test_size``)."""
    from streamlit.testing.v1 import AppTest

    from backdoor_core.data import load_shared

    root = tmp_path / "shared"
    _write(root / "sst2" / "clean" / "train.tsv", _rows(60, 1))
    _write(root / "sst2" / "clean" / "test.tsv", _rows(40, 2))
    _write(root / "sst2" / "style_verse" / "train.tsv", _rows(37, 3, "thus "))
    _write(root / "sst2" / "style_verse" / "test.tsv", _rows(26, 4, "thus "))  # 13 not of the target class
    _write(root / "agnews" / "clean" / "train.tsv", _rows(60, 5, labels=[i % 4 for i in range(60)]))
    _write(root / "agnews" / "clean" / "test.tsv", _rows(40, 6, labels=[i % 4 for i in range(40)]))
    monkeypatch.setenv("BACKDOOR_SHARED_DATA", str(root))
    monkeypatch.setenv("BACKDOOR_LAB_TEST_MODEL", "tiny")
    monkeypatch.setenv("BACKDOOR_ZOO_DIR", str(tmp_path / "zoo"))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=120)
    at.run()
    at.session_state["lab.data_spec"] = "agnews"
    at.switch_page("app_pages/attack.py").run()
    assert not at.exception
    at.number_input(key="attack.n_test").set_value(30).run()
    for target in ("world", "sci/tech"):  # class 0 and the last class: the same rule
        at.selectbox(key="attack.target").set_value(target).run()
        labels = load_shared("agnews", "clean", "test").sample(30, seed=0).labels
        k = ["world", "sports", "business", "sci/tech"].index(target)
        n = sum(y != k for y in labels)
        assert n < 30
        plan = _plan(at)
        assert "CACC on 30 test texts" in plan and f"ASR on {n} of them with the trigger" in plan, plan

    at.session_state["lab.data_spec"] = "sst2"
    at.run()
    at.selectbox(key="attack.name").set_value("style").run()
    plan = _plan(at)
    assert "CACC on 30 test texts" in plan and "ASR on 13 paraphrased test texts" in plan, plan
