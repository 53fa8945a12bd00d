"""The one windowing path: where windows start, how they are cut, and how their outputs are pooled per record."""

from __future__ import annotations

import numpy as np
import pytest

from ecgmae.data.windows import cut_window, pad_window, window_starts
from ecgmae.eval.pooling import aggregate_records, pool_windows


@pytest.mark.parametrize(
    ("valid", "window", "stride", "starts"),
    [
        (1000, 250, 250, [0, 250, 500, 750]),  # whole number of windows
        (1100, 250, 250, [0, 250, 500, 750, 850]),  # a tail window aligned to the end
        (1000, 400, 300, [0, 300, 600]),  # overlapping, the last one ends at the end
        (1001, 400, 300, [0, 300, 600, 601]),
        (100, 250, 125, [0]),  # shorter than a window: one window at 0 (padded by the cutter)
        (250, 250, 50, [0]),
    ],
)
def test_window_starts_cover_the_signal(valid, window, stride, starts):
    got = window_starts(valid, window, stride)
    assert got == starts
    covered = np.zeros(valid, bool)
    for s in got:
        covered[s : s + window] = True
    assert covered.all() and all(s + window <= max(valid, window) for s in got)


def test_cut_window_pads_after_the_end_only():
    x = np.arange(2 * 7, dtype=np.float32).reshape(2, 7)
    np.testing.assert_array_equal(cut_window(x, 2, 4), x[:, 2:6])
    short = cut_window(x, 0, 10)
    assert short.shape == (2, 10) and short.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(short[:, :7], x)
    assert not short[:, 7:].any()
    assert pad_window(x, 5) is x


def test_pooling_by_record_mean_and_max():
    record = np.array([1, 0, 1, -1, 1, 0])
    values = np.array([[1.0], [10.0], [3.0], [99.0], [5.0], [20.0]], dtype=np.float32)
    ids, mean = pool_windows(record, values, "mean")
    assert ids.tolist() == [0, 1] and mean[:, 0].tolist() == [15.0, 3.0] and mean.dtype == np.float64
    _, mx = pool_windows(record, values, "max")
    assert mx[:, 0].tolist() == [20.0, 5.0]
    target = np.array([[1], [0], [1], [7], [1], [0]], dtype=np.float32)
    y, p = aggregate_records(record, values, target, "mean")
    assert y[:, 0].tolist() == [0.0, 1.0] and np.array_equal(p, mean)
