"""A prepared corpus on disk: ``prepare_store`` reads a corpus, preprocesses every record once and writes
a store atomically; :class:`Store` (in :mod:`ecgmae.data.store_reader`, with the layout) reads one.

The store is built in ``STORE.tmp-*`` and renamed
into place, so a crash never leaves a half store, and preparing the same inputs with the same options
again is a no-op (the fingerprint in meta.json matches).
"""

from __future__ import annotations

import functools
import hashlib
import json
import secrets
import shutil
import struct
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ecgmae.data.record import Record, RecordError
from ecgmae.data.signal import PreprocessConfig, fs_problem, preprocess, resampled_length
from ecgmae.data.sources import Scan, get_source
from ecgmae.data.sources.labels import MAX_LABELS
from ecgmae.data.sources.reading import read_items
from ecgmae.data.splits import SPLITS, fill_splits, valid_fractions
from ecgmae.data.store_reader import _NPY_HEADER, INDEX, LABELS, META, SIGNALS, SKIPPED, STORE_FORMAT, Store
from ecgmae.errors import DataError, clip
from ecgmae.outputs import check_own_folder, lock_beside, locked, read_json
from ecgmae.utils import escape_table, log, swap_folder

__all__ = [
    "INDEX",
    "LABELS",
    "META",
    "SIGNALS",
    "SKIPPED",
    "STORE_FORMAT",
    "Store",
    "check_own_store",
    "check_prepare_args",
    "encode",
    "fingerprint",
    "is_store",
    "prepare_store",
]


class _SignalWriter:
    """Streams ``(T, L)`` blocks into a .npy file whose header is written last."""

    def __init__(self, path: Path, n_leads: int, dtype: str) -> None:
        self.path, self.n_leads, self.dtype = path, n_leads, np.dtype(dtype)
        self.rows = 0
        self._fh = open(path, "wb")  # closed in close()
        self._fh.write(b"\0" * _NPY_HEADER)

    def add(self, block: np.ndarray) -> int:
        """Append a ``(T, L)`` block; returns its row offset."""
        offset = self.rows
        self._fh.write(np.ascontiguousarray(block, dtype=self.dtype).tobytes())
        self.rows += block.shape[0]
        return offset

    def close(self) -> None:
        descr = np.lib.format.dtype_to_descr(self.dtype)
        text = repr({"descr": descr, "fortran_order": False, "shape": (self.rows, self.n_leads)})
        body = text.ljust(_NPY_HEADER - 10 - 1) + "\n"
        self._fh.seek(0)
        self._fh.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body.encode("latin1"))
        self._fh.close()


