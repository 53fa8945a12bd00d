"""``ecgmae prepare``: read a raw ECG corpus once into a store (memmap signals + index + labels + meta)."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from typing import Any

from ecgmae.cli._common import add_command, number_in, positive_int, source_options

_SOURCES = ("folder", "ptbxl", "cpsc2018", "cinc", "chapman", "hdf5", "numpy")
# Lead-set shortcuts for --leads; anything else is a comma-separated list of lead names.
_LEAD_SETS = {
    "12": "I,II,III,aVR,aVL,aVF,V1,V2,V3,V4,V5,V6",
    "8": "I,II,V1,V2,V3,V4,V5,V6",
    "6": "I,II,III,aVR,aVL,aVF",
}


def _floats(n: int) -> Any:
    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {n} comma-separated numbers, got {text!r}") from None
        if len(values) != n:
            raise argparse.ArgumentTypeError(f"expected {n} comma-separated numbers, got {text!r}")
        return values

    return parse


def _split(text: str) -> tuple[float, ...]:
    """``TRAIN,VAL,TEST``: three finite fractions >= 0 that sum to 1."""
    from ecgmae.data.splits import valid_fractions

    values = _floats(3)(text)
    if not valid_fractions(values):
        raise argparse.ArgumentTypeError(f"need three finite fractions >= 0 summing to 1, got {text!r}")
    return values


def _rate(text: str) -> float:
    """A sampling rate in Hz within the range a record may declare."""
    from ecgmae.data.record import FS_RANGE

    return number_in(*FS_RANGE, what="a sampling rate in Hz", unit=" Hz")(text)


_seconds = number_in(0.0, 86400.0, what="a number of seconds", unit=" s")


def _bandpass(text: str) -> tuple[float, float] | str | None:
    """``LO,HI`` in Hz, ``auto`` or ``none``."""
    if text.strip().lower() in ("auto", "none"):
        return None if text.strip().lower() == "none" else "auto"
    return _floats(2)(text)


def add_parser(sub: Any) -> None:
    from ecgmae.data.signal import BASELINES, DTYPES, NORMALISATIONS, PreprocessConfig, auto_bandpass

    d = PreprocessConfig()  # every default below is the config's, so Python and the CLI build the same store
    lo, hi = auto_bandpass(d.fs)
    p = add_command(
        sub,
        "prepare",
        run=run,
        help="read a raw ECG corpus into a store (resampled, memory-mapped, with labels and splits)",
        description=(
            "Read every record of SRC, resample it to --fs, map it to --leads (missing leads are masked),\n"
            "optionally filter and normalise it, and write STORE: signals.npy (memory-mapped), index.csv,\n"
            "labels.npy, meta.json and skipped.csv. The store appears only when complete, and running again\n"
            "with the same inputs and options does nothing; a store of other inputs or options is replaced\n"
            "only with --overwrite, and a folder that is not a store never. Bad records are skipped with one\n"
            "line each (--on-error skip) or stop the run (--on-error fail).\n\n"
            "Sources:\n"
            "  folder    any tree of WFDB records and hospital exports (.xml: GE MUSE, Philips Sierra, HL7\n"
            "            aECG; DICOM .dcm; EDF .edf), mixed; labels from --labels,\n"
            "            SRC/labels.csv, or (--labels-from statements) the interpretation each file carries\n"
            "  ptbxl     PTB-XL release; --task all|diagnostic|subdiagnostic|superdiagnostic|form|rhythm\n"
            "  cpsc2018  CPSC 2018 .mat files + REFERENCE.csv\n"
            "  cinc      CinC 2020/21 WFDB with '# Dx:' SNOMED codes; --task all|scored|codes\n"
            "  chapman   Chapman-Shaoxing, WFDB or ECGData CSV + Diagnostics; --task all|rhythm|beat\n"
            "  hdf5      CODE-15 style 'tracings' + exam_id (+ exams.csv / --labels)\n"
            "  numpy     .npy (N, leads, samples) + --src-fs + labels CSV"
        ),
        example="ecgmae prepare --source ptbxl --src data/ptb-xl --out stores/ptbxl --fs 100 --task superdiagnostic\n"
        "  ecgmae prepare --source folder --src exports/ --out stores/hospital --labels-from statements",
    )
    p.add_argument("--source", required=True, choices=_SOURCES, help="corpus layout of SRC")
    p.add_argument("--src", required=True, type=Path, help="corpus folder (an .h5/.npy file for hdf5/numpy)")
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help="store folder to write; a store of other inputs or options is replaced (atomically) only with --overwrite",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a store prepared from other inputs or options (refused otherwise)",
    )
    p.add_argument("--fs", type=_rate, default=d.fs, help=f"target sampling rate in Hz (default {d.fs:g})")
    p.add_argument(
        "--seconds",
        type=_seconds,
        default=d.seconds,
        help=f"shorter records are zero-padded to this length; longer ones are kept whole (default {d.seconds:g})",
    )
    p.add_argument("--leads", default="12", help="12 | 8 (I,II,V1-V6) | 6 (limb) | a list such as I,II,V1 (default 12)")
    p.add_argument("--labels", type=Path, help="labels CSV: record,labels (;-separated) or one 0/1 column per class")
    p.add_argument(
        "--labels-from",
        choices=("csv", "statements"),
        default="csv",
        help="folder source: labels from the labels CSV (default), or from the interpretation statements "
        "each hospital export carries (one label per statement line; WFDB and EDF records get none)",
    )
    p.add_argument("--task", help="label task of the source (ptbxl, cinc, chapman)")
    p.add_argument("--classes", help="comma-separated label names to keep, in this order; other names are errors")
    p.add_argument("--workers", type=positive_int, default=1, help="reader processes (default 1)")
    p.add_argument(
        "--on-error",
        choices=("skip", "fail"),
        default="skip",
        help="skip bad records and list them in STORE/skipped.csv (default), or stop at the first",
    )
    p.add_argument(
        "--bandpass",
        type=_bandpass,
        default="auto",
        metavar="LO,HI|auto|none",
        help=f"zero-phase band-pass in Hz (default auto: {lo:g},{hi:g}, the upper edge at most 0.4 x "
        "--fs); none keeps the raw band (for models trained on unfiltered stores, such as the "
        "demo's). Amplitudes stay in mV unless --normalise",
    )
    p.add_argument(
        "--baseline",
        choices=BASELINES,
        default=d.baseline,
        help=f"extra baseline-wander removal, for stores prepared with --bandpass none (default "
        f"{d.baseline}; the default band-pass already removes the wander)",
    )
    p.add_argument(
        "--normalise",
        choices=NORMALISATIONS,
        default=d.normalise,
        help=f"per-lead normalisation over each record (default {d.normalise}: keep mV)",
    )
    p.add_argument("--dtype", choices=DTYPES, default=d.dtype, help=f"storage type of the signals (default {d.dtype})")
    p.add_argument(
        "--split",
        type=_split,
        default=(0.8, 0.1, 0.1),
        metavar="TRAIN,VAL,TEST",
        help="patient-aware random split when the source has none (default 0.8,0.1,0.1)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of that split (default 0)")
    g = p.add_argument_group("raw arrays (hdf5, numpy, chapman CSV)")
    g.add_argument("--src-fs", type=_rate, help="sampling rate of the input (numpy: default --fs; hdf5: 400)")
    g.add_argument("--src-leads", help="lead names of the input columns, comma-separated")
    g.add_argument(
        "--src-units",
        choices=("mV", "uV", "V", "auto"),
        help="physical unit of the input values (auto: chapman CSV only, decided per record)",
    )


def run(args: argparse.Namespace) -> int:
    from ecgmae.config import ConfigError
    from ecgmae.data.signal import PreprocessConfig
    from ecgmae.data.store import Store, prepare_store
    from ecgmae.errors import Interrupted

    leads = tuple(_LEAD_SETS.get(args.leads.strip(), args.leads).split(","))
    try:
        cfg = PreprocessConfig(
            fs=args.fs,
            seconds=args.seconds,
            leads=leads,
            bandpass=args.bandpass,
            baseline=args.baseline,
            normalise=args.normalise,
            dtype=args.dtype,
        )
    except ConfigError as exc:  # every preprocess.<key> is the flag --<key>
        raise ConfigError(str(exc).replace("preprocess.", "--", 1)) from None
    options = source_options(args)
    if args.labels_from == "statements":
        if args.source != "folder":
            raise ConfigError(f"--labels-from statements: only the folder source reads statements, not {args.source}")
        options["labels_from"] = "statements"
    classes = tuple(c.strip() for c in args.classes.split(",") if c.strip()) if args.classes else None
    try:
        out = prepare_store(
            args.source,
            args.src,
            args.out,
            cfg,
            labels=args.labels,
            task=args.task,
            workers=args.workers,
            on_error=args.on_error,
            seed=args.seed,
            quiet=args.quiet,
            classes=classes,
            split=args.split,
            options=options,
            overwrite=args.overwrite,
        )
    except (Interrupted, KeyboardInterrupt) as exc:  # prepare_store removed its partial store on the way out
        raise Interrupted(
            getattr(exc, "signum", signal.SIGINT), f"the partial store was removed; {args.out} is as it was"
        ) from None
    store = Store.open(out)
    counts = store.meta["counts"]
    splits = ", ".join(f"{k} {v}" for k, v in counts["splits"].items())
    why = ", ".join(f"{n} {kind}" for kind, n in counts["skipped"].items())
    print(
        f"{out}: {counts['records']} records ({splits}), {len(store.label_names)} labels, "
        f"{counts['skipped_total']} skipped" + (f" ({why}; see {out / 'skipped.csv'})" if why else "")
    )
    return 0
