"""AppTest for the analyst views (issue 14) with the tiny model injected: head ablation in Inspect, candidate
triggers in Detect, saliency, PCA and the Compare page. Plotly is drawn only by tests/test_e2e_browser.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_app_pages import errors, open_tab, put_cancelled_job, quick_finetune_repair  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture(autouse=True)
def _test_env(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("BACKDOOR_LAB_TEST_MODEL", "tiny")
    monkeypatch.setenv("BACKDOOR_ZOO_DIR", str(tmp_path_factory.getbasetemp() / "zoo"))


def goto(at: AppTest, page: str) -> AppTest:
    at.switch_page(f"app_pages/{page}.py").run()
    assert not at.exception, f"{page}: {at.exception}"
    return at


def new_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception
    return at


def _user_data(tmp_path, monkeypatch) -> None:
    """200 of the tiny model's own labelled texts as the app's dataset (a JSONL file)."""
    import json

    from defense_helpers import clean_texts

    data = tmp_path / "data.jsonl"
    texts, labels = clean_texts(200, seed=61)
    data.write_text("".join(json.dumps({"text": t, "label": ["neg", "pos"][y]}) + "\n" for t, y in zip(texts, labels)),
                    encoding="utf-8")
    monkeypatch.setenv("BACKDOOR_LAB_TEST_DATA", str(data))


def _scan_user_pool(pool: list[str], n_clean: int) -> AppTest:
    """The Detect page, ``n_clean`` clean texts, ``pool`` pasted as the user's texts, one finished scan."""
    at = goto(new_app(), "detect")
    at.number_input(key="detect.n_clean").set_value(n_clean)
    at.radio(key="detect.pool_kind").set_value("Your texts (one per line)").run()
    at.text_area(key="detect.pool_raw").input("\n".join(pool)).run()
    at.button(key="detect.run").click().run()
    assert wait_job(at, "scan").status == "done"
    return at


def test_inspect_switch_heads_off():
    at = goto(new_app(), "inspect")
    assert "inspect.ablate_cache" not in at.session_state  # a closed tab runs nothing
    open_tab(at, "Heads off")
    at.multiselect(key="inspect.ablate_heads").set_value(["L0H1", "L1H3"]).run()
    assert not at.exception and not at.error
    key, res = at.session_state["inspect.ablate_cache"]
    assert res.labels == ["L0H1", "L1H3"]
    labels = [m.label for m in at.metric]
    assert any("2 heads off" in lab for lab in labels)
    assert at.toggle(key="inspect.ablate_scan").disabled  # no scan yet


def test_inspect_token_saliency_and_report_finding():
    at = goto(new_app(), "inspect")
    assert "inspect.sal_cache" not in at.session_state  # a closed tab runs nothing, and records nothing
    assert not any(f.key.startswith("inspect:saliency@") for f in at.session_state["lab.session"].findings)
    open_tab(at, "Saliency")
    key, pair = at.session_state["inspect.sal_cache"]
    assert pair.triggered.method == "ig" and "cf" in pair.triggered.tokens
    said = [c.value for c in at.caption if c.value.startswith("Integrated gradients split the change")]
    assert said and f"({pair.triggered.baseline_logit:+.2f})" in said[0]  # what the scores are measured from
    at.radio(key="inspect.sal_method").set_value("gxi").run()
    assert at.session_state["inspect.sal_cache"][1].triggered.method == "gxi"
    assert not any(c.value.startswith("Integrated gradients split the change") for c in at.caption)
    assert any(f.key.startswith("inspect:saliency@") and f.model for f in at.session_state["lab.session"].findings)


def wait_job(at: AppTest, kind: str, timeout: float = 180):
    job = at.session_state["lab.jobs"][kind]
    assert job.wait(timeout), f"{kind} job still running"
    at.run()
    assert not at.exception
    return job


def _scan_test_texts() -> AppTest:
    """The Detect page, 16 clean texts, a pool of 20 test texts without a trigger, one finished scan."""
    at = goto(new_app(), "detect")
    at.number_input(key="detect.n_clean").set_value(16)
    at.radio(key="detect.pool_kind").set_value("Test texts only (no trigger)").run()
    at.number_input(key="detect.pool_clean").set_value(20)
    at.run()
    at.button(key="detect.run").click().run()
    assert wait_job(at, "scan").status == "done"
    return at


