"""Inference pieces without Lightning: input checks and preprocessing, sliding windows, aggregation.

The Python API (:mod:`ecgmae.api`), the ``embed``/``predict`` commands and the engine's evaluation all
use these, so a record goes through the same preprocessing and the same windows wherever it is scored.
A record becomes a :class:`Prepared` (the model's leads, rate and units) once; models only ever see
windows of those.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecgmae.data.io import LEADS_12, Record, canonical_lead
from ecgmae.data.safety import clip
from ecgmae.data.signal import FS_TOL, PreprocessConfig, check_fs, map_leads, preprocess, resampled_length
from ecgmae.errors import DataError
from ecgmae.utils import log


@dataclass
class Prepared:
    """One record in the model's input space.

    Attributes:
        name: record id (for messages and outputs).
        x: ``(len(cfg.leads), T)`` float32 after preprocessing, zero rows for absent leads and zero
            padding after ``valid``.
        present: ``(len(cfg.leads),)`` bool, which model leads the record really has.
        valid: samples of ``x`` that are real signal.
    """

    name: str
    x: np.ndarray
    present: np.ndarray
    valid: int


def lead_positions(leads: Sequence[str]) -> list[int] | None:
    """Positions of ``leads`` among the canonical 12 (None if any is not one of them)."""
    lookup = {name.lower(): i for i, name in enumerate(LEADS_12)}
    pos = [lookup.get(str(lead).lower()) for lead in leads]
    return None if any(p is None for p in pos) else pos  # type: ignore[return-value]


def aggregate_records(
    record: np.ndarray, prob: np.ndarray, target: np.ndarray, how: str = "mean"
) -> tuple[np.ndarray, np.ndarray]:
    """Combine window scores into one score per record (ids in ``record``; -1 rows are padding)."""
    keep = record >= 0
    record, prob, target = record[keep], prob[keep], target[keep]
    ids, inv = np.unique(record, return_inverse=True)
    k = prob.shape[1]
    y = np.zeros((len(ids), k), dtype=np.float32)
    y[inv] = target
    if how == "max":
        p = np.full((len(ids), k), -np.inf, dtype=np.float64)
        np.maximum.at(p, inv, prob)
    else:
        p = np.zeros((len(ids), k), dtype=np.float64)
        np.add.at(p, inv, prob)
        p /= np.bincount(inv, minlength=len(ids))[:, None]
    return y, p


def window_starts(valid: int, window: int, stride: int) -> list[int]:
    """First samples of the windows covering ``valid`` samples (as the evaluation windows do).

    Windows start every ``stride`` samples; a last window is aligned to the end of the signal so that
    nothing is left out; a record shorter than ``window`` gives one window at 0 (padded by the caller).
    """
    starts = list(range(0, max(valid - window, 0) + 1, stride))
    if starts[-1] + window < valid:
        starts.append(valid - window)
    return starts


# ----------------------------------------------------------------------------------------- inputs
def check_leads(leads: Sequence[str] | None, n_rows: int, model_leads: Sequence[str], name: str) -> list[str]:
    """Canonical names of the ``n_rows`` rows of a signal (default: the model's leads, in order)."""
    if leads is None:
        if n_rows != len(model_leads):
            raise DataError(f"{name}: {n_rows} rows but the model's {len(model_leads)} leads are "
                            f"{', '.join(model_leads)}; pass leads=[...] naming each row")
        return list(model_leads)
    if isinstance(leads, str):
        leads = [n.strip() for n in leads.split(",")]
    leads = list(leads)
    if len(leads) != n_rows:
        raise DataError(f"{name}: {n_rows} rows but {len(leads)} lead names ({', '.join(map(str, leads))})")
    try:
        canon = [canonical_lead(n) for n in leads]
    except DataError as exc:
        raise DataError(f"{name}: {exc}") from None
    dup = sorted({n for n in canon if canon.count(n) > 1})
    if dup:
        raise DataError(f"{name}: lead(s) {', '.join(dup)} given twice (names {', '.join(map(str, leads))})")
    known = [n for n in canon if n in model_leads]
    if not known:
        raise DataError(f"{name}: none of its leads ({', '.join(canon)}) is one the model knows "
                        f"({', '.join(model_leads)})")
    extra = [n for n in canon if n not in model_leads]
    if extra:
        log.info("%s: ignoring lead(s) %s (the model was trained on %s)", name, ", ".join(extra),
                 ", ".join(model_leads))
    return canon


def check_signal(signal: Any, name: str) -> np.ndarray:
    """A finite, non-empty float32 ``(leads, samples)`` array, or a DataError saying what is wrong."""
    try:
        x = np.asarray(signal, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name}: not a numeric array ({exc})") from None
    if x.ndim == 1:
        raise DataError(f"{name}: 1-D array of {x.shape[0]} samples; pass (leads, samples), e.g. "
                        "signal[None] with leads=['II']")
    if x.ndim != 2:
        raise DataError(f"{name}: expected a (leads, samples) array, got shape {x.shape}")
    if x.shape[0] == 0:
        raise DataError(f"{name}: no leads (shape {x.shape})")
    if x.shape[1] == 0:
        raise DataError(f"{name}: empty record (0 samples)")
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1)).tolist()
        raise DataError(f"{name}: {int(bad.sum())} NaN/inf sample(s) in row(s) {rows[:12]}; fill or drop them "
                        "first (a lead that is entirely missing: leave its row out and name the others)")
    return x


