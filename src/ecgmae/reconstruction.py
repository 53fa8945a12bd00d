"""Masked reconstruction of one record, window by window, back in mV: what :meth:`ecgmae.api.Model.reconstruct` returns.

The record is cut into consecutive windows of :mod:`ecgmae.data.windows`, each masked and filled in by
the MAE (:meth:`ecgmae.models.ECGMAE.to_samples` puts the tokens back in input units), and the stored
per-lead normalisation (:func:`ecgmae.data.signal.norm_stats`) is undone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ecgmae.data.prepared import Prepared
from ecgmae.data.signal import norm_stats
from ecgmae.data.windows import cut_window, window_starts
from ecgmae.models import ECGMAE


@dataclass
class Reconstruction:
    """What :meth:`Model.reconstruct` returns; arrays are ``(leads, samples)`` at ``fs``.

    Attributes:
        name: record id.
        original: the model's input in mV (resampled and filtered as stored; zero rows for absent leads).
        reconstruction: the decoder's output in mV, every sample (masked and visible).
        mask: bool, True where the sample was hidden from the encoder (present leads only).
        present: ``(leads,)`` bool, which leads the record has.
        fs: sampling rate of the arrays (the model's).
        leads: lead names of the rows (the model's).
        mask_ratio: the fraction of patches hidden.
    """

    name: str
    original: np.ndarray
    reconstruction: np.ndarray
    mask: np.ndarray
    present: np.ndarray
    fs: float
    leads: tuple[str, ...]
    mask_ratio: float

    def masked_rmse(self) -> float:
        """Root mean squared error in mV over the masked samples (NaN when nothing is masked)."""
        if not self.mask.any():
            return float("nan")
        return float(np.sqrt(np.mean((self.reconstruction[self.mask] - self.original[self.mask]) ** 2)))


def reconstruct_windows(
    mae: ECGMAE,
    prep: Prepared,
    normalise: str,
    window: int,
    positions: Sequence[int],
    mask_ratio: float,
    seed: int,
    device: Any,
    batch_size: int = 32,
) -> dict[str, np.ndarray]:
    """Mask and reconstruct one record window by window; arrays in mV over its ``valid`` samples.

    Args:
        mae: an ``ECGMAE`` in eval mode.
        prep: the record preprocessed WITHOUT normalisation (``prep.x`` in mV).
        normalise: the stored per-lead normalisation, applied here and undone on the output.
        window: samples per window (a whole number of patches).
        positions: canonical position of each of the model's leads (``lead_idx``).
        mask_ratio: fraction of tokens hidden.
        seed: seeds the masks (the same seed gives the same masks).
        device: where ``mae`` lives.

    Returns:
        ``original``, ``reconstruction`` (float32 ``(L, valid)``), ``mask`` (bool, True = hidden,
        present leads only) and ``present``.
    """
    n = prep.valid
    present = prep.present.copy()
    mv = prep.x[:, :n]
    centre, spread = norm_stats(mv, present, normalise)
    x_in = np.where(present[:, None], (mv - centre) / spread, 0.0).astype(np.float32)
    # consecutive windows; the tail window is aligned to the end and only its new samples are used
    starts = window_starts(n, window, window)
    wins = torch.from_numpy(np.stack([cut_window(x_in, s, window) for s in starts])).to(device)  # (W, L, T)
    pres = torch.from_numpy(np.repeat(present[None], len(starts), axis=0)).to(device)  # (W, L)
    li = torch.as_tensor(list(positions), dtype=torch.long, device=device)
    recs, masks = [], []
    devices = [device] if torch.device(device).type == "cuda" else []
    with torch.inference_mode(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for k in range(0, len(starts), batch_size):
            xb, pb = wins[k : k + batch_size], pres[k : k + batch_size]
            out = mae(xb, mask_ratio=mask_ratio, present=pb, lead_idx=li)
            r, m = mae.to_samples(xb, pb, li, out.pred, out.mask)
            recs.append(r.float().cpu().numpy())
            masks.append(m.cpu().numpy())
    rec_w, mask_w = np.concatenate(recs), np.concatenate(masks)
    rec = np.zeros((mv.shape[0], max(n, window)), np.float32)
    mask = np.zeros(rec.shape, bool)
    done = 0
    for k, s in enumerate(starts):
        a = max(s, done)
        rec[:, a : s + window] = rec_w[k][:, a - s :]
        mask[:, a : s + window] = mask_w[k][:, a - s :]
        done = s + window
    rec = rec[:, :n] * spread + centre
    return {
        "original": mv.copy(),
        "reconstruction": rec.astype(np.float32),
        "mask": mask[:, :n] & present[:, None],
        "present": present,
    }
