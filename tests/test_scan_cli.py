"""scan_model's report and the scan / sanitize commands on a tiny saved model."""

import json
import re

import numpy as np
import pytest

from backdoor_core.cli import main
from backdoor_core.data import DataError, TextDataset
from backdoor_core.models import load_model, save_model
from backdoor_core.scan import scan_model
from defense_helpers import TRIGGER, clean_texts, trained_tiny, triggered_texts


def _write_tsv(path, texts, labels):
    path.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in zip(texts, labels)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("scan")
    lm = trained_tiny(True)
    model_dir = save_model(lm.model, lm.tokenizer, d / "bd", {"name": "tiny-bd"})
    texts, labels = clean_texts(40, seed=31)
    clean = _write_tsv(d / "clean.tsv", texts, labels)
    pool = d / "pool.txt"
    pool.write_text("\n".join(triggered_texts(12, seed=32) + clean_texts(12, seed=33)[0]) + "\n", encoding="utf-8")
    poisoned = d / "poisoned.txt"
    poisoned.write_text("\n".join(triggered_texts(20, seed=34)) + "\n", encoding="utf-8")
    return {"dir": d, "model": model_dir, "clean": clean, "pool": pool, "poisoned": poisoned}


def test_scan_model_report_is_json_ready():
    lm = trained_tiny(True)
    texts, labels = clean_texts(40, seed=35)
    pool = triggered_texts(10, seed=36) + clean_texts(10, seed=37)[0]
    stages = []
    rep = scan_model(lm.model, lm.tokenizer, TextDataset(texts, labels, ["neg", "pos"]), pool, max_length=32,
                     frr=0.2, model_name="tiny-bd", progress=lambda s, d, t: stages.append(s))
    d = json.loads(json.dumps(rep.to_dict()))
    assert {"verdict", "detection", "suspicious_heads", "head_safety", "per_head", "flagged", "per_layer"} <= set(d)
    assert np.array(d["head_safety"]["score"]).shape == (2, 4)
    assert np.array(d["per_head"]["similarity_clean"]).shape == (2, 4)
    assert d["detection"]["n_clean_fit"] + d["detection"]["n_clean_dev"] == 40
    assert 0 <= d["detection"]["clean_frr"] <= 0.2
    scores = [r["score"] for r in d["flagged"]]
    assert scores == sorted(scores, reverse=True) and all(s > d["detection"]["threshold"] for s in scores)
    assert d["detection"]["n_flagged"] == len(d["flagged"])
    assert d["suspicious_heads"] and d["head_safety"]["basis"] == "flagged"
    assert {"clean", "pool", "done"} <= set(stages)


