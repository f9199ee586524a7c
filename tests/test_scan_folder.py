"""bench/scan_folder.py: finds model folders, scans each one (a broken one gets a one-line error, the others go
on); the parallel run uses the same ``scan_one`` in worker processes."""

from pathlib import Path

from bench_module import load_bench
from defense_helpers import clean_texts, triggered_texts


def _module():
    return load_bench("scan_folder")


def test_scan_one_and_model_dirs(tmp_path):
    from backdoor_core.models import save_model, tiny_model

    sf = _module()
    lm = tiny_model(arch="gpt2")
    save_model(lm.model, lm.tokenizer, tmp_path / "models" / "a" / "gpt2")
    (tmp_path / "models" / "broken").mkdir(parents=True)
    (tmp_path / "models" / "broken" / "config.json").write_text("{}")
    texts, labels = clean_texts(16, 1)
    (tmp_path / "clean.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in zip(texts, labels)))
    dirs = sf.model_dirs(tmp_path / "models")
    assert [d.name for d in dirs] == ["gpt2", "broken"] or [d.name for d in dirs] == ["broken", "gpt2"]
    pool = triggered_texts(4, 2) + clean_texts(4, 3)[0]
    rows = {Path(d).name: sf.scan_one(str(d), str(tmp_path / "clean.tsv"), "dev", 16, pool, "cpu", 32, 0)
            for d in dirs}
    assert rows["broken"]["error"].startswith("ModelLoadError") and "\n" not in rows["broken"]["error"]
    ok = rows["gpt2"]
    assert ok["error"] == "" and ok["architecture"] == "GPT-2" and 0.0 <= ok["score"] <= 1.0 and ok["pool"] == 8
