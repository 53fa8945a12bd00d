"""Which reader reads a one-file hospital export: by suffix, and for XML by the document's root element.

:func:`ecgmae.data.io.read_record` looks a suffix up in :data:`FILE_READERS`; an ``.xml`` file is parsed
once (safely, :func:`ecgmae.data.xmlsafe.parse_xml`) and handed to the reader its root element names in
:data:`XML_READERS`. The ``folder`` source finds records by :data:`RECORD_SUFFIXES`. A new format is one
line in one of these tables.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from xml.etree.ElementTree import Element

from ecgmae.data.aecg import aecg_record
from ecgmae.data.dicom_ecg import read_dicom
from ecgmae.data.edf import read_edf
from ecgmae.data.muse import muse_record
from ecgmae.data.record import Record, RecordError
from ecgmae.data.sierra import sierra_record
from ecgmae.data.xmlsafe import local, parse_xml
from ecgmae.errors import clip

# XML root element (namespace dropped) -> reader of the parsed document: (root, path) -> Record.
XML_READERS: dict[str, Callable[[Element, Path], Record]] = {
    "RestingECG": muse_record,  # GE MUSE
    "restingecgdata": sierra_record,  # Philips Sierra ECG XML
    "AnnotatedECG": aecg_record,  # HL7 aECG
}


def read_xml(path: Path) -> Record:
    """An XML export, read by the reader its root element names.

    Raises:
        RecordError: unsafe or broken XML, or a root element no reader knows.
    """
    root = parse_xml(path)
    tag = local(root.tag)
    reader = XML_READERS.get(tag)
    if reader is None:
        known = ", ".join(f"<{t}>" for t in XML_READERS)
        raise RecordError(
            path.name, f"unsupported XML export (root <{clip(tag, 60)}>); ecgmae reads {known}", "unreadable"
        )
    return reader(root, path)


# One-file record formats by suffix (lower case) -> reader: path -> Record.
FILE_READERS: dict[str, Callable[[Path], Record]] = {
    ".xml": read_xml,
    ".dcm": read_dicom,
    ".edf": read_edf,  # European Data Format, EDF and EDF+ (Holter)
}

# What the folder source takes for a record: a WFDB header, or a one-file export.
RECORD_SUFFIXES: tuple[str, ...] = (".hea", *FILE_READERS)
