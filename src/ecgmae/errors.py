"""Exceptions that the command line turns into one clear line instead of a stack trace, and the two
helpers (:func:`safe_name`, :func:`clip`) that keep text taken from a file on that one line."""

from __future__ import annotations


class ECGMAEError(Exception):
    """Base class for errors a user can act on (bad input, bad config, missing files)."""


class DataError(ECGMAEError):
    """A record or file cannot be used; the message names the file and what is wrong."""


class CheckpointError(ECGMAEError):
    """A checkpoint is missing, unsafe, or from an incompatible format version."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM stopped a command. The command line prints ``interrupted`` with ``note`` (what
    was kept, how to go on) and exits ``128 + signum``. A BaseException, as KeyboardInterrupt is, so that
    no ``except Exception`` on the way swallows it, and every ``finally`` still cleans up."""

    def __init__(self, signum: int, note: str = "") -> None:
        super().__init__(note)
        self.signum, self.note = int(signum), note


# File-derived text kept in one message.
TEXT_MAX = 200


def safe_name(text: object) -> str:
    """``text`` with every non-printable character (control codes, escape sequences, bidi overrides,
    undecodable bytes) written as its Python escape, so it prints as what it is, on one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def clip(text: object, limit: int = TEXT_MAX) -> str:
    """:func:`safe_name` of ``text``, cut to ``limit`` characters with a note of how much was left out."""
    out = safe_name(text)
    if len(out) <= limit:
        return out
    return f"{out[:limit]}... ({len(out) - limit} more characters)"
