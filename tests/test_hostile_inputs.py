"""Hostile corpora on the data side: each builds the bad file in a temp folder and asserts one clear line
(naming the file and the problem) or correct handling, within bounded memory and time.

Covers: headers that are devices, FIFOs or huge; signal files named outside the corpus (by the header or
through a link); absurd and too-low sampling rates; escape sequences in file names; nonsense ``prepare``
flags; a store inside its own corpus; a store missing a file.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ecgmae.cli import main
from ecgmae.config import ConfigError
from ecgmae.data.io import RecordError, read_record
from ecgmae.data.safety import clip, safe_name
from ecgmae.data.signal import PreprocessConfig, check_fs, fs_problem, preprocess, resample
from ecgmae.data.store import SIGNALS, Store, prepare_store
from ecgmae.errors import DataError

CFG = PreprocessConfig(fs=100, seconds=2, leads=("I", "II"))
MAX_LINE = 1000  # no message built from a file may be longer than this


def _record(
    folder: Path, name: str = "r0", fs: float = 500, n: int = 1000, data: str | None = None, header: str | None = None
) -> Path:
    """A 2-lead format-16 WFDB record; ``data`` renames the signal file the header names."""
    folder.mkdir(parents=True, exist_ok=True)
    x = (np.random.default_rng(len(name)).normal(0, 100, (n, 2))).astype("<i2")
    x.tofile(folder / f"{name}.dat")
    sig = data or f"{name}.dat"
    text = header or (f"{name} 2 {fs:g} {n}\n{sig} 16 200/mV 16 0 0 0 0 I\n{sig} 16 200/mV 16 0 0 0 0 II\n")
    (folder / f"{name}.hea").write_text(text)
    return folder / f"{name}.hea"


def _within(seconds: float, fn: Callable[[], Any]) -> Any:
    """``fn()`` in a daemon thread; fails (instead of hanging the suite) when it takes longer."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the test thread
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still running after {seconds} s (hangs)"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _limited(code: str, cwd: Path, mem: int = 2 << 30, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python with at most ``mem`` bytes of address space."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))

    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=limit,
        env=env,
        check=False,
    )


def _one_line(msg: str, *parts: str) -> None:
    assert "\n" not in msg and len(msg) < MAX_LINE, msg[:300]
    for p in parts:
        assert p in msg, msg


def _skipped(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "skipped.csv", keep_default_na=False)


