"""Preprocessing as pure numpy/scipy functions, and the config that records it.

``preprocess(signal, fs, leads, cfg)`` is the one entry point: ``prepare`` applies it to every record
and the inference API applies it to a single record in memory, so a model sees the same input either
way. Order: lead mapping -> resampling to ``cfg.fs`` -> baseline removal -> band-pass -> per-lead
normalisation -> zero padding to ``cfg.seconds``. Filters run at the target rate (cheap) and are
zero-phase (``sosfiltfilt``), so they do not shift waves in time.

Sampling-rate policy (:func:`fs_problem`, applied by ``prepare`` and by inference alike): a record is
never upsampled (a record below the target rate is refused, since no resampling restores the band it
lacks), and a rate outside ``FS_RANGE`` is a broken header, not an ECG.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from ecgmae.config import ConfigError, from_dict, to_dict
from ecgmae.data import kernels
from ecgmae.data.record import FS_RANGE, LEADS_12, MAX_RECORD_VALUES, canonical_lead, rate_out_of_range
from ecgmae.errors import DataError

BASELINES = ("none", "highpass", "median")
NORMALISATIONS = ("none", "record", "robust")
DTYPES = ("float16", "int16", "float32")
# Relative slack when comparing sampling rates (499.99999 Hz is 500 Hz).
FS_TOL = 1e-6
# Largest resampling factor up: the policy never upsamples, this only bounds direct calls.
MAX_UPSAMPLE = 16
# Largest |amplitude| a record may have, in mV. An ECG is a few mV; one in uV labelled mV stays within a
# 16-bit ADC's +-32768; beyond this the gain or unit is wrong, and float32 arithmetic on it overflows
# (1e20 gave NaN). Below the 60000 that float16 stores hold, so prepare and inference share this rule.
MAX_AMPLITUDE_MV = 50000.0


def fs_problem(fs: Any, target_fs: float, whose: str = "the model's", hint: str | None = None) -> str | None:
    """What is wrong with a record sampled at ``fs`` for a target of ``target_fs`` Hz, or None.

    Refused: a rate that is not a finite number, one outside ``FS_RANGE`` (1-20000 Hz), and one below
    the target (upsampling cannot restore the missing band). ``whose`` and ``hint`` word the message.
    """
    try:
        value = float(fs)
    except (TypeError, ValueError):
        return f"sampling rate {fs!r} is not a number of Hz"
    if not math.isfinite(value) or value <= 0:
        return f"sampling rate {fs!r} Hz is not a positive number"
    if problem := rate_out_of_range(value):
        return problem
    if value < target_fs * (1 - FS_TOL):
        hint = hint or f"use a model trained at <= {value:g} Hz"
        return (
            f"sampled at {value:g} Hz, below {whose} {target_fs:g} Hz; upsampling cannot restore the missing "
            f"band up to {target_fs / 2:g} Hz ({hint})"
        )
    return None


def check_fs(fs: Any, target_fs: float, name: str, whose: str = "the model's", hint: str | None = None) -> float:
    """``fs`` as a float, or a DataError ``"{name}: ..."`` from :func:`fs_problem`."""
    problem = fs_problem(fs, target_fs, whose, hint)
    if problem:
        raise DataError(f"{name}: {problem}")
    return float(fs)


def auto_bandpass(fs: float) -> tuple[float, float]:
    """The default band-pass: 0.5-40 Hz (baseline wander, EMG and mains out; P, QRS, T kept), the upper
    edge lowered to 0.4 x ``fs`` where 40 Hz is not below the Nyquist rate."""
    return (0.5, min(40.0, round(0.4 * fs, 3)))


@dataclass(frozen=True)
class PreprocessConfig:
    """How raw records become model input; stored in ``meta.json`` and in checkpoints.

    Attributes:
        fs: target sampling rate in Hz.
        seconds: records shorter than this are zero-padded up to it (longer ones are kept whole).
        leads: output lead order (canonical names); leads a record lacks are masked, not invented.
        bandpass: ``(lo, hi)`` Hz for a zero-phase Butterworth band-pass (``lo=0``: low-pass only),
            ``"auto"`` (the default, :func:`auto_bandpass`: 0.5-40 Hz, the upper edge lowered at low
            rates) or None (the raw band). ``"auto"`` is resolved on construction, so stores and
            checkpoints hold the band used.
        baseline: ``none``, ``highpass`` (0.5 Hz zero-phase high-pass) or ``median`` (200 ms + 600 ms
            median filters, de Chazal et al. 2004).
        normalise: ``none`` (keep mV), ``record`` (per-lead z-score over the record) or ``robust``
            (per-lead median / 1.4826 MAD).
        dtype: storage type in a prepared store: ``float16``, ``int16`` (with a per-record scale) or
            ``float32``.
    """

    fs: float = 100.0
    seconds: float = 10.0
    leads: tuple[str, ...] = LEADS_12
    bandpass: tuple[float, float] | str | None = "auto"
    baseline: str = "none"
    normalise: str = "none"
    dtype: str = "float16"

    def __post_init__(self) -> None:
        if not (isinstance(self.fs, (int, float)) and math.isfinite(self.fs) and FS_RANGE[0] <= self.fs <= FS_RANGE[1]):
            raise ConfigError(
                f"preprocess.fs: must be a sampling rate of {FS_RANGE[0]:g}-{FS_RANGE[1]:g} Hz, got {self.fs!r}"
            )
        if not (isinstance(self.seconds, (int, float)) and math.isfinite(self.seconds) and self.seconds >= 0):
            raise ConfigError(f"preprocess.seconds: must be >= 0, got {self.seconds!r}")
        try:
            leads = tuple(canonical_lead(name) for name in self.leads)
        except DataError as exc:
            raise ConfigError(f"preprocess.leads: {exc}") from None
        if not leads or len(set(leads)) != len(leads):
            raise ConfigError(f"preprocess.leads: need distinct lead names, got {self.leads!r}")
        object.__setattr__(self, "leads", leads)
        object.__setattr__(self, "fs", float(self.fs))
        object.__setattr__(self, "seconds", float(self.seconds))
        if self.n_samples * len(leads) > MAX_RECORD_VALUES:
            raise ConfigError(
                f"preprocess.seconds: {self.seconds:g} s x {len(leads)} leads at {self.fs:g} Hz is more "
                f"than {MAX_RECORD_VALUES} values per record"
            )
        if isinstance(self.bandpass, str):
            if self.bandpass.strip().lower() not in ("auto", "none"):
                raise ConfigError(f"preprocess.bandpass: expected (lo, hi), 'auto' or None, got {self.bandpass!r}")
            auto = self.bandpass.strip().lower() == "auto"
            object.__setattr__(self, "bandpass", auto_bandpass(self.fs) if auto else None)
        if self.bandpass is not None:
            if len(self.bandpass) != 2:
                raise ConfigError(f"preprocess.bandpass: expected (lo, hi), got {self.bandpass!r}")
            lo, hi = (float(v) for v in self.bandpass)
            if not (0 <= lo < hi < self.fs / 2):
                raise ConfigError(
                    f"preprocess.bandpass: need 0 <= lo < hi < fs/2 = {self.fs / 2:g} Hz, got ({lo:g}, {hi:g})"
                )
            object.__setattr__(self, "bandpass", (lo, hi))
        for name, value, allowed in (
            ("baseline", self.baseline, BASELINES),
            ("normalise", self.normalise, NORMALISATIONS),
            ("dtype", self.dtype, DTYPES),
        ):
            if value not in allowed:
                raise ConfigError(f"preprocess.{name}: {value!r} is not one of {', '.join(allowed)}")

    @property
    def n_samples(self) -> int:
        """Minimum stored length in samples (``seconds * fs``)."""
        return round(self.seconds * self.fs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (for meta.json and checkpoints)."""
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, where: str = "preprocess") -> PreprocessConfig:
        """Inverse of :meth:`to_dict`; unknown keys are rejected."""
        return from_dict(cls, data, where)


