"""bench/judge_accuracy.py: the judges it compares fit and predict, and its table puts the judge as it runs first
(synthetic data; the bench's own run is bench/results/judge_accuracy.md)."""

import numpy as np
import pytest
from bench_module import load_bench


def _bench():
    return load_bench("judge_accuracy")


def _blobs(n, rng):
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 8)) + 3.0 * y[:, None]  # two well separated classes
    return x, y


def test_every_judge_fits_and_separates_two_clear_classes():
    b = _bench()
    rng = np.random.default_rng(0)
    x_lab, y_lab = _blobs(40, rng)
    x_pool, _ = _blobs(60, rng)
    x_score, y_score = _blobs(30, rng)
    for fit in ("labelled", "self", "spread"):
        pred = b.fit_predict(fit, 1.0, x_lab, y_lab, np.vstack([x_pool, x_score]), x_score)
        assert pred.shape == (30,) and (pred == y_score).mean() > 0.9, fit
    with pytest.raises(ValueError, match="unknown fit"):
        b.fit_predict("other", 1.0, x_lab, y_lab, x_pool, x_score)


def test_table_puts_the_running_judge_first_and_marks_missing_cells():
    b = _bench()
    rows = [{"features": f, "C": c, "fit": fit, "n": n, "set": s, "accuracy_mean": acc, "accuracy_sd": 0.01,
             "draws": 3}
            for f, c, fit, n, s, acc in [("cls", 1.0, "labelled", 200, "clean", 0.6),
                                         ("mean", 1.0, "labelled", 1000, "clean", 0.8),
                                         ("mean", 0.1, "labelled", 200, "clean", 0.7),
                                         ("mean", 1.0, "labelled", 200, "clean", 0.75),
                                         ("mean", 1.0, "labelled", 200, "bible", 0.7),
                                         ("mean", 1.0, "self", 200, "bible", 0.72)]]
    md = b.markdown({"settings": {"draws": 3, "n_clean": 200, "n_pool_clean": 200, "n_pool_paraphrased": 50},
                     "rows": rows})
    table = [ln for ln in md.splitlines() if ln.startswith("| ") and not ln.startswith("| features")]
    assert table[0] == "| mean | 1 | labelled | 200 | 75.0 ± 1.0 | 70.0 ± 1.0 |"
    assert table[1] == "| mean | 0.1 | labelled | 200 | 70.0 ± 1.0 | - |"
    assert table[2] == "| mean | 1 | labelled | 1000 | 80.0 ± 1.0 | - |"
    assert [ln.split(" | ")[0] for ln in table] == ["| mean"] * 4 + ["| cls"]


def test_fewer_than_two_draws_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit):
        _bench().parse_args(["--draws", "1"])
    assert "--draws must be at least 2" in capsys.readouterr().err
