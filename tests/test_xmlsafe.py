"""parse_xml: ordinary exports parse; bombs, external entities and broken XML are one-line refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecgmae.data.record import RecordError
from ecgmae.data.xmlsafe import local, parse_xml

BOMB = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<RestingECG><Waveform>&lol9;</Waveform></RestingECG>
"""
EXTERNAL = """<?xml version="1.0"?>
<!DOCTYPE RestingECG [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<RestingECG><Waveform>&secret;</Waveform></RestingECG>
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_an_export_with_a_doctype_line_parses(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "a.xml",
        '<?xml version="1.0"?>\n<!DOCTYPE RestingECG SYSTEM "restecg.dtd">\n'
        "<RestingECG><MuseInfo><MuseVersion>9</MuseVersion></MuseInfo></RestingECG>",
    )
    root = parse_xml(p)
    assert root.tag == "RestingECG" and root.findtext("MuseInfo/MuseVersion") == "9"


@pytest.mark.parametrize("text", [BOMB, EXTERNAL], ids=["entity-bomb", "external-entity"])
def test_entities_are_refused_in_one_line(tmp_path: Path, text: str) -> None:
    p = write(tmp_path, "evil.xml", text)
    with pytest.raises(RecordError) as err:
        parse_xml(p)
    assert err.value.kind == "unsafe"
    assert str(err.value).startswith("evil.xml: unsafe XML refused") and "\n" not in str(err.value)
    assert "root:" not in str(err.value)  # nothing of /etc/passwd reached the message


def test_size_is_checked_before_reading(tmp_path: Path) -> None:
    p = write(tmp_path, "big.xml", "<a>" + "x" * 5000 + "</a>")
    with pytest.raises(RecordError, match=r"big\.xml: XML file is 5007 bytes, more than the 4096") as err:
        parse_xml(p, max_bytes=4096)
    assert err.value.kind == "size"


def test_broken_xml_and_a_fifo_are_one_line(tmp_path: Path) -> None:
    p = write(tmp_path, "cut.xml", "<RestingECG><Waveform>")
    with pytest.raises(RecordError, match=r"^cut\.xml: not well-formed XML"):
        parse_xml(p)
    import os

    fifo = tmp_path / "pipe.xml"
    os.mkfifo(fifo)
    with pytest.raises(RecordError, match="FIFO"):
        parse_xml(fifo)


def test_local_drops_the_namespace() -> None:
    assert local("{urn:hl7-org:v3}AnnotatedECG") == "AnnotatedECG" and local("RestingECG") == "RestingECG"
