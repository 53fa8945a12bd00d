"""XML from files nobody vetted, parsed safely: the one way any ecgmae reader opens an XML export.

Hospital ECG exports (GE MUSE, Philips Sierra, HL7 aECG) are XML. :func:`parse_xml` reads one with a
size bound checked before a byte is read, and parses it with ``defusedxml``: an entity declaration (the
"billion laughs" bomb, an external entity naming a local file or a URL) or an external DTD fetch is
refused, never expanded. A ``<!DOCTYPE ... SYSTEM "x.dtd">`` line alone, as MUSE writes it, is allowed
and not fetched. Every refusal is a one-line :class:`~ecgmae.data.record.RecordError` naming the file.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import defusedxml.ElementTree as DET
from defusedxml import DefusedXmlException

from ecgmae.data.record import RecordError
from ecgmae.data.safety import check_file

# A 10 s 12-lead MUSE or Sierra export is 100-300 kB; an HL7 aECG of a few minutes a few MB. ElementTree
# holds a document in roughly 5-10 times its size, so this bound keeps a parse under ~0.5 GiB.
XML_MAX_BYTES = 64 << 20


def local(tag: str) -> str:
    """A tag without its namespace: ``{urn:hl7-org:v3}AnnotatedECG`` -> ``AnnotatedECG``."""
    return tag.rsplit("}", 1)[-1]


def parse_xml(path: str | Path, where: str | None = None, *, max_bytes: int = XML_MAX_BYTES) -> ET.Element:
    """The root element of the XML file ``path``, parsed with entity expansion and external access refused.

    Raises:
        RecordError: naming ``where`` (default: the file name): not a regular file, larger than
            ``max_bytes`` (kind ``size``), an entity or external reference (kind ``unsafe``), or not
            well-formed XML (kind ``unreadable``).
    """
    path = Path(path)
    where = where or path.name
    check_file(path, where, "XML file", max_bytes=max_bytes)
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise RecordError(where, f"cannot read XML file ({exc.strerror})", "missing_file") from None
    if len(data) > max_bytes:
        raise RecordError(where, f"XML file is more than the {max_bytes} bytes an ECG export needs", "size")
    try:
        return DET.fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise RecordError(
            where, f"unsafe XML refused ({type(exc).__name__}: entities and external references are not read)", "unsafe"
        ) from None
    except ET.ParseError as exc:
        raise RecordError(where, f"not well-formed XML ({exc})", "unreadable") from None
