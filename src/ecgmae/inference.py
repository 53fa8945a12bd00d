"""Inference over windows: window -> batch -> model -> pool, written once.

Every path that scores records (the Python API's ``embed`` / ``predict``, the engine's ``evaluate`` and
``predict_records``, the classifier's validation) cuts records into the windows of
:mod:`ecgmae.data.windows`, runs batches of them through :func:`forward_windows` and pools the window
outputs per record with :func:`ecgmae.eval.pooling.pool_windows`.

Absent leads (a store row or a prepared record marks them in ``present``; their rows are zeros) are
never given to the model as if they were signal: a lead-tokenised encoder gets only the tokens of the
leads a window has (as masked-autoencoder pre-training, which never shows an absent lead), so a batch
is split by lead set. A time-tokenised encoder and the reference CNN take all leads in every token or
channel; there absent leads stay zero rows (the form pre-training's lead dropout shows them in).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ecgmae.data.prepared import Prepared
from ecgmae.data.windows import cut_window, window_starts
from ecgmae.errors import DataError
from ecgmae.eval.pooling import pool_windows
from ecgmae.models.encoder import ECGEncoder
from ecgmae.utils import log

__all__ = [
    "PRECISIONS",
    "Batch",
    "Forward",
    "at_precision",
    "forward_windows",
    "infer_records",
    "input_rows",
    "tokenization",
    "warn_inputs",
    "window_batches",
]

# A batch of windows: record id of each window, the windows (B, L, T), which leads each has (B, L) or None.
Batch = tuple[Any, Any, Any]
Forward = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]
# fp32: the model as trained, the same numbers on every run. bf16: matrix products in bfloat16 (autocast), about
# 1.5x faster on a CPU with AVX-512 BF16; outputs agree to a cosine of 0.99999 (docs/inference-speed.md).
PRECISIONS = ("fp32", "bf16")


def tokenization(net: nn.Module) -> str:
    """``"lead"`` or ``"time"`` for a transformer (encoder, classifier or MAE); ``"cnn"`` for a reference CNN."""
    enc = net if isinstance(net, ECGEncoder) else getattr(net, "encoder", None)
    return enc.cfg.tokenization if isinstance(enc, ECGEncoder) else "cnn"


def input_rows(present: np.ndarray, tokens: str) -> np.ndarray:
    """Rows of a record the model is given: its present leads for a lead-tokenised model, else all of them."""
    present = np.asarray(present, dtype=bool)
    return np.flatnonzero(present) if tokens == "lead" else np.arange(len(present))


def at_precision(fn: Forward, precision: str, device: str | torch.device) -> Forward:
    """``fn`` run at ``precision`` (one of :data:`PRECISIONS`), its outputs in float32."""
    if precision not in PRECISIONS:
        raise DataError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return fn
    kind = torch.device(device).type

    def bf16(x: torch.Tensor, lead_idx: torch.Tensor | None) -> torch.Tensor:
        with torch.autocast(kind, dtype=torch.bfloat16):
            return fn(x, lead_idx).float()

    return bf16


def forward_windows(
    fn: Forward, x: torch.Tensor, present: Any, lead_idx: torch.Tensor | None, tokens: str
) -> torch.Tensor:
    """``fn(x, lead_idx)`` on a batch of windows ``x (B, L, T)``, absent leads withheld (see the module doc).

    Args:
        fn: the model, called as ``fn(windows, lead_idx)``.
        present: ``(B, L)`` bool, which rows each window really has; None: all of them.
        lead_idx: canonical position of each of the ``L`` rows (None: ``0..L-1``).
        tokens: the model's :func:`tokenization`.
    """
    if present is None or tokens != "lead":
        return fn(x, lead_idx)
    pres = torch.as_tensor(present).to(device="cpu", dtype=torch.bool)
    if bool(pres.all()):
        return fn(x, lead_idx)
    positions = torch.arange(x.shape[1], device=x.device) if lead_idx is None else lead_idx
    sets, which = torch.unique(pres, dim=0, return_inverse=True)
    out: torch.Tensor | None = None
    for k, lead_set in enumerate(sets):
        if not bool(lead_set.any()):
            raise DataError("a window has none of the model's leads; nothing to encode")
        sel = torch.nonzero(which == k).flatten().to(x.device)
        rows = torch.nonzero(lead_set).flatten().to(x.device)
        y = fn(x[sel][:, rows], positions[rows])
        if out is None:
            out = y.new_empty((x.shape[0], *y.shape[1:]))
        out[sel] = y
    return out  # type: ignore[return-value]  # at least one lead set


def window_batches(
    items: Sequence[Prepared],
    window: int,
    stride: int,
    batch_size: int,
    group: Callable[[Prepared], Hashable] | None = None,
) -> Iterator[Batch]:
    """Batches of at most ``batch_size`` windows over prepared records (record ids are positions in ``items``).

    Records with the same ``group`` key are batched together (one key per batch, so that a batch split
    by :func:`forward_windows` keeps full sub-batches); windows are zero-padded past a record's end.
    """
    groups: dict[Hashable, list[int]] = {}
    for i, p in enumerate(items):
        groups.setdefault(None if group is None else group(p), []).append(i)
    for members in groups.values():
        windows = (
            (i, cut_window(items[i].x, s, window))
            for i in members
            for s in window_starts(items[i].valid, window, stride)
        )
        while chunk := list(itertools.islice(windows, batch_size)):
            ids = np.asarray([i for i, _ in chunk])
            yield ids, np.stack([w for _, w in chunk]), np.stack([items[i].present for i in ids])


@torch.inference_mode()
def infer_records(
    fn: Forward,
    batches: Iterable[Batch],
    *,
    lead_idx: torch.Tensor | None,
    tokens: str,
    how: str,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Run every batch through :func:`forward_windows` and pool window outputs per record.

    Returns:
        ``(ids, pooled)``: sorted record ids and their ``(len(ids), K)`` float64 pooled outputs.
    """
    ids: list[np.ndarray] = []
    outs: list[np.ndarray] = []
    for rec, x, present in batches:
        xb = torch.as_tensor(x).to(device)
        outs.append(forward_windows(fn, xb, present, lead_idx, tokens).float().cpu().numpy())
        ids.append(np.asarray(rec))
    if not outs:
        raise DataError("no windows to score")
    return pool_windows(np.concatenate(ids), np.concatenate(outs), how)


