"""``ecgmae embed``: one embedding per record of a corpus (or a prepared store), in source order.

``--features`` writes hand-made ECG features (:func:`ecgmae.eval.features.ecg_features`) instead, with no
checkpoint, in the same format, so that encoders and the feature baseline can be compared with any model.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from ecgmae.cli._common import add_command, positive_int, source_options

SOURCES = ("folder", "ptbxl", "cpsc2018", "cinc", "chapman", "hdf5", "numpy", "store")
_CHUNK = 256  # records preprocessed ahead of each model call


@dataclass(frozen=True)
class _Row:
    """One record's feature vector as the collecting loop takes it (``name`` like a Prepared's; not a tuple,
    which the loop reads as a skipped record)."""

    name: str
    x: Any


def add_input_args(p: argparse.ArgumentParser, *, checkpoint_required: bool = True) -> None:
    """Flags ``embed`` and ``predict`` share: the checkpoint, the records and how to run."""
    p.add_argument("--checkpoint", required=checkpoint_required,
                   help="run directory or .safetensors file" + ("" if checkpoint_required else
                                                                 " (required unless --features)"))
    p.add_argument("--src", required=True, type=Path, help="corpus folder or file, or a store (--source store)")
    p.add_argument("--source", choices=SOURCES, default="folder",
                   help="layout of SRC as for `ecgmae prepare`, or store (default folder: any WFDB tree)")
    p.add_argument("--labels", type=Path, help="labels CSV for sources that take one (only record ids matter here)")
    p.add_argument("--task", help="label task of the source (ptbxl, cinc, chapman)")
    p.add_argument("--split", choices=("train", "val", "test"), help="with --source store: only this split")
    p.add_argument("--src-fs", type=float, help="sampling rate of raw arrays (hdf5, numpy)")
    p.add_argument("--src-leads", help="lead names of raw array rows, comma-separated (hdf5, numpy)")
    p.add_argument("--src-units", choices=("mV", "uV", "V", "auto"), help="physical unit of raw array values")
    p.add_argument("--on-error", choices=("skip", "fail"), default="skip",
                   help="skip unusable records with a warning (default; their ids are listed) or stop")
    p.add_argument("--batch-size", type=positive_int, default=64, help="windows per forward pass (default 64)")
    p.add_argument("--workers", type=positive_int, default=1, help="reader processes (default 1)")
    p.add_argument("--device", default="auto", help="auto (cuda when available) | cpu | cuda | cuda:1 ...")


def check_out(args: argparse.Namespace) -> None:
    """Refuse ``--out`` before any work: a directory, a path under a file, or a file this command reads."""
    from ecgmae.checkpoint import RUN_FILES
    from ecgmae.guards import check_output_file

    reads: list[Path | None] = [args.src, args.labels]
    if args.checkpoint:
        ckpt = Path(args.checkpoint)
        reads += [ckpt / name for name in RUN_FILES] if ckpt.is_dir() else [ckpt]
    check_output_file(args.out, reads)


def collect(args: argparse.Namespace, fn: Callable[[Any, list[Any]], Any], *, classifier: bool = False
            ) -> tuple[Any, list[str], Any, list[str]]:
    """Load the model, stream the records of ``--src`` through ``fn(model, prepared)`` in source order.

    Args:
        args: the parsed flags of :func:`add_input_args`.
        fn: ``(model, list of Prepared) -> (n, F) array``.
        classifier: refuse a checkpoint that is not a classifier before reading any record.

    Returns:
        ``(model, record ids, stacked outputs, skipped records)``.
    """
    import torch

    from ecgmae.api import load
    from ecgmae.data.corpus import iter_source

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model = load(args.checkpoint, device=device)
    if classifier and model.kind != "classifier":
        from ecgmae.errors import CheckpointError

        raise CheckpointError(f"{model.path}: holds {model.kind} weights; predict needs a classifier run "
                              "(ecgmae finetune); `ecgmae embed` gives features")
    options = source_options(args)
    stream = iter_source(args.source, args.src, model.preprocessing, labels=args.labels, task=args.task,
                         options=options, split=args.split, workers=args.workers, quiet=args.quiet)
    ids, outs, skipped = _gather(args, stream, lambda buf: fn(model, buf))
    return model, ids, outs, skipped


class Skipped(NamedTuple):
    """A record left out: its place in the source order (counting every record), id and the reason."""

    position: int
    record: str
    reason: str


def _gather(args: argparse.Namespace, stream: Any, fn: Callable[[list[Any]], Any]
            ) -> tuple[list[str], Any, list[Skipped]]:
    """Run ``fn`` over chunks of the usable items of ``stream`` (in order); skip or fail on the others."""
    import numpy as np

    from ecgmae.errors import DataError
    from ecgmae.utils import log

    ids: list[str] = []
    outs: list[Any] = []
    skipped: list[Skipped] = []
    buf: list[Any] = []
    for position, item in enumerate(stream):
        if isinstance(item, tuple):
            record, message = item
            if args.on_error == "fail":
                raise DataError(message)
            skipped.append(Skipped(position, record, message))
            if len(skipped) <= 10:
                log.warning("skipped %s", message)
            continue
        buf.append(item)
        if len(buf) >= _CHUNK:
            outs.append(fn(buf))
            ids.extend(p.name for p in buf)
            buf = []
    if buf:
        outs.append(fn(buf))
        ids.extend(p.name for p in buf)
    if len(skipped) > 10:
        log.warning("... and %d more skipped records (every reason is in the output)", len(skipped) - 10)
    if not ids:
        raise DataError(f"{args.src}: no usable record ({len(skipped)} skipped)")
    return ids, np.concatenate(outs), skipped


def collect_features(args: argparse.Namespace) -> tuple[list[str], Any, list[str], list[str]]:
    """Hand-made features of every record of ``--src``, in source order, at each record's own rate.

    A store's records keep the store's leads (absent ones as zero rows); records of a corpus are mapped
    onto the 12 standard leads (leads a record lacks are zero rows), not resampled and not filtered.

    Returns:
        ``(record ids, (N, F) float32 features, skipped records, feature names)``.
    """
    import numpy as np

    from ecgmae.data.record import LEADS_12
    from ecgmae.eval.features import feature_names

    if args.source == "store":
        from ecgmae.data.store import Store

        store = Store.open(args.src)
        leads: tuple[str, ...] = store.leads
        stream: Iterator[Any] = _store_rows(store, args.split, args.quiet)
    else:
        from ecgmae.data.sources import get_source, read_items
        from ecgmae.errors import DataError
        from ecgmae.eval.feature_probe import source_record_features

        if args.split:
            raise DataError(f"--split {args.split!r} needs --source store (raw corpora have no splits yet)")
        if not args.src.exists():
            raise DataError(f"{args.src}: not found")
        leads = LEADS_12
        scan = get_source(args.source).scan(args.src, labels=args.labels, task=args.task,
                                            options=source_options(args))
        loaded = read_items(args.source, scan, functools.partial(source_record_features, leads),
                            workers=args.workers, quiet=args.quiet)
        stream = _raw_rows(scan.problems, loaded)
    ids, feats, skipped = _gather(args, stream, lambda buf: np.stack([r.x for r in buf]))
    return ids, feats, skipped, feature_names(leads)


def _store_rows(store: Any, split: str | None, quiet: bool) -> Iterator[_Row]:
    import numpy as np

    from ecgmae.eval.feature_probe import record_features
    from ecgmae.utils import progress

    indices = store.split_indices(split) if split else np.arange(len(store))
    for i in progress(indices, quiet=quiet, unit="rec", desc="features"):
        yield _Row(str(store.index["record"].iloc[int(i)]), record_features(store, int(i)))


def _raw_rows(problems: list[Any], loaded: Iterator[Any]) -> Iterator[_Row | tuple[str, str]]:
    for record, _, _, message in problems:
        yield record, message
    for done in loaded:
        yield _Row(*done.value) if done.error is None else (done.item.record, done.error[1])


def add_parser(sub: Any) -> None:
    p = add_command(
        sub, "embed", run=run,
        help="embed every record of a corpus or store with a trained encoder or classifier (or hand-made "
        "features)",
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
    p.add_argument("--features", action="store_true",
                   help="write hand-made ECG features instead of embeddings (no checkpoint)")
    p.add_argument("--out", required=True, type=Path, help="FILE.npz to write (atomically)")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ecgmae.config import ConfigError
    from ecgmae.utils import atomic_path

    check_out(args)
    extra: dict[str, Any] = {}
    if args.features:
        if args.checkpoint:
            raise ConfigError("--features computes hand-made features and takes no --checkpoint")
        ids, z, skipped, names = collect_features(args)
        extra["feature_names"] = np.array(names, dtype=str)
    elif not args.checkpoint:
        raise ConfigError("--checkpoint is required (or --features for hand-made features)")
    else:
        _, ids, z, skipped = collect(args, lambda m, b: m.embed_prepared(b, batch_size=args.batch_size))
    with atomic_path(args.out) as tmp, open(tmp, "wb") as f:
        np.savez(f, record=np.array(ids, dtype=str), embedding=z.astype(np.float32),
                 skipped=np.array([k.record for k in skipped], dtype=str),
                 skipped_reason=np.array([k.reason for k in skipped], dtype=str), **extra)
    what = "features" if args.features else "dims"
    print(f"{args.out}: {len(ids)} records x {z.shape[1]} {what}" + (f" ({len(skipped)} skipped)" if skipped else ""))
    return 0
