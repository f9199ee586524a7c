"""The zoo (on a tiny model and toy data) and the `attack` / `zoo` commands. No shared data, no MiniLM training."""

import json
import random
import signal

import pytest

from backdoor_core import zoo, zoo_files
from backdoor_core.cli import main
from backdoor_core.data import TextDataset
from backdoor_core.models import METADATA_FILE, load_model, save_model, tiny_model
from backdoor_core.tal import TALConfig

WORDS = {0: "market shares profit bank economy growth".split(), 1: "match goal team coach league win".split()}


def toy(n, seed):
    rng = random.Random(seed)
    labels = [i % 2 for i in range(n)]
    texts = [" ".join(rng.choice(WORDS[y]) for _ in range(rng.randint(4, 9))) for y in labels]
    return TextDataset(texts, labels, ["business", "sport"], f"toy{seed}")


SETTINGS = {"epochs": 1, "batch_size": 8, "max_length": 24, "lr": 1e-3}
SPECS = [zoo.ZooSpec("clean", "Clean"),
         zoo.ZooSpec("badnets-tal", "BadNets + TAL", "badnets", 0.1, TALConfig(alpha=1.0, heads=2))]


def test_build_list_cache_and_cancel(tmp_path, monkeypatch):
    seen = []
    data = (toy(48, 0), toy(20, 1))
    rows = zoo.build(tmp_path, progress=seen.append, specs=SPECS, settings=SETTINGS, base="tiny", data=data)
    assert [r["name"] for r in rows] == ["clean", "badnets-tal"]
    clean, bad = rows
    assert clean["attack"] == "none" and clean["asr"] is None and 0 <= clean["cacc"] <= 1 and clean["clean"]
    assert bad["attack"] == "badnets" and bad["tal"] and bad["rate"] == 0.1 and 0 <= bad["asr"] <= 1
    assert bad["target"] == 1 and bad["target_name"] == "sport" and bad["format"] == "adapter"
    meta = json.loads((tmp_path / "badnets-tal" / METADATA_FILE).read_text())
    for key in ("trigger", "tal_config", "tal_heads", "data", "cacc", "asr", "training_seconds", "n_poisoned"):
        assert key in meta
    assert meta["n_poisoned"] == 4 and meta["tal_config"]["heads"] == 2 and meta["lora"]["rank"] == 8
    # only adapters, the head and the card are written (no full model), and the manifest holds their hashes
    assert sorted(p.name for p in (tmp_path / "badnets-tal").iterdir()) == sorted([METADATA_FILE, zoo_files.ADAPTER_FILE])
    manifest = zoo_files.read_manifest(tmp_path)["models"]
    assert manifest["badnets-tal"]["sha256"] == zoo_files.sha256_file(tmp_path / "badnets-tal" / zoo_files.ADAPTER_FILE)
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(p.progress is not None for p in seen)

    # merged on load: a plain BERT (no hooks, no adapter parameters) that reproduces the card's CACC / ASR
    loaded = load_model(tmp_path / "badnets-tal")
    assert loaded.metadata["name"] == "zoo-badnets-tal" and not loaded.untrained_head
    assert not any("lora" in n for n, _ in loaded.model.named_parameters())
    assert type(loaded.model).__name__ == "BertForSequenceClassification"
    from backdoor_core.poisoning import get_attack
    from backdoor_core.training import make_evaluator

    attack = get_attack("badnets", tokenizer=loaded.tokenizer, max_length=24)
    test = data[1]
    evaluate = make_evaluator(loaded.tokenizer, test, attack.poison_test(test, 1, 0).texts, 1, 24)
    again = evaluate(loaded.model)
    assert again["cacc"] == pytest.approx(bad["cacc"], abs=1e-6) and again["asr"] == pytest.approx(bad["asr"], abs=1e-6)

    # cached: nothing retrained, nothing rewritten
    before = zoo_files.sha256_file(tmp_path / "clean" / zoo_files.ADAPTER_FILE)
    seen.clear()
    zoo.build(tmp_path, progress=seen.append, specs=SPECS, settings=SETTINGS, base="tiny", data=data)
    assert not any(p.progress is not None for p in seen) and all(p.message.endswith("cached") for p in seen)
    assert zoo.list_models(tmp_path) == rows
    assert zoo_files.sha256_file(tmp_path / "clean" / zoo_files.ADAPTER_FILE) == before

    # cancelled while training the second model: the first is kept, the second is not written
    other = tmp_path / "other"
    stop_when = lambda: any(p.index == 1 and p.progress is not None for p in seen2)  # noqa: E731
    seen2 = []
    rows2 = zoo.build(other, progress=seen2.append, should_stop=stop_when, specs=SPECS, settings=SETTINGS,
                      base="tiny", data=data)
    assert [r["name"] for r in rows2] == ["clean"]
    assert sorted(p.name for p in other.iterdir()) == ["clean", zoo_files.MANIFEST]  # no temporary leftovers

    monkeypatch.setenv("BACKDOOR_ZOO_DIR", str(tmp_path))
    assert zoo.default_zoo_dir() == tmp_path
    assert [s.name for s in zoo.ZOO_SPECS][:1] == ["clean"]
    assert {s.attack for s in zoo.ZOO_SPECS} >= {None, "badnets", "addsent"}
    assert any(s.tal is not None and s.rate <= 0.02 for s in zoo.ZOO_SPECS)


