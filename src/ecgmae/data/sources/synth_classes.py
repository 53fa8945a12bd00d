"""The heart model behind the synthetic ECGs: classes, label priors, lead geometry and beat shapes.

The heart is a time-varying 3-D dipole in Frank coordinates (x: to the patient's left, y: to the feet,
z: to the back; mV). One beat is a sum of Gaussian bumps ``vec * exp(-(t - c)^2 / (2 s^2))`` whose
centre ``c = a + b * QT`` and width ``s = s0 + s1 * QT`` are linear in the beat's QT interval, so the
T wave follows the heart rate (Bazett) while P and QRS keep their timing. This module draws, per
record, the labels and the bumps of the normal beat, of the premature ventricular beat and of the
atrial fibrillation waves; ``synthetic.py`` places beats in time, projects and adds noise.

Leads: I and II are the ideal hexaxial projections of the frontal plane (III, aVR, aVL, aVF are
derived from them exactly); V1-V6 use Dower's inverse-transform coefficients (Dower et al., J
Electrocardiol 1980) with a small per-record jitter for electrode placement.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

SYNTH_CLASSES: tuple[str, ...] = (
    "NORM",
    "SB",
    "STach",
    "AF",
    "IAVB",
    "RBBB",
    "LBBB",
    "PVC",
    "LVH",
    "STE",
    "STD",
)

CLASS_DEFINITIONS: dict[str, str] = {
    "NORM": "normal ECG: sinus rhythm 60-100 bpm, PR 120-200 ms, QRS < 120 ms, no other class",
    "SB": "sinus bradycardia: sinus rhythm with mean heart rate < 60 bpm",
    "STach": "sinus tachycardia: sinus rhythm with mean heart rate > 100 bpm",
    "AF": "atrial fibrillation: irregular RR intervals, no P waves, 4-9 Hz fibrillatory waves",
    "IAVB": "first-degree AV block: sinus rhythm with PR interval > 200 ms",
    "RBBB": "right bundle branch block: QRS >= 120 ms, rsR' in V1, wide slurred S in I and V6",
    "LBBB": "left bundle branch block: QRS >= 120 ms, broad notched R in I/aVL/V5-V6, QS in V1, discordant ST-T",
    "PVC": "premature ventricular contractions: early wide beats without P, compensatory pause",
    "LVH": "left ventricular hypertrophy: Sokolow-Lyon S(V1) + max R(V5, V6) > 3.5 mV",
    "STE": "ST elevation (injury) in an anterior, inferior or lateral territory, reciprocal depression",
    "STD": "ST depression and/or T-wave inversion (ischaemia or LVH strain)",
}

# SNOMED-CT codes as used by the PhysioNet/CinC 2020-2021 challenges, written to the `# Dx:` header line.
CLASS_SNOMED: dict[str, str] = {
    "NORM": "426783006",
    "SB": "426177001",
    "STach": "427084000",
    "AF": "164889003",
    "IAVB": "270492004",
    "RBBB": "59118001",
    "LBBB": "164909002",
    "PVC": "427172004",
    "LVH": "164873001",
    "STE": "164931005",
    "STD": "429622005",
}

# Frank dipole -> leads I, II (ideal frontal plane) and V1..V6 (Dower 1980).
LEAD_VECTORS: np.ndarray = np.array(
    [
        [1.0, 0.0, 0.0],
        [0.5, np.sqrt(3.0) / 2.0, 0.0],
        [-0.515, 0.157, -0.917],
        [0.044, 0.164, -1.387],
        [0.882, 0.098, -1.277],
        [1.213, 0.127, -0.601],
        [1.125, 0.127, -0.086],
        [0.831, 0.076, 0.230],
    ]
)

T_PEAK = 0.747  # T-wave peak as a fraction of QT (the main T bump's width is 0.11 QT, ending at ~QT)
P_DUR = (0.08, 0.11)  # s


def unit(*v: float) -> np.ndarray:
    """A 3-vector scaled to length 1."""
    a = np.asarray(v, dtype=float)
    return a / np.linalg.norm(a)


@dataclasses.dataclass(frozen=True, eq=False)
class BeatTemplate:
    """The K Gaussian bumps of one kind of beat, relative to its QRS onset.

    Attributes:
        a, b: centre ``a + b * QT`` (s), shape (K,).
        s0, s1: width ``s0 + s1 * QT`` (s), shape (K,).
        vec: peak dipole of each bump (mV), shape (K, 3).
        kind: 0 atrial (P), 1 QRS, 2 ST-T, shape (K,).
        qrs_s: QRS duration of this beat kind.
        qt_min: the QT interval never goes below this (keeps the T wave after the QRS at high rates).
    """

    a: np.ndarray
    b: np.ndarray
    s0: np.ndarray
    s1: np.ndarray
    vec: np.ndarray
    kind: np.ndarray
    qrs_s: float
    qt_min: float


class _Beat:
    """Collects bumps and builds a :class:`BeatTemplate`."""

    def __init__(self, qrs_s: float) -> None:
        self.d = qrs_s
        self.rows: list[tuple[float, float, float, float, int]] = []
        self.vecs: list[np.ndarray] = []

    def bump(self, vec: np.ndarray, a: float, s0: float, b: float = 0.0, s1: float = 0.0, kind: int = 1) -> None:
        self.rows.append((a, b, s0, s1, kind))
        self.vecs.append(np.asarray(vec, dtype=float))

    def p_wave(self, pr_s: float, amp: float, dur: float, rotate: np.ndarray) -> None:
        # Right atrium first (anterior, inferior), then left atrium (leftward, posterior): biphasic in V1.
        self.bump(rotate @ unit(0.2, 0.8, -0.55) * 0.75 * amp, -pr_s + 0.35 * dur, 0.17 * dur, kind=0)
        self.bump(rotate @ unit(0.7, 0.45, 0.55) * 0.75 * amp, -pr_s + 0.62 * dur, 0.17 * dur, kind=0)

    def st_t(self, t_vec: np.ndarray, st_vec: np.ndarray | None) -> None:
        d = self.d
        self.bump(t_vec, 0.0, 0.0, T_PEAK, 0.11, kind=2)
        self.bump(0.35 * t_vec, 0.0, 0.0, T_PEAK - 0.13, 0.14, kind=2)  # slower upstroke
        if st_vec is not None:
            # Two bumps between the J point and the T peak add up to a plateau.
            self.bump(st_vec, 0.75 * d, -0.2 * d, 0.25 * T_PEAK, 0.2 * T_PEAK, kind=2)
            self.bump(0.9 * st_vec, 0.35 * d, -0.25 * d, 0.65 * T_PEAK, 0.25 * T_PEAK, kind=2)

    def build(self, qt_extra: float = 0.07) -> BeatTemplate:
        r = np.array(self.rows, dtype=float).reshape(-1, 5)
        return BeatTemplate(
            a=r[:, 0],
            b=r[:, 1],
            s0=r[:, 2],
            s1=r[:, 3],
            vec=np.array(self.vecs),
            kind=r[:, 4].astype(np.int8),
            qrs_s=self.d,
            qt_min=(self.d + qt_extra) / T_PEAK,
        )


@dataclasses.dataclass(frozen=True, eq=False)
class RecordPlan:
    """Everything about one synthetic record that does not depend on fs, length or noise."""

    labels: tuple[str, ...]
    hr_bpm: float
    af_rr_sigma: float
    hrv: tuple[float, float, float, float, float, float]  # rsa, lf, white, f_resp, f_lf, phase
    resp_mod: float
    pr_s: float | None
    qtc_s: float
    beat: BeatTemplate
    pvc: BeatTemplate | None
    pvc_prob: float
    pvc_coupling: tuple[float, float]
    af_wave: tuple[float, float, np.ndarray] | None  # amplitude mV, frequency Hz, direction
    lead_vectors: np.ndarray  # (8, 3): I, II, V1..V6
    info: dict[str, Any]


def sample_labels(rng: np.random.Generator) -> tuple[str, ...]:
    """Draw one record's labels (in ``SYNTH_CLASSES`` order) with clinically sensible co-occurrence.

    Priors: AF 13 %, SB 15 %, STach 15 %; IAVB 10 % (30 % with SB, never with AF); LBBB 9 % or RBBB
    10 %; PVC 12 % with any rhythm; LVH 10 % (not with LBBB), 60 % of it with strain (STD); STE 8 % and
    ischaemic STD 10 % (neither with LBBB, whose ST-T changes are secondary). NORM only when nothing
    else, about 27 % of records.
    """
    u = rng.random(8)  # a fixed number of draws keeps the stream stable
    out = set()
    if u[0] < 0.13:
        out.add("AF")
    elif u[0] < 0.28:
        out.add("SB")
    elif u[0] < 0.43:
        out.add("STach")
    if "AF" not in out and u[1] < (0.30 if "SB" in out else 0.10):
        out.add("IAVB")
    if u[2] < 0.09:
        out.add("LBBB")
    elif u[2] < 0.19:
        out.add("RBBB")
    if u[3] < 0.12:
        out.add("PVC")
    if "LBBB" not in out:
        if u[4] < 0.10:
            out.add("LVH")
            if u[5] < 0.6:
                out.add("STD")
        if u[6] < 0.08:
            out.add("STE")
        elif u[7] < 0.10:
            out.add("STD")
    if not out:
        out.add("NORM")
    return tuple(c for c in SYNTH_CLASSES if c in out)


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """Anatomical variation: rotation about the vertical axis (transition zone) and a small tilt."""
    g = np.deg2rad(np.clip(rng.normal(0.0, 12.0), -30.0, 30.0))
    t = np.deg2rad(np.clip(rng.normal(0.0, 6.0), -15.0, 15.0))
    ry = np.array([[np.cos(g), 0.0, np.sin(g)], [0.0, 1.0, 0.0], [-np.sin(g), 0.0, np.cos(g)]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(t), -np.sin(t)], [0.0, np.sin(t), np.cos(t)]])
    return rx @ ry


def _direction(axis_deg: float, posterior: float) -> np.ndarray:
    a = np.deg2rad(axis_deg)
    return unit(np.cos(a), np.sin(a), posterior)


def sokolow_lyon(beat: BeatTemplate, lead_vectors: np.ndarray) -> float:
    """S(V1) + max(R(V5), R(V6)) in mV of the beat's QRS bumps alone, on a 1 ms grid."""
    qrs = beat.kind == 1
    t = np.arange(-0.05, beat.qrs_s + 0.1, 0.001)
    g = np.exp(-0.5 * ((t[None, :] - beat.a[qrs, None]) / beat.s0[qrs, None]) ** 2)  # (Kq, T)
    v = lead_vectors[[2, 6, 7]] @ (beat.vec[qrs].T @ g)  # (3, T): V1, V5, V6
    return float(-v[0].min() + max(v[1].max(), v[2].max()))


