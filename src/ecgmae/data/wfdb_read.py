"""WFDB records: a ``.hea`` header and its signal files, read with numpy for the common formats.

The formats 16, 61, 80, 160, 212, 24 and 32 are decoded here; anything else goes through the ``wfdb``
package. Before a byte of signal is read, the header's declared sizes, skews and byte offsets are checked
against the files it names, which must lie inside the header's folder or the corpus root. Every failure is
a :class:`~ecgmae.data.record.RecordError` naming the header. :func:`ecgmae.data.io.read_record` dispatches here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecgmae.data.record import (
    MAX_RECORD_VALUES,
    Record,
    RecordError,
    make_record,
    rate_out_of_range,
    unit_scale,
)
from ecgmae.data.safety import check_file, confine, read_small_text
from ecgmae.errors import clip

__all__ = ["check_wfdb_files", "parse_header", "read_wfdb"]


@dataclass(frozen=True)
class _Sig:
    file: str
    fmt: str
    spf: int
    skew: int
    offset: int
    gain: float
    baseline: float
    units: str
    name: str


_FMT_RE = re.compile(r"^(\d+)(?:x(\d+))?(?::(\d+))?(?:\+(\d+))?$")
_GAIN_RE = re.compile(r"^([-+0-9.eE]+)(?:\(([-+0-9.eE]+)\))?(?:/(\S*))?$")
_FS_RE = re.compile(r"^([0-9.eE+-]+)(?:/[0-9.eE+-]+)?(?:\([-0-9.eE+]+\))?$")
# format -> (bits per sample, the "invalid sample" code)
_BITS = {
    "16": (16, -32768),
    "61": (16, -32768),
    "80": (8, -128),
    "160": (16, -32768),
    "212": (12, -2048),
    "24": (24, -(2**23)),
    "32": (32, -(2**31)),
}


def parse_header(text: str, where: str) -> tuple[dict[str, Any], list[_Sig], list[str]]:
    """Parse a WFDB header into (record fields, signal specs, comment lines).

    Raises:
        RecordError: with kind ``header`` for anything malformed.
    """
    comments: list[str] = []
    lines: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#"):
            comments.append(line[1:].strip())
        elif line:
            lines.append(line)
    if not lines:
        raise RecordError(where, "empty header (no record line)", "header")
    tok = lines[0].split()
    rec: dict[str, Any] = {"name": tok[0], "multi": "/" in tok[0]}
    try:
        rec["nsig"] = int(tok[1]) if len(tok) > 1 else -1
        fs_m = _FS_RE.match(tok[2]) if len(tok) > 2 else None
        if len(tok) > 2 and fs_m is None:
            raise ValueError(f"sampling rate {clip(repr(tok[2]))}")
        rec["fs"] = float(fs_m.group(1)) if fs_m else 250.0
        rec["nsamp"] = int(tok[3]) if len(tok) > 3 else None
    except ValueError as exc:
        raise RecordError(where, f"bad record line {clip(repr(lines[0]))} ({exc})", "header") from None
    if rec["nsig"] < 0 or (rec["nsamp"] is not None and rec["nsamp"] < 0):
        raise RecordError(where, f"bad record line {clip(repr(lines[0]))}", "header")
    sigs: list[_Sig] = []
    if rec["multi"]:
        return rec, sigs, comments
    for line in lines[1:]:
        t = line.split(maxsplit=8)
        fm = _FMT_RE.match(t[1]) if len(t) > 1 else None
        if fm is None:
            raise RecordError(where, f"bad signal line {clip(repr(line))} (format field)", "header")
        gain, baseline, units = 200.0, None, "mV"
        try:
            if len(t) > 2:
                gm = _GAIN_RE.match(t[2])
                if gm is None:
                    raise ValueError(f"gain field {clip(repr(t[2]))}")
                gain = float(gm.group(1)) or 200.0
                baseline = float(gm.group(2)) if gm.group(2) is not None else None
                units = gm.group(3) if gm.group(3) is not None else "mV"
            adc_zero = float(t[4]) if len(t) > 4 else 0.0
        except ValueError as exc:
            raise RecordError(where, f"bad signal line {clip(repr(line))} ({exc})", "header") from None
        if not math.isfinite(gain) or (baseline is not None and not math.isfinite(baseline)):
            raise RecordError(where, f"bad signal line {clip(repr(line))} (gain/baseline not finite)", "header")
        name = t[8].strip() if len(t) > 8 else ""
        sigs.append(
            _Sig(
                t[0],
                fm.group(1),
                int(fm.group(2) or 1),
                int(fm.group(3) or 0),
                int(fm.group(4) or 0),
                gain,
                adc_zero if baseline is None else baseline,
                units,
                name,
            )
        )
    if len(sigs) != rec["nsig"]:
        raise RecordError(where, f"header declares {rec['nsig']} signals but lists {len(sigs)}", "header")
    return rec, sigs, comments


def _decode(raw: np.ndarray, fmt: str, n: int) -> np.ndarray:
    """Decode ``n`` samples of WFDB format ``fmt`` from the bytes ``raw`` into int32 (format 16: int16)."""
    if fmt in ("16", "61", "160", "32"):
        dt = {"16": "<i2", "61": ">i2", "160": "<u2", "32": "<i4"}[fmt]
        out = raw[: n * np.dtype(dt).itemsize].view(dt)
        if fmt == "16":  # int16 as stored: every value is the same after conversion to float
            return out
        out = out.astype(np.int32)
        return out - 32768 if fmt == "160" else out
    if fmt == "80":
        return raw[:n].astype(np.int32) - 128
    if fmt == "24":
        b = raw[: 3 * n].reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        return np.where(v >= 2**23, v - 2**24, v)
    # 212: two 12-bit samples packed into three bytes
    nbytes = (n + 1) // 2 * 3
    flat = np.zeros(nbytes, np.int32)
    flat[: min(nbytes, raw.size)] = raw[:nbytes]
    b = flat.reshape(-1, 3)
    out = np.empty(2 * len(b), np.int32)
    out[0::2] = b[:, 0] | ((b[:, 1] & 0x0F) << 8)
    out[1::2] = b[:, 2] | ((b[:, 1] & 0xF0) << 4)
    out = np.where(out >= 2048, out - 4096, out)
    return out[:n]


def _check_layout(where: str, sigs: list[Any], sizes: dict[str, int], max_skew: int) -> None:
    """Each signal's byte offset lies inside its data file and its skew within ``max_skew`` samples."""
    for s in sigs:
        what = f"signal {clip(s.name)}" if s.name else f"a signal of {clip(s.file)}"
        if s.file in sizes and s.offset > sizes[s.file]:
            raise RecordError(
                where,
                f"{what}: byte offset {s.offset} is beyond the end of data file {clip(s.file)} ({sizes[s.file]} bytes)",
                "header",
            )
        if s.skew > max_skew:
            raise RecordError(
                where, f"{what}: skew of {s.skew} samples is more than the {max_skew} the record can hold", "header"
            )


