"""bench/attack_tal.py across data (no training): result and model paths per dataset, the run list per dataset,
and the clean rate / lift columns of its Markdown."""

import pytest

from bench import attack_tal as B


def test_paths_keep_sst2_names_and_separate_other_data():
    js, md, models = B.paths_for("sst2")
    assert (js.name, md.name, models.name) == ("attack_tal.json", "attack_tal.md", "attack_tal")
    js, md, models = B.paths_for("olid", "pilot")
    assert (js.name, md.name, models.name) == ("attack_tal_olid_pilot.json", "attack_tal_olid_pilot.md", "attack_tal_olid")


def test_run_list_per_dataset():
    names = [r["name"] for r in B.run_list(B.parse_args(["--data", "agnews", "--clean-seeds", "1"]))]
    assert names[0] == "clean" and "badnets_r0.01_tal" in names and "addsent_r0.005" in names
    assert not any(n.startswith(("syntactic", "style")) for n in names)  # shared paraphrase sets: SST-2 only
    default = [r["name"] for r in B.run_list(B.parse_args([]))]
    assert "style_bible_r0.2" in default and not any(n.startswith(("style_shakespeare", "style_tweets"))
                                                     for n in default)  # the extra styles: on request
    assert [r["name"] for r in B.run_list(B.parse_args(["--only", "style_tweets,style_shakespeare"]))] == [
        "style_shakespeare_r0.2", "style_tweets_r0.2"]
    with pytest.raises(SystemExit, match="sst2 only"):
        B.run_list(B.parse_args(["--data", "agnews", "--only", "style_tweets"]))
    # an explicit target names the models, so the weak models of both targets share one folder
    assert [r["name"] for r in B.run_list(B.parse_args(["--only", "clean,badnets", "--rates", "0.02", "--no-tal",
                                                       "--target", "0", "--clean-seeds", "1"]))] == [
        "clean", "badnets_r0.02_t0"]
    with pytest.raises(SystemExit, match="sst2 only"):
        B.run_list(B.parse_args(["--data", "olid", "--only", "clean,syntactic"]))


def test_markdown_reports_clean_rate_and_lift():
    settings = {"target": 1, "target_name": "offensive", "mode": "quick", "train_size": 4000, "epochs": 1,
                "max_length": 64, "lr": 2e-4, "batch_size": 16, "seed": 0, "tal_alpha": 1.0, "tal_heads": "all"}
    run = {"attack": "badnets", "rate": 0.01, "tal": True, "n_poisoned": 40, "asr": 0.9, "clean_rate": 0.25,
           "lift": 0.65, "cacc": 0.8, "seconds": 300}
    md = B.markdown({"dataset": "olid", "clean_cacc": 0.81, "settings": settings, "runs": [run]})
    assert "OLID" in md and "target label 1 (offensive)" in md and "| clean rate | lift |" in md
    assert "| badnets | 1% | 40 | yes | 0.900 | 0.250 | +0.650 | 0.8000 | -1.0 pt | 300 |" in md


def test_a_partial_run_adds_to_the_manifest_and_keeps_the_other_models(tmp_path):
    """Training a few models into a folder (``--only``, ``--rates``) replaces their entries by name and keeps every
    other entry: before, a run without ``--resume`` rewrote the manifest with its own models only, and the defense
    benchmark no longer saw the rest of the folder."""
    import json

    path = tmp_path / "manifest.json"
    B.upsert_manifest(path, {"name": "clean", "asr": None})
    B.upsert_manifest(path, {"name": "badnets_r0.03", "asr": 0.83})
    B.upsert_manifest(path, {"name": "badnets_r0.03", "asr": 0.85})  # retrained: replaced, not duplicated
    assert json.loads(path.read_text()) == {"models": [{"name": "clean", "asr": None},
                                                       {"name": "badnets_r0.03", "asr": 0.85}]}
    assert not list(tmp_path.glob("*.tmp"))  # written through a temporary file
    path.write_text('{"models": [{"asr": 1}]}')  # not a manifest: an error naming the file, left as it was
    with pytest.raises(SystemExit, match="is not a models manifest"):
        B.upsert_manifest(path, {"name": "clean"})
    assert path.read_text() == '{"models": [{"asr": 1}]}'
    path.write_text("not json")
    with pytest.raises(SystemExit, match=str(path)):
        B.upsert_manifest(path, {"name": "clean"})
