"""Figures: the reconstruction in the clinical layout, training curves, and the plot-curves command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ecgmae.cli import main
from ecgmae.data.io import LEADS_12

RED = np.array([0xD6, 0x27, 0x28]) / 255.0  # the reconstruction's colour


def _reconstruction(mask_seconds: float, absent: tuple[str, ...] = ()):
    from ecgmae.api import Reconstruction

    fs, n = 100.0, 1000
    t = np.arange(n) / fs
    original = np.stack([np.sin(2 * np.pi * (1 + i / 10) * t) for i in range(12)]).astype(np.float32)
    present = np.array([lead not in absent for lead in LEADS_12])
    original[~present] = 0
    mask = np.zeros((12, n), bool)
    mask[:, : int(mask_seconds * fs)] = True
    mask &= present[:, None]
    return Reconstruction("demo", original, original + 0.1, mask, present, fs, LEADS_12, 0.2)


def _red_pixels(path: Path) -> int:
    import matplotlib.image

    img = matplotlib.image.imread(path)[..., :3]
    return int((np.abs(img - RED).max(axis=-1) < 0.1).sum())


def test_runs_of_a_mask():
    from ecgmae.viz import _runs

    assert _runs(np.array([0, 1, 1, 0, 1], bool)) == [(1, 3), (4, 5)]
    assert _runs(np.zeros(4, bool)) == [] and _runs(np.ones(3, bool)) == [(0, 3)]


def test_reconstruction_figure_draws_only_masked_spans(tmp_path):
    from ecgmae.viz import plot_reconstruction

    masked = plot_reconstruction(_reconstruction(2.0, absent=("V6",)), tmp_path / "masked.png")
    plain = plot_reconstruction(_reconstruction(0.0), tmp_path / "plain.png")
    both = plot_reconstruction(_reconstruction(0.0), tmp_path / "both.png", show_visible=True, rhythm=None)
    assert masked.read_bytes()[:4] == b"\x89PNG"
    assert _red_pixels(masked) > 200  # the reconstruction is drawn where patches were hidden
    assert _red_pixels(plain) == 0  # nothing masked: nothing reconstructed is drawn
    assert _red_pixels(both) > _red_pixels(masked)
    import matplotlib.image

    assert matplotlib.image.imread(both).shape[0] < matplotlib.image.imread(plain).shape[0]  # no rhythm strip


def test_plot_curves_command(tmp_path, capsys):
    import pandas as pd

    for name, auc in (("a", False), ("b", True)):
        (tmp_path / name).mkdir()
        rows = {"step": [0, 1, 2, 3], "train/loss_step": [1.0, 0.8, np.nan, 0.5],
                "val/loss": [np.nan, 0.9, np.nan, 0.6]}
        if auc:
            rows["val/auroc"] = [np.nan, 0.6, np.nan, 0.7]
        pd.DataFrame(rows).to_csv(tmp_path / name / "metrics.csv", index=False)
    out = tmp_path / "curves.png"
    assert main(["plot-curves", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG" and "2 run(s)" in capsys.readouterr().out
    assert main(["plot-curves", str(tmp_path / "a"), "--out", str(out), "--labels", "x,y"]) == 2
    assert "2 names for 1 runs" in capsys.readouterr().err
    assert main(["plot-curves", str(tmp_path / "missing"), "--out", str(tmp_path / "m.png")]) == 2
    assert "no metrics.csv" in capsys.readouterr().err


@pytest.mark.parametrize("start", [0.0, 7.5])
def test_reconstruction_figure_window(tmp_path, start):
    from ecgmae.viz import plot_reconstruction

    out = plot_reconstruction(_reconstruction(10.0), tmp_path / "w.png", start=start, seconds=4)
    assert out.exists()