# ------------------------------------------------------------------------- 1. header type and size
@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_header_linked_to_dev_zero_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    corpus = tmp_path / "c"
    _record(corpus, "good")
    (corpus / "zero.hea").symlink_to("/dev/zero")
    with pytest.raises(RecordError) as err:
        read_record(corpus / "zero.hea")
    _one_line(str(err.value), "zero.hea: header is a character device, not a regular file")
    res = _limited(
        f"""
        from pathlib import Path
        from ecgmae.data.signal import PreprocessConfig
        from ecgmae.data.store import Store, prepare_store
        out = prepare_store("folder", Path({str(corpus)!r}), Path("s"), PreprocessConfig(fs=100, seconds=2),
                            quiet=True)
        print(len(Store.open(out)), Store.open(out).meta["counts"]["skipped"])
        """,
        tmp_path,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "1 {'unreadable': 1}" in res.stdout


def test_fifo_header_does_not_hang_prepare_and_leaves_no_temp(tmp_path: Path) -> None:
    corpus = tmp_path / "c"
    _record(corpus, "good")
    os.mkfifo(corpus / "x.hea")
    with pytest.raises(RecordError) as err:
        _within(20, lambda: read_record(corpus / "x.hea"))
    _one_line(str(err.value), "x.hea: header is a FIFO (named pipe), not a regular file")
    out = _within(60, lambda: prepare_store("folder", corpus, tmp_path / "s", CFG, quiet=True))
    assert len(Store.open(out)) == 1 and _skipped(out)["kind"].tolist() == ["unreadable"]
    assert not list(tmp_path.glob("s.tmp-*"))


@pytest.mark.parametrize("suffix", [".npy", ".h5", ".mat"])
def test_fifo_signal_files_are_refused_without_blocking(tmp_path: Path, suffix: str) -> None:
    os.mkfifo(tmp_path / f"x{suffix}")
    with pytest.raises(RecordError, match="FIFO"):
        _within(20, lambda: read_record(tmp_path / f"x{suffix}", fs=500))


def test_huge_headers_are_refused_and_long_lines_cut(tmp_path: Path) -> None:
    corpus = tmp_path / "c"
    _record(corpus, "good")
    (corpus / "big.hea").write_text("x" * 4_000_000)  # 4 MB on one line
    (corpus / "long.hea").write_text("r 2 500 " + "9" * 500_000 + "z\n")  # under the cap, still garbage
    with pytest.raises(RecordError) as err:
        read_record(corpus / "big.hea")
    _one_line(str(err.value), "big.hea: header is 4000000 bytes")
    with pytest.raises(RecordError) as err:
        read_record(corpus / "long.hea")
    _one_line(str(err.value), "long.hea: bad record line", "more characters")
    out = prepare_store("folder", corpus, tmp_path / "s", CFG, quiet=True)
    skipped = _skipped(out)
    assert sorted(skipped["kind"]) == ["header", "size"]
    assert skipped["message"].str.len().max() < MAX_LINE
    assert (out / "skipped.csv").stat().st_size < 4 * MAX_LINE


def test_clip_and_safe_name() -> None:
    assert safe_name("a\x1b[31mb\n\u202ec") == "a\\x1b[31mb\\n\\u202ec"
    assert safe_name("ok é.hea") == "ok é.hea"
    assert clip("y" * 1000) == "y" * 200 + "... (800 more characters)"


# -------------------------------------------------------------------- 2. files outside the corpus
@pytest.mark.parametrize("name", ["../../secret.dat", "sub/../../../secret.dat", "./../../secret.dat", "ABS"])
def test_signal_file_named_outside_the_corpus_is_refused(tmp_path: Path, name: str) -> None:
    secret = tmp_path / "secret.dat"
    np.arange(4000, dtype="<i2").tofile(secret)
    name = str(secret) if name == "ABS" else name
    hea = _record(tmp_path / "corpus" / "a", "evil", data=name)
    with pytest.raises(RecordError) as err:
        read_record(hea, root=tmp_path / "corpus")
    _one_line(str(err.value), f"evil.hea: signal file '{name}' is outside the corpus folder")
    with pytest.raises(DataError, match=r"no usable record \(1 skipped: 1 outside\)"):
        prepare_store("folder", tmp_path / "corpus", tmp_path / "s", CFG, quiet=True)


def test_signal_file_in_another_folder_of_the_corpus_is_read(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    _record(corpus / "shared", "data")
    hea = _record(corpus / "a", "rec", data="../shared/data.dat")
    (corpus / "a" / "rec.dat").unlink()
    assert read_record(hea, root=corpus).signal.shape == (2, 1000)
    with pytest.raises(RecordError, match=r"rec\.hea: signal file '\.\./shared/data\.dat' is outside the corpus"):
        read_record(hea)  # without the corpus root only the header's own folder counts


def test_etc_paths_in_a_header_are_not_read(tmp_path: Path) -> None:
    corpus = tmp_path / "c"
    _record(corpus, "good")
    for i, name in enumerate(("/etc/passwd", "../../etc/hostname")):
        (corpus / f"evil{i}.hea").write_text(f"evil{i} 1 100 10\n{name} 80 200/mV 8 0 0 0 0 I\n")
    out = prepare_store("folder", corpus, tmp_path / "s", CFG, quiet=True)
    skipped = _skipped(out)
    assert skipped["kind"].tolist() == ["outside", "outside"]
    assert skipped["message"].tolist() == [
        "evil0.hea: signal file '/etc/passwd' is outside the corpus folder",
        "evil1.hea: signal file '../../etc/hostname' is outside the corpus folder",
    ]
    assert len(Store.open(out)) == 1


def test_signal_file_linked_outside_is_refused_inside_is_kept(tmp_path: Path) -> None:
    secret = tmp_path / "secret.dat"
    np.arange(2000, dtype="<i2").tofile(secret)
    corpus = tmp_path / "corpus"
    hea = _record(corpus / "a", "linked")
    (corpus / "a" / "linked.dat").unlink()
    (corpus / "a" / "linked.dat").symlink_to(secret)
    with pytest.raises(RecordError) as err:
        read_record(hea, root=corpus)
    _one_line(str(err.value), "linked.hea: signal file 'linked.dat' links to", "outside the corpus folder")
    # A link to a file elsewhere in the corpus (a datalad/git-annex layout) is fine under the corpus root.
    _record(corpus / "store", "real")
    hea2 = _record(corpus / "b", "annexed")
    (corpus / "b" / "annexed.dat").unlink()
    (corpus / "b" / "annexed.dat").symlink_to(corpus / "store" / "real.dat")
    assert read_record(hea2, root=corpus).signal.shape == (2, 1000)
    with pytest.raises(RecordError, match="outside the corpus folder"):
        read_record(hea2)  # without the root only the header's folder counts
    out = prepare_store("folder", corpus, tmp_path / "s", CFG, quiet=True)
    assert sorted(Store.open(out).index["record"]) == ["b/annexed", "store/real"]
    assert _skipped(out)["kind"].tolist() == ["outside"]


def test_fallback_formats_are_checked_before_the_wfdb_package_reads(tmp_path: Path) -> None:
    secret = tmp_path / "secret.dat"
    secret.write_bytes(bytes(range(256)) * 8)
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "f8.hea").write_text("f8 1 100 100\n../secret.dat 8 200/mV 8 0 0 0 0 I\n")  # format 8: wfdb reads it
    with pytest.raises(RecordError, match=r"f8\.hea: signal file '\.\./secret\.dat' is outside the corpus folder"):
        read_record(corpus / "f8.hea", root=corpus)
    (corpus / "multi.hea").write_text("multi/2 1 100 200\n../seg 100\n~ 100\n")
    with pytest.raises(RecordError, match="outside the corpus folder"):
        read_record(corpus / "multi.hea", root=corpus)
    (corpus / "x.dat").write_bytes(b"\0" * 100)
    (corpus / "huge.hea").write_text("huge 1 100 1000000000000\nx.dat 8 200/mV 8 0 0 0 0 I\n")
    with pytest.raises(RecordError) as err:
        read_record(corpus / "huge.hea", root=corpus)
    _one_line(str(err.value), "huge.hea: header declares 1000000000000 samples x 1 signals")


# -------------------------------------------------------------------------------- 3. sampling rates
def test_absurd_rate_is_refused_before_resampling_in_bounded_memory(tmp_path: Path) -> None:
    corpus = tmp_path / "c"
    _record(corpus, "good")
    _record(corpus, "slow", fs=0.01, n=30000)
    with pytest.raises(RecordError) as err:
        read_record(corpus / "slow.hea")
    _one_line(str(err.value), "slow.hea: sampling rate 0.01 Hz is outside 1-20000 Hz")
    res = _limited(
        f"""
        from pathlib import Path
        from ecgmae.data.signal import PreprocessConfig
        from ecgmae.data.store import Store, prepare_store
        out = prepare_store("folder", Path({str(corpus)!r}), Path("s"), PreprocessConfig(fs=100), quiet=True)
        print(len(Store.open(out)), Store.open(out).meta["counts"]["skipped"])
        """,
        tmp_path,
        mem=1536 << 20,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "1 {'rate': 1}" in res.stdout


def test_record_below_the_target_rate_is_refused_by_prepare_and_by_inference(tmp_path: Path) -> None:
    corpus = tmp_path / "c"
    _record(corpus, "good", fs=500)
    _record(corpus, "low", fs=50, n=500)
    out = prepare_store("folder", corpus, tmp_path / "s", CFG, quiet=True)
    skipped = _skipped(out)
    assert skipped["kind"].tolist() == ["rate"] and skipped["record"].tolist() == ["low"]
    _one_line(skipped["message"][0], "low.hea: sampled at 50 Hz, below the store's 100 Hz", "prepare with --fs <= 50")
    # One rule for both: inference uses the same function.
    from ecgmae.data import prepared

    assert prepared.check_fs is check_fs
    with pytest.raises(DataError, match=r"low: sampled at 50 Hz, below the model's 100 Hz"):
        prepared.prepare_signal(np.zeros((2, 500)), 50, ["I", "II"], CFG, name="low")
    assert fs_problem(100 * (1 - 1e-9), 100) is None and fs_problem(500, 100) is None
    for bad in (0, -5, float("nan"), float("inf"), 0.5, 50000, "fast"):
        assert fs_problem(bad, 100)


def test_resampling_and_output_length_are_bounded_before_allocating() -> None:
    with pytest.raises(DataError, match="will not resample 1 Hz to 100 Hz"):
        resample(np.zeros((1, 10), np.float32), 1, 100)
    # 100,000 samples at 1 Hz would become 2e9 at 20 kHz: refused before a byte of that is allocated.
    with pytest.raises(DataError, match="values per record"):
        preprocess(np.zeros((1, 100_000), np.float32), 1, ["I"], PreprocessConfig(fs=20000, seconds=0))
    with pytest.raises(ConfigError, match=r"preprocess\.seconds"):
        PreprocessConfig(fs=20000, seconds=86400)
    with pytest.raises(ConfigError, match=r"preprocess\.fs"):
        PreprocessConfig(fs=0.01)


# ---------------------------------------------------------------------- 4. names in skip lines
def test_escape_sequences_in_file_names_are_printed_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    corpus = tmp_path / "c"
    _record(corpus, "good")
    evil = "ev\x1b[2J\x1b]0;pwned\x07il"
    (corpus / f"{evil}.hea").write_text("garbage header\n")
    out = prepare_store("folder", corpus, tmp_path / "s", CFG, quiet=True)
    message = _skipped(out)["message"][0]
    assert "\x1b" not in message and "\x07" not in message
    assert message.startswith("ev\\x1b[2J\\x1b]0;pwned\\x07il.hea: ")
    assert "\x1b" not in caplog.text and "ev\\x1b[2J" in caplog.text
    assert "\x1b" not in capsys.readouterr().err


# ------------------------------------------------------------------------ 5. prepare's arguments
def _prepare(corpus: Path, out: Path, *flags: str) -> int:
    return main(["prepare", "--source", "folder", "--src", str(corpus), "--out", str(out), "--quiet", *flags])


@pytest.mark.parametrize(
    ("flags", "flag"),
    [
        (("--split", "0.5,0.5,0.5"), "--split"),
        (("--split", "nan,0.5,0.5"), "--split"),
        (("--split", "-0.2,0.6,0.6"), "--split"),
        (("--split", "inf,0,0"), "--split"),
        (("--workers", "-3"), "--workers"),
        (("--workers", "0"), "--workers"),
        (("--fs", "0"), "--fs"),
        (("--fs", "nan"), "--fs"),
        (("--fs", "1e9"), "--fs"),
        (("--seconds", "-1"), "--seconds"),
        (("--src-fs", "0.01"), "--src-fs"),
    ],
)
def test_nonsense_flags_are_refused_at_parse_time(
    tmp_path: Path, capsys: pytest.CaptureFixture, flags: tuple[str, ...], flag: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        _prepare(tmp_path / "nowhere", tmp_path / "s", *flags)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument {flag}" in err


def test_config_errors_name_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _record(tmp_path / "c", "good")
    assert _prepare(tmp_path / "c", tmp_path / "s", "--leads", "I,foo") == 2
    err = capsys.readouterr().err.strip()
    _one_line(err, "--leads: unknown lead name 'foo'")
    assert _prepare(tmp_path / "c", tmp_path / "s", "--bandpass", "10,5") == 2
    assert "--bandpass: need 0 <= lo < hi" in capsys.readouterr().err


def test_prepare_store_validates_its_arguments(tmp_path: Path) -> None:
    corpus = tmp_path / "c"
    _record(corpus, "good")
    for kwargs, pattern in (
        ({"split": (0.5, 0.5, 0.5)}, "--split"),
        ({"split": (float("nan"), 0.5, 0.5)}, "--split"),
        ({"workers": -3}, "--workers"),
        ({"workers": 0}, "--workers"),
        ({"on_error": "ignore"}, "--on-error"),
    ):
        with pytest.raises(DataError, match=pattern):
            prepare_store("folder", corpus, tmp_path / "s", CFG, quiet=True, **kwargs)
    with pytest.raises(DataError, match="holds the corpus"):
        prepare_store("folder", corpus, tmp_path, CFG, quiet=True)
    with pytest.raises(DataError, match="holds the corpus"):
        prepare_store("folder", corpus, corpus, CFG, quiet=True)


def test_store_inside_its_own_corpus_is_not_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    corpus = tmp_path / "c"
    _record(corpus, "good")
    _record(corpus / "more", "other")
    out = prepare_store("folder", corpus, corpus / "store", CFG, quiet=True)
    first = (out / "meta.json").stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level("INFO", logger="ecgmae"):
        prepare_store("folder", corpus, corpus / "store", CFG, quiet=True)
    assert "up to date" in caplog.text and (out / "meta.json").stat().st_mtime_ns == first
    assert len(Store.open(out)) == 2 and "store" not in " ".join(Store.open(out).index["file"])


@pytest.mark.parametrize("damage", ["delete", "truncate", "index"])
def test_a_damaged_store_is_rebuilt_not_reported_up_to_date(tmp_path: Path, damage: str) -> None:
    corpus = tmp_path / "c"
    _record(corpus, "good")
    out = prepare_store("folder", corpus, tmp_path / "s", CFG, quiet=True)
    stamp = (out / "meta.json").stat().st_mtime_ns
    prepare_store("folder", corpus, out, CFG, quiet=True)
    assert (out / "meta.json").stat().st_mtime_ns == stamp  # whole: up to date
    if damage == "delete":
        (out / SIGNALS).unlink()
    elif damage == "truncate":
        with open(out / SIGNALS, "r+b") as fh:
            fh.truncate(300)
    else:
        (out / "index.csv").unlink()
    prepare_store("folder", corpus, out, CFG, quiet=True)
    assert (out / "meta.json").stat().st_mtime_ns != stamp and len(Store.open(out)) == 1
    if damage == "delete":  # the command line too
        (out / SIGNALS).unlink()
        assert _prepare(corpus, out, "--fs", "100", "--seconds", "2", "--leads", "I,II") == 0
        assert len(Store.open(out)) == 1


def test_ptbxl_filenames_outside_the_corpus_are_refused_at_scan(tmp_path: Path) -> None:
    from ecgmae.data.sources import get_source

    src = tmp_path / "ptbxl"
    _record(src / "records100" / "00000", "00001_lr", fs=100, n=1000)
    rows = [(1, "records100/00000/00001_lr"), (2, "../../etc/hostname"), (3, "/etc/passwd")]
    pd.DataFrame(
        [
            {
                "ecg_id": i,
                "patient_id": 1.0,
                "scp_codes": "{'NORM': 100.0}",
                "strat_fold": 1,
                "filename_lr": name,
                "filename_hr": name,
            }
            for i, name in rows
        ]
    ).to_csv(src / "ptbxl_database.csv", index=False)
    pd.DataFrame(
        {
            "diagnostic": [1.0],
            "form": [None],
            "rhythm": [None],
            "diagnostic_class": ["NORM"],
            "diagnostic_subclass": ["NORM"],
        },
        index=["NORM"],
    ).to_csv(src / "scp_statements.csv")
    scan = get_source("ptbxl").scan(src, options={"target_fs": 100})
    assert [it.record for it in scan.items] == ["1"]
    assert [(p[0], p[2]) for p in scan.problems] == [("2", "outside"), ("3", "outside")]
    _one_line(scan.problems[0][3], "ecg_id 2: record file '../../etc/hostname' is outside the corpus folder")
