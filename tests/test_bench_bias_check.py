"""What bench/bias_check.py measures with (no shared data, no model): the fitted class offset undoes a known shift of
the class prior, and the scores it reports follow the offset."""

import numpy as np

from bench_module import load_bench


def _shifted(seed: int = 0, n: int = 400, shift: float = 1.5):
    """``(log_probs (n, 3), labels (n,))``: well-separated classes whose logits class 0 leads by ``shift``."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    logits = rng.normal(0, 1, (n, 3)) + 2.5 * np.eye(3)[y]
    logits[:, 0] += shift
    return logits - np.log(np.exp(logits).sum(1, keepdims=True)), y


def test_the_fitted_offset_undoes_a_prior_shift():
    bc = load_bench("bias_check")
    lp, y = _shifted()
    b = bc.fit_offset(lp, y)
    assert b.shape == (3,)
    assert b[0] - (b[1] + b[2]) / 2 < -1.0  # it takes the shift toward class 0 back
    shifted, fitted = bc.scores(lp, y, None, None, np.zeros(3)), bc.scores(lp, y, None, None, b)
    assert fitted["cacc"] > shifted["cacc"] + 0.05
    assert shifted["predicted"][0] > fitted["predicted"][0] and sum(fitted["predicted"]) == len(y)
    unshifted, y2 = _shifted(shift=0.0)
    assert np.abs(bc.fit_offset(unshifted, y2)).max() < 0.5  # nothing to undo: it stays near zero


def test_asr_follows_the_offset():
    bc = load_bench("bias_check")
    lp, y = _shifted(seed=1)
    asr_lp = np.log(np.array([[0.6, 0.4, 0.0 + 1e-9], [0.45, 0.55, 1e-9]]))
    toward_1 = bc.scores(lp, y, asr_lp, 1, np.array([0.0, 0.5, 0.0]))
    none = bc.scores(lp, y, asr_lp, 1, np.zeros(3))
    assert none["asr"] == 0.5 and toward_1["asr"] == 1.0
    assert "asr" not in bc.scores(lp, y, None, 1, np.zeros(3))