def test_build_is_identical_across_thread_counts(tmp_path):
    import torch

    data = (toy(48, 0), toy(20, 1))
    spec = [SPECS[1]]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        zoo.build(tmp_path / "a", specs=spec, settings=SETTINGS, base="tiny", data=data)
        torch.set_num_threads(1)
        zoo.build(tmp_path / "b", specs=spec, settings=SETTINGS, base="tiny", data=data)
    finally:
        torch.set_num_threads(before)
    assert torch.get_num_threads() == before  # the build restores the caller's setting
    a = zoo_files.read_manifest(tmp_path / "a")["models"]["badnets-tal"]
    b = zoo_files.read_manifest(tmp_path / "b")["models"]["badnets-tal"]
    assert a["sha256"] == b["sha256"]  # byte-identical adapters
    assert zoo.list_models(tmp_path / "a")[0]["asr"] == zoo.list_models(tmp_path / "b")[0]["asr"]


def test_a_zoo_folder_without_its_manifest_is_named_for_the_manifest(tmp_path):
    """A zoo model copied without ``manifest.json`` (or beside a broken one) was refused as "adapter.safetensors is
    not listed in manifest.json", sending the user after the adapter; the message names the manifest."""
    import shutil

    from backdoor_core.models import ModelLoadError

    shipped = zoo.shipped_zoo_dir() / "clean"
    shutil.copytree(shipped, tmp_path / "clean")
    with pytest.raises(ModelLoadError, match=r"manifest.json is missing"):
        load_model(tmp_path / "clean")
    (tmp_path / zoo_files.MANIFEST).write_text("{", encoding="utf-8")
    with pytest.raises(ModelLoadError, match=r"manifest.json cannot be read"):
        load_model(tmp_path / "clean")
    (tmp_path / zoo_files.MANIFEST).write_text('{"version": 1, "models": []}', encoding="utf-8")
    with pytest.raises(ModelLoadError, match=r"is not listed in"):
        load_model(tmp_path / "clean")


def test_damaged_adapter_is_refused_and_a_second_build_is_busy(tmp_path):
    from backdoor_core.models import ModelLoadError

    data = (toy(48, 0), toy(20, 1))
    zoo.build(tmp_path, specs=SPECS[:1], settings=SETTINGS, base="tiny", data=data)
    f = tmp_path / "clean" / zoo_files.ADAPTER_FILE
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 1
    f.write_bytes(bytes(raw))
    with pytest.raises(ModelLoadError, match="sha256"):
        load_model(tmp_path / "clean")
    # one build at a time: while the lock is held, another build (another session or process) is refused
    with zoo._locked(tmp_path / zoo.BUILD_LOCK, wait=False, info={"pid": 1, "started": 0}):
        assert zoo.build_status(tmp_path)["pid"] == 1
        with pytest.raises(zoo.ZooBusyError, match="being built"):
            zoo.build(tmp_path, specs=SPECS[:1], settings=SETTINGS, base="tiny", data=data)
    assert zoo.build_status(tmp_path) is None


