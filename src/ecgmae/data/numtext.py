"""Numbers in XML text: one attribute or element as a finite number (:func:`finite_number`), and
whitespace-separated runs (HL7 aECG ``<digits>``, Sierra "Plain" waveforms) counted before they are parsed so a
record's size is known before its array is built."""

from __future__ import annotations

import math

import numpy as np

from ecgmae.data.record import RecordError
from ecgmae.errors import clip

_SPACE = np.frombuffer(b" \t\n\r", np.uint8)


def finite_number(text: str, where: str, label: str) -> float:
    """``text`` as a finite float.

    Raises:
        RecordError: kind ``header``, naming ``label`` and the text (escaped and cut short).
    """
    try:
        value = float(text)
    except ValueError:
        raise RecordError(where, f"{label} {clip(text)!r} is not a number", "header") from None
    if not math.isfinite(value):
        raise RecordError(where, f"{label} {clip(text)!r} is not a finite number", "header")
    return value


def count_numbers(text: str) -> int:
    """How many whitespace-separated tokens ``text`` holds, counted in numpy (no list of strings is built)."""
    b = np.frombuffer(text.encode("utf-8", "replace"), np.uint8)
    if b.size == 0:
        return 0
    space = np.isin(b, _SPACE)
    return int((~space[0]) + np.count_nonzero(~space[1:] & space[:-1]))


def parse_numbers(text: str, where: str, label: str, *, limit: int) -> np.ndarray:
    """The numbers in ``text`` as float64, once their count is known to be at most ``limit``.

    Raises:
        RecordError: more than ``limit`` values (kind ``size``), or a token that is not a number.
    """
    n = count_numbers(text)
    if n > limit:
        raise RecordError(where, f"{label} holds {n} values, more than the {limit} a record may hold", "size")
    if n == 0:
        return np.zeros(0)
    try:
        # Text mode (sep != ""): parsed in C, and a token that is not a number raises ValueError.
        values = np.fromstring(text, dtype=np.float64, sep=" ")
    except ValueError:
        values = None
    if values is None or values.size != n:
        raise RecordError(where, f"{label} is not a list of numbers")
    return values