def prepare_signal(signal: Any, fs: Any, leads: Sequence[str] | None, cfg: PreprocessConfig, *,
                   name: str = "signal") -> Prepared:
    """Check one raw record (mV, channel-first) and apply the stored preprocessing ``cfg`` to it.

    Raises:
        DataError: naming ``name`` and what is wrong (shape, lead names, rate, NaNs, empty record).
    """
    x = check_signal(signal, name)
    rate = check_fs(fs, cfg.fs, name)
    canon = check_leads(leads, x.shape[0], cfg.leads, name)
    try:
        out, present = preprocess(x, rate, canon, cfg)
    except DataError as exc:
        raise DataError(f"{name}: {exc}") from None
    valid = min(resampled_length(x.shape[1], rate, cfg.fs), out.shape[1])
    return Prepared(name, out, present, valid)


def prepare_record(cfg: PreprocessConfig, rec: Record) -> Prepared:
    """:func:`prepare_signal` of a :class:`~ecgmae.data.io.Record` (a picklable worker transform)."""
    return prepare_signal(rec.signal, rec.fs, rec.leads, cfg, name=rec.record)


def from_store(store: Any, i: int, leads: Sequence[str]) -> Prepared:
    """Record ``i`` of a prepared store (already preprocessed) mapped onto the model's ``leads``."""
    x = store.signal(i)
    mapped, have = map_leads(x, store.leads, leads)
    pres, _ = map_leads(store.present(i)[:, None].astype(np.float32), store.leads, leads)
    present = have & (pres[:, 0] > 0)
    return Prepared(str(store.index["record"].iloc[i]), mapped, present, store.valid_length(i))


def iter_source(source: str, src: str | Path, cfg: PreprocessConfig, *, labels: str | Path | None = None,
                task: str | None = None, options: dict[str, Any] | None = None, split: str | None = None,
                workers: int = 1, quiet: bool = False) -> Iterator[Prepared | tuple[str, str]]:
    """Every record of a corpus (or a store, ``source="store"``) as a :class:`Prepared`, in source order.

    Records that cannot be used come as ``(record, message)`` instead, so the caller decides between
    skipping and failing.

    Args:
        source: ``store`` or one of :data:`ecgmae.data.sources.SOURCES`.
        src: corpus folder or file, or a store folder.
        cfg: the model's preprocessing (its ``fs`` and ``leads`` are the model's).
        labels, task, options: as for ``ecgmae prepare``.
        split: with a store, only this split (train, val, test).
        workers: reader processes (sources only).
        quiet: no progress bar.
    """
    if source == "store":
        yield from _iter_store(src, cfg, split, quiet)
        return
    if split:
        raise DataError(f"--split {split!r} needs --source store (raw corpora have no splits yet)")
    from ecgmae.data.sources import get_source, read_items

    src = Path(src)
    if not src.exists():
        raise DataError(f"{src}: not found")
    opts = {**(options or {}), "target_fs": cfg.fs}
    scan = get_source(source).scan(src, labels=Path(labels) if labels else None, task=task, options=opts)
    for record, _, _, message in scan.problems:
        yield record, clip(message, 800)
    for done in read_items(source, scan, functools.partial(prepare_record, cfg), workers=workers, quiet=quiet):
        yield done.value if done.error is None else (done.item.record, done.error[1])


def _iter_store(src: str | Path, cfg: PreprocessConfig, split: str | None, quiet: bool) -> Iterator[Prepared]:
    from ecgmae.data.store import Store
    from ecgmae.utils import progress

    store = Store.open(src)
    if abs(store.fs - cfg.fs) > FS_TOL * cfg.fs:
        raise DataError(f"{store.path}: store is at {store.fs:g} Hz but the model expects {cfg.fs:g} Hz; "
                        f"prepare it with --fs {cfg.fs:g} (or pass the raw corpus with --source)")
    theirs = store.preprocess_config
    differ = [k for k in ("bandpass", "baseline", "normalise") if getattr(theirs, k) != getattr(cfg, k)]
    if differ:
        log.warning("%s: preprocessing differs from the model's (%s); results may be off", store.path,
                    ", ".join(f"{k} {getattr(theirs, k)!r} vs {getattr(cfg, k)!r}" for k in differ))
    indices = store.split_indices(split) if split else np.arange(len(store))
    for i in progress(indices, quiet=quiet, unit="rec", desc="store"):
        yield from_store(store, int(i), cfg.leads)