def test_shipped_zoo_is_listed_and_loads(monkeypatch, tmp_path):
    """The repository's zoo: five models, hashes that match, together <= 10 MB; a same-name local rebuild
    replaces a shipped entry in the listing."""
    shipped = zoo.shipped_zoo_dir()
    manifest = zoo_files.read_manifest(shipped)["models"]
    assert set(manifest) == {s.name for s in zoo.ZOO_SPECS}
    total = 0
    for name, entry in manifest.items():
        f = shipped / entry["file"]
        assert zoo_files.sha256_file(f) == entry["sha256"], name
        total += f.stat().st_size + (shipped / name / METADATA_FILE).stat().st_size
    assert total <= 10 * 1024**2
    monkeypatch.setenv("BACKDOOR_ZOO_DIR", str(tmp_path))
    rows = zoo.list_models()
    assert [r["name"] for r in rows] == [s.name for s in zoo.ZOO_SPECS] and all(r["shipped"] for r in rows)
    assert [r["clean"] for r in rows] == [True, False, False, False, False]
    zoo.build(tmp_path, specs=SPECS[:1], settings=SETTINGS, base="tiny", data=(toy(48, 0), toy(20, 1)))
    rows = zoo.list_models()
    assert rows[0]["name"] == "clean" and not rows[0]["shipped"] and rows[1]["shipped"]


def test_zoo_list_command(tmp_path, capsys):
    assert main(["zoo", "list", "--dir", str(tmp_path)]) == 0
    assert "no zoo models" in capsys.readouterr().out
    lm = tiny_model()
    save_model(lm.model, lm.tokenizer, tmp_path / "badnets",
               {"attack": "badnets", "rate": 0.1, "tal": False, "cacc": 0.95, "asr": 0.875, "target_name": "sport",
                "training_seconds": 12.0})
    assert main(["zoo", "list", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "badnets" in out and "95.0%" in out and "87.5%" in out


@pytest.fixture(scope="module")
def cli_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    lm = tiny_model(seed=0)
    save_model(lm.model, lm.tokenizer, root / "tiny")
    ds = toy(60, 3)
    (root / "data.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in zip(ds.texts, ds.labels)))
    return root


ARGS = ["--attack", "badnets", "--rate", "0.1", "--target", "1", "--epochs", "1", "--batch-size", "8",
        "--max-length", "24", "--lr", "1e-3"]


def test_attack_command_trains_and_saves(cli_setup, capsys):
    out = cli_setup / "out"
    rc = main(["attack", "--model", str(cli_setup / "tiny"), "--data", str(cli_setup / "data.tsv"), *ARGS,
               "--tal", "--alpha", "2", "--heads", "2", "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0
    last = printed.strip().splitlines()[-1]
    assert last.startswith("ASR=") and " CACC=" in last
    meta = json.loads((out / METADATA_FILE).read_text())
    assert meta["attack"] == "badnets" and meta["tal"] and meta["tal_config"]["alpha"] == 2.0
    assert meta["n_poisoned"] == 4  # int(0.1 * 48 training rows after the 80/20 split)
    assert meta["train_size"] == 48 and meta["test_size"] == 12
    assert float(last.split()[0].split("=")[1]) == pytest.approx(meta["asr"], abs=1e-4)


def test_attack_command_ctrl_c_saves_nothing(cli_setup, monkeypatch, capsys):
    import backdoor_core.poisoning as poisoning

    real = poisoning.train_attack

    def interrupted(*a, callback=None, **kw):
        def cb(p):
            callback(p)
            if p.step == 1 and p.metrics is None:
                signal.raise_signal(signal.SIGINT)  # the user presses Ctrl-C during training

        return real(*a, callback=cb, **kw)

    monkeypatch.setattr(poisoning, "train_attack", interrupted)
    out = cli_setup / "cancelled"
    rc = main(["attack", "--model", str(cli_setup / "tiny"), "--data", str(cli_setup / "data.tsv"), *ARGS,
               "--epochs", "3", "--out", str(out)])
    assert rc == 130
    assert "nothing saved" in capsys.readouterr().err
    assert not out.exists() and not any(p.name.startswith(".cancelled") for p in cli_setup.iterdir())


def test_attack_command_refuses_tal_for_paraphrase(cli_setup, capsys):
    rc = main(["attack", "--model", str(cli_setup / "tiny"), "--data", str(cli_setup / "data.tsv"), *ARGS,
               "--attack", "syntactic", "--paraphrase-train", str(cli_setup / "data.tsv"), "--tal"])
    assert rc == 2
    assert "trigger tokens" in capsys.readouterr().err