def _file_sizes(hea: Path, sigs: list[Any], where: str, root: str | Path | None) -> dict[str, int]:
    return {
        f: check_file(confine(hea, f, root), where, f"data file {f}")
        for f in dict.fromkeys(s.file for s in sigs)
        if f != "~"
    }


def check_wfdb_files(hea: Path, rec: dict[str, Any], sigs: list[Any], text: str, root: str | Path | None) -> None:
    """Before the wfdb package reads a record: every file it would open is confined, regular and sized
    for what the header declares (segments of a multi-segment record included), every byte offset lies
    inside its file and every skew (which the package reads as extra samples) within the record."""
    where = hea.name
    headers: list[tuple[int, list[Any], dict[str, int]]] = []  # (samples, signals, data file sizes)
    if rec["multi"]:
        lines = [ln.split() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
        for tok in lines[1:]:
            if not tok or tok[0] == "~":
                continue
            seg = confine(hea, f"{tok[0]}.hea", root)
            seg_rec, seg_sigs, _ = parse_header(read_small_text(seg, where, f"segment header {tok[0]}.hea"), seg.name)
            if seg_rec["multi"]:
                raise RecordError(where, f"segment {clip(tok[0])} is itself multi-segment", "header")
            headers.append((seg_rec["nsamp"] or 0, seg_sigs, _file_sizes(seg, seg_sigs, where, root)))
    else:
        headers.append((rec["nsamp"] or 0, sigs, _file_sizes(hea, sigs, where, root)))
    total = sum(size for _, _, sizes in headers for size in sizes.values())
    nsamp, nsig = rec["nsamp"] or 0, max(rec["nsig"], 1)
    # 64 values per stored byte is far beyond any WFDB encoding (FLAC of a flat line included).
    limit = min(MAX_RECORD_VALUES, max(1 << 20, 64 * total))
    for samples, seg_sigs, sizes in headers:
        _check_layout(where, seg_sigs, sizes, samples or limit // nsig)
    skew = max((s.skew for _, seg_sigs, _ in headers for s in seg_sigs), default=0)
    if (nsamp + skew) * nsig > limit:
        raise RecordError(
            where,
            f"header declares {nsamp} samples{f' (+{skew} of skew)' if skew else ''} x {nsig} "
            f"signals, more than its data files ({total} bytes) can hold",
            "length",
        )


def read_wfdb(hea: Path, root: str | Path | None = None) -> Record:
    where = hea.name
    text = read_small_text(hea, where, "header")
    rec, sigs, comments = parse_header(text, where)
    if problem := rate_out_of_range(rec["fs"]):  # before any signal byte is read
        raise RecordError(where, f"{problem} (wrong header?)", "rate")
    meta = _comment_meta(comments)
    meta["format"] = "wfdb"
    if rec["multi"] or any(s.fmt not in _BITS or s.spf != 1 or s.skew for s in sigs):
        check_wfdb_files(hea, rec, sigs, text, root)
        return _read_wfdb_fallback(hea, meta)
    if not sigs:
        raise RecordError(where, "header lists no signals", "header")
    by_file: dict[str, list[int]] = {}
    for i, s in enumerate(sigs):
        by_file.setdefault(s.file, []).append(i)
    nsamp = rec["nsamp"]
    blocks: dict[int, np.ndarray] = {}
    for fname, idx in by_file.items():
        first = sigs[idx[0]]
        if any(sigs[i].fmt != first.fmt or sigs[i].offset != first.offset for i in idx):
            check_wfdb_files(hea, rec, sigs, text, root)
            return _read_wfdb_fallback(hea, meta)
        bits, invalid = _BITS[first.fmt]
        path = confine(hea, fname, root)
        file_size = check_file(path, where, f"data file {fname}")
        _check_layout(where, [sigs[i] for i in idx], {fname: file_size}, 0)
        size = file_size - first.offset
        k = len(idx)
        avail = max(size, 0) * 8 // (bits * k)
        n = avail if nsamp is None or nsamp == 0 else nsamp
        need = math.ceil(n * k * bits / 8)
        if size < need:
            raise RecordError(
                fname,
                f"truncated: header says {n} samples x {k} signals ({need} bytes) but "
                f"the file holds {max(size, 0)} bytes ({avail} samples)",
                "truncated",
            )
        if nsamp and size - need >= math.ceil(k * bits / 8):
            raise RecordError(
                where,
                f"header says {n} samples but {fname} holds {avail} ({size} bytes): wrong length in the header",
                "length",
            )
        raw = np.fromfile(path, dtype=np.uint8, count=need, offset=first.offset)
        d = _decode(raw, first.fmt, n * k).reshape(n, k)  # time-major, as stored
        gain = np.array([sigs[i].gain for i in idx], np.float64)
        base = np.array([sigs[i].baseline for i in idx], np.float64)
        scale = np.array([unit_scale(sigs[i].units, where) for i in idx]) / gain
        phys = d - base  # float64: (d - base) * scale, rounded once to float32, as always
        phys *= scale
        out = phys.T.astype(np.float32, order="C")  # (k, n), transposed in the same pass
        bad = d == invalid
        if bad.any():
            out[bad.T] = np.nan
        for row, i in enumerate(idx):
            blocks[i] = out[row]
    if len(by_file) == 1 and next(iter(by_file.values())) == list(range(len(sigs))):
        signal = out  # one data file holding every signal in order: nothing to put together
    else:
        signal = np.stack([blocks[i] for i in range(len(sigs))])
    return make_record(hea.stem, signal, rec["fs"], [s.name for s in sigs], where, meta=meta, copy=False)


def _read_wfdb_fallback(hea: Path, meta: dict[str, Any]) -> Record:
    """Formats numpy does not decode here (multi-segment, format 8/310/311/FLAC...): the wfdb package."""
    import wfdb

    try:
        r = wfdb.rdrecord(str(hea.with_suffix("")))
    except Exception as exc:  # wfdb raises many types; the message is what the user needs
        raise RecordError(hea.name, f"unreadable WFDB record ({type(exc).__name__}: {exc})") from None
    if r.p_signal is None:
        raise RecordError(hea.name, "no signal data", "empty")
    units = r.units or ["mV"] * r.p_signal.shape[1]
    scale = np.array([unit_scale(u or "mV", hea.name) for u in units])
    return make_record(hea.stem, r.p_signal.T, r.fs, r.sig_name or [], hea.name, scale=scale, meta=meta)


def _comment_meta(comments: list[str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"comments": tuple(comments)}
    for c in comments:
        key, _, value = c.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "age" and value:
            try:
                age = float(value)
                if math.isfinite(age):
                    meta["age"] = age
            except ValueError:
                pass
        elif key == "sex" and value and value.lower() not in ("unknown", "nan"):
            meta["sex"] = value[0].upper()
    return meta