def _ventricular(
    rng: np.random.Generator, labels: tuple[str, ...], rot: np.ndarray, scale: float, pr_s: float | None
) -> tuple[_Beat, dict[str, Any]]:
    """The conducted beat's P, QRS and ST-T bumps for the record's conduction and ST classes."""
    info: dict[str, Any] = {}
    has = set(labels)
    if "RBBB" in has:
        d = rng.uniform(0.125, 0.16)
    elif "LBBB" in has:
        d = rng.uniform(0.13, 0.18)
    else:
        d = rng.uniform(0.075, 0.11)
    beat = _Beat(d)
    if pr_s is not None:
        beat.p_wave(pr_s, scale * rng.uniform(0.08, 0.22), rng.uniform(*P_DUR), rot)
    axis = float(np.clip(rng.normal(45.0, 25.0), -35.0, 105.0))
    post = rng.uniform(0.25, 0.6) + (0.25 if "LVH" in has else 0.0)
    main = rot @ _direction(axis, post)
    r_amp = scale * rng.uniform(0.9, 1.7)
    t_vec = rot @ _direction(float(np.clip(axis + rng.normal(0, 15), 0, 80)), rng.normal(-0.3, 0.15))
    t_vec *= scale * rng.uniform(0.2, 0.5)
    st_vec = None
    if "LBBB" in has:
        lax = float(np.clip(rng.normal(-5.0, 20.0), -45.0, 60.0))
        d1, d2 = rot @ _direction(lax, 0.75), rot @ _direction(lax - 15.0, 0.95)
        r1 = scale * rng.uniform(1.0, 1.6)
        beat.bump(0.25 * r1 * (rot @ unit(0.6, 0.1, 0.8)), 0.15 * d, 0.09 * d)  # no septal q
        beat.bump(r1 * d1, 0.38 * d, 0.13 * d)
        beat.bump(r1 * rng.uniform(0.8, 1.1) * d2, 0.72 * d, 0.12 * d)  # the notch between them
        mean_dir = unit(*(d1 + d2))
        st_vec = -rng.uniform(0.1, 0.25) * scale * mean_dir  # discordant ST-T
        t_vec = -rng.uniform(0.25, 0.5) * scale * mean_dir
        axis = lax
    elif "RBBB" in has:
        beat.bump(rng.uniform(0.1, 0.25) * scale * (rot @ unit(-0.45, 0.25, -0.85)), 0.1 * d, 0.06 * d)
        beat.bump(0.8 * r_amp * main, 0.34 * d, 0.1 * d)
        rv = rot @ unit(-0.65, 0.1, -0.75)  # late rightward-anterior forces: R' in V1, wide S in I, V6
        beat.bump(rng.uniform(0.6, 1.1) * scale * rv, 0.72 * d, 0.13 * d)
        t_vec = np.linalg.norm(t_vec) * unit(*(unit(*t_vec) - 0.5 * rv))
    else:
        beat.bump(rng.uniform(0.08, 0.3) * scale * (rot @ unit(-0.45, 0.25, -0.85)), 0.16 * d, 0.075 * d)
        beat.bump(r_amp * main, 0.45 * d, 0.13 * d)
        s_dir = rot @ unit(-0.45, -0.35, 0.8)
        beat.bump(rng.uniform(0.2, 0.6) * scale * s_dir, 0.77 * d, 0.09 * d)
    if "STE" in has:
        territory = ("anterior", "inferior", "lateral")[int(rng.choice(3, p=[0.5, 0.35, 0.15]))]
        tdir = {"anterior": unit(0.15, 0.1, -1.0), "inferior": unit(0.05, 1.0, 0.1), "lateral": unit(1.0, -0.35, 0.1)}[
            territory
        ]
        st_vec = rng.uniform(0.15, 0.35) * (rot @ tdir)
        t_vec = t_vec + rng.uniform(0.1, 0.3) * (rot @ tdir)  # hyperacute T
        info["st_territory"] = territory
    elif "STD" in has and "LVH" in has:
        st_vec = -rng.uniform(0.08, 0.2) * main  # strain: lateral ST depression, inverted T
        t_vec = -rng.uniform(0.2, 0.4) * scale * main
    elif "STD" in has:
        st_vec = rng.uniform(0.1, 0.25) * (rot @ unit(-0.6, -0.6, 0.3))  # subendocardial: toward aVR
        if rng.random() < 0.5:
            t_vec = -rng.uniform(0.3, 0.8) * t_vec
    beat.st_t(t_vec, st_vec)
    info["axis_deg"] = round(axis, 1)
    return beat, info


