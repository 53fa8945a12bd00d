"""Built-in labelled synthetic 12-lead ECGs (a 3-D dipole heart model) and their WFDB folder.

Record ``i`` of seed ``s`` depends on ``(s, i)`` alone (``np.random.SeedSequence([s, i])``), so
generating N records or only the first k gives the same records, and records can be made in parallel.
Its labels and shapes come from one child stream and its noise from another, so the same record at
noise "none", "low" or "realistic" has the same labels, beats and shapes (only the noise differs).

Noise is added where it arises, at the electrodes (RA, LA, LL, V1-V6): I = LA - RA, II = LL - RA,
Vk = Vk - (RA + LA + LL) / 3. III, aVR, aVL, aVF are then derived from I and II in float32, so the
Einthoven and Goldberger identities hold exactly at every noise level (to float32 rounding).

Example:
    >>> rec = generate_record(seed=0, index=42, noise="none")
    >>> rec.signal.shape, rec.labels        # (12, 5000) float32 mV, e.g. ('NORM',)
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ecgmae.config import ConfigError
from ecgmae.data.sources.synth_classes import (
    CLASS_DEFINITIONS,
    CLASS_SNOMED,
    SYNTH_CLASSES,
    BeatTemplate,
    RecordPlan,
    sample_plan,
)
from ecgmae.utils import log

__all__ = ["LEADS", "NOISE_LEVELS", "SYNTH_CLASSES", "SynthRecord", "generate", "generate_record", "write_wfdb_folder"]

LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
NOISE_LEVELS: tuple[str, ...] = ("none", "low", "realistic")
ADC_GAIN = 1000.0  # digital units per mV: 1 uV resolution, +-32.7 mV range in format 16
_CHUNK = 2048  # Gaussian bumps rendered per block (bounds memory for long records)


@dataclasses.dataclass(frozen=True, eq=False)
class SynthRecord:
    """One synthetic record with its ground truth.

    Attributes:
        record: record name, ``synth00042``.
        signal: float32 (12, T) in mV, leads in ``leads`` order.
        fs: sampling rate in Hz.
        leads: ``LEADS``.
        labels: class names in ``SYNTH_CLASSES`` order.
        hr_bpm: mean heart rate, 60 / mean(rr_s).
        rr_s: RR intervals between the QRS onsets inside the record (s).
        pr_ms: PR interval of conducted beats; None in atrial fibrillation.
        qrs_ms: QRS duration of conducted beats (premature ventricular beats are wider).
        patient: patient id (one record per synthetic patient).
        beat_onsets_s: QRS onset times inside the record (s).
        beat_is_pvc: which of those beats are premature ventricular beats.
        info: extra ground truth (axis_deg, qtc_ms, sokolow_lyon_mv, st_territory, seed, index, noise).
    """

    record: str
    signal: np.ndarray
    fs: float
    leads: tuple[str, ...]
    labels: tuple[str, ...]
    hr_bpm: float
    rr_s: np.ndarray
    pr_ms: float | None
    qrs_ms: float
    patient: str
    beat_onsets_s: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    beat_is_pvc: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=bool))
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


def _check(fs: float, seconds: float, noise: str, seed: int, index: int = 0) -> None:
    if noise not in NOISE_LEVELS:
        raise ConfigError(f"synth: noise {noise!r} is not one of {', '.join(NOISE_LEVELS)}")
    if not 50.0 <= fs <= 20000.0:
        raise ConfigError(f"synth: fs {fs} Hz is outside 50-20000 Hz")
    if not seconds >= 2.0:
        raise ConfigError(f"synth: seconds {seconds} is below 2 s (need at least two beats)")
    if seed < 0 or index < 0:
        raise ConfigError(f"synth: seed ({seed}) and index ({index}) must be >= 0")


def _sinus_rr(plan: RecordPlan, m: int, rng: np.random.Generator) -> np.ndarray:
    rr0 = 60.0 / plan.hr_bpm
    rsa, lf, white, f_resp, f_lf, ph = plan.hrv
    tk = np.arange(m) * rr0
    return rr0 * (
        1.0
        + rsa * np.sin(2 * np.pi * f_resp * tk + ph)
        + lf * np.sin(2 * np.pi * f_lf * tk + 2 * ph)
        + white * rng.standard_normal(m)
    )


def _beat_onsets(
    plan: RecordPlan, seconds: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """QRS onsets of every beat (s, some outside the record), PVC flags, mask of those inside, and the
    sinus times of the PVCs (when the QRS would have come had the ventricles not fired early)."""
    rr0 = 60.0 / plan.hr_bpm
    m = int(np.ceil(1.6 * (seconds + 5.0) / rr0)) + 8
    if plan.af_wave is not None:
        s = plan.af_rr_sigma
        rr = np.maximum(rr0 * np.exp(s * rng.standard_normal(m) - s * s / 2), 0.26)
    else:
        rr = _sinus_rr(plan, m, rng)
    start = -1.5 - rng.uniform(0.0, 1.0) * rr0
    for _ in range(8):  # rescale so the mean RR inside the record is exactly the planned one
        on = start + np.concatenate([[0.0], np.cumsum(rr)])
        inside = (on >= 0.0) & (on < seconds)
        k = int(inside.sum())
        if k < 2:
            break
        w = on[inside]
        mean = (w[-1] - w[0]) / (k - 1)
        if abs(mean - rr0) <= 1e-12 * rr0:
            break
        rr = rr * (rr0 / mean)
    on = start + np.concatenate([[0.0], np.cumsum(rr)])
    inside = (on >= 0.0) & (on < seconds)
    pvc = np.zeros(on.size, dtype=bool)
    sinus_on = np.zeros(0)
    idx = np.flatnonzero(inside)
    if plan.pvc is not None and idx.size >= 3:
        # Never the first or last beat inside: the mean RR (first to last) stays as planned.
        cand = idx[1:-1]
        pick = rng.random(cand.size) < plan.pvc_prob
        if not pick.any():
            pick[rng.integers(cand.size)] = True
        pick[1:] &= ~pick[:-1]  # no couplets
        j = cand[pick]
        pvc[j] = True
        c = rng.uniform(*plan.pvc_coupling, j.size)
        sinus_on = on[j].copy()
        on[j] = on[j - 1] + c * (on[j] - on[j - 1])  # the next sinus beat keeps its time: full pause
    return on, pvc, inside, sinus_on


def _bumps(
    tmpl: BeatTemplate, on: np.ndarray, qt: np.ndarray, amp: np.ndarray, p_jitter: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres, widths (flat, (B*K,)) and peak vectors ((B*K, 3)) of B beats of one template."""
    qt = np.maximum(qt, tmpl.qt_min)[:, None]
    c = on[:, None] + tmpl.a + tmpl.b * qt + p_jitter[:, None] * (tmpl.kind == 0)  # (B, K)
    s = np.maximum(tmpl.s0 + tmpl.s1 * qt, 0.002)
    v = amp[:, None, None] * tmpl.vec[None]  # (B, K, 3)
    return c.ravel(), s.ravel(), v.reshape(-1, 3)


