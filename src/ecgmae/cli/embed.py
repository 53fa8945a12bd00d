"""``ecgmae embed``: one embedding per record of a corpus (or a prepared store), in source order.

Records stream through the model a chunk at a time and their rows go to disk as they come
(:mod:`ecgmae.streamed`), so an archive of any size runs in the same memory.

``--features`` writes hand-made ECG features (:func:`ecgmae.eval.features.ecg_features`) instead, with no
checkpoint, in the same format, so that encoders and the feature baseline can be compared with any model.
"""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecgmae.cli._common import add_command, add_overwrite, auto_or, positive_int, source_options

SOURCES = ("folder", "ptbxl", "cpsc2018", "cinc", "chapman", "hdf5", "numpy", "store")


@dataclass(frozen=True)
class _Row:
    """One record's feature vector as the collecting loop takes it (``name`` like a Prepared's; not a tuple,
    which the loop reads as a skipped record)."""

    name: str
    x: Any


def add_input_args(p: argparse.ArgumentParser, *, checkpoint_required: bool = True) -> None:
    """Flags ``embed`` and ``predict`` share: the checkpoint, the records and how to run."""
    p.add_argument(
        "--checkpoint",
        required=checkpoint_required,
        help="run directory or .safetensors file" + ("" if checkpoint_required else " (required unless --features)"),
    )
    p.add_argument("--src", required=True, type=Path, help="corpus folder or file, or a store (--source store)")
    p.add_argument(
        "--source",
        choices=SOURCES,
        default="folder",
        help="layout of SRC as for `ecgmae prepare`, or store (default folder: any tree of WFDB records, "
        "hospital exports: .xml (MUSE, Sierra, aECG), DICOM .dcm, EDF .edf)",
    )
    p.add_argument("--labels", type=Path, help="labels CSV for sources that take one (only record ids matter here)")
    p.add_argument("--task", help="label task of the source (ptbxl, cinc, chapman)")
    p.add_argument("--split", choices=("train", "val", "test"), help="with --source store: only this split")
    p.add_argument("--src-fs", type=float, help="sampling rate of raw arrays (hdf5, numpy)")
    p.add_argument("--src-leads", help="lead names of raw array rows, comma-separated (hdf5, numpy)")
    p.add_argument("--src-units", choices=("mV", "uV", "V", "auto"), help="physical unit of raw array values")
    p.add_argument(
        "--on-error",
        choices=("skip", "fail"),
        default="skip",
        help="skip unusable records with a warning (default; their ids are listed) or stop",
    )
    p.add_argument("--batch-size", type=positive_int, default=64, help="windows per forward pass (default 64)")
    p.add_argument(
        "--workers",
        type=auto_or(0),
        default=None,
        help="processes reading and preprocessing records while the model runs (0: in the model's process; "
        "default auto: half the CPUs, at least 1; all but one with a GPU)",
    )
    p.add_argument(
        "--threads",
        type=auto_or(1),
        default=None,
        help="torch threads for the model (default auto: the CPUs the readers leave, at least 1)",
    )
    p.add_argument("--device", default="auto", help="auto (cuda when available) | cpu | cuda | cuda:1 ...")
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="fp32 (default: the same numbers every run) or bf16: matrix products in bfloat16, about 1.5x "
        "faster on CPUs with AVX-512 BF16, outputs agreeing to a cosine of 0.99999, not bit for bit",
    )


def check_out(args: argparse.Namespace) -> None:
    """Refuse ``--out`` before any work: a directory, a path under a file, or a file this command reads."""
    from ecgmae.checkpoint import checkpoint_files
    from ecgmae.guards import check_output_file

    reads: list[Path | None] = [args.src, args.labels]
    if args.checkpoint:
        reads += checkpoint_files(args.checkpoint)
    check_output_file(args.out, reads, overwrite=args.overwrite)


def score_chunks(args: argparse.Namespace, *, predict: bool = False) -> tuple[Any, Iterator[Any]]:
    """Load ``--checkpoint`` and start :meth:`ecgmae.api.Model.stream_source` over ``--src`` with the flags.

    Returns:
        ``(model, chunks)``: the chunks (:class:`ecgmae.data.corpus.Chunk`) come as they are scored.
    """
    import torch

    from ecgmae.api import load, pick_device

    device = pick_device(args.device)
    workers, threads = parallelism(args, gpu=str(device).startswith("cuda"))
    torch.set_num_threads(threads)
    model = load(args.checkpoint, device=device)
    chunks = model.stream_source(
        args.source,
        args.src,
        predict=predict,
        labels=args.labels,
        task=args.task,
        options=source_options(args),
        split=args.split,
        workers=workers,
        on_error=args.on_error,
        batch_size=args.batch_size,
        quiet=args.quiet,
        precision=args.precision,
    )
    return model, chunks


