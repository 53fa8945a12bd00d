"""``ecgmae embed``: one embedding per record of a corpus (or a prepared store), in source order."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ecgmae.cli._common import add_command, source_options

SOURCES = ("folder", "ptbxl", "cpsc2018", "cinc", "chapman", "hdf5", "numpy", "store")
_CHUNK = 256  # records preprocessed ahead of each model call


def add_input_args(p: argparse.ArgumentParser) -> None:
    """Flags ``embed`` and ``predict`` share: the checkpoint, the records and how to run."""
    p.add_argument("--checkpoint", required=True, help="run directory or .safetensors file")
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
    p.add_argument("--batch-size", type=int, default=64, help="windows per forward pass (default 64)")
    p.add_argument("--workers", type=int, default=1, help="reader processes (default 1)")
    p.add_argument("--device", default="auto", help="auto (cuda when available) | cpu | cuda | cuda:1 ...")


def collect(args: argparse.Namespace, fn: Callable[[Any, list[Any]], Any], *, classifier: bool = False
            ) -> tuple[Any, list[str], Any, list[str]]:
    """Load the model, stream the records of ``--src`` through ``fn(model, prepared)`` in source order.

    Args:
        args: the parsed flags of :func:`add_input_args`.
        fn: ``(model, list of Prepared) -> (n, F) array``.
        classifier: refuse a checkpoint that is not a classifier before reading any record.

    Returns:
        ``(model, record ids, stacked outputs, skipped ids)``.
    """
    import numpy as np
    import torch

    from ecgmae.api import load
    from ecgmae.errors import DataError
    from ecgmae.inference import iter_source
    from ecgmae.utils import log

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model = load(args.checkpoint, device=device)
    if classifier and model.kind != "classifier":
        from ecgmae.errors import CheckpointError

        raise CheckpointError(f"{model.path}: holds {model.kind} weights; predict needs a classifier run "
                              "(ecgmae finetune); `ecgmae embed` gives features")
    options = source_options(args)
    stream = iter_source(args.source, args.src, model.preprocessing, labels=args.labels, task=args.task,
                         options=options, split=args.split, workers=args.workers, quiet=args.quiet)
    ids: list[str] = []
    outs: list[Any] = []
    skipped: list[str] = []
    buf: list[Any] = []
    for item in stream:
        if isinstance(item, tuple):
            record, message = item
            if args.on_error == "fail":
                raise DataError(message)
            skipped.append(record)
            if len(skipped) <= 10:
                log.warning("skipped %s", message)
            continue
        buf.append(item)
        if len(buf) >= _CHUNK:
            outs.append(fn(model, buf))
            ids.extend(p.name for p in buf)
            buf = []
    if buf:
        outs.append(fn(model, buf))
        ids.extend(p.name for p in buf)
    if len(skipped) > 10:
        log.warning("... and %d more skipped records", len(skipped) - 10)
    if not ids:
        raise DataError(f"{args.src}: no usable record ({len(skipped)} skipped)")
    return model, ids, np.concatenate(outs), skipped


def add_parser(sub: Any) -> None:
    p = add_command(
        sub, "embed", run=run,
        help="embed every record of a corpus or store with a trained encoder or classifier",
        example="ecgmae embed --checkpoint runs/mae --src data/cinc --source cinc --out emb.npz",
        description="Embed every record of SRC with the checkpoint's stored preprocessing (resampling, filters, "
        "normalisation, lead order). Records of any length are cut into windows of the trained length whose "
        "pooled features are averaged. Writes FILE.npz with arrays `record` (N ids, in the order of the "
        "source), `embedding` (N x D float32) and `skipped` (ids of unusable records).",
    )
    add_input_args(p)
    p.add_argument("--out", required=True, type=Path, help="FILE.npz to write (atomically)")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ecgmae.utils import atomic_path

    _, ids, z, skipped = collect(args, lambda m, b: m.embed_prepared(b, batch_size=args.batch_size))
    with atomic_path(args.out) as tmp, open(tmp, "wb") as f:
        np.savez(f, record=np.array(ids, dtype=str), embedding=z.astype(np.float32),
                 skipped=np.array(skipped, dtype=str))
    print(f"{args.out}: {len(ids)} records x {z.shape[1]} dims" + (f" ({len(skipped)} skipped)" if skipped else ""))
    return 0
