"""Window outputs -> one output per record: the one pooling function every scoring path uses.

``evaluate``, validation during fine-tuning, and the Python API (``embed``, ``predict``) all cut records
into the windows of :mod:`ecgmae.data.windows` and pool what the model says about each window here.
"""

from __future__ import annotations

import numpy as np

POOLING: tuple[str, ...] = ("mean", "max")


def pool_windows(record: np.ndarray, values: np.ndarray, how: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """Pool window rows by record: ``(ids, pooled)`` with ``ids`` sorted and ``pooled`` ``(len(ids), K)`` float64.

    Args:
        record: ``(W,)`` record id of each window (rows with id -1 are padding and are dropped).
        values: ``(W, K)`` the model's output for each window.
        how: ``mean`` (in window order) or ``max``.
    """
    keep = record >= 0
    ids, inv = np.unique(record[keep], return_inverse=True)
    values = values[keep]
    k = values.shape[1]
    if how == "max":
        p = np.full((len(ids), k), -np.inf, dtype=np.float64)
        np.maximum.at(p, inv, values)
    else:
        p = np.zeros((len(ids), k), dtype=np.float64)
        np.add.at(p, inv, values)
        p /= np.bincount(inv, minlength=len(ids))[:, None]
    return ids, p


def aggregate_records(
    record: np.ndarray, prob: np.ndarray, target: np.ndarray, how: str = "mean"
) -> tuple[np.ndarray, np.ndarray]:
    """Combine window scores into one score per record, with the record's label row: ``(y, p)``.

    ``record`` holds the record id of each window (-1 rows are padding); rows come out by sorted id.
    """
    keep = record >= 0
    ids, p = pool_windows(record, prob, how)
    y = np.zeros((len(ids), prob.shape[1]), dtype=np.float32)
    y[np.searchsorted(ids, record[keep])] = target[keep]
    return y, p
