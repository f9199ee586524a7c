"""Long jobs: Cancel ends them within a bounded number of batches or steps, progress goes from 0 to its total,
a cancelled or killed job leaves no partial result behind (and the previous result in place), and the same seed
gives the same numbers. Tiny models and packaged data only; each test takes seconds."""

from __future__ import annotations

import contextlib
import copy

import pytest

from backdoor_core.data import TextDataset
from backdoor_core.forward import Cancelled
from defense_helpers import clean_texts, nudged, trained_tiny, triggered_texts


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    """A saved base (the trained clean tiny model) and a "fine-tuned" copy of it: the repair's judge runs."""
    from backdoor_core.models import save_model

    folder = tmp_path_factory.mktemp("judge") / "base"
    base = trained_tiny(False)
    save_model(base.model, base.tokenizer, folder)
    return base, folder, nudged(base.model, 0.03, seed=1)


@pytest.mark.parametrize("lazy", [True, False], ids=["label-judge", "judge-led-labels"])
def test_cancel_while_the_judge_fits_ends_the_repair_at_its_next_batch(judged, monkeypatch, lazy):
    """Cancel clicked once the pseudo-label judge starts its fit (a forward pass of the pretrained encoder over
    the clean and pool texts, in batches) ends the repair at the judge's next batch with ``forward.Cancelled``,
    as Cancel in the other stages before training does, and no training step runs. The judge ran every batch of
    its fit first (and the repair then returned as if training had been cancelled)."""
    from backdoor_core import reference
    from backdoor_core.defenses import run_defense

    base, folder, tuned = judged
    model = copy.deepcopy(tuned)
    texts, labels = clean_texts(48, seed=5)
    pool = triggered_texts(48, seed=6) + clean_texts(48, seed=7)[0]  # 144 texts to embed: 5 batches of 32
    state = {"judging": False, "batches": 0}
    real = reference.pretrained_encoder

    @contextlib.contextmanager
    def spied(m, weights):
        with real(m, weights) as out:
            state["judging"] = True
            yield out

    monkeypatch.setattr(reference, "pretrained_encoder", spied)

    def count(*_):
        if state["judging"]:
            state["batches"] += 1

    model.register_forward_pre_hook(count)
    steps = []
    kw = (dict(heads=["L0H1", "L1H0"], label_judge="fill") if lazy  # the judge is fit inside sanitize_heads
          else dict(judge_flags=True, label_judge="none"))  # fit on the whole pool after the scan
    with pytest.raises(Cancelled):
        run_defense("alignment", model, base.tokenizer, TextDataset(texts, labels, ["neg", "pos"]),
                    pool_texts=pool, base=str(folder), max_steps=3, max_length=32, seed=0, ffn="none",
                    repair_seeds=1, copy=False, callback=steps.append, should_stop=lambda: state["judging"], **kw)
    assert state["judging"] and state["batches"] <= 1 and steps == []
    assert state["batches"] == 0  # the check comes before each batch