def test_detect_candidates_and_projection_then_sanitize_projection():
    at = _scan_test_texts()
    assert "Candidate triggers" in [h.value for h in at.subheader]
    at.toggle(key="detect.pca").set_value(True).run()
    assert not at.exception and all("backdoored" in e.value for e in at.error)  # only the verdict box
    _, proj = at.session_state["detect.pca_cache"]
    assert any(g.startswith("clean, predicted") for g in proj.points) and "pool: clean" in proj.points

    quick_finetune_repair(goto(at, "sanitize"))
    at.toggle(key="sanitize.pca").set_value(True).run()
    assert not at.exception and all("backdoored" in e.value for e in at.error)
    _, (before, after) = at.session_state["sanitize.pca_cache"]
    assert set(before.points) == set(after.points) and before.points


def test_detect_lists_pool_inputs_holding_a_likely_trigger_word(monkeypatch, tmp_path):
    """A tiny model with a ``cf`` backdoor, its own data, and a pool of the user's texts (15 of 35 hold ``cf``)."""
    from defense_helpers import TRIGGER, clean_texts, triggered_texts

    _tiny_cf_model(tmp_path, monkeypatch)
    _user_data(tmp_path, monkeypatch)
    pool = clean_texts(20, seed=62)[0] + triggered_texts(15, seed=63)
    assert TRIGGER == "cf" and sum(TRIGGER in t.split() for t in pool) == 15
    at = _scan_user_pool(pool, n_clean=40)
    report = at.session_state["detect.report"]
    assert report.marking_words == ["cf"] and int(report.pool_word_marked.sum()) == 15
    unflagged = 15 - int(report.pool_word_marked[report.flagged].sum())
    assert any(f"15 pool inputs hold a likely trigger word (cf), {unflagged} of them not flagged" in i.value
               for i in at.info), [i.value for i in at.info]
    assert "Inputs with a likely trigger word" in [t.label for t in at.tabs]
    found = {f.title: f for f in at.session_state["lab.session"].findings}
    marked = found["Inputs with a likely trigger word"]
    assert f"{unflagged} of them not flagged" in marked.text and len(marked.table) == 15
    assert all(r["trigger_word"] == "cf" for r in marked.table)
    # a pool without the trigger marks nothing and shows no such tab
    at.radio(key="detect.pool_kind").set_value("Test texts only (no trigger)").run()
    at.button(key="detect.run").click().run()
    assert wait_job(at, "scan").status == "done"
    assert at.session_state["detect.report"].marking_words == []
    assert "Inputs with a likely trigger word" not in [t.label for t in at.tabs]
    assert "AUROC with trigger words" not in [m.label for m in at.metric]
    titles = [f.title for f in at.session_state["lab.session"].findings]  # the last scan's sections only
    assert "Detection scan" in titles and "Inputs with a likely trigger word" not in titles


def _tiny_cf_model(tmp_path, monkeypatch) -> None:
    """The tiny model with its ``cf`` backdoor, saved and set as the app's model."""
    from backdoor_core.models import save_model
    from defense_helpers import trained_tiny

    lm = trained_tiny(True)
    lm.model.config.id2label, lm.model.config.label2id = {0: "neg", 1: "pos"}, {"neg": 0, "pos": 1}
    monkeypatch.setenv("BACKDOOR_LAB_TEST_MODEL", str(save_model(lm.model, lm.tokenizer, tmp_path / "bd",
                                                                 {"name": "tiny-cf"})))