# ------------------------------------------------------------------------------------ resampling
def _ratio(fs_in: float, fs_out: float) -> tuple[int, int]:
    frac = Fraction(fs_out).limit_denominator(10**6) / Fraction(fs_in).limit_denominator(10**6)
    frac = frac.limit_denominator(1000)
    if frac <= 0:
        raise DataError(f"cannot resample {fs_in} Hz to {fs_out} Hz")
    return frac.numerator, frac.denominator


@functools.lru_cache(maxsize=32)
def _fir(up: int, down: int) -> np.ndarray:
    # The filter scipy.signal.resample_poly designs itself; cached because designing it costs as
    # much as filtering one 10 s record.
    from scipy.signal import firwin

    max_rate = max(up, down)
    return firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0)).astype(np.float32)


def resampled_length(n: int, fs_in: float, fs_out: float) -> int:
    """Number of samples :func:`resample` returns for ``n`` input samples."""
    if fs_in == fs_out:
        return n
    up, down = _ratio(fs_in, fs_out)
    return -(-n * up // down)


def resample(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Polyphase resampling along the last axis (``scipy.signal.resample_poly``, rational factor).

    Args:
        x: ``(..., T)`` array.
        fs_in: its sampling rate.
        fs_out: the rate wanted; the ratio is approximated by a fraction with denominator <= 1000.

    Returns:
        float32 ``(..., ceil(T * up / down))``.
    """
    x = np.asarray(x, dtype=np.float32)
    if fs_in == fs_out:
        return x.copy()
    up, down = _ratio(fs_in, fs_out)
    if up > MAX_UPSAMPLE * down:
        raise DataError(
            f"will not resample {fs_in:g} Hz to {fs_out:g} Hz: {up / down:.4g} x more samples (the limit "
            f"is {MAX_UPSAMPLE} x)"
        )
    if up == down:
        return x.copy()
    if x.ndim == 2:  # scipy's result, computed faster (ecgmae.data.kernels)
        return kernels.resample_poly(x, up, down, _fir(up, down))
    from scipy.signal import resample_poly

    return resample_poly(x, up, down, axis=-1, window=_fir(up, down)).astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------- filters
@functools.lru_cache(maxsize=32)
def _sos(lo: float, hi: float | None, fs: float, order: int) -> np.ndarray:
    from scipy.signal import butter

    if lo <= 0:
        return butter(order, hi, btype="lowpass", fs=fs, output="sos")
    if hi is None:
        return butter(order, lo, btype="highpass", fs=fs, output="sos")
    return butter(order, (lo, hi), btype="bandpass", fs=fs, output="sos")


def _filtfilt(x: np.ndarray, sos: np.ndarray) -> np.ndarray:
    if x.shape[-1] < 2:
        return x.copy()
    padlen = min(3 * (2 * len(sos) + 1), x.shape[-1] - 1)
    if x.ndim == 2:  # scipy.signal.sosfiltfilt's result, its initial conditions computed once (ecgmae.data.kernels)
        return kernels.sosfiltfilt(sos, x, padlen).astype(np.float32, copy=False)
    from scipy.signal import sosfiltfilt

    return sosfiltfilt(sos, x, axis=-1, padlen=padlen).astype(np.float32, copy=False)


def bandpass(x: np.ndarray, fs: float, lo: float, hi: float, order: int = 2) -> np.ndarray:
    """Zero-phase Butterworth band-pass along the last axis (``lo=0``: low-pass only)."""
    if not 0 <= lo < hi < fs / 2:
        raise DataError(f"band-pass ({lo:g}, {hi:g}) Hz does not fit below fs/2 = {fs / 2:g} Hz")
    return _filtfilt(np.asarray(x, np.float32), _sos(float(lo), float(hi), float(fs), order))


def remove_baseline(x: np.ndarray, fs: float, method: str = "highpass") -> np.ndarray:
    """Remove baseline wander: ``highpass`` (0.5 Hz, zero-phase) or ``median`` (200 + 600 ms medians)."""
    x = np.asarray(x, np.float32)
    if method == "none":
        return x.copy()
    if method == "highpass":
        return _filtfilt(x, _sos(0.5, None, float(fs), 2))
    if method == "median":
        from scipy.ndimage import median_filter

        w1, w2 = int(0.2 * fs) | 1, int(0.6 * fs) | 1
        size = (1,) * (x.ndim - 1)
        base = median_filter(median_filter(x, size=(*size, w1), mode="nearest"), size=(*size, w2), mode="nearest")
        return x - base
    raise DataError(f"unknown baseline method {method!r}; expected one of {', '.join(BASELINES)}")


def standardise(x: np.ndarray, method: str = "record", eps: float = 1e-6) -> np.ndarray:
    """Per-lead normalisation over the record: ``record`` z-score or ``robust`` median/MAD.

    A flat lead (spread below ``eps``) is only centred, never blown up.
    """
    x = np.asarray(x, np.float32)
    if method == "none" or x.shape[-1] == 0:
        return x.copy()
    if method == "record":
        centre, spread = x.mean(axis=-1, keepdims=True), x.std(axis=-1, keepdims=True)
    elif method == "robust":
        centre = np.median(x, axis=-1, keepdims=True)
        spread = 1.4826 * np.median(np.abs(x - centre), axis=-1, keepdims=True)
    else:
        raise DataError(f"unknown normalisation {method!r}; expected one of {', '.join(NORMALISATIONS)}")
    return ((x - centre) / np.where(spread > eps, spread, 1.0)).astype(np.float32, copy=False)


def map_leads(x: np.ndarray, leads: Sequence[str], target: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Reorder rows of ``x`` (named ``leads``) into ``target`` order.

    Returns:
        ``(out (len(target), T) float32, present (len(target),) bool)``; a target lead the record
        lacks is a zero row with ``present`` False (masked, not invented).
    """
    x = np.asarray(x, np.float32)
    src = {canonical_lead(n): i for i, n in enumerate(leads)}
    out = np.zeros((len(target), x.shape[-1]), np.float32)
    present = np.zeros(len(target), bool)
    for j, name in enumerate(target):
        i = src.get(canonical_lead(name))
        if i is not None:
            out[j] = x[i]
            present[j] = True
    return out, present


def preprocess(
    signal: np.ndarray, fs: float, leads: Sequence[str], cfg: PreprocessConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Turn one raw record into model input.

    Args:
        signal: ``(L, T)`` in mV.
        fs: its sampling rate.
        leads: its lead names (any case, aliases allowed).
        cfg: the preprocessing to apply.

    Returns:
        ``(x (len(cfg.leads), max(T', cfg.n_samples)) float32, present (len(cfg.leads),) bool)`` with
        ``T' = resampled_length(T, fs, cfg.fs)``; padding is zeros after the record.

    Raises:
        DataError: wrong shape, non-finite values, no lead of ``cfg.leads`` present, or an amplitude
            beyond ``MAX_AMPLITUDE_MV`` in a lead it uses.
    """
    x = np.asarray(signal, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] != len(leads):
        raise DataError(f"signal of shape {x.shape} does not match {len(leads)} lead names")
    if x.shape[1] == 0:
        raise DataError("signal has no samples")
    if not np.isfinite(x).all():
        raise DataError(f"signal holds {int((~np.isfinite(x)).sum())} NaN/inf samples")
    mapped, present = map_leads(x, leads, cfg.leads)
    if not present.any():
        raise DataError(f"none of the leads {', '.join(cfg.leads)} in ({', '.join(map(str, leads))})")
    rows = mapped[present]
    peak = float(np.abs(rows).max())
    if peak > MAX_AMPLITUDE_MV:  # the one amplitude rule: prepare, the API, embed/predict and serve
        raise DataError(
            f"peak amplitude {peak:.3g} mV is more than any ECG (at most {MAX_AMPLITUDE_MV:g} mV): wrong gain or units?"
        )
    n_out = resampled_length(rows.shape[1], fs, cfg.fs)
    if n_out * len(cfg.leads) > MAX_RECORD_VALUES:  # checked before anything that size is allocated
        raise DataError(
            f"{x.shape[1]} samples at {fs:g} Hz become {n_out} at {cfg.fs:g} Hz x {len(cfg.leads)} "
            f"leads, more than {MAX_RECORD_VALUES} values per record"
        )
    rows = resample(rows, fs, cfg.fs)
    if cfg.baseline != "none":
        rows = remove_baseline(rows, cfg.fs, cfg.baseline)
    if isinstance(cfg.bandpass, tuple):  # "auto" is resolved when the config is built
        rows = bandpass(rows, cfg.fs, *cfg.bandpass)
    if cfg.normalise != "none":
        rows = standardise(rows, cfg.normalise)
    if not np.isfinite(rows).all():  # float32 overflow of absurd amplitudes
        peak = float(np.abs(x).max())
        raise DataError(f"non-finite values after preprocessing (peak input {peak:.3g}: wrong units?)")
    out = np.zeros((len(cfg.leads), max(rows.shape[1], cfg.n_samples)), np.float32)
    out[present, : rows.shape[1]] = rows
    return out, present


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
