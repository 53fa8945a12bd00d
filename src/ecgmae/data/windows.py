"""The one definition of evaluation windows: where they start and how one is cut out of a record.

The dataset's :class:`~ecgmae.data.dataset.WindowDataset` (evaluation and validation), the Python API
(``embed``/``predict``, the ``embed``/``predict`` commands) and reconstruction all cut their windows
here, so a record is scored on the same samples wherever it is scored. Pure numpy.
"""

from __future__ import annotations

import numpy as np


def window_starts(valid: int, window: int, stride: int) -> list[int]:
    """First samples of the windows covering ``valid`` samples (as the evaluation windows do).

    Windows start every ``stride`` samples; a last window is aligned to the end of the signal so that
    nothing is left out; a record shorter than ``window`` gives one window at 0 (padded by the caller).
    """
    starts = list(range(0, max(valid - window, 0) + 1, stride))
    if starts[-1] + window < valid:
        starts.append(valid - window)
    return starts


def pad_window(win: np.ndarray, window: int) -> np.ndarray:
    """``(L, <= window)`` samples zero-padded after their end to ``(L, window)`` (a record shorter than a window)."""
    if win.shape[1] >= window:
        return win
    return np.pad(win, ((0, 0), (0, window - win.shape[1])))


def cut_window(x: np.ndarray, start: int, window: int) -> np.ndarray:
    """``x[:, start:start + window]`` as a contiguous ``(L, window)`` array, zero-padded past the end of ``x``."""
    return np.ascontiguousarray(pad_window(x[:, start : start + window], window))
