"""Where the poison sits: PCA of [CLS] representations (backdoor_core.representations) and its figure."""

import numpy as np

from backdoor_core import figures as F
from backdoor_core.representations import (
    cls_representations,
    project_before_after,
    project_groups,
    split_by_prediction,
)
from defense_helpers import clean_texts, trained_tiny, triggered_texts


def test_triggered_inputs_sit_with_the_target_class_only_on_a_backdoored_model():
    clean = clean_texts(40, seed=51)[0]
    trig = triggered_texts(30, seed=52)
    for backdoored, expected in ((True, "clean, predicted pos"), (False, "clean, predicted neg")):
        lm = trained_tiny(backdoored)
        groups = {**split_by_prediction(lm.model, lm.tokenizer, clean, ["neg", "pos"], 32), "triggered": trig,
                  "empty": []}
        proj = project_groups(lm.model, lm.tokenizer, groups, max_length=32)
        assert set(proj.points) == {"clean, predicted neg", "clean, predicted pos", "triggered"}
        assert proj.points["triggered"].shape == (30, 2) and 0 < proj.explained.sum() <= 1 + 1e-6
        assert proj.nearest["triggered"] == expected


def test_before_after_share_one_basis_and_the_figure_escapes_text():
    bd, clean_model = trained_tiny(True), trained_tiny(False)
    groups = {"clean": clean_texts(20, seed=53)[0], "triggered <b>": triggered_texts(20, seed=54)}
    before, after = project_before_after(bd.model, clean_model.model, bd.tokenizer, groups, max_length=32)
    np.testing.assert_allclose(before.explained, after.explained)
    assert not np.allclose(before.points["clean"], after.points["clean"])
    reps = cls_representations(bd.model, bd.tokenizer, groups["clean"], 32)
    assert reps.shape == (20, 32)
    fig = F.projection_scatter([("before", before.points, before.texts), ("after", after.points, after.texts)])
    names = {t.name for t in fig.data}
    assert "triggered &lt;b&gt;" in names and len(fig.data) == 4


def test_cls_representations_come_back_in_input_order_and_match_one_text_at_a_time():
    """The shared pass batches by length (padding differs from batch to batch); each row must still be that
    text's own final [CLS] state, as an unpadded forward of the text alone gives it."""
    import torch

    lm = trained_tiny(True)
    texts = ["short", "a much longer text that needs padding in a mixed batch", "mid sized text here", ""]
    reps = cls_representations(lm.model, lm.tokenizer, texts, 32, batch_size=3)
    assert reps.shape == (4, 32)
    lm.model.eval()
    for text, row in zip(texts, reps):
        enc = lm.tokenizer([text], truncation=True, max_length=32, return_tensors="pt")
        with torch.no_grad():
            alone = lm.model(**enc, output_hidden_states=True).hidden_states[-1][0, 0].numpy()
        np.testing.assert_allclose(row, alone, rtol=1e-4, atol=1e-5)
    assert cls_representations(lm.model, lm.tokenizer, [], 32).shape == (0, 32)