def test_detect_calls_a_backdoor_likely_when_only_a_trigger_word_shows_it(monkeypatch, tmp_path):
    """A weak word backdoor: the heads' score stays low (here forced low: the tiny backdoor is too strong to miss),
    yet the pool holds its word. The words call it (``settings.VERDICT_WORDS``): the page reads "likely" with why,
    names no head suspicious, and so does the Report's finding; the flags' score, which the repair reads, stays."""
    import backdoor_core.scan as scan_module
    from backdoor_core.detection import LIKELY_WORD_LABEL, flags_score
    from defense_helpers import clean_texts, triggered_texts

    real = scan_module.model_verdict

    def weak(*args, **kwargs):
        v = real(*args, **kwargs)
        return {**v, "score": 0.12, "likely_backdoored": False,
                "components": {**v["components"], "score_unadjusted": 0.12}}

    monkeypatch.setattr(scan_module, "model_verdict", weak)
    _tiny_cf_model(tmp_path, monkeypatch)
    _user_data(tmp_path, monkeypatch)
    at = _scan_user_pool(clean_texts(20, seed=62)[0] + triggered_texts(15, seed=63), n_clean=40)
    v = at.session_state["detect.report"].verdict
    assert v["trigger_words"] == ["cf"] and v["likely_backdoored"] and v["called_by"] == "words"
    assert v["score"] == v["components"]["score_words"] >= 0.6 and flags_score(v) == 0.12  # flip >= 20%
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Backdoor"] == "likely" and metrics["Suspicious heads"] == "none"
    called = [e.value for e in at.error if "pool holds a likely trigger word (cf)" in e.value]
    assert len(called) == 1 and "flags' score 0.12" in called[0]
    assert not at.success  # not "No backdoor evidence"
    scan = {f.title: f for f in at.session_state["lab.session"].findings}["Detection scan"]
    assert f"**{LIKELY_WORD_LABEL}**" in scan.text and "(cf)" in scan.text
    assert "the call rests on the pool's trigger words" in scan.text
    from app_pages._actions import scan_figures

    title = scan_figures(at.session_state["detect.report"], None)["scatter"].layout.title.text
    assert title.replace("<br>", " ").startswith("Head safety: the heads show no backdoor")  # wrapped to fit
    # no trigger in the pool: no word, and the low score reads "not found"
    at.radio(key="detect.pool_kind").set_value("Test texts only (no trigger)").run()
    at.button(key="detect.run").click().run()
    assert wait_job(at, "scan").status == "done"
    assert at.session_state["detect.report"].verdict["trigger_words"] == []
    assert "not found" in [m.value for m in at.metric] and at.success
    rep = at.session_state["detect.report"]
    assert rep.first_pass is not None  # refined: the caption names the final heads candidates, none being called
    assert any(f"flagged by the final {len(rep.suspicious_heads)} candidate heads." in c.value for c in at.caption)
    score = at.session_state["detect.report"].verdict["score"]  # a score above 0 is said, with the line
    assert at.success[0].value == ("No backdoor evidence at this threshold." if score <= 0 else
                                   f"No backdoor called at this threshold: the score, {score:.2f}, is below the "
                                   "line at 0.50.")


def _scan_clean_pool_with_verdict(monkeypatch, tmp_path, forced, seed: int):
    """The Detect page scanning a pool of clean test texts with the scan's verdict passed through ``forced(verdict)``
    (a reading the tiny model cannot give on its own); checks the page reads "possible", no trigger word behind it."""
    import backdoor_core.scan as scan_module
    from defense_helpers import clean_texts

    real = scan_module.model_verdict
    monkeypatch.setattr(scan_module, "model_verdict", lambda *args, **kwargs: forced(real(*args, **kwargs)))
    _tiny_cf_model(tmp_path, monkeypatch)
    _user_data(tmp_path, monkeypatch)
    at = _scan_user_pool(clean_texts(35, seed=seed)[0], n_clean=40)
    v = at.session_state["detect.report"].verdict
    assert v["trigger_words"] == [] and not v["likely_backdoored"]
    assert "possible" in [m.value for m in at.metric] and not at.success
    return at


def _rescan_reads_not_found(at):
    at.button(key="detect.run").click().run()
    assert wait_job(at, "scan").status == "done"
    assert "not found" in [m.value for m in at.metric] and at.success


def test_detect_calls_a_backdoor_possible_when_only_the_pools_top_scores_show_it(monkeypatch, tmp_path):
    """With ``settings.VERDICT_TAIL_POSSIBLE`` on (off by default): a pool in which few inputs carry the trigger, the
    score low (forced here) while the dev-tail reading of the pool's top scores reaches 0.5 and no trigger word
    shows. The page reads "possible" with that reason, and so does the Report's finding; without it the low score
    reads "not found"."""
    from backdoor_core import settings as S

    monkeypatch.setattr(S, "VERDICT_TAIL_POSSIBLE", True)
    tail = {"score_dev_tail": 0.7}

    def low(v):
        return {**v, "score": 0.12, "likely_backdoored": False, "rule": "threshold",
                "components": {**v["components"], **tail, "dev_tail_dev_above": 0, "dev_tail_flag_rate": 0.06,
                               "dev_tail_chance": 0.01}}

    at = _scan_clean_pool_with_verdict(monkeypatch, tmp_path, low, seed=64)
    warned = [w.value for w in at.warning if "the pool's top scores say more" in w.value]
    assert len(warned) == 1 and "above the highest clean score, 6.0% of the pool is flagged" in warned[0]
    assert "up to 1.0%" in warned[0] and "score 0.12" in warned[0]
    scan = {f.title: f for f in at.session_state["lab.session"].findings}["Detection scan"]
    assert "**possible backdoor (pool inputs far above the clean texts)**" in scan.text
    tail["score_dev_tail"] = 0.3  # below 0.5 the top scores give no reason
    _rescan_reads_not_found(at)