def fingerprint(source: str, src: Path, scan: Scan, cfg: PreprocessConfig, **options: Any) -> str:
    """SHA-256 over the options and the name, size and mtime of every input file."""
    from ecgmae._version import __version__

    files = []
    for p in scan.inputs:
        try:
            st = p.stat()
        except OSError:
            continue
        try:
            name = p.relative_to(src).as_posix()
        except ValueError:
            name = str(p.resolve())
        files.append((name, st.st_size, st.st_mtime_ns))
    payload = {
        "format": STORE_FORMAT,
        "ecgmae": __version__,
        "source": source,
        "src": str(src.resolve()),
        "preprocess": cfg.to_dict(),
        "options": _public(scan.options),
        "files": files,
        **options,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _versions() -> dict[str, str]:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from ecgmae._version import __version__

    out = {"ecgmae": __version__, "python": platform.python_version()}
    for pkg in ("numpy", "scipy", "wfdb", "pandas"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _public(options: dict[str, Any]) -> dict[str, Any]:
    """Source options without private (``_``-prefixed) ones, as the fingerprint and meta.json keep them."""
    return {k: v for k, v in options.items() if not str(k).startswith("_")}


def _file_sizes(folder: Path) -> dict[str, int]:
    return {name: (folder / name).stat().st_size for name in (SIGNALS, INDEX, LABELS, SKIPPED)}


def _up_to_date(out: Path, fp: str, on_error: str) -> bool:
    try:
        meta = json.loads((out / META).read_text())
    except (OSError, ValueError):
        return False
    if meta.get("fingerprint") != fp:
        return False
    # A store built with skips does not satisfy a run that must fail on the first bad record.
    if on_error == "fail" and meta.get("counts", {}).get("skipped_total", 0):
        return False
    # Same inputs, but the store's own files must still be there, whole (one deleted or cut short: rebuild).
    try:
        sizes = _file_sizes(out)
        want = meta.get("files") or {
            SIGNALS: _NPY_HEADER
            + int(meta["counts"]["samples"]) * len(meta["leads"]) * np.dtype(meta["dtype"]).itemsize
        }
    except (OSError, KeyError, TypeError, ValueError):
        log.warning("%s: damaged store (a file is missing): preparing it again", out)
        return False
    if any(sizes.get(name) != size for name, size in want.items()):
        log.warning("%s: damaged store (a file changed size since it was written): preparing it again", out)
        return False
    return True


def is_store(folder: Path) -> bool:
    """True when ``folder`` holds the meta.json that ``prepare`` writes last (format and fingerprint)."""
    meta = read_json(Path(folder) / META)
    return isinstance(meta, dict) and meta.get("format") == STORE_FORMAT and isinstance(meta.get("fingerprint"), str)


def check_own_store(out: Path) -> None:
    """Refuse to replace ``out`` unless it is absent, empty, or a store holding only a store's files."""
    check_own_folder(out, "store", marked=is_store, names=(SIGNALS, INDEX, LABELS, META, SKIPPED))


def check_prepare_args(src: Path, out: Path, *, workers: int, split: Sequence[float], on_error: str) -> None:
    """Refuse nonsense before any work: the messages name the ``ecgmae prepare`` flags."""
    if on_error not in ("skip", "fail"):
        raise DataError(f"--on-error: must be 'skip' or 'fail', got {on_error!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise DataError(f"--workers: must be a whole number >= 1, got {workers!r}")
    if not valid_fractions(split):
        raise DataError(
            f"--split: need three finite fractions >= 0 (train, val, test) summing to 1, got "
            f"{','.join(f'{float(v):g}' for v in split)}"
        )
    s, o = src.resolve(), out.resolve()
    if s == o or s.is_relative_to(o):
        raise DataError(f"--out {out}: holds the corpus --src {src}; write the store somewhere else")


def _inside(path: str | Path, folders: Sequence[Path]) -> bool:
    p = Path(path).resolve()
    return any(p == f or p.is_relative_to(f) for f in folders)


def _drop_own_output(scan: Scan, src: Path, out: Path) -> None:
    """A store written inside its own corpus is not part of the corpus: leave its files (and those of an
    interrupted or replaced build) out of the inputs, or every run would see new inputs and rebuild."""
    s, o = src.resolve(), out.resolve()
    if not o.is_relative_to(s):
        return
    own = [o, *o.parent.glob(f"{o.name}.tmp-*"), *o.parent.glob(f"{o.name}.old-*")]
    scan.inputs = [p for p in scan.inputs if not _inside(p, own)]
    scan.items = [it for it in scan.items if not _inside(it.path, own)]


def prepare_store(
    source: str,
    src: Path,
    out: Path,
    cfg: PreprocessConfig,
    *,
    labels: Path | None = None,
    task: str | None = None,
    workers: int = 1,
    on_error: str = "skip",
    seed: int = 0,
    quiet: bool = False,
    classes: Sequence[str] | None = None,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    options: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Read every record of ``src`` with ``source``, preprocess it and write the store ``out``.

    Args:
        source: one of ``ecgmae.data.sources.SOURCES`` (folder, ptbxl, cpsc2018, cinc, chapman, hdf5, numpy).
        src: the corpus folder (or file, for hdf5/numpy).
        out: the store folder to create or replace.
        cfg: preprocessing.
        labels: a labels CSV (folder, cinc, hdf5, numpy; folder also finds ``src/labels.csv``).
        task: label task of the source (ptbxl: all, diagnostic, ...; cinc: all, scored, codes).
        workers: reader processes (1: read in this process).
        on_error: ``skip`` bad records (listed in skipped.csv) or ``fail`` on the first one.
        seed: seed of the patient-aware random split used when the source has none.
        quiet: no progress bar.
        classes: restrict and order the label names; a record with another label is an error.
        split: train/val/test fractions of that random split.
        options: source options (``src_fs``, ``src_leads``, ``src_units``, ``records``...).
        overwrite: replace a store of other inputs or options at ``out`` (the same ones: nothing to do, or a
            damaged store rebuilt); never a folder holding anything else.

    Returns:
        ``out``.

    Raises:
        DataError: bad arguments, no usable record, (``on_error="fail"``) the first bad record, or ``out``
            holds something that may not be replaced.
    """
    src, out = Path(src), Path(out)
    if not src.exists():
        raise DataError(f"{src}: not found")
    check_prepare_args(src, out, workers=workers, split=split, on_error=on_error)
    out.parent.mkdir(parents=True, exist_ok=True)
    # one prepare per store at a time; the store is replaced whole, so its lock file lives beside it
    with locked(out, lock_beside(out)):
        opts = {**(options or {}), "target_fs": cfg.fs}
        if classes:
            opts["classes"] = tuple(classes)
        scan = get_source(source).scan(src, labels=Path(labels) if labels else None, task=task, options=opts)
        _drop_own_output(scan, src, out)
        fp = fingerprint(
            source, src, scan, cfg, seed=seed, split=list(split), classes=list(classes or []), labels=str(labels or "")
        )
        if _up_to_date(out, fp, on_error):
            log.info("%s is up to date (same inputs and options): nothing to do", out)
            return out
        check_own_store(out)
        if out.exists() and is_store(out) and not overwrite and (read_json(out / META) or {}).get("fingerprint") != fp:
            raise DataError(
                f"--out {out}: holds a store prepared from other inputs or options; pass --overwrite to replace it"
            )
        if scan.problems and on_error == "fail":
            raise DataError(scan.problems[0][3])
        _remove_stale_builds(out)
        tmp = out.parent / f"{out.name}.tmp-{secrets.token_hex(4)}"
        tmp.mkdir()  # not mkdtemp: the store should get the usual permissions, not 0700
        try:
            meta = _build(
                tmp, source, src, scan, cfg, workers=workers, on_error=on_error, seed=seed, quiet=quiet, split=split
            )
            meta.update(fingerprint=fp, versions=_versions(), files=_file_sizes(tmp))
            (tmp / META).write_text(json.dumps(meta, indent=2, default=str) + "\n")  # the whole dir is atomic
            swap_folder(tmp, out, check=check_own_store)
        except BaseException:  # an error, Ctrl-C, SIGTERM (Interrupted): the partial store goes
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return out


def _remove_stale_builds(out: Path) -> None:
    """Remove what a killed prepare of ``out`` left beside it (``OUT.tmp-*`` builds, an ``OUT.old-*`` store moved
    aside): called under the store's lock, so no prepare is writing them. Folders holding anything but a
    store's files are kept, with a warning."""
    for stale in sorted([*out.parent.glob(f"{out.name}.tmp-*"), *out.parent.glob(f"{out.name}.old-*")]):
        try:
            check_own_folder(stale, "store", marked=lambda f: True, names=(SIGNALS, INDEX, LABELS, META, SKIPPED))
        except DataError:
            log.warning("%s: left beside the store but holds other files; not removing it", stale)
            continue
        shutil.rmtree(stale, ignore_errors=True)
        log.info("%s: removed (left by an interrupted prepare)", stale)


def _write_tables(
    tmp: Path,
    rows: list[dict[str, Any]],
    label_names: tuple[str, ...],
    skipped: list[tuple[str, str, str, str]],
    cfg: PreprocessConfig,
    seed: int,
    split: Sequence[float],
) -> dict[str, Any]:
    """Assign missing splits, write index.csv, labels.npy and skipped.csv; return meta counts."""
    import pandas as pd

    splits, folds = fill_splits(
        [r["patient"] for r in rows],
        [r["record"] for r in rows],
        [r["split"] for r in rows],
        [r["fold"] for r in rows],
        split,
        seed,
    )
    col = {name: j for j, name in enumerate(label_names)}
    matrix = np.zeros((len(rows), len(label_names)), np.uint8)
    for i, r in enumerate(rows):
        for name in r["labels"]:
            if name in col:
                matrix[i, col[name]] = 1
        r.update(labels=";".join(r["labels"]), split=splits[i], fold=folds[i], patient=r["patient"] or "")
    index = pd.DataFrame(
        rows,
        columns=[
            "record",
            "patient",
            "source",
            "split",
            "fold",
            "offset",
            "length",
            "valid",
            "scale",
            "labels",
            "present",
            "age",
            "sex",
            "file",
        ],
    )
    escape_table(index).to_csv(tmp / INDEX, index=False)  # names as text in a spreadsheet; Store.open undoes it
    np.save(tmp / LABELS, matrix)
    escape_table(pd.DataFrame(skipped, columns=["record", "file", "kind", "message"])).to_csv(
        tmp / SKIPPED, index=False
    )
    present = np.array([[c == "1" for c in r["present"]] for r in rows], bool)
    return {
        "records": len(rows),
        "samples": int(sum(r["length"] for r in rows)),
        "splits": {s: int(sum(r["split"] == s for r in rows)) for s in SPLITS},
        "labels": {name: int(matrix[:, j].sum()) for name, j in col.items()},
        "missing_leads": {
            lead: int((~present[:, j]).sum()) for j, lead in enumerate(cfg.leads) if (~present[:, j]).any()
        },
        "skipped": dict(Counter(kind for _, _, kind, _ in skipped)),
        "skipped_total": len(skipped),
    }


# ----------------------------------------------------------------------------------- preparing
def encode(x: np.ndarray, dtype: str, where: str = "signal") -> tuple[np.ndarray, float]:
    """``(L, T)`` float32 -> ``((T, L) block in dtype, scale)`` with ``x ~= block.T * scale``."""
    if dtype == "int16":
        peak = float(np.abs(x).max()) if x.size else 0.0
        scale = max(peak, 1e-3) / 32000.0
        return np.rint(x.T / scale).astype(np.int16), scale
    if dtype == "float16" and x.size and float(np.abs(x).max()) > 60000:
        raise RecordError(
            where,
            f"amplitude {float(np.abs(x).max()):.3g} does not fit float16 (use --dtype int16 or check the units)",
            "range",
        )
    return np.ascontiguousarray(x.T, dtype=dtype), 1.0


def _to_row(cfg: PreprocessConfig, rec: Record) -> dict[str, Any]:
    """Preprocess and encode one record (in the worker, so only the small encoded block travels)."""
    problem = fs_problem(rec.fs, cfg.fs, "the store's", f"prepare with --fs <= {rec.fs:g} to keep it")
    if problem:  # the rule inference applies too: never upsample
        raise RecordError(rec.meta.get("file", rec.record), problem, "rate")
    x, present = preprocess(rec.signal, rec.fs, rec.leads, cfg)
    data, scale = encode(x, cfg.dtype, rec.meta.get("file", rec.record))
    return {
        "data": data,
        "scale": scale,
        "present": "".join("1" if p else "0" for p in present),
        "valid": min(resampled_length(rec.signal.shape[1], rec.fs, cfg.fs), x.shape[1]),
        "labels": rec.labels,
        "patient": rec.patient,
        "age": rec.meta.get("age"),
        "sex": rec.meta.get("sex"),
    }


def _build(
    tmp: Path,
    source: str,
    src: Path,
    scan: Scan,
    cfg: PreprocessConfig,
    *,
    workers: int,
    on_error: str,
    seed: int,
    quiet: bool,
    split: Sequence[float],
) -> dict[str, Any]:
    """Fill ``tmp`` with signals, index, labels and skipped list; return meta.json without fingerprint."""
    classes = tuple(scan.options.get("classes") or ())
    skipped = [(r, f, k, clip(m, 800)) for r, f, k, m in scan.problems]  # one line each, file text cut
    for _, _, _, message in skipped[:10]:
        log.warning("skipped %s", message)
    writer = _SignalWriter(tmp / SIGNALS, len(cfg.leads), cfg.dtype)
    rows: list[dict[str, Any]] = []
    try:
        for done in read_items(source, scan, functools.partial(_to_row, cfg), workers=workers, quiet=quiet):
            item = done.item
            if done.error is not None:
                kind, message = done.error
                if on_error == "fail":
                    raise DataError(message)
                skipped.append((item.record, item.path, kind, message))
                if len(skipped) <= 10:
                    log.warning("skipped %s", message)
                continue
            row = done.value
            offset = writer.add(row.pop("data"))
            rows.append(
                {
                    "record": item.record,
                    "source": source,
                    "split": item.split,
                    "fold": item.fold,
                    "offset": offset,
                    "length": writer.rows - offset,
                    "file": _rel(item.path, src),
                    **row,
                }
            )
    finally:
        writer.close()
    if len(skipped) > 10:
        log.warning("... and %d more skipped records (see %s)", len(skipped) - 10, SKIPPED)
    reasons = ", ".join(f"{n} {k}" for k, n in Counter(k for _, _, k, _ in skipped).most_common())
    if not rows:
        raise DataError(f"{src}: no usable record ({len(skipped)} skipped: {reasons or 'none found'})")
    if classes:
        names = classes
    elif scan.label_names is not None:
        names = tuple(scan.label_names)
    else:
        names = tuple(sorted({n for r in rows for n in r["labels"]}))
    if len(names) > MAX_LABELS:  # before a records x labels matrix is allocated
        raise DataError(
            f"{src}: {len(names)} distinct labels, more than {MAX_LABELS}: pick the ones to keep with --classes"
        )
    counts = _write_tables(tmp, rows, names, skipped, cfg, seed, split)
    log.info(
        "prepared %d records (%d skipped%s) into %d samples x %d leads at %g Hz",
        counts["records"],
        len(skipped),
        f": {reasons}" if reasons else "",
        counts["samples"],
        len(cfg.leads),
        cfg.fs,
    )
    return {
        "format": STORE_FORMAT,
        "source": source,
        "src": str(src.resolve()),
        "task": scan.options.get("task"),
        "fs": cfg.fs,
        "leads": list(cfg.leads),
        "units": "mV" if cfg.normalise == "none" else "standardised",
        "dtype": cfg.dtype,
        "layout": "signals.npy (total_samples, leads); record i = rows offset:offset+length",
        "seconds": cfg.seconds,
        "preprocessing": cfg.to_dict(),
        "label_names": list(names),
        "counts": counts,
        "source_options": {k: v for k, v in _public(scan.options).items() if k != "target_fs"},
        "seed": seed,
        "split_fractions": list(split),
    }


def _rel(path: str, src: Path) -> str:
    try:
        return Path(path).relative_to(src).as_posix()
    except ValueError:
        return str(path)
