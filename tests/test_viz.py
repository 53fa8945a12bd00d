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
        rows = {
            "step": [0, 1, 2, 3],
            "train/loss_step": [1.0, 0.8, np.nan, 0.5],
            "val/loss": [np.nan, 0.9, np.nan, 0.6],
        }
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


def _drawn(monkeypatch, rec, tmp_path, **kw):
    """Draw ``rec`` and return the figure as it was saved (and the file)."""
    import ecgmae.viz as viz

    figs = []
    real = viz.save_figure

    def keep(fig, path, dpi=120):
        figs.append(fig)
        return real(fig, path, dpi)

    monkeypatch.setattr(viz, "save_figure", keep)
    out = viz.plot_reconstruction(rec, tmp_path / "fig.png", **kw)
    assert out.read_bytes()[:4] == b"\x89PNG"
    return figs[0]


def _spans(ax) -> list[tuple[float, float]]:
    """x extents of the shaded (axvspan) patches of an axis."""
    out = []
    for p in ax.patches:
        xy = p.get_xy() if hasattr(p, "get_xy") and not hasattr(p, "get_width") else None
        if xy is None:
            out.append((p.get_x(), p.get_x() + p.get_width()))
        else:
            xs = np.asarray(xy)[:, 0]
            out.append((float(xs.min()), float(xs.max())))
    return sorted(out)


@pytest.mark.parametrize(("start", "seconds", "rhythm"), [(0.0, 10.0, "II"), (7.5, 4.0, "II"), (2.0, 4.0, None)])
def test_reconstruction_figure_layout_span_and_shading(monkeypatch, tmp_path, start, seconds, rhythm):
    """The figure shows exactly the asked window, in the clinical layout, shaded where the mask says."""
    from ecgmae.viz import CLINICAL_LAYOUT

    rec = _reconstruction(2.0, absent=("V6",))  # 10 s at 100 Hz, the first 2 s masked
    fig = _drawn(monkeypatch, rec, tmp_path, start=start, seconds=seconds, rhythm=rhythm)
    fs, a0 = rec.fs, int(round(start * rec.fs))
    dur = min(seconds, 10.0 - start)
    axes = [ax for ax in fig.axes if ax.lines or ax.texts]
    assert len(axes) == len(CLINICAL_LAYOUT) + (rhythm is not None)
    tops = [ax.get_position().y0 for ax in axes]
    assert tops == sorted(tops, reverse=True)  # rows stacked top to bottom, full width each
    assert len({round(ax.get_position().x0, 6) for ax in axes}) == 1
    for ax in axes:
        assert ax.get_xlim() == pytest.approx((0.0, dur))
    for ax, row in zip(axes, CLINICAL_LAYOUT, strict=False):  # four leads a row, a quarter of the strip each
        assert [t.get_text() for t in ax.texts if t.get_text() != "absent"] == list(row)
        black = [ln for ln in ax.lines if ln.get_color() == "black"]
        for lead, ln in zip([n for n in row if n != "V6"], black, strict=True):
            i, c = LEADS_12.index(lead), row.index(lead)
            i0 = a0 + round(c * dur / 4 * fs)
            y = ln.get_ydata()
            np.testing.assert_array_equal(y, rec.original[i, i0 : i0 + len(y)])
            assert ln.get_xdata()[0] == pytest.approx(c * dur / 4)
        assert ("V6" in row) == any(t.get_text() == "absent" for t in ax.texts)
        # shaded: the masked first 2 s of the record, clipped to each lead's quarter of the strip
        want = [
            (c * dur / 4, min((c + 1) * dur / 4, 2.0 - start))
            for c, lead in enumerate(row)
            if lead != "V6" and c * dur / 4 < 2.0 - start
        ]
        assert _spans(ax) == [pytest.approx(w) for w in want]
    if rhythm is not None:  # the rhythm strip: lead II over the whole window, shaded on the masked 0-2 s
        strip = axes[-1]
        (line,) = [ln for ln in strip.lines if ln.get_color() == "black"]
        np.testing.assert_array_equal(line.get_ydata(), rec.original[1, a0 : a0 + round(dur * fs)])
        masked_end = max(0.0, 2.0 - start)
        assert _spans(strip) == ([pytest.approx((0.0, masked_end))] if masked_end else [])
        red = next(ln for ln in strip.lines if ln.get_color() == "#d62728").get_ydata()
        hidden = rec.mask[1, a0 : a0 + round(dur * fs)]
        assert np.isnan(red[~hidden]).all() and np.isfinite(red[hidden]).all()