def parallelism(args: argparse.Namespace, *, gpu: bool = False, model: bool = True) -> tuple[int, int]:
    """``(reader processes, torch threads)`` from ``--workers`` and ``--threads`` (None: auto).

    Reading and preprocessing a 10 s 12-lead 500 Hz record costs about what ``ecgmae_small`` costs on it, so
    auto splits the CPUs in halves (2 CPUs: one reader process, one torch thread; more processes than CPUs
    only take turns). A store is read in the model's process (memory-mapped, ~100x faster than the model);
    without a model (``--features``) every CPU reads.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if args.source == "store":
        workers = 0
    elif args.workers is not None:
        workers = args.workers
    elif not model:
        workers = cpus
    else:
        workers = max(1, cpus - 1) if gpu else max(1, cpus // 2)
    threads = args.threads if args.threads is not None else max(1, cpus - workers)
    return workers, threads


def feature_chunks(args: argparse.Namespace) -> tuple[Iterator[Any], list[str]]:
    """Hand-made features of every record of ``--src``, in source order, at each record's own rate.

    A store's records keep the store's leads (absent ones as zero rows); records of a corpus are mapped
    onto the 12 standard leads (leads a record lacks are zero rows), not resampled and not filtered.

    Returns:
        ``(chunks of (N, F) float32 features, feature names)``.
    """
    import numpy as np

    from ecgmae.data.corpus import iter_records, scored_chunks
    from ecgmae.data.record import LEADS_12
    from ecgmae.data.store import Store
    from ecgmae.eval.feature_probe import record_features
    from ecgmae.eval.features import feature_names

    leads = Store.open(args.src).leads if args.source == "store" else LEADS_12
    workers, _ = parallelism(args, model=False)

    def store_row(store: Store, i: int) -> _Row:
        return _Row(str(store.index["record"].iloc[i]), record_features(store, i))

    stream = iter_records(
        args.source,
        args.src,
        read=functools.partial(_source_row, LEADS_12),
        row=store_row,
        labels=args.labels,
        task=args.task,
        options=source_options(args),
        split=args.split,
        workers=workers,
        quiet=args.quiet,
        desc="features",
    )
    chunks = scored_chunks(stream, lambda buf: np.stack([r.x for r in buf]), on_error=args.on_error, where=args.src)
    return chunks, feature_names(leads)


def _source_row(leads: tuple[str, ...], rec: Any) -> _Row:
    """A raw record's features as a :class:`_Row` (picklable with ``functools.partial`` for reader processes)."""
    from ecgmae.eval.feature_probe import source_record_features

    return _Row(*source_record_features(leads, rec))


def add_parser(sub: Any) -> None:
    p = add_command(
        sub,
        "embed",
        run=run,
        help="embed every record of a corpus or store with a trained encoder or classifier (or hand-made features)",
        example="ecgmae embed --checkpoint runs/mae --src data/cinc --source cinc --out emb.npz\n"
        "  ecgmae embed --features --src data/cinc --source cinc --out features.npz",
        description="Embed every record of SRC with the checkpoint's stored preprocessing (resampling, filters, "
        "normalisation, lead order). Records of any length are cut into windows of the trained length whose "
        "pooled features are averaged. Writes FILE.npz with arrays `record` (N ids, in the order of the "
        "source), `embedding` (N x D float32), `skipped` (ids of unusable records) and `skipped_reason` "
        "(why, one line each). With --features (no "
        "checkpoint): hand-made ECG features instead (per lead: log spectrum in 0.5 Hz bins from 0.5 to 25 Hz, "
        "amplitude percentiles, peak-to-peak, std; R-R rhythm: heart rate, RR statistics, RMSSD, pNN50), "
        "computed at each record's own sampling rate (a store's records as stored; a corpus's mapped onto the "
        "12 standard leads, absent leads as zero rows), in `embedding`, with their names in `feature_names` "
        "- the baseline to compare embeddings with, using the same linear model.",
    )
    add_input_args(p, checkpoint_required=False)
    p.add_argument(
        "--features", action="store_true", help="write hand-made ECG features instead of embeddings (no checkpoint)"
    )
    p.add_argument("--out", required=True, type=Path, help="FILE.npz to write (atomically)")
    add_overwrite(p)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ecgmae.config import ConfigError
    from ecgmae.streamed import npz_rows

    check_out(args)
    extra: dict[str, Any] = {}
    if args.features:
        if args.checkpoint:
            raise ConfigError("--features computes hand-made features and takes no --checkpoint")
        chunks, names = feature_chunks(args)
        extra["feature_names"] = np.array(names, dtype=str)
    elif not args.checkpoint:
        raise ConfigError("--checkpoint is required (or --features for hand-made features)")
    else:
        _, chunks = score_chunks(args)
    skipped: list[Any] = []
    dims = 0
    with npz_rows(args.out) as npz:  # rows go to disk chunk by chunk; the file appears only when complete
        for c in chunks:
            if c.values is not None:
                npz.append(record=c.ids, embedding=c.values.astype(np.float32))
                dims = c.values.shape[1]
            skipped += c.skipped
        npz.put(
            skipped=np.array([k.record for k in skipped], dtype=str),
            skipped_reason=np.array([k.reason for k in skipped], dtype=str),
            **extra,
        )
        n = npz.rows("record")
    what = "features" if args.features else "dims"
    print(f"{args.out}: {n} records x {dims} {what}" + (f" ({len(skipped)} skipped)" if skipped else ""))
    return 0
