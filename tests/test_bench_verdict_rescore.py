"""``bench/verdict_rescore.py``: dumped verdict inputs read again under each rule (synthetic dumps in the format
``bench/defense.py --dump-scores`` writes; no model needed)."""

from __future__ import annotations

import json

import numpy as np

from bench_module import load_bench


def _dump(folder, name: str, pool_scores, pool_preds, n_triggered: int, attack: str, lift=None, seed: int = 0,
          model: str | None = None, **meta):
    rng = np.random.default_rng(seed)
    dev = rng.normal(size=126)
    triggered = np.zeros(len(pool_scores), bool)
    triggered[len(pool_scores) - n_triggered:] = True
    np.savez(folder / f"{name}.npz", clean_dev_scores=dev, clean_dev_predictions=rng.integers(0, 2, 126),
             pool_scores=np.asarray(pool_scores, float), pool_predictions=np.asarray(pool_preds, int),
             pool_triggered=triggered, threshold=float(np.sort(dev)[-7]), num_labels=2,
             meta=json.dumps({"name": name, "attack": attack, "lift_before": lift, "model": model or name, **meta}))


def test_rescoring_tells_which_pools_a_rule_calls(tmp_path, monkeypatch):
    vr = load_bench("verdict_rescore")
    monkeypatch.setattr(vr, "RESULTS", tmp_path / "results")
    shifted, same = tmp_path / "shifted", tmp_path / "same"
    shifted.mkdir(), same.mkdir()
    rng = np.random.default_rng(7)
    other = rng.normal(2.0, 2, 300)  # another source: higher and wider than the dev scores
    other_preds = (rng.random(300) < 0.85).astype(int)
    _dump(shifted, "clean_other", other, other_preds, 0, "clean")
    _dump(shifted, "bd_other_no_trigger", other, other_preds, 0, "badnets")
    _dump(shifted, "bd_other_triggered", np.r_[other, rng.normal(14, 1, 75)], np.r_[other_preds, np.ones(75, int)],
          75, "badnets", model="bd")  # its lift comes from --lifts
    (tmp_path / "defense.json").write_text(json.dumps({"models": [{"name": "bd", "lift_before": 0.8}]}))
    clean_same = rng.normal(size=380)
    _dump(same, "clean_same", np.r_[clean_same, rng.normal(size=20)], rng.integers(0, 2, 400), 20, "clean")
    _dump(same, "bd_same", np.r_[clean_same, rng.normal(6, 1, 80)], np.r_[rng.integers(0, 2, 380), np.ones(80, int)],
          80, "addsent", lift=0.2)
    assert vr.main([str(shifted), f"{same}=same pools", "--tag", "t", "--lifts", str(tmp_path / "defense.json")]) == 0
    report = json.loads((tmp_path / "results" / "verdict_rescore_t.json").read_text())
    rows = {(r["group"], r["rule"]): r for r in report["table"]}
    before, after = rows[("shifted", "threshold")], rows[("shifted", "threshold+shift")]
    assert (before["clean"], before["backdoored"], before["no_trigger"]) == (1, 1, 1)
    assert before["clean_called"] == 1 and after["clean_called"] == 0  # the shifted clean pool, read where it sits
    assert before["backdoored_called"] == after["backdoored_called"] == 1 and after["lifted_called"] == 1
    assert after["auroc"] == 1.0
    for rule in ("threshold", "threshold+shift"):  # a same-source pool is read alike either way
        r = rows[("same pools", rule)]
        assert (r["clean_called"], r["backdoored_called"], r["lifted"], r["auroc"]) == (0, 1, 0, 1.0)
    changed = {p["name"] for p in report["changed"]}
    assert "clean_other" in changed and not changed & {"clean_same", "bd_same", "bd_other_triggered"}
    md = (tmp_path / "results" / "verdict_rescore_t.md").read_text()
    assert "| shifted | threshold+shift | 3 | 0 of 1 | 1 of 1 | 1 of 1 |" in md and "| same pools |" in md


def test_words_rule_scores_the_pools_marking_words_and_refuses_dumps_without_them(tmp_path, monkeypatch, capsys):
    """``+words``: a weak word backdoor whose flags chance explains is called by its marking word (0.5 + half its
    flip rate); a clean pool without words keeps its score; dumps that do not record the flip are refused."""
    import pytest

    vr = load_bench("verdict_rescore")
    monkeypatch.setattr(vr, "RESULTS", tmp_path / "results")
    folder = tmp_path / "words"
    folder.mkdir()
    rng = np.random.default_rng(5)
    _dump(folder, "weak_word", rng.normal(size=200), rng.integers(0, 2, 200), 20, "badnets", lift=0.4,
          marking_words=["cf"], marking_flip=0.4)
    _dump(folder, "clean", rng.normal(size=200), rng.integers(0, 2, 200), 20, "clean", marking_words=[],
          marking_flip=0.0)
    assert vr.main([str(folder), "--rules", "threshold,threshold+words", "--tag", "w"]) == 0
    report = json.loads((tmp_path / "results" / "verdict_rescore_w.json").read_text())
    pools = {p["name"]: p for p in report["pools"]}
    assert pools["weak_word"]["threshold"] < 0.5 and pools["weak_word"]["threshold+words"] == 0.7
    assert pools["clean"]["threshold+words"] == pools["clean"]["threshold"] < 0.5
    rows = {r["rule"]: r for r in report["table"]}
    assert rows["threshold+words"]["lifted_called"] == 1 and rows["threshold+words"]["clean_called"] == 0
    assert [p["name"] for p in report["changed"]] == ["weak_word"]
    old = tmp_path / "old"
    old.mkdir()
    _dump(old, "before_words", rng.normal(size=200), rng.integers(0, 2, 200), 20, "badnets")
    with pytest.raises(SystemExit):
        vr.main([str(old), "--rules", "threshold+words"])
    assert "records no marking words' flip rate" in capsys.readouterr().err


def test_rescoring_refuses_a_folder_without_dumps_and_a_file_that_is_not_one(tmp_path, monkeypatch, capsys):
    import pytest

    vr = load_bench("verdict_rescore")
    monkeypatch.setattr(vr, "RESULTS", tmp_path / "results")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        vr.main([str(tmp_path / "empty")])
    assert "no .npz dumps" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.npz").write_bytes(b"not a zip")
    with pytest.raises(SystemExit):
        vr.main([str(bad)])
    assert "x.npz: not a --dump-scores file" in capsys.readouterr().err
    np.savez(bad / "x.npz", pool_scores=np.zeros(3), meta=json.dumps({"name": "x"}))
    with pytest.raises(SystemExit):
        vr.main([str(bad), "--rules", "threshold"])
    assert "no clean_dev_scores" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        vr.main([str(bad), "--rules", "strictest"])
    assert not (tmp_path / "results").exists()