def _render(c: np.ndarray, s: np.ndarray, v: np.ndarray, fs: float, n: int) -> np.ndarray:
    """Sum of Gaussian bumps on the sample grid -> dipole (3, n); each bump evaluated within 6 sigma."""
    keep = (c + 6 * s >= 0) & (c - 6 * s <= n / fs)
    c, s, v = c[keep], s[keep], v[keep]
    out = np.zeros((3, n))
    for lo in range(0, c.size, _CHUNK):
        cc, ss, vv = c[lo : lo + _CHUNK], s[lo : lo + _CHUNK], v[lo : lo + _CHUNK]
        half = int(np.ceil(6 * ss.max() * fs))
        idx = np.rint(cc * fs).astype(np.int64)[:, None] + np.arange(-half, half + 1)  # (K, L)
        g = np.exp(-0.5 * ((idx / fs - cc[:, None]) / ss[:, None]) ** 2)
        ok = (idx >= 0) & (idx < n)
        flat, w = idx[ok], g[ok]
        k = np.nonzero(ok)[0]
        for d in range(3):
            out[d] += np.bincount(flat, weights=w * vv[k, d], minlength=n)
    return out


def _dipole(
    plan: RecordPlan, fs: float, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The heart's dipole (3, n) plus the beats' onsets, PVC flags and RR intervals inside the record."""
    seconds = n / fs
    on, pvc, inside, sinus_on = _beat_onsets(plan, seconds, rng)
    rr_prev = np.diff(on, prepend=on[0] - 60.0 / plan.hr_bpm)
    qt = plan.qtc_s * np.sqrt(rr_prev)
    _, _, _, f_resp, _, ph = plan.hrv
    amp = 1.0 + plan.resp_mod * np.sin(2 * np.pi * f_resp * on + ph) + 0.015 * rng.standard_normal(on.size)
    p_jit = 0.004 * rng.standard_normal(on.size)
    near = (on > -2.0) & (on < seconds + 1.0)
    parts = [_bumps(plan.beat, on[near & ~pvc], qt[near & ~pvc], amp[near & ~pvc], p_jit[near & ~pvc])]
    if plan.pvc is not None and pvc.any():
        parts.append(_bumps(plan.pvc, on[pvc], qt[pvc], amp[pvc], p_jit[pvc]))
        p = plan.beat.kind == 0
        if plan.af_wave is None and p.any():
            # The sinus node fires on time regardless (hence the full compensatory pause): its P wave
            # stays, usually buried in the PVC's QRS or ST-T. AF has no P waves to keep.
            p_wave = dataclasses.replace(
                plan.beat,
                a=plan.beat.a[p],
                b=plan.beat.b[p],
                s0=plan.beat.s0[p],
                s1=plan.beat.s1[p],
                vec=plan.beat.vec[p],
                kind=plan.beat.kind[p],
            )
            parts.append(_bumps(p_wave, sinus_on, qt[pvc], amp[pvc], p_jit[pvc]))
    c, s, v = (np.concatenate(x) for x in zip(*parts, strict=True))
    dip = _render(c, s, v, fs, n)
    if plan.af_wave is not None:
        a0, f0, direction = plan.af_wave
        t = np.arange(n) / fs
        ph1, ph2, ph3 = rng.uniform(0.0, 2 * np.pi, 3)
        phase = 2 * np.pi * np.cumsum(f0 * (1.0 + 0.08 * np.sin(2 * np.pi * 0.13 * t + ph1))) / fs
        wave = a0 * (1.0 + 0.35 * np.sin(2 * np.pi * 0.3 * t + ph2)) * (np.sin(phase) + 0.3 * np.sin(2 * phase + ph3))
        dip += direction[:, None] * wave
    return dip, on[inside], pvc[inside], np.diff(on[inside])


@functools.lru_cache(maxsize=8)
def _emg_filter(fs: float) -> np.ndarray:
    from scipy.signal import butter

    hi = min(150.0, 0.4 * fs)
    if hi <= 25.0:
        return butter(2, 20.0 if 0.4 * fs > 20.0 else 0.2 * fs, btype="highpass", fs=fs, output="sos")
    return butter(2, [20.0, hi], btype="bandpass", fs=fs, output="sos")


def _electrode_noise(
    rng: np.random.Generator, level: str, fs: float, n: int, f_resp: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """Noise at the electrodes RA, LA, LL, V1..V6 (9, n) in mV, and a slow gain drift (n,) or None."""
    t = np.arange(n) / fs
    low = level == "low"
    bw = rng.uniform(0.01, 0.04) if low else rng.uniform(0.05, 0.25)
    resp = np.sin(2 * np.pi * f_resp * t + rng.uniform(0.0, 2 * np.pi))
    e = rng.uniform(-1.0, 1.0, (9, 1)) * bw * resp  # breathing moves every electrode
    f = rng.uniform(0.02, 0.15, (9, 2, 1))
    drift = rng.uniform(0.0, bw, (9, 2, 1)) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi, (9, 2, 1)))
    e += drift.sum(axis=1)
    e += (rng.uniform(0.003, 0.008) if low else rng.uniform(0.004, 0.012)) * rng.standard_normal((9, n))
    if low:
        return e, None
    line = 50.0 if rng.random() < 0.5 else 60.0
    for h, rel in ((1, 1.0), (3, 0.2)):
        if h * line < 0.45 * fs:
            a = rel * rng.uniform(0.0, rng.uniform(0.005, 0.04), (9, 1))
            e += a * np.sin(2 * np.pi * h * line * t + rng.uniform(0.0, 2 * np.pi, (9, 1)))
    from scipy.signal import sosfilt

    emg = sosfilt(_emg_filter(float(fs)), rng.standard_normal((9, n)), axis=-1)
    emg /= emg.std() + 1e-12
    env = np.ones(n)
    for _ in range(rng.poisson(1.0)):  # bursts of muscle tension
        env += rng.uniform(1.0, 4.0) * np.exp(-0.5 * ((t - rng.uniform(0, t[-1])) / rng.uniform(0.2, 1.0)) ** 2)
    limbs = np.array([1.5, 1.5, 1.5, 1, 1, 1, 1, 1, 1])[:, None]
    e += rng.uniform(0.004, 0.03) * limbs * rng.uniform(0.3, 1.0, (9, 1)) * env * emg
    if rng.random() < 0.2:  # an electrode pop: a step that decays back
        t0, tau = rng.uniform(0.0, t[-1]), rng.uniform(0.2, 0.8)
        pop = rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.8) * np.exp(-np.maximum(t - t0, 0.0) / tau)
        e[rng.integers(9)] += np.where(t >= t0, pop, 0.0)
    gain = None
    if rng.random() < 0.25:  # slow amplitude drift (posture, contact)
        gain = 1.0 + rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * rng.uniform(0.02, 0.1) * t + rng.uniform(0, 6.3))
    return e, gain


def _leads(dip: np.ndarray, lead_vectors: np.ndarray, e: np.ndarray | None) -> np.ndarray:
    """Dipole (3, n) + electrode noise (9, n) -> float32 (12, n); limb leads derived from I and II."""
    x = lead_vectors @ dip  # (8, n): I, II, V1..V6
    if e is not None:
        ra, la, ll = e[0], e[1], e[2]
        x[0] += la - ra
        x[1] += ll - ra
        x[2:] += e[3:] - (ra + la + ll) / 3.0
    x = x.astype(np.float32)
    i, ii = x[0], x[1]
    out = np.empty((12, dip.shape[1]), dtype=np.float32)
    out[0], out[1], out[2] = i, ii, ii - i
    out[3], out[4], out[5] = -(i + ii) / np.float32(2), i - ii / np.float32(2), ii - i / np.float32(2)
    out[6:] = x[2:]
    return out


def generate_record(
    seed: int, index: int, fs: float = 500, seconds: float = 10, noise: str = "realistic"
) -> SynthRecord:
    """Generate record ``index`` of the synthetic set ``seed``; depends on (seed, index) only.

    Args:
        seed: the set's seed (>= 0).
        index: record number (>= 0); the name is ``synth{index:05d}``.
        fs: sampling rate in Hz.
        seconds: length (>= 2 s).
        noise: "none", "low" (baseline wander + white) or "realistic" (wander, 50/60 Hz powerline,
            EMG bursts, electrode pops, amplitude drift).

    Raises:
        ConfigError: on an unknown noise level or out-of-range fs, seconds, seed or index.
    """
    _check(fs, seconds, noise, seed, index)
    model_ss, noise_ss = np.random.SeedSequence([seed, index]).spawn(2)
    rng = np.random.default_rng(model_ss)
    plan = sample_plan(rng)
    n = round(seconds * fs)
    dip, onsets, is_pvc, rr = _dipole(plan, fs, n, rng)
    e = None
    if noise != "none":
        e, gain = _electrode_noise(np.random.default_rng(noise_ss), noise, fs, n, plan.hrv[3])
        if gain is not None:
            dip = dip * gain
    signal = _leads(dip, plan.lead_vectors, e)
    mean_rr = float(rr.mean()) if rr.size else 60.0 / plan.hr_bpm
    info = dict(plan.info, seed=seed, index=index, noise=noise, pvc_count=int(is_pvc.sum()))
    return SynthRecord(
        record=f"synth{index:05d}",
        signal=signal,
        fs=float(fs),
        leads=LEADS,
        labels=plan.labels,
        hr_bpm=60.0 / mean_rr,
        rr_s=rr,
        pr_ms=None if plan.pr_s is None else 1000.0 * plan.pr_s,
        qrs_ms=1000.0 * plan.beat.qrs_s,
        patient=f"synth-s{seed}-p{index:05d}",
        beat_onsets_s=onsets,
        beat_is_pvc=is_pvc,
        info=info,
    )


def generate(
    n: int, seed: int = 0, fs: float = 500, seconds: float = 10, noise: str = "realistic"
) -> Iterator[SynthRecord]:
    """Records 0..n-1 of set ``seed``, one at a time (see :func:`generate_record`)."""
    _check(fs, seconds, noise, seed)
    for i in range(n):
        yield generate_record(seed, i, fs=fs, seconds=seconds, noise=noise)


def _write_record(folder: Path, rec: SynthRecord, seed: int, noise: str) -> None:
    from ecgmae._version import __version__
    from ecgmae.data.wfdb_write import write_wfdb16

    comments = [
        f"labels: {';'.join(rec.labels)}",
        f"Dx: {','.join(CLASS_SNOMED[c] for c in rec.labels)}",
        f"patient: {rec.patient}",
        f"hr_bpm: {rec.hr_bpm:.1f}",
        f"pr_ms: {'none' if rec.pr_ms is None else f'{rec.pr_ms:.0f}'}",
        f"qrs_ms: {rec.qrs_ms:.0f}",
        f"generator: ecgmae {__version__} synth seed={seed} index={rec.info['index']} noise={noise}",
    ]
    write_wfdb16(folder / rec.record, rec.signal, rec.fs, rec.leads, comments, adc_gain=ADC_GAIN)


def write_wfdb_folder(
    out: Path,
    n: int,
    *,
    fs: float = 500,
    seconds: float = 10,
    seed: int = 0,
    noise: str = "realistic",
    quiet: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write records 0..n-1 as WFDB (.hea + .dat, format 16, 1 uV) plus labels.csv, classes.json, RECORDS.

    Everything goes into a hidden temp folder beside ``out`` that is renamed onto ``out`` only when
    complete (:func:`ecgmae.data.wfdb_write.staged_folder`), so an interrupted run leaves no folder that
    looks finished.

    Args:
        out: target folder; must be absent or empty unless ``overwrite`` (which only replaces a
            folder that an earlier ``ecgmae synth`` wrote, i.e. one holding classes.json or source.json).
        n: number of records.
        fs, seconds, seed, noise: as in :func:`generate_record`.
        quiet: no progress bar.
        overwrite: replace an existing synth folder.

    Returns:
        ``out``.

    Raises:
        ConfigError: on bad arguments. ECGMAEError: when ``out`` cannot be (re)placed.
    """
    from ecgmae._version import __version__
    from ecgmae.data.wfdb_write import staged_folder
    from ecgmae.utils import progress, write_json_atomic

    if n < 1:
        raise ConfigError(f"synth: n must be >= 1, got {n}")
    _check(fs, seconds, noise, seed)
    out = Path(out)
    with staged_folder(out, overwrite=overwrite) as tmp:
        rows: list[tuple[str, str]] = []
        counts: Counter[str] = Counter()
        for rec in progress(generate(n, seed, fs, seconds, noise), quiet=quiet, total=n, desc="synth", unit="rec"):
            _write_record(tmp, rec, seed, noise)
            rows.append((rec.record, ";".join(rec.labels)))
            counts.update(rec.labels)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(("record", "labels"))
        writer.writerows(rows)
        (tmp / "labels.csv").write_text(buf.getvalue())
        (tmp / "RECORDS").write_text("".join(f"{r}\n" for r, _ in rows))
        write_json_atomic(
            tmp / "classes.json",
            {
                "classes": [
                    {"name": c, "definition": CLASS_DEFINITIONS[c], "snomed_ct": CLASS_SNOMED[c]} for c in SYNTH_CLASSES
                ],
                "counts": {c: counts.get(c, 0) for c in SYNTH_CLASSES},
                "generator": {
                    "name": "ecgmae synth",
                    "version": __version__,
                    "n": n,
                    "fs": fs,
                    "seconds": seconds,
                    "seed": seed,
                    "noise": noise,
                    "leads": list(LEADS),
                    "units": "mV",
                    "adc_gain": ADC_GAIN,
                },
            },
        )
    log.info("wrote %d records to %s (%s)", n, out, ", ".join(f"{c} {counts.get(c, 0)}" for c in SYNTH_CLASSES))
    return out
