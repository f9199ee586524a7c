"""Attack lab page with style backdoors: the style choice lists the current dataset's shared paraphrase sets (a
toy shared root here, one set not row-aligned), trains from one, and refuses with a message where none exists."""

from __future__ import annotations

import random
from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")
WORDS = {0: "dull bad boring flat awful".split(), 1: "great fun lovely warm bright".split()}


def _write(path: Path, n: int, seed: int, prefix: str = "") -> None:
    rng = random.Random(seed)
    rows = [(prefix + " ".join(rng.choice(WORDS[i % 2]) for _ in range(6)) + f" n{seed}x{i}", i % 2) for i in range(n)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))


def test_style_attack_uses_the_datasets_shared_sets(monkeypatch, tmp_path):
    root = tmp_path / "shared"
    _write(root / "sst2" / "clean" / "train.tsv", 60, 1)
    _write(root / "sst2" / "clean" / "test.tsv", 30, 2)
    _write(root / "sst2" / "style_verse" / "train.tsv", 37, 3, "thus ")  # not row-aligned (37 vs 60 rows)
    _write(root / "sst2" / "style_verse" / "test.tsv", 20, 4, "thus ")
    monkeypatch.setenv("BACKDOOR_SHARED_DATA", str(root))
    monkeypatch.setenv("BACKDOOR_LAB_TEST_MODEL", "tiny")
    monkeypatch.setenv("BACKDOOR_ZOO_DIR", str(tmp_path / "zoo"))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.session_state["lab.data_spec"] = "bbc"  # no shared paraphrase set: a message, no job
    at.switch_page("app_pages/attack.py").run()
    at.selectbox(key="attack.name").set_value("style").run()
    at.button(key="attack.train").click().run()
    assert not at.exception
    assert any("no shared style paraphrase set" in e.value for e in at.error), [e.value for e in at.error]
    assert "attack" not in at.session_state["lab.jobs"]

    at.session_state["lab.data_spec"] = "sst2"
    at.run()
    assert at.selectbox(key="attack.style").options == ["verse"]
    at.number_input(key="attack.n_train").set_value(40)
    at.number_input(key="attack.n_test").set_value(30)
    at.number_input(key="attack.rate").set_value(20.0)
    at.select_slider(key="attack.max_len").set_value(32)
    at.run()
    at.button(key="attack.train").click().run()
    job = at.session_state["lab.jobs"]["attack"]
    assert job.wait(120)
    at.run()
    assert not at.exception and job.status == "done", job.snapshot().traceback
    card = at.session_state["attack.result"]["card"]
    assert card.attack == "style_verse" and card.n_poisoned == 8 and card.poisoned_test_size == 10
