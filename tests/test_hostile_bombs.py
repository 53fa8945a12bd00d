"""Small files that ask for gigabytes: each is refused in one line naming the file, under a memory limit.

Covers: a compressed MATLAB variable that inflates to a gigabyte (declared, or hidden behind a small
declaration), a struct whose declared shape alone needs gigabytes, and the same files through
``prepare --source cpsc2018``; a WFDB header whose skew or byte offset asks for more than its data file;
hospital exports (a MUSE entity bomb or trillion-sample lead, a DICOM declaring 2^31 samples or a 4 GB element).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from ecgmae.data.io import RecordError, read_record
from test_hostile_inputs import _limited, _one_line

MEM = 1 << 30  # prepare peaks at about 420 MB of address space; every bomb below asks for 960 MB or more


# ------------------------------------------------------------------ crafted MATLAB v5 files
def _tag(mdtype: int, nbytes: int) -> bytes:
    return struct.pack("<II", mdtype, nbytes)


def _pad(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 8)


def _array_header(cls: int, dims: tuple[int, ...], name: bytes) -> bytes:
    """miMATRIX contents up to the name: array flags, dimensions, name (full tags)."""
    dims_bytes = _pad(struct.pack(f"<{len(dims)}i", *dims))
    flags = _tag(6, 8) + struct.pack("<II", cls, 0)
    return flags + _tag(5, 4 * len(dims)) + dims_bytes + _tag(1, len(name)) + _pad(name)


def _mat_file(path: Path, body: bytes, *, compress: bool = True) -> Path:
    """A v5 .mat holding one top-level miMATRIX element whose contents are ``body``."""
    element = _tag(14, len(body)) + body
    header = b"MATLAB 5.0 MAT-file".ljust(116, b" ") + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"
    if compress:
        z = zlib.compress(element, 9)
        path.write_bytes(header + _tag(15, len(z)) + z)
    else:
        path.write_bytes(header + element)
    return path


def _ecg_bomb(path: Path, samples: int, *, declared: int | None = None, name: bytes = b"ECG") -> Path:
    """A CPSC-style ``ECG`` struct whose ``data`` (12, samples) is zeros, compressed chunk by chunk (a
    960 MB variable is a 930 KB file); ``declared`` replaces the variable's declared size."""
    nbytes = 12 * samples * 8
    data = _array_header(6, (12, samples), b"")
    data_len = len(data) + 8 + nbytes
    head = _array_header(2, (1, 1), name) + _tag(5, 4) + _pad(struct.pack("<i", 8)) + _tag(1, 8) + b"data\0\0\0\0"
    size = len(head) + 8 + data_len if declared is None else declared
    comp = zlib.compressobj(9)
    out = [comp.compress(_tag(14, size) + head + _tag(14, data_len) + data + _tag(9, nbytes))]
    zeros = bytes(1 << 20)
    for start in range(0, nbytes, len(zeros)):
        out.append(comp.compress(zeros[: min(len(zeros), nbytes - start)]))
    out.append(comp.flush())
    z = b"".join(out)
    header = b"MATLAB 5.0 MAT-file".ljust(116, b" ") + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"
    path.write_bytes(header + _tag(15, len(z)) + z)
    return path


def _refused_in_bounded_memory(path: Path, cwd: Path, *parts: str) -> str:
    res = _limited(
        f"""
        from ecgmae.data.io import RecordError, read_record
        try:
            read_record({str(path)!r})
        except RecordError as exc:
            print("REFUSED", exc)
        """,
        cwd,
        mem=MEM,
    )
    assert res.returncode == 0 and res.stdout.startswith("REFUSED "), (res.stdout + res.stderr)[-2000:]
    line = res.stdout[len("REFUSED ") :].rstrip("\n")
    _one_line(line, path.name, *parts)
    return line


def test_crafted_mat_reads_like_scipy(tmp_path: Path) -> None:
    """The crafting helper writes files scipy reads: the bombs below are real MATLAB files."""
    small = _ecg_bomb(tmp_path / "small.mat", 1000)
    assert scipy.io.loadmat(str(small))["ECG"][0, 0]["data"].shape == (12, 1000)
    rec = read_record(small)
    assert rec.signal.shape == (12, 1000) and rec.fs == 500


@pytest.mark.slow
def test_mat_decompression_bomb_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    bomb = _ecg_bomb(tmp_path / "bomb.mat", 10_000_000)  # 960 MB of zeros
    assert bomb.stat().st_size < 1_000_000
    _refused_in_bounded_memory(bomb, tmp_path, "declares", "bytes")


