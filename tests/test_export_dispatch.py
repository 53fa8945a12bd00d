"""read_record picks the reader of every hospital export by suffix and XML root, and the folder source takes
them all: Sierra XML, HL7 aECG and EDF beside MUSE XML, DICOM and WFDB (fixtures written by the readers' tests)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_path
from ecgmae.data.io import read_record
from ecgmae.data.record import RecordError
from ecgmae.data.sources import get_source
from test_aecg import aecg_xml, all_leads, known_digits
from test_sierra import b64, known_signal, sierra_xml


def exports(root: Path) -> dict[str, Path]:
    """One file of each format under ``root`` (EDF only when edfio is installed)."""
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "sierra": root / "philips.xml",
        "aecg": root / "fda.xml",
    }
    files["sierra"].write_text(sierra_xml(b64(known_signal().astype("<i2").tobytes())), encoding="utf-8")
    files["aecg"].write_text(aecg_xml(all_leads(known_digits())), encoding="utf-8")
    muse = shared_path("hospital-formats") / "synthetic_muse.xml"
    if muse.exists():
        shutil.copy(muse, root / "muse.xml")
        files["muse"] = root / "muse.xml"
    try:
        from test_edf import standard

        files["edf"] = standard(root, "holter.edf")
    except pytest.skip.Exception:
        pass
    return files


def test_read_record_dispatches_by_suffix_and_root(tmp_path: Path) -> None:
    files = exports(tmp_path)
    formats = {name: read_record(path).meta["format"] for name, path in files.items()}
    assert formats["sierra"] == "sierra" and formats["aecg"] == "aecg"
    if "muse" in files:
        assert formats["muse"] == "muse"
    if "edf" in files:
        assert formats["edf"] in ("edf", "edf+")
    rec = read_record(files["sierra"])
    np.testing.assert_allclose(rec.signal, known_signal() * 0.005, atol=1e-6)


def test_an_unknown_xml_root_names_every_known_one(tmp_path: Path) -> None:
    p = tmp_path / "other.xml"
    p.write_text("<CardiologyXML><x/></CardiologyXML>")
    with pytest.raises(RecordError, match=r"root <CardiologyXML>.*<RestingECG>, <restingecgdata>, <AnnotatedECG>"):
        read_record(p)


def test_the_folder_source_takes_every_export(tmp_path: Path) -> None:
    files = exports(tmp_path / "src")
    scan = get_source("folder").scan(tmp_path / "src")
    assert sorted(Path(it.path).name for it in scan.items) == sorted(p.name for p in files.values())
