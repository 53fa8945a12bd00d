"""Shared bits for subcommand modules: a parser factory with an example in --help."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from ecgmae.utils import progress  # noqa: F401 - re-exported for command modules


def add_command(
    subparsers: Any,
    name: str,
    *,
    help: str,
    example: str,
    run: Callable[[argparse.Namespace], int | None],
    description: str | None = None,
) -> argparse.ArgumentParser:
    """Register subcommand ``name`` whose ``--help`` ends with ``Example:`` and ``example``.

    ``help`` is %-formatted by argparse (write ``%%``); ``description`` is printed verbatim (write ``%``).
    Adds ``--quiet`` (no progress bars, warnings only) and ``--verbose`` (debug lines, Lightning's own bars)
    to every command.
    """
    parser = subparsers.add_parser(
        name,
        help=help,
        description=description or help.replace("%%", "%"),  # descriptions are printed as they are
        epilog=f"Example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars; warnings and errors only")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="debug logging, and Lightning's own progress bars and messages on the terminal",
    )
    parser.set_defaults(func=run)
    return parser


def add_overwrite(parser: argparse.ArgumentParser, what: str = "--out") -> None:
    """``--overwrite``: replace an existing output (which is refused without it)."""
    parser.add_argument("--overwrite", action="store_true", help=f"replace an existing {what} (refused otherwise)")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _bounded_int(text, 1)


def nonneg_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _bounded_int(text, 0)


def auto_or(low: int) -> Callable[[str], int | None]:
    """argparse type factory: ``auto`` (None: the command decides) or an integer >= ``low``."""

    def parse(text: str) -> int | None:
        return None if text.strip().lower() == "auto" else _bounded_int(text, low)

    return parse


def _bounded_int(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
    return value


def number_in(
    low: float, high: float = math.inf, what: str = "a number", unit: str = "", *, open_low: bool = False
) -> Callable[[str], float]:
    """argparse type factory: a finite number in ``[low, high]`` (``(low, high]`` with ``open_low``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        above = value > low if open_low else value >= low
        if not (math.isfinite(value) and above and value <= high):
            span = f"{'>' if open_low else '>='} {low:g}" if math.isinf(high) else f"{low:g}-{high:g}{unit}"
            raise argparse.ArgumentTypeError(f"must be a finite number {span}, got {text!r}")
        return value

    return parse


positive_float = number_in(0.0, open_low=True)  # argparse type: a finite number > 0


def source_options(args: argparse.Namespace) -> dict[str, Any]:
    """The raw-array options (--src-fs, --src-leads, --src-units) that a source reader takes."""
    options: dict[str, Any] = {}
    if args.src_fs is not None:
        options["src_fs"] = args.src_fs
    if args.src_leads:
        options["src_leads"] = tuple(n.strip() for n in args.src_leads.split(","))
    if args.src_units:
        options["src_units"] = args.src_units
    return options