@pytest.mark.slow
def test_mat_variable_inflating_past_its_small_declared_size_is_refused(tmp_path: Path) -> None:
    # The variable says 200 bytes; the tags inside it say 960 MB (scipy follows the inner tags).
    lie = _ecg_bomb(tmp_path / "lie.mat", 10_000_000, declared=200)
    _refused_in_bounded_memory(lie, tmp_path, "ECG")


@pytest.mark.parametrize("nested", [False, True])
def test_mat_struct_shape_bomb_is_refused(tmp_path: Path, nested: bool) -> None:
    # A struct with no fields and 200 million elements: 181 bytes that scipy turns into a 1.6 GB array.
    bomb = (
        _array_header(2, (1, 200_000_000), b"" if nested else b"ECG")
        + _tag(5, 4)
        + _pad(struct.pack("<i", 8))
        + _tag(1, 0)
    )
    if nested:  # ECG.data is the bomb
        bomb = (
            _array_header(2, (1, 1), b"ECG")
            + _tag(5, 4)
            + _pad(struct.pack("<i", 8))
            + _tag(1, 8)
            + b"data\0\0\0\0"
            + _tag(14, len(bomb))
            + bomb
        )
    path = _mat_file(tmp_path / "shape.mat", bomb)
    assert path.stat().st_size < 400
    _refused_in_bounded_memory(path, tmp_path, "elements")


@pytest.mark.slow
def test_mat_bomb_among_other_variables_is_not_inflated(tmp_path: Path) -> None:
    """A variable that is not ``ECG`` is never inflated: only its name is read."""
    path = _ecg_bomb(tmp_path / "other.mat", 10_000_000, name=b"XYZ")
    _refused_in_bounded_memory(path, tmp_path, "no 'ECG' struct", "XYZ")


@pytest.mark.slow
def test_prepare_cpsc2018_skips_a_mat_bomb_in_bounded_memory(tmp_path: Path) -> None:
    corpus = tmp_path / "c"
    corpus.mkdir()
    scipy.io.savemat(
        corpus / "A0001.mat",
        {"ECG": {"data": np.random.default_rng(0).normal(0, 0.3, (12, 5000)), "sex": "Male", "age": 50.0}},
        do_compression=True,
    )
    _ecg_bomb(corpus / "A0002.mat", 10_000_000)
    _ecg_bomb(corpus / "A0003.mat", 10_000_000, declared=200)
    (corpus / "REFERENCE.csv").write_text("Recording,First_label\nA0001,1\nA0002,2\nA0003,2\n")
    res = _limited(
        """
        import sys
        from ecgmae.cli import main
        sys.exit(main(["prepare", "--source", "cpsc2018", "--src", "c", "--out", "s", "--fs", "100",
                       "--seconds", "2", "--workers", "1"]))
        """,
        tmp_path,
        mem=MEM,
    )
    assert res.returncode == 0, (res.stdout + res.stderr)[-2000:]
    skipped = (tmp_path / "s" / "skipped.csv").read_text()
    assert "A0002.mat" in skipped and "A0003.mat" in skipped and "A0001" not in skipped, skipped
    assert "Error" not in skipped and "declares" in skipped, skipped  # what is wrong, not a MemoryError
    assert "Traceback" not in res.stderr, res.stderr[-2000:]


def test_mat_record_errors_stay_one_line(tmp_path: Path) -> None:
    path = _mat_file(tmp_path / "t.mat", _array_header(2, (1, 1), b"ECG"), compress=False)  # cut short
    with pytest.raises(RecordError) as err:
        read_record(path)
    _one_line(str(err.value), "t.mat")


