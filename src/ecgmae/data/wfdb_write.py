"""A plain WFDB format-16 writer in numpy (the bytes ``wfdb.wrsamp`` writes, ~100x faster), and the
hidden build folder that ``ecgmae synth`` fills and renames onto its output only when complete.

``wfdb.wrsamp`` spends ~30 ms per record in pandas bookkeeping; this writes the same ``.hea`` and
``.dat`` (one interleaved little-endian int16 file, adc_res 16, checksums and initial values, no byte
offset) for the same inputs in well under a millisecond of Python.

Example:
    >>> write_wfdb16(Path("out/rec1"), sig, 500, ["I", "II"], ["Dx: 426783006"], adc_gain=1000.0)
    0
"""

from __future__ import annotations

import contextlib
import operator
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ecgmae.errors import DataError, ECGMAEError
from ecgmae.outputs import check_own_folder, read_json
from ecgmae.utils import atomic_path, log, swap_folder

__all__ = ["DIGITAL_MAX", "DIGITAL_NAN", "SYNTH_MARKERS", "is_synth_folder", "staged_folder", "write_wfdb16"]

DIGITAL_NAN = -32768  # format 16's "no sample" value; real samples are clipped to +-DIGITAL_MAX
DIGITAL_MAX = 32767
# Files that only an `ecgmae synth` folder holds (built-in engine: classes.json; deepfake: source.json).
SYNTH_MARKERS: tuple[str, ...] = ("classes.json", "source.json")
# Every other name such a folder holds: records, the record list, the built-in engine's labels.
SYNTH_FILES: tuple[str, ...] = ("*.hea", "*.dat", "RECORDS", "labels.csv")


def _per_lead(value: object, n: int, what: str, stem: str) -> list:
    items = list(value) if isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, str) else [value] * n
    if len(items) != n:
        raise DataError(f"{stem}: {len(items)} {what} values for {n} leads")
    return [v.item() if isinstance(v, np.generic) else v for v in items]


def _text(value: str, what: str, stem: str, spaces: bool = True) -> str:
    value = str(value)
    if "\n" in value or "\r" in value or (not spaces and (not value or any(c.isspace() for c in value))):
        raise DataError(f"{stem}: {what} {value!r} cannot go into a WFDB header")
    return value


def _fs_text(fs: float) -> str:
    # wfdb writes a float rate that is whole to 8 decimals as an integer ("500", not "500.0").
    if isinstance(fs, float) and round(fs, 8) == float(int(fs)):
        return str(int(fs))
    return str(fs)


