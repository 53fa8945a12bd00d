"""Repeated cross-validated linear probe (ecgmae.eval.probe)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold

from ecgmae.errors import DataError
from ecgmae.eval.probe import cv_probe, frequent_classes, oof_scores


def _data(n: int = 120, d: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 3 == 0).astype(int)
    rng.shuffle(y)
    return rng.normal(size=(n, d)), y


def test_separable_gives_auroc_one() -> None:
    x, y = _data()
    x[:, 2] += 4.0 * y  # one clearly separating feature among noise
    res = cv_probe(x, np.stack([y, 1 - y], axis=1), names=["a", "b"], folds=5, repeats=2, Cs=(0.1,))
    assert res["classes"] == ["a", "b"]
    assert res["aurocs"].shape == (2, 2)
    assert res["chosen_C"]["a"] == [[0.1] * 5] * 2
    assert res["macro"] > 0.99 and min(res["per_class"].values()) > 0.99
    assert res["positives"] == {"a": 40, "b": 80}


def test_random_labels_give_chance() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 20))
    Y = rng.integers(0, 2, size=(400, 2))
    res = cv_probe(x, Y, folds=5, repeats=2, Cs=(1.0,), seed=3)
    assert abs(res["macro"] - 0.5) < 0.06, res["macro"]


def test_deterministic_for_a_seed() -> None:
    x, y = _data(n=60, seed=2)
    x[:, 0] += 0.7 * y
    a, b = cv_probe(x, y, repeats=2, folds=3, seed=5), cv_probe(x, y, repeats=2, folds=3, seed=5)
    np.testing.assert_array_equal(a["aurocs"], b["aurocs"])
    assert a["chosen_C"] == b["chosen_C"]
    c = cv_probe(x, y, repeats=2, folds=3, seed=6)  # another seed reshuffles the folds
    assert not np.array_equal(a["aurocs"], c["aurocs"])
    assert a["macro_std"] == pytest.approx(np.std(a["macro_by_repeat"], ddof=1))


def _splits(y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(StratifiedKFold(4, shuffle=True, random_state=0).split(np.zeros(len(y)), y))


def test_test_labels_do_not_reach_test_scores() -> None:
    # A leaky probe (fitting or choosing C on rows that include the test fold) changes the test scores when
    # only the test labels change; here they must stay bit-identical.
    x, y = _data(seed=4)
    x[:, 1] += 0.5 * y
    splits = _splits(y)
    te = splits[0][1]
    base, _ = oof_scores(x, y, splits[:1], Cs=(0.001, 0.1, 10.0))
    y2 = y.copy()
    y2[te] = 1 - y2[te]  # flip every label of fold 0's test rows
    flipped, _ = oof_scores(x, y2, [splits[0]], Cs=(0.001, 0.1, 10.0))
    np.testing.assert_array_equal(flipped[te], base[te])


def test_standardisation_is_fitted_on_training_rows_only() -> None:
    # With a scaler (or anything else) fitted on all rows or on the test fold, a huge value in one test
    # row changes the scores of the other test rows of its fold; fitted per training fold it cannot.
    x, y = _data(seed=5)
    x[:, 0] += 1.0 * y
    splits = _splits(y)
    te = splits[0][1]
    base, _ = oof_scores(x, y, splits[:1])
    x2 = x.copy()
    x2[te[0]] += 1e4  # one outlying test row
    x2[te[1], 0] -= 50.0
    moved, _ = oof_scores(x2, y, splits[:1])
    others = te[2:]
    np.testing.assert_array_equal(moved[others], base[others])
    assert moved[te[0]] != base[te[0]]


def test_too_rare_class_is_a_clear_error() -> None:
    x, _ = _data(n=40)
    Y = np.zeros((40, 2), dtype=int)
    Y[:20, 0] = 1
    Y[:3, 1] = 1  # 3 positives < 5 folds
    with pytest.raises(DataError, match=r"class 'rare' has 3 positives and 37 negatives.*at least 5"):
        cv_probe(x, Y, names=["ok", "rare"], folds=5)
    assert cv_probe(x, Y, names=["ok", "rare"], folds=3, repeats=1, Cs=(1.0,))["aurocs"].shape == (1, 2)


def test_bad_inputs() -> None:
    x, y = _data(n=30)
    with pytest.raises(DataError, match="do not match"):
        cv_probe(x[:10], y)
    x[0, 0] = np.nan
    with pytest.raises(DataError, match="non-finite"):
        cv_probe(x, y)


def test_frequent_classes() -> None:
    Y = np.zeros((20, 4), dtype=int)
    Y[:7, 0] = 1  # 7 / 13: kept
    Y[:6, 1] = 1  # too few positives
    Y[:14, 2] = 1  # 14 / 6: too few negatives
    Y[:13, 3] = 1  # 13 / 7: kept
    assert frequent_classes(Y, list("abcd"), 7) == [0, 3]
    with pytest.raises(DataError):
        frequent_classes(Y, list("abc"), 7)