def test_cli_scan_text_json_and_html(files, capsys):
    args = ["scan", str(files["model"]), "--clean-data", str(files["clean"]), "--pool", str(files["pool"]),
            "--max-length", "32"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "verdict" in out and "suspicious" in out and "L" in out
    assert "Candidate triggers" in out and "insertion flips" in out
    # the trigger word marks the 12 triggered pool inputs, flagged or not
    assert re.search(rf"words +{TRIGGER} \(likely trigger words, rare in the clean texts\) in 12 pool inputs", out)
    assert "trigger_word" in out  # the flagged table's column
    # the pool line says how many flags chance alone explains (the verdict counts those beyond it)
    assert re.search(r"pool +24 inputs.* flagged \(\d+\.\d%; chance alone flags up to \d+\.\d% of a clean pool", out)
    html = files["dir"] / "report.html"
    assert main(args + ["--json", "--html", str(html)]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["model"] == "tiny-bd" and rep["detection"]["n_pool"] == 24
    assert rep["detection"]["marking_words"] == [TRIGGER] and rep["detection"]["n_word_marked"] == 12
    assert rep["verdict"]["trigger_words"] == [TRIGGER]  # the JSON's call is the views' call
    assert rep["verdict"]["call"] == ("likely" if rep["verdict"]["likely_backdoored"] else "possible")
    assert rep["flagged"] and all((r["trigger_word"] == TRIGGER) == (TRIGGER in r["text"].split())
                                  for r in rep["flagged"])
    page = html.read_text(encoding="utf-8")
    assert "<html" in page.lower() and "Suspicious heads" in page and "Inputs with a likely trigger word" in page
    assert ("Candidate triggers" in page) == bool((rep["trigger_candidates"] or {}).get("candidates"))
    assert not re.search(r"<script[^>]*\ssrc=", page) and not re.search(r"<link[^>]*href=[\"']http", page)
    assert "Content-Security-Policy" in page  # offline: nothing is fetched
    assert "chance alone flags up to" in page and "chance_flag_rate" in page
    # no pool: no word, no backdoor called, and then no head is called suspicious (as on the Detect page)
    assert main(["scan", str(files["model"]), "--clean-data", str(files["clean"]), "--max-length", "32"]) == 0
    no_pool = capsys.readouterr().out
    assert "no backdoor evidence" in no_pool and "suspicious none (no backdoor called; top candidates: L" in no_pool
    assert main(["scan", str(files["model"]), "--clean-data", str(files["clean"]), "--max-length", "32",
                 "--json", "--html", str(files["dir"] / "no_pool.html")]) == 0
    capsys.readouterr()
    assert "none (no backdoor called; top candidates: L" in (files["dir"] / "no_pool.html").read_text("utf-8")


def test_cli_sanitize_saves_a_repaired_model_with_metadata(files, capsys):
    out_dir = files["dir"] / "fixed"
    args = ["sanitize", str(files["model"]), "--clean-data", str(files["clean"]), "--pool", str(files["pool"]),
            "--out", str(out_dir), "--heads", "L0H0,L1H1", "--epochs", "1", "--lr", "0.003", "--max-length", "32",
            "--eval-data", str(files["clean"]), "--poisoned-eval", str(files["poisoned"]), "--target", "1",
            "--precision", "fp32", "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["details"]["precision"] == "fp32"  # asked for, whatever this machine's bf16
    assert set(summary["before"]) == {"cacc", "asr", "kept"} and set(summary["after"]) == {"cacc", "asr", "kept"}
    assert summary["before"]["kept"] == 1.0 and 0.0 <= summary["after"]["kept"] <= 1.0  # the suspect vs itself
    lm = load_model(out_dir)
    meta = lm.metadata
    assert meta["defense"] == "alignment" and meta["defense_details"]["suspicious_heads"] == ["L0H0", "L1H1"]
    assert meta["before"]["asr"] == summary["before"]["asr"] and meta["clean_samples"] == 40
    assert main(["sanitize", str(files["model"]), "--clean-data", str(files["clean"]), "--out",
                 str(files["dir"] / "ft"), "--defense", "finetune", "--epochs", "1", "--max-length", "32"]) == 0
    assert "finetune" in capsys.readouterr().out and load_model(files["dir"] / "ft").metadata["defense"] == "finetune"


def test_cli_sanitize_weak_top_k(files, capsys):
    """``--weak-top-k`` reaches the repair: with the cap at 1 head, a verdict below ``settings.WEAK_VERDICT`` repairs
    one head and says so; at 0 the scan's heads. ``--reset-top-k 1`` zeroes only the best of them first and says so.
    A negative count or a baseline with these flags is a one-line error, nothing saved."""
    from backdoor_core import settings as S

    base = ["sanitize", str(files["model"]), "--clean-data", str(files["clean"]), "--pool", str(files["pool"]),
            "--max-length", "32", "--max-steps", "1"]
    for extra, message in ((["--weak-top-k", "-1"], "0 (off) or more"),
                           (["--defense", "finetune", "--weak-top-k", "2"], "alignment defense only"),
                           (["--min-heads", "-1"], "0 (off) or more"),
                           (["--defense", "finetune", "--min-heads", "2"], "alignment defense only"),
                           (["--head-only-max-heads", "-1"], "0 (off) or more"),
                           (["--defense", "pure", "--head-only-max-heads", "2"], "alignment defense only"),
                           (["--repair-seeds", "0"], "1 or more"),
                           (["--defense", "pure", "--repair-seeds", "2"], "alignment defense only"),
                           (["--reset-top-k", "-1"], "0 (every repaired head) or more"),
                           (["--defense", "finetune", "--reset-top-k", "1"], "alignment defense only"),
                           (["--defense", "finetune", "--reset-to", "zero"], "alignment defense only"),
                           (["--defense", "pure", "--label-judge", "filter"], "alignment defense only"),
                           (["--defense", "finetune", "--judge-flags"], "alignment defense only"),
                           (["--defense", "finetune", "--no-judge-flags"], "alignment defense only"),
                           (["--defense", "fineprune", "--clean-guard"], "alignment defense only")):
        assert main([*base, "--out", str(files["dir"] / "never"), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and err.count("\n") == 1
    assert not (files["dir"] / "never").exists()
    runs = {}
    for k in ("1", "0"):
        assert main([*base, "--out", str(files["dir"] / f"weak{k}"), "--weak-top-k", k]) == 0
        runs[k] = (capsys.readouterr().out, load_model(files["dir"] / f"weak{k}").metadata["defense_details"])
    (out1, cap1), (out0, off) = runs["1"], runs["0"]
    scan_heads = cap1["weak_evidence_cap"]["scan_heads"]  # the fixture's scan is weak (verdict 0.50), 2 heads
    assert cap1["weak_evidence_cap"]["verdict"] < S.WEAK_VERDICT and len(scan_heads) > 1
    assert cap1["suspicious_heads"] == scan_heads[:1] and "only the 1 highest-scoring head was repaired" in out1
    assert off["weak_evidence_cap"] is None and off["suspicious_heads"] == scan_heads
    assert "Weak evidence" not in out0
    assert off["repair_seeds"] == S.REPAIR_SEEDS and off["min_heads"] == S.REPAIR_MIN_HEADS  # the defaults
    assert main([*base, "--out", str(files["dir"] / "single"), "--repair-seeds", "1", "--min-heads", "0"]) == 0
    assert "times from the same start" not in capsys.readouterr().out
    assert main([*base, "--out", str(files["dir"] / "soup"), "--repair-seeds", "3"]) == 0
    assert "trained 3 times from the same start" in capsys.readouterr().out
    single = load_model(files["dir"] / "single").metadata["defense_details"]
    soup = load_model(files["dir"] / "soup").metadata["defense_details"]
    assert single["repair_seeds"] == 1 and soup["repair_seeds"] == 3 and soup["suspicious_heads"] == scan_heads
    assert single["min_heads"] == 0 and single["suspicious_heads"] == scan_heads
    assert sorted(off["reset_heads"]) == sorted(scan_heads[:S.RESET_TOP_K or None])  # the default: best k (0: all)
    assert off["head_only_max_heads"] == S.REPAIR_HEAD_ONLY_MAX_HEADS and not off["ffn_layers"]  # head-only
    assert main([*base, "--out", str(files["dir"] / "cap1"), "--head-only-max-heads", "1", "--repair-seeds", "1"]) == 0
    out = capsys.readouterr().out
    capped = load_model(files["dir"] / "cap1").metadata["defense_details"]
    assert capped["suspicious_heads"] == scan_heads[:1]  # the scan's best head
    assert capped["head_only_cap"] == {"max_heads": 1, "from": len(scan_heads), "to": 1}
    assert f"so it trained only the 1 highest-scoring of its {len(scan_heads)} heads" in out
    assert main([*base, "--out", str(files["dir"] / "reset1"), "--reset-top-k", "1", "--repair-seeds", "1"]) == 0
    out = capsys.readouterr().out
    one = load_model(files["dir"] / "reset1").metadata["defense_details"]
    assert one["reset_top_k"] == 1 and one["reset_heads"] == scan_heads[:1]  # the scan's best head
    assert f"Only the 1 highest-scoring of the {len(scan_heads)} repaired heads started from zero output" in out
    # the packaged encoder is not this tiny model's starting point: the reset falls back to zero and says why
    assert main([*base, "--out", str(files["dir"] / "pre"), "--reset-to", "pretrained", "--base", "default",
                 "--repair-seeds", "1"]) == 0
    out = capsys.readouterr().out
    pre = load_model(files["dir"] / "pre").metadata["defense_details"]
    assert pre["reset_to_asked"] == "pretrained" and pre["reset_to"] == "zero"
    assert ("The reset heads restarted from zero: the packaged all-MiniLM-L6-v2 is not this model's pretrained "
            "encoder") in out
    # the judge needs the pretrained encoder too: unchecked labels, and the output says why
    assert main([*base, "--out", str(files["dir"] / "judge"), "--label-judge", "fill", "--repair-seeds", "1"]) == 0
    out = capsys.readouterr().out
    judged = load_model(files["dir"] / "judge").metadata["defense_details"]
    assert judged["label_judge_asked"] == "fill" and judged["label_judge"] == "none"
    assert ("The pseudo-labels were not checked: the packaged all-MiniLM-L6-v2 is not this model's pretrained "
            "encoder") in out
    # judge-led labels need it as well: none added, and the output says why
    assert main([*base, "--out", str(files["dir"] / "jflags"), "--judge-flags", "--repair-seeds", "1"]) == 0
    out = capsys.readouterr().out
    jf = load_model(files["dir"] / "jflags").metadata["defense_details"]
    assert jf["judge_flags"] is True and jf["judge_flagged"] == 0
    assert "No judge-led labels: the packaged all-MiniLM-L6-v2 is not this model's pretrained encoder" in out
    # the default (the runs above) follows settings; --no-judge-flags turns it off, and the output does not mention it
    assert off["judge_flags"] is S.JUDGE_FLAGS and ("No judge-led labels" in out0) is S.JUDGE_FLAGS
    assert main([*base, "--out", str(files["dir"] / "nojflags"), "--no-judge-flags", "--repair-seeds", "1"]) == 0
    out = capsys.readouterr().out
    nojf = load_model(files["dir"] / "nojflags").metadata["defense_details"]
    assert nojf["judge_flags"] is False and nojf["judge_flag_info"] is None and "judge-led" not in out
    # the clean-accuracy guard: 40 clean texts are too few to hold any out, and the output says so
    assert (off["clean_guard"] is not None) is S.CLEAN_GUARD  # the default follows settings
    assert main([*base, "--out", str(files["dir"] / "guard"), "--clean-guard", "--repair-seeds", "1"]) == 0
    out = capsys.readouterr().out
    guard = load_model(files["dir"] / "guard").metadata["defense_details"]
    assert guard["clean_guard"]["note"].startswith("40 clean texts leave 8 to hold out") and guard["clean_samples"] == 40
    assert "No clean-accuracy guard: 40 clean texts leave 8 to hold out" in out
    assert main([*base, "--out", str(files["dir"] / "noguard"), "--no-clean-guard", "--repair-seeds", "1"]) == 0
    assert "clean-accuracy guard" not in capsys.readouterr().out.lower()
    assert load_model(files["dir"] / "noguard").metadata["defense_details"]["clean_guard"] is None


def test_cli_sanitize_pool_words(files, capsys):
    """``--pool-words`` reaches the repair: the pool's words are read (``defense_details.pool_words``) and the output
    says what the clean texts carried; with a baseline or without a pool it is a one-line error, nothing saved."""
    from backdoor_core import settings as S

    base = ["sanitize", str(files["model"]), "--clean-data", str(files["clean"]), "--max-length", "32",
            "--max-steps", "1", "--repair-seeds", "1"]
    for extra, message in ((["--pool", str(files["pool"]), "--defense", "finetune", "--pool-words"],
                            "alignment defense only"),
                           (["--pool", str(files["pool"]), "--defense", "finetune", "--no-pool-words"],
                            "alignment defense only"),
                           (["--pool-words"], "give --pool")):
        assert main([*base, "--out", str(files["dir"] / "never"), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and err.count("\n") == 1
    assert not (files["dir"] / "never").exists()
    assert main([*base, "--pool", str(files["pool"]), "--out", str(files["dir"] / "pw"), "--pool-words"]) == 0
    out = capsys.readouterr().out
    details = load_model(files["dir"] / "pw").metadata["defense_details"]
    assert isinstance(details["pool_words"], list) and details["pool_words"]  # the pool's words were read
    words = details["trigger_words"]
    if words:
        assert "Likely trigger words from the pool" in out and details["trigger_augmented"] > 0
    else:
        assert "No likely trigger word in the pool" in out and details["trigger_augmented"] == 0
    # the default follows settings; --no-pool-words reads nothing and says nothing of it
    assert main([*base, "--pool", str(files["pool"]), "--out", str(files["dir"] / "dflt")]) == 0
    out = capsys.readouterr().out
    assert (load_model(files["dir"] / "dflt").metadata["defense_details"]["pool_words"] is not None) \
        is S.REPAIR_POOL_WORDS and ("trigger word" in out) is S.REPAIR_POOL_WORDS
    assert main([*base, "--pool", str(files["pool"]), "--out", str(files["dir"] / "plain"), "--no-pool-words"]) == 0
    assert load_model(files["dir"] / "plain").metadata["defense_details"]["pool_words"] is None
    assert "trigger word" not in capsys.readouterr().out
    # without a pool the default has nothing to read, and says nothing of it
    assert main([*base, "--out", str(files["dir"] / "nopool")]) == 0
    assert load_model(files["dir"] / "nopool").metadata["defense_details"]["pool_words"] is None
    assert "trigger word" not in capsys.readouterr().out


# "three": a model that names its two classes reads label 2 as out of range, one that does not counts 3 classes
@pytest.mark.parametrize("which, message", [("empty", "no data rows"), ("three", "3 classes|label 2 is out of range"),
                                            ("few", "at least 8")])
def test_cli_bad_clean_data_exit_2_without_traceback(files, capsys, which, message):
    path = files["dir"] / f"{which}.tsv"
    if which == "empty":
        path.write_text("sentence\tlabel\n", encoding="utf-8")
    elif which == "three":
        _write_tsv(path, ["a x", "b y", "c z", "d w"] * 3, [0, 1, 2, 0] * 3)
    else:
        _write_tsv(path, ["a x", "b y", "c z"], [0, 1, 0])
    for cmd in (["scan"], ["sanitize", "--out", str(files["dir"] / "never")]):
        assert main([*cmd[:1], str(files["model"]), "--clean-data", str(path), *cmd[1:]]) == 2
        err = capsys.readouterr().err
        assert re.search(message, err) and "Traceback" not in err and err.count("\n") == 1
    assert not (files["dir"] / "never").exists()


def test_scan_model_rejects_empty_or_mismatched_clean_sets(tiny):
    with pytest.raises(DataError, match="empty"):
        scan_model(tiny.model, tiny.tokenizer, TextDataset([], [], ["a", "b"]))
    with pytest.raises(DataError, match="3 classes"):
        scan_model(tiny.model, tiny.tokenizer, TextDataset(["x"] * 9, [0, 1, 2] * 3, ["a", "b", "c"]))
    with pytest.raises(ValueError, match="frr"):
        scan_model(tiny.model, tiny.tokenizer, TextDataset(["x y"] * 10, [0, 1] * 5, ["a", "b"]), frr=1.5)


def test_cli_sanitize_ctrl_c_saves_nothing(files, monkeypatch, capsys):
    import signal

    import backdoor_core.defenses as defenses

    real = defenses.run_defense

    def interrupted(*a, callback=None, **kw):
        def cb(p):
            if callback is not None:
                callback(p)
            if p.step == 1 and p.metrics is None:
                signal.raise_signal(signal.SIGINT)  # the user presses Ctrl-C during fine-tuning

        return real(*a, callback=cb, **kw)

    monkeypatch.setattr(defenses, "run_defense", interrupted)
    out_dir = files["dir"] / "cancelled"
    rc = main(["sanitize", str(files["model"]), "--clean-data", str(files["clean"]), "--out", str(out_dir),
               "--heads", "L0H0,L1H1", "--epochs", "3", "--max-length", "32"])
    assert rc == 130
    assert "nothing saved" in capsys.readouterr().err
    assert not out_dir.exists()


def test_second_pass_reflags_by_the_suspicious_heads():
    lm = trained_tiny(True)
    texts, labels = clean_texts(40, seed=35)
    clean = TextDataset(texts, labels, ["neg", "pos"])
    pool = triggered_texts(10, seed=36) + clean_texts(10, seed=37)[0]
    one = scan_model(lm.model, lm.tokenizer, clean, pool, max_length=32, frr=0.2, refine=False)
    two = scan_model(lm.model, lm.tokenizer, clean, pool, max_length=32, frr=0.2)
    assert one.first_pass is None and two.first_pass is not None
    # the first pass of the refined scan is the one-pass scan
    assert two.first_pass["flagged"].tolist() == one.flagged.tolist()
    assert two.first_pass["threshold"] == pytest.approx(one.threshold)
    assert two.first_pass["heads"] == one.suspicious_heads and two.first_pass["verdict"] == one.verdict
    assert 0 <= two.verdict["score"] <= 1 and two.verdict["components"]["flag_rate"] == len(two.flagged) / 20
    # the second pass flags exactly the pool inputs above its own threshold, at the asked-for clean FRR
    assert sorted(two.flagged.tolist()) == np.flatnonzero(two.pool_scores > two.threshold).tolist()
    assert two.clean_frr <= 0.2 + 1e-9
    assert not np.allclose(two.pool_scores, one.pool_scores)
    d = json.loads(json.dumps(two.to_dict()))
    assert d["first_pass"]["n_flagged"] == len(one.flagged) and d["settings"]["refine"] is True
    assert d["first_pass"]["suspicious_heads"] == one.suspicious_heads
    # one round re-flags with the first pass's heads; the default re-rates them on the new flags first
    single = scan_model(lm.model, lm.tokenizer, clean, pool, max_length=32, frr=0.2, refine_rounds=1)
    assert single.suspicious_heads == one.suspicious_heads and single.settings["refine_rounds"] == 1
    assert two.settings["refine_rounds"] == 2


def test_scan_without_a_pool_rates_heads_on_clean_fallback():
    lm = trained_tiny(True)
    texts, labels = clean_texts(40, seed=38)
    rep = scan_model(lm.model, lm.tokenizer, TextDataset(texts, labels, ["neg", "pos"]), None, max_length=32)
    assert rep.verdict["basis"] == "clean only" and rep.heads.basis == "clean fallback"
    assert rep.first_pass is None and len(rep.flagged) == 0 and len(rep.pool_scores) == 0
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["detection"]["n_pool"] == 0 and d["flagged"] == []


def test_cli_scan_progress_line_names_each_stage(capsys):
    """The scan command's live line (stderr on a terminal) says what the scan is doing, as the sanitize bar and
    the app's panels do (``scan.stage_text``), and ends its line when the scan is done."""
    from backdoor_core.commands.scan import _progress_printer

    assert _progress_printer(False) is None
    progress = _progress_printer(True)
    progress("pool", 64, 130)
    progress("heads", 1, 1)
    progress("done", 1, 1)
    err = capsys.readouterr().err
    lines = [part.rstrip() for part in err.split("\r") if part.strip()]
    assert lines == ["reading the pool 64/130", "rating the heads", "scan done"]
    assert err.endswith("\n") and err.count("\n") == 1


@pytest.mark.parametrize("view_fails", [False, True])
def test_cli_sanitize_trigger_lines_and_a_failing_view_keeps_the_repair(tmp_path, monkeypatch, capsys, view_fails):
    """A model whose card records its trigger: TRIGGER lines and a ``trigger_effect`` entry measured on the
    evaluation split. When that measure fails on a model the repair is still saved and reported, without them."""
    import backdoor_core.repair_effect as RE

    lm = trained_tiny(True)
    model_dir = save_model(lm.model, lm.tokenizer, tmp_path / "bd",
                           {"name": "tiny-bd", "attack": "badnets", "trigger": [TRIGGER], "target": 1})
    data = tmp_path / "data"
    data.mkdir()
    for split, seed in (("train", 51), ("dev", 53), ("test", 52)):
        _write_tsv(data / f"{split}.tsv", *clean_texts(40, seed=seed))
    if view_fails:
        def boom(*a, **k):
            raise RuntimeError("this architecture's attention cannot be read")

        monkeypatch.setattr(RE, "trigger_effect", boom)
    out = tmp_path / "fixed"
    args = ["sanitize", str(model_dir), "--clean-data", str(data), "--out", str(out), "--heads", "L0H0,L1H1",
            "--max-steps", "2", "--max-length", "32", "--precision", "fp32"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert load_model(out).metadata["defense"] == "alignment" and "ASR" in text
    assert ("TRIGGER    On the 2 repaired heads, the trigger changed" in text) is not view_fails, text
    assert main(args + ["--force", "--json"]) == 0
    effect = json.loads(capsys.readouterr().out)["trigger_effect"]
    assert (effect is None) if view_fails else (effect["heads"] == 2 and len(effect["concentration"]) == 2)


def test_cli_sanitize_clean_model_gives_the_clean_rate_and_lift(files, capsys):
    """``--clean-model``: the clean reference's rate on the same triggered texts, and ASR minus it (the lift)
    before and after; a reference of another class count, or one with no triggered texts to read, is a one-line
    error before the repair, and nothing is saved."""
    from backdoor_core.forward import predict
    from backdoor_core.models import tiny_model

    clean_lm = trained_tiny(False)
    clean_dir = save_model(clean_lm.model, clean_lm.tokenizer, files["dir"] / "clean_ref", {"name": "tiny-clean"})
    base = ["sanitize", str(files["model"]), "--clean-data", str(files["clean"]), "--heads", "L0H0,L1H1",
            "--max-steps", "2", "--max-length", "32", "--precision", "fp32", "--clean-model", str(clean_dir)]
    asr_args = ["--eval-data", str(files["clean"]), "--poisoned-eval", str(files["poisoned"]), "--target", "1"]
    assert main([*base, *asr_args, "--out", str(files["dir"] / "lifted"), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    texts = files["poisoned"].read_text(encoding="utf-8").split("\n")[:20]
    own = float((predict(clean_lm.model, clean_lm.tokenizer, texts, 32).argmax(1) == 1).mean())
    assert s["clean_model"] == "tiny-clean" and s["clean_rate"] == pytest.approx(own)
    assert s["before"]["asr"] > s["clean_rate"]  # the tiny backdoor lifts the target above the clean model
    assert s["lift_before"] == pytest.approx(s["before"]["asr"] - own)
    assert s["lift_after"] == pytest.approx(s["after"]["asr"] - own)
    kept = load_model(files["dir"] / "lifted").metadata["defense_details"]["clean_reference"]  # the saved card
    assert kept == {"name": "tiny-clean", "rate": pytest.approx(own), "texts": 20,
                    "lift_after_ci95": [pytest.approx(v) for v in s["lift_after_ci95"]]}
    assert s["lift_after_ci95"][0] <= s["lift_after"] <= s["lift_after_ci95"][1]
    assert main([*base, *asr_args, "--out", str(files["dir"] / "lifted2")]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("CLEAN"))
    assert f"{100 * own:.1f}% of the same triggered texts" in line and f"{100 * s['lift_before']:+.1f}" in line
    three = tiny_model(num_labels=3)
    three_dir = save_model(three.model, three.tokenizer, files["dir"] / "three_ref", {"name": "tiny-three"})
    for extra, message in (([*asr_args, "--clean-model", str(three_dir)], "has 3 classes"),
                           ([], "there are none")):
        out = files["dir"] / "never_lifted"
        assert main([*base, *extra, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err.strip().splitlines()[-1] and "Traceback" not in err, err
        assert not out.exists()