def write_wfdb16(
    path_stem: Path | str,
    signal: np.ndarray,
    fs: float,
    lead_names: Sequence[str],
    comments: Sequence[str],
    adc_gain: float | Sequence[float],
    baseline: int | Sequence[int] = 0,
    units: str | Sequence[str] = "mV",
) -> int:
    """Write ``{stem}.hea`` and ``{stem}.dat`` (WFDB format 16), byte-identical to ``wfdb.wrsamp``.

    Matches ``wfdb.wrsamp(name, fs=fs, units=..., sig_name=lead_names, p_signal=signal.T (float64),
    fmt=["16"] * L, adc_gain=..., baseline=..., comments=comments)`` for in-range signals, and
    ``wrsamp(..., d_signal=...)`` with the clipped digital values otherwise. Quantisation is done in
    float64 (``round(x * gain + baseline)``, halves to even) whatever the input dtype. Samples
    beyond the int16 range are clipped to +-32767 (and logged); NaN becomes -32768, which WFDB
    readers return as NaN. Each file is written atomically, the ``.dat`` first.

    Args:
        path_stem: record path without suffix; its name is the record name (no '.' or spaces).
        signal: (L, T) physical signal, T >= 1.
        fs: sampling rate in Hz (> 0); a whole float is written as an integer, as wfdb does.
        lead_names: L signal names.
        comments: header comment lines, written as ``# {comment}``.
        adc_gain: digital units per physical unit, one for all leads or one per lead (> 0).
        baseline: digital value of 0 physical units, one or one per lead.
        units: physical units, one or one per lead.

    Returns:
        The number of samples clipped to +-32767.

    Raises:
        DataError: on a bad shape, name, rate, gain, baseline or header text (naming the record).
    """
    stem = Path(path_stem)
    name = _text(stem.name, "record name", str(stem), spaces=False)
    if "." in name:
        raise DataError(f"{stem}: record name {name!r} must not contain '.'")
    sig = np.asarray(signal)
    if sig.ndim != 2 or sig.shape[1] < 1:
        raise DataError(f"{stem}: signal shape {sig.shape}, expected (leads, samples) with >= 1 sample")
    n_sig, n = sig.shape
    names = [_text(s, "lead name", name) for s in _per_lead(lead_names, n_sig, "lead name", name)]
    unit = [_text(u, "unit", name, spaces=False) for u in _per_lead(units, n_sig, "unit", name)]
    gains = _per_lead(adc_gain, n_sig, "adc_gain", name)
    if not all(np.isfinite(g) and g > 0 for g in gains):
        raise DataError(f"{name}: adc_gain {gains} must be finite and > 0")
    try:
        base = [operator.index(b) for b in _per_lead(baseline, n_sig, "baseline", name)]
    except TypeError:
        raise DataError(f"{name}: baseline {baseline!r} must be integers") from None
    if not all(-DIGITAL_MAX <= b <= DIGITAL_MAX for b in base):
        raise DataError(f"{name}: baseline {base} is outside the int16 range")
    fs = fs.item() if isinstance(fs, np.generic) else fs
    if not (np.isfinite(fs) and fs > 0):
        raise DataError(f"{name}: sampling rate {fs} must be finite and > 0")
    lines = [_text(c, "comment", name) for c in comments]

    d = sig.astype(np.float64) * np.array(gains)[:, None] + np.array(base)[:, None]  # (L, T) digital
    np.round(d, 0, out=d)
    nan = np.isnan(d)
    clipped = int((np.abs(d) > DIGITAL_MAX).sum())
    if clipped:
        log.warning(
            "%s: %d samples beyond the int16 range (+-%d digital units) were clipped", name, clipped, DIGITAL_MAX
        )
        np.clip(d, -DIGITAL_MAX, DIGITAL_MAX, out=d)
    d[nan] = DIGITAL_NAN
    digital = d.astype("<i2")
    checksum = digital.sum(axis=1, dtype=np.int64) % 65536

    header = [f"{name} {n_sig} {_fs_text(fs)} {n}"]
    header += [
        f"{name}.dat 16 {g}({b})/{u} 16 0 {int(i)} {int(c)} 0 {s}"
        for g, b, u, i, c, s in zip(gains, base, unit, digital[:, 0], checksum, names, strict=True)
    ]
    header += [f"# {c}" for c in lines]
    with atomic_path(stem.with_name(f"{name}.dat")) as tmp:
        tmp.write_bytes(np.ascontiguousarray(digital.T).tobytes())  # frame by frame: (T, L)
    with atomic_path(stem.with_name(f"{name}.hea")) as tmp:
        tmp.write_text("".join(f"{line}\n" for line in header), encoding="utf-8")
    return clipped


def is_synth_folder(folder: Path, markers: Sequence[str] = SYNTH_MARKERS) -> bool:
    """True when ``folder`` holds a marker as ``ecgmae synth`` writes it (classes.json with its generator,
    or source.json with the ecgmae version), not merely a file of that name."""
    for name in markers:
        meta = read_json(Path(folder) / name)
        if isinstance(meta, dict) and (
            (meta.get("generator") or {}).get("name") == "ecgmae synth" or "ecgmae_version" in meta
        ):
            return True
    return False


def _check_target(out: Path, overwrite: bool, markers: Sequence[str]) -> None:
    if out.exists() and not out.is_dir():
        raise ECGMAEError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ECGMAEError(f"{out}: folder exists and is not empty; pass --overwrite to replace it")
    _check_own(out, markers)


def _check_own(out: Path, markers: Sequence[str]) -> None:
    """Only a folder ``ecgmae synth`` wrote, holding nothing else, is replaced."""
    check_own_folder(out, "synth folder", marked=lambda f: is_synth_folder(f, markers), names=(*SYNTH_FILES, *markers))


@contextlib.contextmanager
def staged_folder(
    out: Path | str, *, overwrite: bool = False, markers: Sequence[str] = SYNTH_MARKERS
) -> Iterator[Path]:
    """Yield a hidden temp folder beside ``out``; rename it onto ``out`` only if the block succeeds.

    An interrupted or failed block leaves neither a half-written ``out`` nor the temp folder.

    Args:
        out: target folder; must be absent or empty unless ``overwrite``.
        overwrite: replace a non-empty ``out``, but only one holding one of ``markers`` (a folder
            this program wrote), never an unrelated folder.
        markers: file names that mark a folder as replaceable.

    Raises:
        ECGMAEError: when ``out`` is a file, or a non-empty folder that may not be replaced.
    """
    out = Path(out)
    _check_target(out, overwrite, markers)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield tmp
        swap_folder(tmp, out, check=lambda o: _check_own(o, markers))
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