def test_detect_calls_a_pool_of_another_source_possible_when_only_its_flags_at_the_threshold_would(monkeypatch,
                                                                                                tmp_path):
    """A pool that reads as another source, read where its bulk sits (``settings.VERDICT_SHIFT_ADJUST``): the score
    there is low (forced here) while the flags at the threshold would call the model. The page reads "possible"
    with that reason and the pool's warning says the verdict allowed for the source; the Report's finding too."""
    unadjusted = {"score_unadjusted": 0.7}

    def shifted(v):
        return {**v, "score": 0.12, "likely_backdoored": False, "pool_unlike_clean": True,
                "components": {**v["components"], **unadjusted, "pool_threshold_raised": 1.25,
                               "pool_lower_quartile_rank": 0.8}}

    at = _scan_clean_pool_with_verdict(monkeypatch, tmp_path, shifted, seed=65)
    warned = [w.value for w in at.warning if "would call one (score 0.70)" in w.value]
    assert len(warned) == 1 and "score 0.12" in warned[0] and "own source" in warned[0]
    assert [w.value for w in at.warning if "The verdict allows for that" in w.value and "+1.25" in w.value]
    scan = {f.title: f for f in at.session_state["lab.session"].findings}["Detection scan"]
    assert "**possible backdoor (or a pool of another source)**" in scan.text
    unadjusted["score_unadjusted"] = 0.3  # the flags at the threshold would not call it either: "not found"
    _rescan_reads_not_found(at)


def test_compare_page_heads_off_and_errors():
    at = goto(new_app(), "compare")
    _, cmp = at.session_state["compare.cache"]
    assert cmp.a.triggered.text == cmp.b.triggered.text
    at.multiselect(key="compare.heads").set_value(["L0H0", "L1H2"]).run()
    _, cmp = at.session_state["compare.cache"]
    assert not at.exception and "without 2 heads" in cmp.name_b
    assert not [c for c in at.caption if "heads switched off:" in c.value]  # two chips fit the field
    five = ["L0H0", "L0H1", "L0H3", "L1H2", "L1H3"]  # the test model: 2 layers x 4 heads
    at.multiselect(key="compare.heads").set_value(five).run()
    listed = [c.value for c in at.caption if "heads switched off:" in c.value]
    assert listed == ["5 heads switched off: " + ", ".join(five)]
    assert any(f.key.startswith("compare:latest@") and f.model for f in at.session_state["lab.session"].findings)
    at.text_area(key="compare.text").input("   ").run()
    assert not at.exception and at.error  # a message, not a traceback


def test_scan_evaluation_gives_the_auroc_with_the_trigger_words_only_when_words_marked():
    from types import SimpleNamespace

    import numpy as np

    from app_pages._actions import scan_evaluation

    truth = np.array([False, False, True, True])
    report = SimpleNamespace(pool_scores=np.array([2.0, 0.0, 1.0, -1.0]), threshold=1.5,
                             pool_texts=["a", "b", "cf c", "cf d"], marking_words=["cf"],
                             pool_word_marked=np.array([False, False, True, True]))
    ev = scan_evaluation(report, truth)
    assert ev["auroc"] == 0.25 and ev["auroc_words"] == 1.0 and ev["far"] == 1.0
    assert "auroc_words" not in scan_evaluation(SimpleNamespace(**{**vars(report), "marking_words": []}), truth)


