import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from ecgmae.eval.metrics import (
    auroc_per_class,
    bootstrap_ci,
    classification_report,
    fmax,
    macro_auroc,
    macro_f1,
)


def _data(seed=0, n=300, k=5):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, k)) < 0.3).astype(int)
    p = np.clip(0.35 * y + rng.random((n, k)) * 0.8, 0, 1)
    p[:, 0] = np.round(p[:, 0], 1)  # ties
    return y, p


def test_auroc_matches_sklearn_with_ties():
    y, p = _data()
    ours = auroc_per_class(y, p)
    ref = [roc_auc_score(y[:, k], p[:, k]) for k in range(y.shape[1])]
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    assert macro_auroc(y, p) == pytest.approx(np.mean(ref))


def test_auroc_skips_degenerate_classes():
    y, p = _data()
    y[:, 2] = 0
    auc = auroc_per_class(y, p)
    assert np.isnan(auc[2])
    assert macro_auroc(y, p) == pytest.approx(np.nanmean(auc))


def test_macro_f1_matches_sklearn():
    y, p = _data(1)
    assert macro_f1(y, p) == pytest.approx(f1_score(y, p >= 0.5, average="macro", zero_division=0))


def test_fmax_perfect_and_random():
    y, _ = _data(2)
    assert fmax(y, y.astype(float)) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    assert fmax(y, rng.random(y.shape)) < 0.6


def test_bootstrap_ci_brackets_estimate_and_is_seeded():
    y, p = _data(3)
    lo, hi = bootstrap_ci(y, p, n_boot=200, seed=1)
    assert lo < macro_auroc(y, p) < hi
    assert (lo, hi) == bootstrap_ci(y, p, n_boot=200, seed=1)


def test_report_keys_and_names():
    y, p = _data(4)
    rep = classification_report(y, p, ["a", "b", "c", "d", "e"], n_boot=50)
    assert set(rep["per_class_auroc"]) == {"a", "b", "c", "d", "e"}
    assert 0.5 < rep["macro_auroc"] <= 1.0
    with pytest.raises(ValueError):
        classification_report(y[:, :2], p, ["a", "b"])
