"""Corpus readers: one small module per corpus, all with the same two functions.

``scan(src, *, labels, task, options) -> Scan`` lists the records (cheap: file names, label tables)
and ``load(item, options, root=None) -> Record`` reads one of them (run in worker processes, so items,
options and the scan's ``root`` are plain picklable data). ``prepare`` does the rest (preprocessing, splits, the store).
This module is the registry (``SOURCES``, :func:`get_source`) and the scan types; label tables are read in
:mod:`.labels`, items in :mod:`.reading` (several processes if asked).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ecgmae.data.sources.labels import ID_COLUMNS, META_COLUMNS, LabelTable, read_label_table
from ecgmae.errors import DataError

# Label tables live in .labels, multiprocess reading in .reading (which imports this registry).
__all__ = [
    "ID_COLUMNS",
    "META_COLUMNS",
    "SOURCES",
    "Item",
    "LabelTable",
    "Scan",
    "get_source",
    "read_label_table",
    "walk_files",
]

# source name -> module in this package (``numpy`` would shadow the numpy package).
SOURCES: dict[str, str] = {
    "folder": "folder",
    "ptbxl": "ptbxl",
    "cpsc2018": "cpsc2018",
    "cinc": "cinc",
    "chapman": "chapman",
    "hdf5": "hdf5",
    "numpy": "numpy_src",
}


@dataclass(frozen=True)
class Item:
    """One record to read: ``path`` (and ``key`` inside a multi-record file) plus what the index knows."""

    record: str
    path: str
    labels: tuple[str, ...] | None = None  # None: the loader reads them from the record itself
    patient: str | None = None
    split: str | None = None
    fold: int | None = None
    key: Any = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Scan:
    """What a source found: items, label names in order, input files, and records refused early."""

    items: list[Item]
    label_names: tuple[str, ...] | None = None  # None: the sorted union of the labels seen
    inputs: list[Path] = field(default_factory=list)
    problems: list[tuple[str, str, str, str]] = field(default_factory=list)  # record, file, kind, message
    expected_leads: tuple[str, ...] | None = None  # the corpus promises these leads: fewer is an error
    options: dict[str, Any] = field(default_factory=dict)  # resolved options, passed on to load()
    root: str | None = None  # the corpus folder: files a WFDB header names may lie anywhere inside it


def get_source(name: str) -> ModuleType:
    """The module implementing source ``name``; DataError listing the choices for an unknown name."""
    if name not in SOURCES:
        raise DataError(f"unknown source {name!r}; choose one of {', '.join(SOURCES)}")
    return importlib.import_module(f"ecgmae.data.sources.{SOURCES[name]}")


def walk_files(root: Path) -> list[Path]:
    """Every file under ``root`` (following no symlinked folders), sorted for a stable order."""
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath) / f for f in filenames if not f.startswith("."))
    return sorted(out)