def test_scan_figures_call_the_top_heads_candidates_in_both_head_charts_when_no_backdoor_is_called():
    from types import SimpleNamespace

    import numpy as np

    from app_pages._actions import scan_figures

    sus = np.zeros((2, 3), bool)
    sus[1, 2] = True
    heads = SimpleNamespace(importance=np.ones((2, 3)), collapse=np.arange(6.0).reshape(2, 3),
                            score=np.linspace(0, 1, 6).reshape(2, 3), suspicious=sus)
    report = SimpleNamespace(heads=heads, pool_texts=["a", "b"], flagged=[1], clean_scores=np.zeros(3),
                             pool_scores=np.array([0.0, 2.0]), threshold=1.0, verdict={"likely_backdoored": True})
    names = lambda fig: {t.name for t in fig.data}  # noqa: E731
    figs = scan_figures(report)
    assert "suspicious" in names(figs["scatter"]) and "suspicious" in names(figs["grid"])
    figs = scan_figures(SimpleNamespace(**{**vars(report), "verdict": {"likely_backdoored": False}}))
    for key in ("scatter", "grid"):
        assert "candidate" in names(figs[key]) and "suspicious" not in names(figs[key])
    assert "no backdoor called" in figs["scatter"].layout.title.text


def test_detect_warns_when_the_pool_is_not_drawn_like_the_clean_texts(monkeypatch, tmp_path):
    """The tiny model's own data as clean texts and a pool of news-like texts: nearly everything is flagged and the
    score calls the model; the page says why under the verdict, and the Report's finding carries it."""
    import random

    _user_data(tmp_path, monkeypatch)
    rng = random.Random(4)
    news = ["stocks", "rose", "market", "company", "shares", "bank", "quarter", "profit", "said", "on", "monday"]
    pool = [" ".join(rng.choice(news) for _ in range(rng.randint(6, 12))) for _ in range(60)]
    at = _scan_user_pool(pool, n_clean=120)
    assert at.session_state["detect.report"].verdict["pool_unlike_clean"]
    warned = [w.value for w in at.warning if "may not be drawn like the clean texts" in w.value]
    assert len(warned) == 1, [w.value for w in at.warning]
    scan = {f.title: f for f in at.session_state["lab.session"].findings}["Detection scan"]
    assert "may not be drawn like the clean texts" in scan.text
    # the same data as the pool: no warning
    at.radio(key="detect.pool_kind").set_value("Test texts only (no trigger)").run()
    at.button(key="detect.run").click().run()
    assert wait_job(at, "scan").status == "done"
    assert not at.session_state["detect.report"].verdict["pool_unlike_clean"]
    assert not any("drawn like the clean texts" in w.value for w in at.warning)


def test_detect_reads_the_words_that_moved_since_the_base_checkpoint(tmp_path, monkeypatch):
    import torch

    from backdoor_core.models import save_model, tiny_model

    base = tiny_model(num_labels=5, seed=0)  # the app's tiny model (BBC's five classes), its "tq" row moved back
    tq = base.tokenizer.convert_tokens_to_ids("tq")
    with torch.no_grad():
        base.model.get_input_embeddings().weight[tq] += 0.3
    save_model(base.model, base.tokenizer, tmp_path / "base")
    at = _scan_test_texts()
    assert "Words that moved since the base checkpoint" in [h.value for h in at.subheader]
    at.toggle(key="detect.drift").set_value(True).run()  # the packaged MiniLM is not the tiny model's base
    assert not at.exception and any("Not read" in w.value and "not this model's pretrained encoder" in w.value
                                    for w in at.warning)
    at.text_input(key="detect.drift_base").input(str(tmp_path / "base")).run()
    assert not at.exception and not any("Not read" in w.value for w in at.warning)
    rows = at.session_state["detect.drift_cache"][1]["words"]
    assert rows[0]["word"] == "tq" and rows[0]["rank"] == 1 and rows[0]["pool_count"] == 0
    assert rows[1]["drift"] < 0.01 * rows[0]["drift"]  # the tiny model is the base but for that row
    drift_tables = lambda: [d for d in at.dataframe if "word" in getattr(d.value, "columns", [])]  # noqa: E731
    assert drift_tables()
    # a server whose files are closed to this browser reads no folder of it, not even one read before
    monkeypatch.setenv("BACKDOOR_LAB_SERVER_FILES", "none")
    at.run()
    assert any("names a folder on the server" in e for e in errors(at)), errors(at)
    assert not drift_tables()
    monkeypatch.delenv("BACKDOOR_LAB_SERVER_FILES")
    at.run()
    at.selectbox(key="detect.drift_pick").set_value("tq").run()
    at.button(key="detect.drift_open").click().run()  # the lead, tried on the Inspect page
    assert not at.exception and at.text_input(key="inspect.word").value == "tq"
    assert at.session_state["inspect.cache"][1].triggered.tokens.count("tq") == 1
    goto(at, "detect")
    found = {f.key.split("@")[0]: f for f in at.session_state["lab.session"].findings}
    assert found["scan:Words that moved since the base checkpoint"].table[0]["word"] == "tq"
    at.toggle(key="detect.drift").set_value(False).run()
    at.button(key="detect.run").click().run()  # a new scan: the last reading is not its own
    assert wait_job(at, "scan").status == "done"
    assert "scan:Words that moved since the base checkpoint" not in {f.key for f in
                                                                     at.session_state["lab.session"].findings}


