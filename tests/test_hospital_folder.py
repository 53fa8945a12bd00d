"""A folder of mixed formats is one corpus: WFDB, MUSE XML and DICOM found together, each record once, ids unique,
labels from a CSV or from the statements the files carry; through ``prepare`` and ``embed`` end to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_path
from ecgmae.cli import main
from ecgmae.data.signal import PreprocessConfig
from ecgmae.data.sources import get_source
from ecgmae.data.store import Store, prepare_store
from ecgmae.errors import DataError

CFG = PreprocessConfig(fs=100, seconds=10, bandpass=None)
REAL = "guangxi_teaching_sinus_rhythm"


def touch(root: Path, *names: str) -> Path:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    return root


def test_every_record_format_is_found_once_with_unique_ids(tmp_path: Path) -> None:
    src = touch(tmp_path, "a.xml", "a.dcm", "b.XML", "c.hea", "c.dat", "c.xml", "sub/a.xml", "d.DCM", "notes.txt")
    scan = get_source("folder").scan(src)
    assert [(it.record, Path(it.path).name) for it in scan.items] == [
        ("a.dcm", "a.dcm"),  # two exports of one stem keep their suffix
        ("a.xml", "a.xml"),
        ("b", "b.XML"),
        ("c", "c.hea"),  # c.xml beside the WFDB header is part of that record, not a second one
        ("d", "d.DCM"),
        ("sub/a", "a.xml"),
    ]


def test_a_labels_csv_may_name_exports_by_file_name(tmp_path: Path) -> None:
    src = touch(tmp_path / "c", "a.xml", "a.dcm", "b.xml", "c.hea")
    table = tmp_path / "labels.csv"
    table.write_text("record,labels\na.xml,AF\na.dcm,NORM\nb.xml,PVC\nc,AF\n")
    scan = get_source("folder").scan(src, labels=table)
    assert {it.record: it.labels for it in scan.items} == {
        "a.dcm": ("NORM",),
        "a.xml": ("AF",),
        "b": ("PVC",),
        "c": ("AF",),
    }


def test_a_folder_without_records_and_conflicting_label_options_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = touch(tmp_path / "c", "notes.txt", "a.dat")
    with pytest.raises(DataError, match=r"no record files found \(\.hea, \.xml, \.dcm, \.edf\)"):
        get_source("folder").scan(src)
    touch(src, "a.xml")
    with pytest.raises(DataError, match="--labels and --labels-from statements both give labels: choose one"):
        get_source("folder").scan(src, labels=tmp_path / "x.csv", options={"labels_from": "statements"})
    args = [
        "prepare",
        "--source",
        "cinc",
        "--src",
        str(src),
        "--out",
        str(tmp_path / "s"),
        "--labels-from",
        "statements",
    ]
    assert main(args) != 0
    err = capsys.readouterr().err
    assert err == "ecgmae prepare: error: --labels-from statements: only the folder source reads statements, not cinc\n"


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """The real MUSE export and its DICOM, the synthetic pair in a subfolder, and a CinC WFDB record that has a
    same-stem MUSE file beside it (which must not become a second record)."""
    src = tmp_path / "hospital"
    (src / "sub").mkdir(parents=True)
    formats = shared_path("hospital-formats")
    for suffix in (".xml", ".dcm"):
        shutil.copy(formats / f"{REAL}{suffix}", src)
    shutil.copy(formats / "synthetic_muse.xml", src / "sub")
    cinc = shared_path("cinc2021-sample")
    for suffix in (".hea", ".mat"):
        shutil.copy(cinc / f"E07500{suffix}", src)
    shutil.copy(formats / "synthetic_muse.xml", src / "E07500.xml")
    return src


def test_a_mixed_folder_prepares_into_one_store(mixed: Path, tmp_path: Path) -> None:
    store = Store.open(prepare_store("folder", mixed, tmp_path / "s", CFG, quiet=True))
    assert store.meta["counts"]["skipped_total"] == 0
    ids = store.index["record"].tolist()
    assert ids == ["E07500", f"{REAL}.dcm", f"{REAL}.xml", "sub/synthetic_muse"]
    xml, dcm = (store.signal(ids.index(f"{REAL}{s}")) for s in (".xml", ".dcm"))
    assert xml.shape == (12, 1000) and np.abs(xml - dcm).max() < 0.005  # the same record (half-LSB rounding)
    assert store.label_names == ()


def test_statements_become_labels(mixed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s"
    args = ["prepare", "--source", "folder", "--src", str(mixed), "--out", str(out), "--fs", "100", "--quiet"]
    assert main([*args, "--labels-from", "statements"]) == 0
    store = Store.open(out)
    assert store.meta["source_options"] == {"labels_from": "statements"}
    labels = store.index.set_index("record")["labels"]
    assert labels[f"{REAL}.xml"] == "窦性心律;ST段抬高（提示心室早期复极）"  # sinus rhythm; ST elevation
    assert labels["sub/synthetic_muse"] == "Sinus rhythm (synthetic example)"
    assert labels["E07500"] == "" and labels[f"{REAL}.dcm"] == ""  # WFDB and this DICOM carry no statements
    assert set(store.label_names) == {"窦性心律", "ST段抬高（提示心室早期复极）", "Sinus rhythm (synthetic example)"}


@pytest.mark.slow
def test_a_mixed_folder_embeds_end_to_end(mixed: Path, tmp_path: Path) -> None:
    from ecgmae.pretrained import list_pretrained

    if not any(m.name == "ecgmae-small" or "ecgmae-small" in m.aliases for m in list_pretrained()):
        pytest.skip("the shipped ecgmae-small weights are not installed")
    out = tmp_path / "emb.npz"
    assert main(["embed", "--checkpoint", "ecgmae-small", "--src", str(mixed), "--out", str(out), "--quiet"]) == 0
    z = np.load(out)
    ids = z["record"].tolist()
    assert ids == ["E07500", f"{REAL}.dcm", f"{REAL}.xml", "sub/synthetic_muse"] and len(z["skipped"]) == 0
    emb = z["embedding"]
    a, b = emb[ids.index(f"{REAL}.xml")], emb[ids.index(f"{REAL}.dcm")]
    cos = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert np.isfinite(emb).all() and cos > 0.999  # one record in two formats: one embedding
    other = emb[ids.index("E07500")]
    assert float(a @ other / np.linalg.norm(a) / np.linalg.norm(other)) < cos
