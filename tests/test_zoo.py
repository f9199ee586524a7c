"""The zoo (on a tiny model and toy data) and the `attack` / `zoo` commands. No shared data, no MiniLM training."""

import json
import random
import signal

import pytest

from backdoor_core import zoo
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
    made, seen = [], []

    def factory(names):
        made.append(names)
        return tiny_model(num_labels=len(names), seed=0)

    data = (toy(48, 0), toy(20, 1))
    rows = zoo.build(tmp_path, progress=seen.append, specs=SPECS, settings=SETTINGS, model_factory=factory,
                     data=data)
    assert [r["name"] for r in rows] == ["clean", "badnets-tal"] and len(made) == 2
    clean, bad = rows
    assert clean["attack"] == "none" and clean["asr"] is None and 0 <= clean["cacc"] <= 1
    assert bad["attack"] == "badnets" and bad["tal"] and bad["rate"] == 0.1 and 0 <= bad["asr"] <= 1
    assert bad["target"] == 1 and bad["target_name"] == "sport"
    meta = json.loads((tmp_path / "badnets-tal" / METADATA_FILE).read_text())
    for key in ("trigger", "tal_config", "tal_heads", "data", "cacc", "asr", "training_seconds", "n_poisoned"):
        assert key in meta
    assert meta["n_poisoned"] == 4 and meta["tal_config"]["heads"] == 2
    assert load_model(tmp_path / "badnets-tal").metadata["name"] == "zoo-badnets-tal"
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(p.progress is not None for p in seen)

    # cached: nothing retrained
    zoo.build(tmp_path, specs=SPECS, settings=SETTINGS, model_factory=factory, data=data)
    assert len(made) == 2
    assert zoo.list_models(tmp_path) == rows

    # cancelled while training the second model: the first is kept, the second is not written
    other = tmp_path / "other"
    stop_when = lambda: any(p.index == 1 and p.progress is not None for p in seen2)  # noqa: E731
    seen2 = []
    rows2 = zoo.build(other, progress=seen2.append, should_stop=stop_when, specs=SPECS, settings=SETTINGS,
                      model_factory=factory, data=data)
    assert [r["name"] for r in rows2] == ["clean"]
    assert sorted(p.name for p in other.iterdir()) == ["clean"]  # no temporary leftovers

    monkeypatch.setenv("BACKDOOR_ZOO_DIR", str(tmp_path))
    assert zoo.default_zoo_dir() == tmp_path
    assert [s.name for s in zoo.ZOO_SPECS][:1] == ["clean"]
    assert {s.attack for s in zoo.ZOO_SPECS} >= {None, "badnets", "addsent"}
    assert any(s.tal is not None and s.rate <= 0.02 for s in zoo.ZOO_SPECS)


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