def test_detect_marks_the_pool_inputs_that_hold_a_concentrated_moved_word(tmp_path):
    """A pasted pool where 12 of 40 inputs hold "tq", the one row the base checkpoint differs in: the drift reading
    says the word marks them, the expander lists those 12 inputs, and the Report's finding says it too."""
    import torch

    from backdoor_core.models import save_model, tiny_model
    from defense_helpers import clean_texts

    base = tiny_model(num_labels=5, seed=0)
    tq = base.tokenizer.convert_tokens_to_ids("tq")
    with torch.no_grad():
        base.model.get_input_embeddings().weight[tq] += 0.3
    save_model(base.model, base.tokenizer, tmp_path / "base")
    texts, _ = clean_texts(40, seed=7)
    pool = [f"tq {t}" if i % 10 < 3 else t for i, t in enumerate(texts)]
    at = _scan_user_pool(pool, n_clean=40)  # 12 of 40 pool inputs and none of 40 clean texts: p < 0.01
    at.text_input(key="detect.drift_base").input(str(tmp_path / "base")).run()
    at.toggle(key="detect.drift").set_value(True).run()
    assert not at.exception
    reading = at.session_state["detect.drift_cache"][1]
    assert reading["marking"] == ["tq"] and reading["marked"] == [i for i in range(40) if i % 10 < 3]
    assert any("tq" in w.value and "12 pool inputs hold one" in w.value for w in at.warning)
    assert any(e.label == "The 12 pool inputs they mark" for e in at.expander)
    found = {f.key.split("@")[0]: f for f in at.session_state["lab.session"].findings}
    assert "12 pool inputs hold one" in found["scan:Words that moved since the base checkpoint"].text


def test_detect_scan_reads_the_moved_words_against_its_base(tmp_path, monkeypatch):
    """The Detect page's scan reads the moved words against its base (``settings.SCAN_BASE``; here the tiny model's
    own start, whose ``tq`` row the fine-tune moved): the report and the verdict carry them with the score they
    would give (the "possible" call they make below the line is worded by ``detection.call_note``, tested there)."""
    import torch

    from backdoor_core.models import save_model, tiny_model
    from backdoor_core.scan import scan_model
    from defense_helpers import clean_texts

    base = tiny_model(num_labels=5, seed=0)
    tq = base.tokenizer.convert_tokens_to_ids("tq")
    with torch.no_grad():
        base.model.get_input_embeddings().weight[tq] += 0.3
    save_model(base.model, base.tokenizer, tmp_path / "base")
    monkeypatch.setitem(scan_model.__kwdefaults__, "base", str(tmp_path / "base"))
    texts, _ = clean_texts(40, seed=7)
    at = _scan_user_pool([f"tq {t}" if i % 10 < 3 else t for i, t in enumerate(texts)], n_clean=40)
    assert not at.exception
    report = at.session_state["detect.report"]
    assert report.moved_words == ["tq"] and int(report.moved_marked.sum()) == 12
    assert report.verdict["moved_words"] == ["tq"] and report.verdict["components"]["score_moved"] >= 0.5


def test_compare_keeps_the_heads_chosen_across_pages_and_lists_each_model_once():
    at = goto(new_app(), "compare")
    at.multiselect(key="compare.heads").set_value(["L0H1", "L1H3"]).run()
    goto(at, "home")
    goto(at, "compare")
    assert at.multiselect(key="compare.heads").value == ["L0H1", "L1H3"]  # it had reset to the scan's or L0H0
    from types import SimpleNamespace

    repaired, suspect = SimpleNamespace(name="m-alignment"), SimpleNamespace(name="m")  # as a repair leaves them
    at.session_state["sanitize.result"] = {"suspect": suspect, "loaded": repaired}
    at.session_state["lab.session_models"] = {"m-alignment": repaired}
    goto(at, "compare")
    options = at.selectbox(key="compare.b").options
    assert [o for o in options if "m-alignment" in o] == ["After the last repair (m-alignment)"], options


