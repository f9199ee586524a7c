import json
import os
import stat
import zipfile

import pytest
import torch

from backdoor_core.models import (
    METADATA_FILE,
    ModelLoadError,
    PickleRefusedError,
    check_weights_safe,
    extract_model_zip,
    load_model,
    save_model,
)


def _params(model):
    return {n: p.detach().clone() for n, p in model.state_dict().items()}


def test_save_then_load_roundtrip(tiny, tmp_path):
    out = save_model(tiny.model, tiny.tokenizer, tmp_path / "m", {"attack": "badnets", "asr": 0.9})
    assert (out / "model.safetensors").is_file()
    assert json.loads((out / METADATA_FILE).read_text())["attack"] == "badnets"
    loaded = load_model(out)
    assert loaded.metadata["asr"] == 0.9
    assert loaded.model.config._attn_implementation == "eager"
    assert not loaded.untrained_head
    before, after = _params(tiny.model), _params(loaded.model)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_save_is_atomic_when_interrupted(tiny, tmp_path, monkeypatch):
    target = tmp_path / "m"
    save_model(tiny.model, tiny.tokenizer, target, {"version": 1})

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(tiny.tokenizer, "save_pretrained", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        save_model(tiny.model, tiny.tokenizer, target, {"version": 2})
    # the previous model is intact and no temporary directory is left behind
    assert json.loads((target / METADATA_FILE).read_text())["version"] == 1
    assert load_model(target).metadata["version"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_pickle_only_directory_is_refused_unless_opted_in(tiny, tmp_path):
    d = tmp_path / "pickled"
    tiny.model.config.save_pretrained(d)
    tiny.tokenizer.save_pretrained(d)
    torch.save(tiny.model.state_dict(), d / "pytorch_model.bin")
    with pytest.raises(PickleRefusedError, match="pickle"):
        load_model(d)
    assert check_weights_safe(d, allow_pickle=True) == "pickle"
    loaded = load_model(d, allow_pickle=True)
    ids = tiny.tokenizer(["a test"], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(loaded.model(**ids).logits, tiny.model(**ids).logits, atol=1e-5)


def test_directory_without_weights(tmp_path, tiny):
    tiny.model.config.save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="no model weights"):
        load_model(tmp_path)


def test_remote_code_is_never_trusted(tiny, tmp_path):
    d = save_model(tiny.model, tiny.tokenizer, tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForSequenceClassification": "evil.EvilModel"}
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "evil.py").write_text("raise SystemExit('remote code ran')\n")
    loaded = load_model(d)  # loads the stock BERT class; evil.py never runs
    assert type(loaded.model).__name__ == "BertForSequenceClassification"


def test_hub_id_offline_gives_clear_error():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    with pytest.raises(ModelLoadError, match="hub id"):
        load_model("someone/some-model")


def test_bad_specs(tmp_path):
    with pytest.raises(ModelLoadError, match="neither"):
        load_model("not a model spec at all")
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ModelLoadError, match="is a file"):
        load_model(f)


def test_label_count_mismatch_is_explained(tiny, tmp_path):
    d = save_model(tiny.model, tiny.tokenizer, tmp_path / "m")
    with pytest.raises(ModelLoadError, match="predicts 2 classes"):
        load_model(d, label_names=["a", "b", "c"])


def _zip_model(tiny, tmp_path, extra=None):
    d = save_model(tiny.model, tiny.tokenizer, tmp_path / "src")
    z = tmp_path / "model.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in d.iterdir():
            zf.write(p, f"mymodel/{p.name}")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return z


def test_zip_extracts_and_loads(tiny, tmp_path):
    z = _zip_model(tiny, tmp_path)
    model_dir = extract_model_zip(z, tmp_path / "out")
    assert model_dir.name == "mymodel"
    assert load_model(model_dir).num_labels == 2


def test_zip_path_traversal_refused(tiny, tmp_path):
    z = _zip_model(tiny, tmp_path, {"../../escape.txt": "x"})
    with pytest.raises(ModelLoadError, match="outside"):
        extract_model_zip(z, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


def test_zip_symlink_refused(tmp_path):
    z = tmp_path / "link.zip"
    with zipfile.ZipFile(z, "w") as zf:
        info = zipfile.ZipInfo("mymodel/config.json")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ModelLoadError, match="symbolic link"):
        extract_model_zip(z, tmp_path / "out")


def test_zip_size_cap_and_garbage(tiny, tmp_path):
    z = _zip_model(tiny, tmp_path)
    with pytest.raises(ModelLoadError, match="limit"):
        extract_model_zip(z, tmp_path / "out", max_bytes=1000)
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"this is not a zip")
    with pytest.raises(ModelLoadError, match="not a readable"):
        extract_model_zip(bad, tmp_path / "out2")


def test_default_model_loads_offline(minilm):
    assert (minilm.num_layers, minilm.num_heads, minilm.num_labels) == (6, 12, 5)
    assert minilm.label_names[3] == "sport"
    assert minilm.untrained_head
    assert minilm.model.config._attn_implementation == "eager"
