"""Hand-made ECG features: the baseline every learned encoder has to beat (numpy + scipy only).

One record ``(leads, samples)`` in mV becomes a fixed-length float32 vector, whatever its sampling rate
and length:

* per lead: the log power spectrum (Welch) averaged into 0.5 Hz bins from 0.5 to 25 Hz, amplitude
  percentiles (1, 5, 25, 50, 75, 95, 99), peak-to-peak amplitude and standard deviation;
* per record: rhythm features from R peaks found on all leads together (heart rate, RR mean, std and
  coefficient of variation, RMSSD, pNN50, shortest and longest RR, number of beats).

R peaks: each lead is band-passed to 5-15 Hz, differentiated and squared; the squared derivatives of the
leads that carry signal, each scaled by its own mean, are summed and smoothed over 100 ms (a Pan-Tompkins
style energy envelope), and ``scipy.signal.find_peaks`` picks its maxima at least 0.25 s apart (up to
240 bpm) above an adaptive height: a fraction of the typical height of the largest peaks of the record.

Every output is finite: all-zero (absent) leads, constant or very short records and records with fewer
than three beats give fill values (0 for the RR statistics) instead of NaN.

Example:
    >>> x = ecg_features(signal, fs=500)          # signal: (12, 5000) mV
    >>> x.shape, feature_names(12)[:2]            # (705,), ['lead0:psd_0.5-1.0Hz', ...]
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Sequence

import numpy as np
from scipy import signal as sps

SPECTRUM_EDGES: np.ndarray = np.arange(0.5, 25.0 + 1e-9, 0.5)  # 50 edges -> 49 bins of 0.5 Hz
PERCENTILES: tuple[int, ...] = (1, 5, 25, 50, 75, 95, 99)
RHYTHM: tuple[str, ...] = (
    "hr_bpm",
    "rr_mean_s",
    "rr_std_s",
    "rr_cv",
    "rmssd_s",
    "pnn50",
    "rr_min_s",
    "rr_max_s",
    "n_beats",
)
FEATURES_VERSION = 1  # bump when the features change (invalidates cached feature files)

_LOG_FLOOR = 1e-12  # mV^2/Hz added before the log: an all-zero lead gives log10(1e-12) = -12
_REFRACTORY_S = 0.25  # shortest RR the detector accepts (240 bpm)
_SMOOTH_S = 0.1  # moving-average window of the energy envelope
_HEIGHT = 0.3  # peaks must reach this fraction of the typical height of the record's largest peaks
_FLAT = 1e-6  # mV: a lead whose peak-to-peak is below this carries no signal


def per_lead_names() -> list[str]:
    """Names of the features computed for each lead, in output order."""
    spec = [f"psd_{lo:.1f}-{hi:.1f}Hz" for lo, hi in itertools.pairwise(SPECTRUM_EDGES)]
    return [*spec, *(f"p{q:02d}" for q in PERCENTILES), "ptp", "std"]


def feature_names(leads: int | Sequence[str]) -> list[str]:
    """Names of the :func:`ecg_features` outputs for ``leads`` (a count, or the lead names).

    Args:
        leads: the number of leads (named ``lead0``, ``lead1``, ...) or their names.

    Returns:
        ``lead:feature`` for every lead's features, lead by lead, then the rhythm features.
    """
    names = [f"lead{i}" for i in range(leads)] if isinstance(leads, int) else [str(n) for n in leads]
    return [f"{lead}:{f}" for lead in names for f in per_lead_names()] + [f"rhythm:{r}" for r in RHYTHM]


def n_features(n_leads: int) -> int:
    """Length of the :func:`ecg_features` vector of an ``n_leads``-lead record."""
    return n_leads * len(per_lead_names()) + len(RHYTHM)


def ecg_features(signal: np.ndarray, fs: float) -> np.ndarray:
    """Hand-made features of one record.

    Args:
        signal: ``(leads, samples)`` in mV (a 1-D array is one lead); NaN/inf samples count as 0.
        fs: sampling rate in Hz.

    Returns:
        ``(n_features(leads),)`` float32, finite; names from :func:`feature_names`.

    Raises:
        ValueError: ``signal`` is not 1-D or 2-D, or ``fs`` is not a positive number.
    """
    x = np.asarray(signal, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"signal: expected (leads, samples), got shape {x.shape}")
    fs = float(fs)
    if not np.isfinite(fs) or fs <= 0:
        raise ValueError(f"fs: must be a positive number of Hz, got {fs!r}")
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    if x.shape[1] == 0:
        x = np.zeros((x.shape[0], 1))
    per_lead = np.concatenate(
        [
            _log_spectrum(x, fs),
            np.percentile(x, PERCENTILES, axis=1).T,
            np.ptp(x, axis=1)[:, None],
            x.std(axis=1)[:, None],
        ],
        axis=1,
    )
    out = np.concatenate([per_lead.ravel(), rhythm_features(r_peaks(x, fs), fs)])
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def ecg_features_batch(signals: np.ndarray | Iterable[np.ndarray], fs: float) -> np.ndarray:
    """:func:`ecg_features` of several records with the same number of leads.

    Args:
        signals: ``(N, leads, samples)`` or an iterable of ``(leads, samples_i)`` arrays (lengths may differ).
        fs: their sampling rate in Hz.

    Returns:
        ``(N, n_features(leads))`` float32 (``(0, 0)`` when there are no records).
    """
    rows = [ecg_features(s, fs) for s in signals]
    if not rows:
        return np.zeros((0, 0), np.float32)
    if len({len(r) for r in rows}) > 1:
        raise ValueError("signals: records have different numbers of leads")
    return np.stack(rows)


def _log_spectrum(x: np.ndarray, fs: float) -> np.ndarray:
    """``(leads, 49)`` log10 Welch power (mV^2/Hz) averaged over each 0.5 Hz bin from 0.5 to 25 Hz.

    Segments of 4 s (0.25 Hz resolution), or the whole record when it is shorter; a bin that holds no
    Welch frequency (short records) takes the power interpolated at its centre, and bins above the
    Nyquist frequency the floor.
    """
    n = x.shape[1]
    freqs, psd = sps.welch(x, fs=fs, nperseg=min(n, int(round(4 * fs))), axis=-1)
    out = np.empty((x.shape[0], len(SPECTRUM_EDGES) - 1))
    for j, (a, b) in enumerate(itertools.pairwise(SPECTRUM_EDGES)):
        sel = (freqs >= a) & (freqs < b)
        if sel.any():
            out[:, j] = psd[:, sel].mean(axis=1)
        elif (a + b) / 2 <= freqs[-1]:
            out[:, j] = [np.interp((a + b) / 2, freqs, row) for row in psd]
        else:
            out[:, j] = 0.0
    return np.log10(np.maximum(out, 0.0) + _LOG_FLOOR)


@functools.lru_cache(maxsize=32)
def _qrs_band(fs: float) -> np.ndarray:
    """Second-order sections of the 5-15 Hz band-pass (narrowed below 15 Hz at low rates)."""
    nyq = fs / 2
    hi = min(15.0, 0.9 * nyq)
    lo = min(5.0, hi / 2)
    return sps.butter(2, [lo / nyq, hi / nyq], btype="band", output="sos")


def energy_envelope(x: np.ndarray, fs: float) -> np.ndarray:
    """The lead-combined QRS energy envelope ``(samples,)`` that :func:`r_peaks` searches.

    Each lead with signal is band-passed (5-15 Hz, zero-phase 2nd-order Butterworth), differentiated
    and squared, divided by its mean so that every lead weighs alike; the sum over leads is smoothed by
    a 100 ms moving average. All zeros when no lead carries signal.
    """
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    n = x.shape[1]
    env = np.zeros(n)
    live = np.ptp(x, axis=1) > _FLAT if n else np.zeros(len(x), bool)
    if n < 8 or not live.any():
        return env
    sos = _qrs_band(float(fs)).copy()  # scipy wants a writable array; the cache must stay intact
    y = x[live]
    y = sps.sosfiltfilt(sos, y, axis=-1, padlen=min(3 * (2 * len(sos) + 1), n - 1))
    d = np.gradient(y, axis=-1) * fs
    e = d * d
    scale = e.mean(axis=1, keepdims=True)
    ok = scale[:, 0] > 1e-12
    if not ok.any():
        return env
    env = (e[ok] / scale[ok]).sum(axis=0)
    w = max(1, int(round(_SMOOTH_S * fs)))
    return np.convolve(env, np.ones(w) / w, mode="same")


def r_peaks(x: np.ndarray, fs: float) -> np.ndarray:
    """Sample positions of the R peaks (QRS energy maxima) of one record ``(leads, samples)`` in mV.

    Peaks of :func:`energy_envelope` at least 0.25 s apart whose height reaches 0.3 times the median of
    the record's largest candidate peaks (one per second of record, at least three: mostly beats at any rate
    above 30 bpm), so the threshold follows the record's own QRS energy and a few tall artefacts or
    ectopic beats cannot raise it.

    Returns:
        Sorted int64 sample indices (empty when nothing is found).
    """
    env = energy_envelope(x, fs)
    if not env.any():
        return np.zeros(0, np.int64)
    dist = max(1, int(round(_REFRACTORY_S * fs)))
    cand, props = sps.find_peaks(env, distance=dist, height=0.0)
    if len(cand) == 0:
        return np.zeros(0, np.int64)
    heights = np.sort(props["peak_heights"])[::-1]
    k = max(3, int(round(len(env) / fs)))  # one per second: mostly beats at any rate above 30 bpm
    ref = float(np.median(heights[:k]))
    peaks, _ = sps.find_peaks(env, distance=dist, height=_HEIGHT * ref)
    return peaks.astype(np.int64)


def rhythm_features(peaks: np.ndarray, fs: float) -> np.ndarray:
    """:data:`RHYTHM` from R-peak positions: HR (bpm), RR statistics (s), pNN50, number of beats.

    Fewer than three beats (under two RR intervals) give 0 for every entry but ``n_beats``.
    """
    n = len(peaks)
    out = np.zeros(len(RHYTHM))
    out[-1] = n
    if n < 3:
        return out
    rr = np.diff(np.asarray(peaks, dtype=np.float64)) / fs
    mean = rr.mean()
    std = rr.std()
    drr = np.diff(rr)
    out[:-1] = (
        60.0 / mean,
        mean,
        std,
        std / mean,
        np.sqrt(np.mean(drr**2)),
        np.mean(np.abs(drr) > 0.05),
        rr.min(),
        rr.max(),
    )
    return out


def heart_rate(signal: np.ndarray, fs: float) -> float:
    """Mean heart rate (bpm) from the R peaks of one record; NaN with fewer than three beats."""
    x = np.nan_to_num(np.atleast_2d(np.asarray(signal, dtype=np.float64)))
    hr = rhythm_features(r_peaks(x, fs), fs)[0]
    return float(hr) if hr > 0 else float("nan")