def warn_inputs(
    items: Sequence[Prepared], *, window: int, fs: float, tokens: str, leads: Sequence[str], header: Any
) -> None:
    """Say what the records lack before scoring them: leads (zero-filled and marked absent, unless the model is
    lead-tokenised and simply skips them) and signal (less than a second: windows mostly zero padding).

    Args:
        window: the model's window in samples; fs: its rate; tokens: its :func:`tokenization`.
        leads: the model's leads; header: its :class:`~ecgmae.header.RunHeader` (how it was trained).
    """
    lacking = [p for p in items if not p.present.all()] if tokens != "lead" else []
    if lacking:
        missing = [lead for j, lead in enumerate(leads) if any(not p.present[j] for p in lacking)]
        drop = getattr(header.model.config, "lead_drop", 0.0)
        if header.kind == "encoder" and header.train.method == "mae" and drop > 0:
            log.info(
                "%d record(s) lack lead(s) %s: zero-filled and marked absent, as in pre-training (a "
                "share %g of its examples showed a random lead subset)",
                len(lacking),
                ", ".join(missing),
                drop,
            )
        else:
            log.warning(
                "%d record(s) lack lead(s) %s: zero-filled and marked absent (this model "
                "was trained on %s; results may be off)",
                len(lacking),
                ", ".join(missing),
                ", ".join(leads),
            )
    short = [p for p in items if p.valid < min(window, fs)]
    if short:
        names = ", ".join(f"{p.name} ({p.valid} samples)" for p in short[:5])
        log.warning(
            "%d record(s) hold less than 1 s of signal at %g Hz: %s%s; their outputs come mostly from zero padding",
            len(short),
            fs,
            names,
            ", ..." if len(short) > 5 else "",
        )
