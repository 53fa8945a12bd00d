"""Command line: ``ecgmae <command> ...``; one module per subcommand, no logic of its own.

Each command module defines ``add_parser(subparsers)`` and a ``run(args) -> int``; heavy imports
happen inside ``run`` so that ``ecgmae --help`` is instant.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from ecgmae._version import __version__
from ecgmae.errors import ECGMAEError, Interrupted
from ecgmae.utils import setup_logging

# Operating-system refusals that are the machine's state, not a bug: one line, not a traceback.
_ENVIRONMENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}
)

# Order is the order shown in `ecgmae --help`.
COMMANDS: tuple[str, ...] = (
    "synth",
    "prepare",
    "pretrain",
    "finetune",
    "evaluate",
    "demo",
    "benchmark",
    "embed",
    "predict",
    "reconstruct",
    "plot-curves",
    "export",
    "serve",
    "pretrained",
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="ecgmae",
        description="Masked autoencoders for ECG: synthesise, prepare, pre-train, fine-tune, evaluate.",
        epilog="Example:\n  ecgmae synth --out /tmp/synth --n 200\n\nRun `ecgmae COMMAND --help` for each command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ecgmae {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"ecgmae.cli.{name.replace('-', '_')}").add_parser(sub)
    return parser


@contextlib.contextmanager
def _sigterm_raises(command: str) -> Iterator[None]:
    """While a command runs, SIGTERM raises :class:`Interrupted` (as SIGINT raises KeyboardInterrupt), so that
    temporary files and folders are removed on the way out instead of the process vanishing mid-write.
    ``serve`` keeps its server's own handling (a graceful shutdown)."""
    if command == "serve" or threading.current_thread() is not threading.main_thread():
        yield
        return
    pid = os.getpid()

    def interrupted(signum: int, frame: Any) -> None:
        if os.getpid() != pid:  # a forked worker (prepare's readers): it ends as it would have; the command reports
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Interrupted(signum)

    before = signal.signal(signal.SIGTERM, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ecgmae`` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(quiet=getattr(args, "quiet", False), verbose=getattr(args, "verbose", False))
    try:
        with _sigterm_raises(args.command):
            return int(args.func(args) or 0)
    except ECGMAEError as exc:  # ConfigError included
        print(f"ecgmae {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in _ENVIRONMENT_ERRNOS:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        print(
            f"ecgmae {args.command}: error: {exc.strerror or exc}{where}; finished outputs are kept, "
            "unfinished ones were not written (their temporary files are removed)",
            file=sys.stderr,
        )
        return 2
    except Interrupted as exc:  # SIGTERM, or SIGINT during training (which stops at a step's end)
        print(f"ecgmae {args.command}: interrupted" + (f": {exc.note}" if exc.note else ""), file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print(f"ecgmae {args.command}: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