# ---------------------------------------------------------------------------------- reconstruction
def norm_stats(x: np.ndarray, present: np.ndarray, method: str, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Per-lead ``(centre, spread)`` ``(L, 1)`` that :func:`ecgmae.data.signal.standardise` divides by.

    ``(x - centre) / spread`` is what the model saw; absent leads get ``(0, 1)``.
    """
    centre = np.zeros((x.shape[0], 1), np.float32)
    spread = np.ones((x.shape[0], 1), np.float32)
    if method == "none" or x.shape[1] == 0:
        return centre, spread
    rows = x[present]
    if method == "record":
        c, s = rows.mean(axis=-1, keepdims=True), rows.std(axis=-1, keepdims=True)
    else:  # robust
        c = np.median(rows, axis=-1, keepdims=True)
        s = 1.4826 * np.median(np.abs(rows - c), axis=-1, keepdims=True)
    centre[present], spread[present] = c, np.where(s > eps, s, 1.0)
    return centre, spread


def patch_stats(patches: Any, elem_w: Any = None, eps: float = 1e-6) -> tuple[Any, Any]:
    """Mean and ``sqrt(var + eps)`` of each patch, exactly as the MAE's normalised target uses them.

    Args:
        patches: ``(B, N, p)`` tensor of raw samples.
        elem_w: ``(B, 1 or N, p)`` 0/1 weights (absent leads of a time token) or None.
    """
    if elem_w is None:
        mean = patches.mean(dim=-1, keepdim=True)
        var = patches.var(dim=-1, keepdim=True, unbiased=False)
    else:
        count = elem_w.sum(dim=-1, keepdim=True).clamp_min(1.0)
        mean = (patches * elem_w).sum(dim=-1, keepdim=True) / count
        var = (((patches - mean) * elem_w) ** 2).sum(dim=-1, keepdim=True) / count
    return mean, (var + eps).sqrt()


def reconstruct_windows(mae: Any, prep: Prepared, normalise: str, window: int, positions: Sequence[int],
                        mask_ratio: float, seed: int, device: Any, batch_size: int = 32) -> dict[str, np.ndarray]:
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
    import torch

    enc, n = mae.encoder, prep.valid
    p_size = enc.cfg.patch_size
    present = prep.present.copy()
    mv = prep.x[:, :n]
    centre, spread = norm_stats(mv, present, normalise)
    x_in = np.where(present[:, None], (mv - centre) / spread, 0.0).astype(np.float32)
    starts = list(range(0, max(n - window, 0) + 1, window))
    if starts[-1] + window < n:
        starts.append(n - window)  # the tail: a last window aligned to the end; only its new samples are used
    padded = np.pad(x_in, ((0, 0), (0, max(0, window - n))))
    wins = torch.from_numpy(np.stack([padded[:, s : s + window] for s in starts])).to(device)  # (W, L, T)
    pres = torch.from_numpy(np.repeat(present[None], len(starts), axis=0)).to(device)  # (W, L)
    li = torch.as_tensor(list(positions), dtype=torch.long, device=device)
    recs, masks = [], []
    devices = [device] if torch.device(device).type == "cuda" else []
    with torch.inference_mode(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for k in range(0, len(starts), batch_size):
            xb, pb = wins[k : k + batch_size], pres[k : k + batch_size]
            out = mae(xb, mask_ratio=mask_ratio, present=pb, lead_idx=li)
            r, m = _to_samples(mae, xb, pb, li, out.pred, out.mask, p_size)
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
    return {"original": mv.copy(), "reconstruction": rec.astype(np.float32),
            "mask": mask[:, :n] & present[:, None], "present": present}


def _to_samples(mae: Any, x: Any, present: Any, li: Any, pred: Any, token_mask: Any, p_size: int) -> tuple[Any, Any]:
    """Decoder tokens ``(B, N, patch_len)`` and token mask ``(B, N)`` -> ``(B, L, T)`` samples (input units)."""
    import torch

    enc = mae.encoder
    b, n_rows, t = x.shape
    n_time = t // p_size
    if enc.cfg.tokenization == "time":
        full = torch.zeros(b, enc.cfg.n_leads, dtype=torch.bool, device=x.device)
        full[:, li] = present.bool()
        x_full, rows = enc.expand_leads(x, li), li
        elem_w = full.repeat_interleave(p_size, dim=1)[:, None, :].float()
    else:
        x_full, rows, elem_w = x, torch.arange(n_rows, device=x.device), None
    if mae.cfg.norm_target:  # the decoder predicts normalised patches: back to input units
        mean, std = patch_stats(enc.patchify(x_full), elem_w)
        pred = pred * std + mean
    rec = enc.unpatchify(pred, x_full.shape[1])[:, rows]  # (B, L, n_time * P)
    if enc.cfg.tokenization == "time":
        mask = token_mask.bool().repeat_interleave(p_size, dim=1)[:, None, :].expand(b, n_rows, -1)
    else:
        mask = token_mask.bool().reshape(b, n_rows, n_time).repeat_interleave(p_size, dim=2)
    pad = t - n_time * p_size  # a window that is not a whole number of patches: the tail is not predicted
    if pad:
        rec = torch.nn.functional.pad(rec, (0, pad))
        mask = torch.nn.functional.pad(mask, (0, pad))
    return rec, mask