def _same(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype.names:
        return a.shape == b.shape and all(_same(a[n][i], b[n][i]) for n in a.dtype.names for i in np.ndindex(a.shape))
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == object:
        return a.shape == b.shape and all(_same(x, y) for x, y in zip(a.flat, b.flat, strict=True))
    return bool(np.array_equal(a, b))


@pytest.mark.parametrize("compress", [False, True])
def test_bounded_mat_reading_gives_what_scipy_gives(tmp_path: Path, compress: bool) -> None:
    """The walk accepts every array kind scipy writes (nested structs and cells, complex, text, logical,
    empty, integer) and the variable read is scipy's own."""
    from ecgmae.data.matfile import load_variable

    rng = np.random.default_rng(0)
    ecg = {
        "data": rng.normal(size=(12, 300)).astype(np.float32),
        "sex": "Female",
        "age": np.array([[61.0]]),
        "nested": {"z": np.array([1 + 2j, 3j]), "cell": np.array([[1, "ab"]], dtype=object)},
        "flag": np.array([True, False]),
        "empty": np.array([]),
        "none": np.empty((0, 0), dtype=object),
        "u8": np.uint8([1, 2, 3]),
        "i64": np.int64([1, -2]),
    }
    path = tmp_path / "x.mat"
    scipy.io.savemat(path, {"before": "text", "ECG": ecg, "after": np.arange(10)}, do_compression=compress)
    value, names = load_variable(path, "ECG")
    assert names == ["before", "ECG", "after"]
    assert _same(value, scipy.io.loadmat(str(path))["ECG"])


# ------------------------------------------------------------------------------- WFDB skew and offset
def _wfdb(folder: Path, name: str, signal_lines: list[str], nsamp: int = 1000) -> Path:
    """A header for ``nsamp`` samples over a 4000-byte format-16 data file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.dat").write_bytes(np.random.default_rng(0).integers(-500, 500, 2000).astype("<i2").tobytes())
    (folder / f"{name}.hea").write_text(f"{name} {len(signal_lines)} 100 {nsamp}\n" + "\n".join(signal_lines) + "\n")
    return folder / f"{name}.hea"


@pytest.mark.parametrize("skew", [400_000_000, 1_000_000_000])
def test_wfdb_skew_bomb_is_refused_in_bounded_memory(tmp_path: Path, skew: int) -> None:
    # A 2 KB data file; the wfdb package allocates record length + skew samples (2 GB at skew 1e9).
    hea = _wfdb(tmp_path / "c", "r", [f"r.dat 16:{skew} 200 16 0 0 0 0 II"])
    _refused_in_bounded_memory(hea, tmp_path, "skew", str(skew))


def test_wfdb_skew_within_the_record_passes_the_checks(tmp_path: Path) -> None:
    from ecgmae.data.io import check_wfdb_files, parse_header

    hea = _wfdb(tmp_path / "c", "r", ["r.dat 16:3 200 16 0 0 0 0 I", "r.dat 16 200 16 0 0 0 0 II"], nsamp=500)
    rec, sigs, _ = parse_header(hea.read_text(), hea.name)
    check_wfdb_files(hea, rec, sigs, hea.read_text(), None)  # no error: the wfdb package reads it


@pytest.mark.parametrize(
    "lines",
    [
        ["r.dat 16+4000000000 200 16 0 0 0 0 II", "r.dat 16+4000000001 200 16 0 0 0 0 I"],
        ["r.dat 16+4000000000 200 16 0 0 0 0 II", "r.dat 16+4000000000 200 16 0 0 0 0 I"],
    ],
)
def test_wfdb_byte_offset_beyond_the_file_is_refused(tmp_path: Path, lines: list[str]) -> None:
    hea = _wfdb(tmp_path / "c", "r", lines, nsamp=500)
    with pytest.raises(RecordError) as err:
        read_record(hea)
    _one_line(str(err.value), "r.hea: signal II: byte offset 4000000000 is beyond the end of data file r.dat")


# ------------------------------------------------------------------------------------- label tables
def _corpus_with_labels(tmp_path: Path, labels: str | bytes) -> tuple[Path, Path]:
    from test_hostile_inputs import _record

    corpus = tmp_path / "c"
    _record(corpus, "r0")
    _record(corpus, "r1")
    path = tmp_path / "labels.csv"
    path.write_bytes(labels.encode() if isinstance(labels, str) else labels)
    return corpus, path


def test_a_huge_labels_cell_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    # One 100 MB cell of 33 million labels: splitting it takes gigabytes (a 200 MB one took 4.9 GB and 20 s).
    corpus, path = _corpus_with_labels(tmp_path, b"record,labels\nr0,A\nr1," + b"xy;" * 33_000_000 + b"\n")
    res = _limited(
        f"""
        import sys
        from ecgmae.cli import main
        sys.exit(main(["prepare", "--source", "folder", "--src", {str(corpus)!r}, "--labels", {str(path)!r},
                       "--out", "s", "--quiet"]))
        """,
        tmp_path,
        mem=MEM,
    )
    assert res.returncode == 2, (res.stdout + res.stderr)[-2000:]
    line = res.stderr.strip().splitlines()[-1]
    _one_line(line, "labels.csv", "65536")
    assert "Traceback" not in res.stderr and "MemoryError" not in res.stderr, res.stderr[-2000:]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('record,labels\nr0,A\nr1,"' + "x\n" * 40_000 + '"\n', "a cell of more than 65536 bytes"),  # quoted newlines
        ("record,labels\nr0,A\nr1," + ";".join(f"L{i}" for i in range(200_000)) + "\n", "a cell of more than 65536"),
        ("record,labels\n" + "".join(f"r{i},L{i}\n" for i in range(1001)), "1001 distinct labels, more than 1000"),
        (
            "record," + ",".join(f"c{i}" for i in range(1001)) + "\nr0," + ",".join("0" * 1001) + "\n",
            "1001 class columns, more than 1000",
        ),
    ],
)
def test_labels_tables_with_absurd_cells_or_label_counts_are_refused(tmp_path: Path, text: str, fragment: str) -> None:
    from ecgmae.data.sources import read_label_table
    from ecgmae.errors import DataError

    _, path = _corpus_with_labels(tmp_path, text)
    with pytest.raises(DataError) as err:
        read_label_table(path)
    _one_line(str(err.value), "labels.csv", fragment)


def test_a_labels_file_over_the_size_bound_is_refused_before_reading(tmp_path: Path) -> None:
    from ecgmae.data.safety import TABLE_MAX_BYTES
    from ecgmae.data.sources import read_label_table
    from ecgmae.errors import DataError

    _, path = _corpus_with_labels(tmp_path, "record,labels\nr0,A\n")
    with path.open("r+b") as f:
        f.truncate(TABLE_MAX_BYTES + 1)  # sparse: no disk used
    with pytest.raises(DataError) as err:
        read_label_table(path)
    _one_line(str(err.value), "labels.csv", f"is {TABLE_MAX_BYTES + 1} bytes, more than the {TABLE_MAX_BYTES}")


def test_labels_with_quoted_commas_and_many_rows_are_read(tmp_path: Path) -> None:
    from ecgmae.data.sources import read_label_table

    rows = "".join(f'r{i},"A;B",x\n' for i in range(50_000))
    _, path = _corpus_with_labels(
        tmp_path, 'record,labels,note\nr_,"A, B;C","a ""quoted"" note, with a comma"\n' + rows
    )
    table = read_label_table(path)
    assert table.labels["r_"] == ("A, B", "C") and table.labels["r49999"] == ("A", "B")


def test_a_store_of_more_distinct_labels_than_the_bound_is_refused(tmp_path: Path) -> None:
    """Labels from headers are bounded too: 1200 distinct SNOMED codes in two headers' Dx lines."""
    from ecgmae.data.record import LEADS_12
    from ecgmae.data.signal import PreprocessConfig
    from ecgmae.data.sources.labels import MAX_LABELS
    from ecgmae.data.store import prepare_store
    from ecgmae.data.wfdb_write import write_wfdb16
    from ecgmae.errors import DataError

    corpus = tmp_path / "c"
    corpus.mkdir()
    for r in range(2):
        codes = ",".join(str(10_000_000 + r * 600 + i) for i in range(600))
        write_wfdb16(corpus / f"r{r}", np.zeros((12, 1000), np.float32), 500, LEADS_12, [f"Dx: {codes}"], 1000.0)
    with pytest.raises(DataError) as err:
        prepare_store("cinc", corpus, tmp_path / "s", PreprocessConfig(fs=100, seconds=2), quiet=True)
    _one_line(str(err.value), f"1200 distinct labels, more than {MAX_LABELS}")
    assert not (tmp_path / "s").exists()


# ------------------------------------------------------------------------------------ hospital exports
@pytest.mark.slow
def test_hospital_export_bombs_are_refused_in_bounded_memory(tmp_path: Path) -> None:
    """MUSE XML and DICOM files that ask for gigabytes, read in one process under a 1 GiB limit; the 4 GB
    DICOM element is the control: pydicom reading that file by itself runs out of memory there."""
    pytest.importorskip("pydicom")
    from test_dicom_ecg import huge_waveform, long_length
    from test_muse import MUSE_BOMB, lead_block, muse_xml

    (tmp_path / "bomb.xml").write_text(MUSE_BOMB)
    big = lead_block("I", np.zeros(100, np.int16), count=10**12, nbytes=2 * 10**12)
    (tmp_path / "trillion.xml").write_text(muse_xml([big]))
    files = {
        "bomb.xml": "unsafe XML refused",
        "trillion.xml": "lead I declares 1000000000000 samples",
        huge_waveform(tmp_path).name: "waveform declares 2147483648 samples x 12 channels",
        long_length(tmp_path).name: "truncated: an element runs past the end of the file",
    }
    res = _limited(
        f"""
        from ecgmae.data.io import RecordError, read_record
        for name in {list(files)!r}:
            try:
                read_record(name)
                print("READ", name)
            except RecordError as exc:
                print("REFUSED", exc)
        import pydicom
        try:
            pydicom.dcmread("longlen.dcm")
            print("PLAIN read")
        except MemoryError:
            print("PLAIN MemoryError")
        """,
        tmp_path,
        mem=MEM,
    )
    lines = res.stdout.splitlines()
    assert res.returncode == 0 and len(lines) == len(files) + 1, (res.stdout + res.stderr)[-2000:]
    for line, (name, problem) in zip(lines[:-1], files.items(), strict=True):
        assert line.startswith("REFUSED "), line
        _one_line(line[len("REFUSED ") :], f"{name}: ", problem)
    assert lines[-1] == "PLAIN MemoryError"