def _pvc(rng: np.random.Generator, rot: np.ndarray, scale: float) -> BeatTemplate:
    """A unifocal premature ventricular beat: wide, no P, discordant ST-T."""
    d = rng.uniform(0.14, 0.18)
    base = unit(0.5, 0.7, 0.6) if rng.random() < 0.6 else unit(-0.6, -0.3, -0.7)  # RV or LV focus
    d1 = rot @ unit(*(base + rng.normal(0.0, 0.25, 3)))
    d2 = rot @ unit(*(base + rng.normal(0.0, 0.35, 3)))
    beat = _Beat(d)
    beat.bump(scale * rng.uniform(1.2, 2.0) * d1, 0.3 * d, 0.14 * d)
    beat.bump(scale * rng.uniform(0.4, 1.0) * d2, 0.65 * d, 0.13 * d)
    beat.st_t(-scale * rng.uniform(0.3, 0.6) * d1, -scale * rng.uniform(0.05, 0.15) * d1)
    return beat.build(qt_extra=0.1)


def sample_plan(rng: np.random.Generator) -> RecordPlan:
    """Draw one record's labels and every shape parameter (nothing here depends on fs or noise)."""
    labels = sample_labels(rng)
    has = set(labels)
    if "AF" in has:
        hr = rng.uniform(60.0, 140.0)
    elif "SB" in has:
        hr = rng.uniform(40.0, 56.0)
    elif "STach" in has:
        hr = rng.uniform(104.0, 150.0)
    else:
        hr = rng.uniform(62.0, 97.0)
    if "AF" in has:
        pr = None
    elif "IAVB" in has:
        pr = rng.uniform(0.215, 0.32)
    else:
        pr = rng.uniform(0.12, 0.16) if "STach" in has else rng.uniform(0.12, 0.19)
    rot = _rotation(rng)
    scale = rng.uniform(0.75, 1.3)  # body habitus
    leads = LEAD_VECTORS.copy()
    leads[2:] = leads[2:] * rng.normal(1.0, 0.06, (6, 1)) + rng.normal(0.0, 0.06, (6, 3))
    beat, info = _ventricular(rng, labels, rot, scale, pr)
    tmpl = beat.build()
    # Floor: a right-axis RBBB beat can have a Sokolow-Lyon index near zero or negative, and dividing
    # by it blew the record up to ~1e12 mV.
    sl = max(sokolow_lyon(tmpl, leads), 0.5)
    if "LVH" in has:
        k = rng.uniform(4.0, 5.5) / sl
    elif "LBBB" not in has:
        k = min(1.0, rng.uniform(2.5, 3.1) / sl)
    else:
        k = 1.0
    vec = tmpl.vec.copy()
    vec[tmpl.kind == 1] *= k
    tmpl = dataclasses.replace(tmpl, vec=vec)
    info["sokolow_lyon_mv"] = round(sl * k, 3)
    pvc = _pvc(rng, rot, scale) if "PVC" in has else None
    sb = "SB" in has
    hrv = (
        rng.uniform(0.01, 0.06 if sb else 0.04),
        rng.uniform(0.005, 0.025),
        rng.uniform(0.003, 0.012),
        rng.uniform(0.15, 0.35),
        rng.uniform(0.06, 0.12),
        rng.uniform(0.0, 2 * np.pi),
    )
    af_wave = None
    if "AF" in has:
        af_dir = unit(*(np.array([-0.2, 0.5, -0.8]) + rng.normal(0.0, 0.15, 3)))
        af_wave = (rng.uniform(0.03, 0.12), rng.uniform(4.5, 8.5), af_dir)
    info["qtc_ms"] = round(1000 * (qtc := rng.uniform(0.38, 0.44)), 1)
    return RecordPlan(
        labels=labels,
        hr_bpm=float(hr),
        af_rr_sigma=float(rng.uniform(0.15, 0.3)),
        hrv=hrv,
        resp_mod=float(rng.uniform(0.02, 0.08)),
        pr_s=pr,
        qtc_s=float(qtc),
        beat=tmpl,
        pvc=pvc,
        pvc_prob=float(rng.uniform(0.06, 0.2)),
        pvc_coupling=(0.45, 0.65),
        af_wave=af_wave,
        lead_vectors=leads,
        info=info,
    )
