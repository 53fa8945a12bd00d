"""``ecgmae serve``: an HTTP service and viewer page for a trained model (needs ``ecgmae[serve]``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ecgmae.cli._common import add_command, number_in, positive_float, positive_int


def add_parser(sub: Any) -> None:
    p = add_command(
        sub,
        "serve",
        run=run,
        help="serve a trained model over HTTP (predict, embed, reconstruct) with a viewer page at /",
        example="ecgmae serve --checkpoint runs/ft --port 8000    # then open http://127.0.0.1:8000/",
        description="Load a run and answer POST /v1/predict, /v1/embed and /v1/reconstruct (a WFDB record "
        "as multipart .hea + .dat/.mat files, an .npy with fs and leads fields, or JSON {signal, fs, leads}) "
        "with the same preprocessing, windows and pooling as ecgmae.load(); GET /v1/model, /healthz, /metrics; "
        "the viewer page at /. Requests arriving together share one model call. Needs the serve extra: "
        "pip install 'ecgmae[serve]'. Listens on 127.0.0.1 unless --host says otherwise; there is no "
        "authentication, so put it behind your own proxy before opening it to a network.",
    )
    p.add_argument("--checkpoint", required=True, metavar="RUN", help="run directory or .safetensors file")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=port_number, default=8000, help="port (default 8000)")
    p.add_argument(
        "--allowed-hosts",
        metavar="NAMES",
        default="",
        help="comma-separated Host names answered besides localhost, 127.0.0.1, [::1] and --host (e.g. "
        "ecg.lab.example,10.0.0.5; *.lab.example for every name under it; * for any); requests naming "
        "another host get 400, which keeps web pages on other sites out through DNS rebinding",
    )
    p.add_argument(
        "--mae",
        metavar="RUN",
        help="pre-training run whose masked autoencoder answers /v1/reconstruct (default: the checkpoint "
        "itself when it is one), e.g. the run a classifier was fine-tuned from",
    )
    p.add_argument("--examples", type=Path, metavar="DIR", help="folder of WFDB records the viewer offers as examples")
    p.add_argument("--device", default="cpu", help="cpu (default) | cuda | cuda:1 ...")
    p.add_argument(
        "--threads",
        type=positive_int,
        metavar="N",
        help="torch threads for the model on CPU (default: torch's choice, one per core); 1 avoids "
        "oversubscribing a machine that other work shares",
    )
    from ecgmae.serve.limits import Limits  # a dataclass only: no web stack at parse time

    d = Limits()  # every default below is the dataclass's
    lim = p.add_argument_group("limits")
    lim.add_argument(
        "--max-upload-mb",
        type=positive_float,
        metavar="MB",
        default=d.max_upload_bytes / 2**20,
        help=f"largest request body in MiB (default {d.max_upload_bytes / 2**20:g}; 413 beyond)",
    )
    lim.add_argument(
        "--max-seconds",
        type=positive_float,
        metavar="S",
        default=d.max_seconds,
        help=f"longest record in seconds of signal (default {d.max_seconds:g}; 413 beyond)",
    )
    lim.add_argument(
        "--body-timeout",
        type=positive_float,
        metavar="S",
        default=d.body_timeout_s,
        help=f"seconds a request body may take to arrive (default {d.body_timeout_s:g}; 408 and the "
        "connection closed beyond); bodies are received before a request slot is taken",
    )
    lim.add_argument(
        "--header-timeout",
        type=positive_float,
        metavar="S",
        default=d.header_timeout_s,
        help=f"seconds a request's headers may take, silent connections included (default "
        f"{d.header_timeout_s:g}; 408 and the connection closed beyond)",
    )
    lim.add_argument(
        "--idle-timeout",
        type=positive_float,
        metavar="S",
        default=d.idle_timeout_s,
        help=f"seconds a connection may stay idle between requests (default {d.idle_timeout_s:g})",
    )
    lim.add_argument(
        "--max-connections",
        type=positive_int,
        metavar="N",
        default=d.max_connections,
        help=f"connections open at once (default {d.max_connections}; one beyond gets a 503 and is closed)",
    )
    lim.add_argument(
        "--timeout",
        type=positive_float,
        metavar="S",
        default=d.timeout_s,
        help=f"seconds one request may take once its body has arrived (default {d.timeout_s:g}; 504 beyond)",
    )
    lim.add_argument(
        "--max-concurrency",
        type=positive_int,
        metavar="N",
        default=d.max_concurrency,
        help=f"requests handled at once (default {d.max_concurrency}; 503 beyond)",
    )
    lim.add_argument(
        "--batch-size",
        type=positive_int,
        metavar="N",
        default=d.batch_size,
        help=f"most records per model call (default {d.batch_size})",
    )
    lim.add_argument(
        "--batch-wait-ms",
        type=number_in(0, 1000, "milliseconds"),
        metavar="MS",
        default=d.batch_wait_ms,
        help=f"how long a record waits for others to share its model call (default {d.batch_wait_ms:g})",
    )


def port_number(text: str) -> int:
    """argparse type: a TCP port 1-65535."""
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port 1-65535, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    from ecgmae.serve import require_extra

    require_extra()  # one line naming the install command, before anything heavy loads
    from ecgmae.api import load
    from ecgmae.errors import ECGMAEError
    from ecgmae.serve.limits import Limits
    from ecgmae.serve.server import serve

    limits = Limits(
        max_upload_bytes=int(args.max_upload_mb * (1 << 20)),
        max_seconds=args.max_seconds,
        body_timeout_s=args.body_timeout,
        header_timeout_s=args.header_timeout,
        idle_timeout_s=args.idle_timeout,
        max_connections=args.max_connections,
        timeout_s=args.timeout,
        max_concurrency=args.max_concurrency,
        batch_size=args.batch_size,
        batch_wait_ms=args.batch_wait_ms,
    )
    if args.examples is not None and not args.examples.is_dir():
        raise ECGMAEError(f"--examples {args.examples}: not a folder")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model = load(args.checkpoint, device=args.device)
    mae = load(args.mae, device=args.device) if args.mae else None
    if mae is not None and mae.kind == "classifier":
        raise ECGMAEError(f"--mae {args.mae}: a classifier run; give the pre-training run (its mae.safetensors)")
    print(
        f"serving {model.kind} {args.checkpoint} on http://{args.host}:{args.port}/ (viewer at /, API under /v1/; "
        "Ctrl-C stops)",
        flush=True,
    )
    serve(
        model,
        args.host,
        args.port,
        limits,
        examples=args.examples,
        mae=mae,
        allowed=[n for n in args.allowed_hosts.split(",") if n.strip()],
        log_level="warning" if args.quiet else "debug" if args.verbose else "info",
    )
    return 0