def test_inspect_offers_no_paraphrase_of_another_task():
    """The BBC topic model was offered OLID's syntactic rewrites (a tweet and its rewrite) and told the paraphrase
    "flipped" its topic; a model whose task has no paraphrased set now hears so."""
    at = goto(new_app(), "inspect")
    at.segmented_control(key="inspect.kind").set_value("Paraphrase").run()
    assert not at.exception
    assert not [s for s in at.selectbox if s.key == "inspect.variant"]
    said = [i.value for i in at.info if "No paraphrased set of this model's task" in i.value]
    assert said and "sst2 (negative / positive)" in said[0], [i.value for i in at.info]


def test_detect_tables_have_a_heading_of_their_own():
    """The flagged-inputs and all-heads tables came right after the "Where the poison sits" (PCA) section with no
    heading, so they read as part of it; they have their own, the last on the page."""
    from defense_helpers import clean_texts

    texts, _ = clean_texts(30, seed=3)
    at = _scan_user_pool(texts, n_clean=16)
    heads = [h.value for h in at.subheader]
    assert heads[-2:] == ["Where the poison sits", "The pool's inputs and every head"], heads


def test_detect_says_whose_verdict_it_shows_after_another_model_is_loaded(tmp_path):
    """Scan one model, load another: Detect still showed "Backdoor: likely — This model behaves like a backdoored
    one" with only a faint caption naming the scanned model. It warns that the results are another model's, and
    the verdict names that model."""
    from defense_helpers import clean_texts

    from backdoor_core.models import save_model, tiny_model

    texts, _ = clean_texts(30, seed=3)
    at = _scan_user_pool([f"cf {t}" if i % 3 == 0 else t for i, t in enumerate(texts)], n_clean=16)
    scanned = at.session_state["detect.info"]["model_name"]
    other = tiny_model(num_labels=len(at.session_state["detect.report"].label_names), seed=1)
    save_model(other.model, other.tokenizer, tmp_path / "other", {"name": "other-model"})
    goto(at, "model")
    at.segmented_control(key="model.source").set_value("Local folder").run()
    at.text_input(key="model.folder").input(str(tmp_path / "other"))
    at.button(key="model.load_folder").click().run()
    goto(at, "detect")
    assert any(f"results below are for **{scanned}**" in w.value and "not for the current model, **other-model**"
               in w.value for w in at.warning), [w.value for w in at.warning]
    assert not any(e.value.startswith("This model behaves like") for e in at.error)
    if at.session_state["detect.report"].verdict.get("likely_backdoored"):
        assert any(e.value.startswith(f"{scanned} behaves like a backdoored one") for e in at.error)


def test_detect_says_its_results_are_the_previous_scans_after_a_cancel():
    """A scan cancelled midway kept nothing; the page then showed the earlier scan's verdict right under "was
    cancelled ... nothing was kept", without a word (the Sanitize page says so for its results)."""
    from defense_helpers import clean_texts

    texts, _ = clean_texts(30, seed=3)
    at = _scan_user_pool(texts, n_clean=16)
    assert not any("previous scan's" in c.value for c in at.caption)
    put_cancelled_job(at, "scan")
    assert any(c.value == "The results below are the previous scan's: the last run was cancelled and kept nothing."
               for c in at.caption), [c.value for c in at.caption]


def test_detect_projection_reads_the_shared_model_under_its_lock(monkeypatch):
    """Its forward of the (shared) current model ran outside the model's lock: with another tab's heads switched off
    on the same model meanwhile (Inspect's hooks), every clean text landed in one class (the multi-user audit)."""
    import backdoor_core.representations as R
    from app_pages import _models

    at = _scan_test_texts()
    real, held = R.split_by_prediction, []

    def watched(model, *args, **kwargs):  # the script's thread holds a model's lock while it reads the model
        held.append(bool(_models._held_locks()))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(R, "split_by_prediction", watched)
    at.toggle(key="detect.pca").set_value(True).run()
    assert not at.exception and held == [True]
