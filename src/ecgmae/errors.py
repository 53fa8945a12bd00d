"""Exceptions that the command line turns into one clear line instead of a stack trace."""

from __future__ import annotations


class ECGMAEError(Exception):
    """Base class for errors a user can act on (bad input, bad config, missing files)."""


class DataError(ECGMAEError):
    """A record or file cannot be used; the message names the file and what is wrong."""


class CheckpointError(ECGMAEError):
    """A checkpoint is missing, unsafe, or from an incompatible format version."""
