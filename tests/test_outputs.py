"""Outputs: nothing that ecgmae did not write is ever deleted or written over.

A folder counts as ecgmae's own only by the marker its writer puts there (a store's meta.json with its
format and fingerprint, a synth folder's classes.json/source.json as synth writes them, a run's
config.json header, a job's stamp); a folder replaced whole must hold nothing else.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import default_sigint, synth_store
from ecgmae.cli import main
from ecgmae.data import store as store_mod
from ecgmae.data.signal import PreprocessConfig
from ecgmae.data.sources.synthetic import write_wfdb_folder
from ecgmae.data.store import Store, prepare_store
from ecgmae.errors import DataError
from ecgmae.jobs import claim_out
from ecgmae.outputs import LOCK_NAME, lock_beside, locked


def _one_line_error(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_wfdb_folder(tmp_path / "raw", 6, fs=250, seconds=5, seed=0, noise="low", quiet=True)


def _prepare(src: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "prepare",
            "--source",
            "folder",
            "--src",
            str(src),
            "--out",
            str(out),
            "--fs",
            "50",
            "--seconds",
            "5",
            "--quiet",
            *extra,
        ]
    )


@pytest.mark.parametrize("meta", ['{"format": 1}', '{"title": "my thesis"}', "not json"])
def test_prepare_keeps_a_folder_that_only_has_a_meta_json(
    corpus: Path, tmp_path: Path, meta: str, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.docx").write_bytes(b"years of work")
    (mine / "meta.json").write_text(meta)
    assert _prepare(corpus, mine) == 2
    _one_line_error(capsys, str(mine), "not an ecgmae store", "thesis.docx")
    assert sorted(p.name for p in mine.iterdir()) == ["meta.json", "thesis.docx"]
    assert (mine / "thesis.docx").read_bytes() == b"years of work"


def test_prepare_keeps_a_store_holding_someone_elses_file(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "store"
    assert _prepare(corpus, out) == 0
    (out / "notes.txt").write_text("mine")
    assert _prepare(corpus, out, "--bandpass", "none", "--overwrite") == 2  # the store would be replaced
    _one_line_error(capsys, str(out), "notes.txt", "did not write")
    assert (out / "notes.txt").read_text() == "mine" and Store.open(out).preprocess_config.bandpass is not None
    (out / "notes.txt").unlink()
    assert _prepare(corpus, out, "--bandpass", "none", "--overwrite") == 0  # its own store alone is replaced
    assert Store.open(out).preprocess_config.bandpass is None


def test_a_file_dropped_into_the_store_while_it_is_rebuilt_is_kept(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = prepare_store("folder", corpus, tmp_path / "store", PreprocessConfig(fs=50, seconds=5), quiet=True)
    real_build = store_mod._build

    def build_then_drop(*args, **kwargs):  # someone saves a file into the old store during the build
        meta = real_build(*args, **kwargs)
        (out / "late.txt").write_text("mine")
        return meta

    monkeypatch.setattr(store_mod, "_build", build_then_drop)
    with pytest.raises(DataError, match=r"late\.txt"):
        prepare_store("folder", corpus, out, PreprocessConfig(fs=25, seconds=5), quiet=True, overwrite=True)
    assert (out / "late.txt").read_text() == "mine" and Store.open(out).fs == 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "store"]  # no temporary folder left


@pytest.mark.parametrize("marker", [("classes.json", '{"classes": []}'), ("source.json", "{}")])
def test_synth_overwrite_keeps_a_folder_it_did_not_write(
    tmp_path: Path, marker: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / marker[0]).write_text(marker[1])  # a file of that name, not written by ecgmae synth
    (mine / "thesis.docx").write_bytes(b"years of work")
    assert main(["synth", "--out", str(mine), "--n", "1", "--seconds", "3", "--overwrite", "--quiet"]) == 2
    _one_line_error(capsys, str(mine), "not an ecgmae synth folder")
    assert sorted(p.name for p in mine.iterdir()) == sorted([marker[0], "thesis.docx"])


def test_synth_overwrite_keeps_a_synth_folder_holding_someone_elses_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "synth"
    args = ["synth", "--out", str(out), "--n", "1", "--seconds", "3", "--quiet"]
    assert main(args) == 0
    (out / "notes.txt").write_text("mine")
    assert main([*args, "--overwrite"]) == 2
    _one_line_error(capsys, "notes.txt", "did not write")
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    assert main([*args, "--overwrite", "--n", "2"]) == 0 and len((out / "RECORDS").read_text().split()) == 2


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_training_never_writes_into_a_folder_it_did_not_write(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store = synth_store(tmp_path, 24, seed=1)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"lr": 0.1}')  # someone's own config.json
    (mine / "metrics.csv").write_text("epoch,acc\n1,0.9\n")
    extra = (
        ["--mode", "scratch", "--model", "ecgmae_tiny", "--epochs", "1"]
        if command == "finetune"
        else ["--model", "ecgmae_tiny", "--max-steps", "0"]
    )

    def args(out: Path, *flags: str) -> list[str]:
        return [command, "--data", str(store), "--out", str(out), "--quiet", "--accelerator", "cpu", *extra, *flags]

    for flags in ([], ["--overwrite"]):
        assert main(args(mine, *flags)) == 2
        _one_line_error(capsys, str(mine), "not an ecgmae run folder")
    assert (mine / "config.json").read_text() == '{"lr": 0.1}'
    assert sorted(p.name for p in mine.iterdir()) == ["config.json", "metrics.csv"]
    run = tmp_path / "run"  # a run folder of its own is written, marked, and rerun with --overwrite
    assert main(args(run)) == 0
    assert "ecgmae_version" in json.loads((run / "config.json").read_text())
    assert main(args(run, "--overwrite")) == 0


def test_jobs_only_use_and_delete_their_own_folder(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.docx").write_bytes(b"years of work")
    names = ("log.txt", "runs")
    for overwrite in (False, True):  # not a demo folder: neither written into nor deleted
        with pytest.raises(DataError, match="not an ecgmae demo folder"):
            claim_out(mine, {"n": 1}, "demo_config.json", names=names, overwrite=overwrite)
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.docx"]
    job = tmp_path / "job"
    claim_out(job, {"n": 1}, "demo_config.json", names=names)
    (job / "runs").mkdir()
    (job / "thesis.docx").write_bytes(b"years of work")
    with pytest.raises(DataError, match=r"thesis\.docx"):  # a demo folder holding someone's file
        claim_out(job, {"n": 2}, "demo_config.json", names=names, overwrite=True)
    assert (job / "thesis.docx").exists() and (job / "runs").is_dir()
    (job / "thesis.docx").unlink()
    claim_out(job, {"n": 2}, "demo_config.json", names=names, overwrite=True)
    assert sorted(p.name for p in job.iterdir()) == ["demo_config.json"]


# ------------------------------------------------------------------ one command per folder (locks)
SRC = Path(__file__).parents[1] / "src"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC)}


def _pretrain_cmd(store: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ecgmae",
        "pretrain",
        "--data",
        str(store),
        "--out",
        str(out),
        "--model",
        "ecgmae_tiny",
        "--batch-size",
        "8",
        "--precision",
        "32",
        "--accelerator",
        "cpu",
        "--quiet",
        *extra,
    ]


@pytest.mark.slow
def test_a_second_pretrain_on_a_running_folder_refuses_and_the_lock_dies_with_the_first(tmp_path: Path) -> None:
    store = synth_store(tmp_path, 24, seed=1)
    out = tmp_path / "dual"
    with open(tmp_path / "first.log", "wb") as err:
        first = subprocess.Popen(
            _pretrain_cmd(store, out, "--max-steps", "1000000"),
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    try:
        end = time.monotonic() + 300
        while not (out / "logs" / "metrics.csv").exists():  # the first one is training
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-2000:]
            assert time.monotonic() < end, "the first run never started"
            time.sleep(0.05)
        header = (out / "config.json").read_bytes()
        second = subprocess.run(
            _pretrain_cmd(store, out, "--max-steps", "1", "--seed", "7"),
            env=ENV,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert first.poll() is None, "the first run ended before the second was refused"
        assert second.returncode == 2, second.stderr[-2000:]
        line = second.stderr.strip()
        assert len(line.splitlines()) == 1 and str(out) in line and f"process {first.pid}" in line, line
        assert "another ecgmae command is writing it" in line
        assert (out / "config.json").read_bytes() == header  # the second wrote nothing
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
    assert (out / LOCK_NAME).exists()  # left by kill -9, but the lock itself died with the process
    res = subprocess.run(
        _pretrain_cmd(store, out, "--max-steps", "0", "--overwrite"),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert (out / "encoder.safetensors").exists() and not (out / LOCK_NAME).exists()


def test_prepare_and_finetune_refuse_a_folder_another_command_is_writing(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "store"
    with locked(out, lock_beside(out)):  # as a running prepare holds it
        assert _prepare(corpus, out) == 2
        _one_line_error(capsys, str(out), "another ecgmae command is writing it", f"process {os.getpid()}")
        assert not out.exists()
    assert _prepare(corpus, out) == 0 and not lock_beside(out).exists()
    run = tmp_path / "ft"
    args = [
        "finetune",
        "--data",
        str(out),
        "--out",
        str(run),
        "--mode",
        "scratch",
        "--model",
        "ecgmae_tiny",
        "--epochs",
        "1",
        "--accelerator",
        "cpu",
        "--quiet",
    ]
    with locked(run):
        assert main(args) == 2
        _one_line_error(capsys, str(run), "another ecgmae command is writing it")
        assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]
    assert main(args) == 0 and (run / "classifier.safetensors").exists() and not (run / LOCK_NAME).exists()


# ------------------------------------------------------------------ interrupted prepare
# `ecgmae prepare` with each record's preprocessing slowed down, so that the test can signal it mid-way
_SLOW_PREPARE = """
import os, sys, time
import ecgmae.data.store as store
_to_row = store._to_row
def slow(cfg, rec):
    open(os.environ["ECGMAE_TEST_STARTED"], "a").close()  # a record is being read (in a reader process too)
    time.sleep(0.05)
    return _to_row(cfg, rec)
store._to_row = slow
from ecgmae.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    ("sig", "workers", "group"), [(signal.SIGTERM, 1, False), (signal.SIGTERM, 2, True), (signal.SIGINT, 2, True)]
)
@pytest.mark.slow
def test_a_signal_during_prepare_removes_the_partial_store(tmp_path: Path, sig: int, workers: int, group: bool) -> None:
    src = write_wfdb_folder(tmp_path / "raw", 80, fs=250, seconds=5, seed=0, noise="low", quiet=True)
    out = tmp_path / "store"
    started = tmp_path / "raw" / "started"  # inside the corpus folder, so the last assertion sees no extra file
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _SLOW_PREPARE,
            "prepare",
            "--source",
            "folder",
            "--src",
            str(src),
            "--out",
            str(out),
            "--fs",
            "50",
            "--seconds",
            "5",
            "--quiet",
            "--workers",
            str(workers),
        ],
        env={**ENV, "ECGMAE_TEST_STARTED": str(started)},
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=default_sigint,
    )
    end = time.monotonic() + 120
    # records are being read (80 x 0.05 s of reading remain, 2-4 s): the signal lands mid-build; the signal file
    # is not a test of progress, as its writer buffers and may first grow only when the build ends
    while not started.exists():
        assert proc.poll() is None and time.monotonic() < end, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.02)
    time.sleep(0.2)
    (os.killpg if group else os.kill)(proc.pid, sig)  # the group: as a terminal or a job scheduler does
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-2000:]
    assert err.strip() == f"ecgmae prepare: interrupted: the partial store was removed; {out} is as it was"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # no OUT.tmp-*, no store, no lock


def test_prepare_removes_what_a_killed_prepare_left_and_nothing_else(corpus: Path, tmp_path: Path) -> None:
    left = tmp_path / "store.tmp-0a1b2c3d"  # as `kill -9` leaves a build
    left.mkdir()
    (left / "signals.npy").write_bytes(b"\0" * 4096)
    odd = tmp_path / "store.tmp-mine"
    odd.mkdir()
    (odd / "notes.txt").write_text("mine")
    assert _prepare(corpus, tmp_path / "store") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "store", "store.tmp-mine"]
    assert (odd / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------ a full disk
# The command with a file-size limit: a write past it fails (EFBIG) as on a full disk (ENOSPC), with the
# same errors from each writer (safetensors' SafetensorError, Lightning's checkpoint writer, numpy...)
_SMALL_DISK = """
import resource, signal, sys
limit = int(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from ecgmae.cli import main
raise SystemExit(main(sys.argv[2:]))
"""


# ecgmae_tiny: config.json 3 KB, encoder.safetensors 139 KB, last.ckpt 645 KB
@pytest.mark.parametrize(
    ("limit", "steps", "failing"), [(50_000, "0", "encoder.safetensors"), (300_000, "2", "last.ckpt")]
)
@pytest.mark.slow
def test_a_full_disk_during_pretrain_is_one_line_naming_the_file(
    tmp_path: Path, limit: int, steps: str, failing: str
) -> None:
    store = synth_store(tmp_path, 24, seed=1)
    out = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-c", _SMALL_DISK, str(limit), *_pretrain_cmd(store, out, "--max-steps", steps)[3:]],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2, res.stderr[-2000:]
    line = res.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line, line[-2000:]
    assert line.startswith("ecgmae pretrain: error: File too large") and str(out / failing) in line, line
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]  # no temporary file left
    assert not (out / "encoder.safetensors").exists()


# ------------------------------------------------------------------ existing outputs need --overwrite
def _file_commands(runs: dict[str, Path], out: Path) -> dict[str, list[str]]:
    src, store, mae, ft = (str(runs[k]) for k in ("src", "store", "mae", "ft"))
    record = str(sorted(runs["src"].glob("*.hea"))[0])
    return {
        "embed": ["embed", "--checkpoint", mae, "--src", src, "--out", str(out)],
        "embed --features": ["embed", "--features", "--src", src, "--out", str(out)],
        "predict": ["predict", "--checkpoint", ft, "--src", src, "--out", str(out)],
        "export": ["export", "--checkpoint", ft, "--out", str(out)],
        "reconstruct": ["reconstruct", "--checkpoint", mae, "--record", record, "--out", str(out)],
        "reconstruct --npz": [
            "reconstruct",
            "--checkpoint",
            mae,
            "--record",
            record,
            "--out",
            str(out.with_name("r.png")),
            "--npz",
            str(out),
        ],
        "plot-curves": ["plot-curves", mae, ft, "--out", str(out)],
        "evaluate": ["evaluate", "--checkpoint", ft, "--data", store, "--n-boot", "10", "--out", str(out)],
    }


@pytest.mark.parametrize(
    "command",
    ["embed", "embed --features", "predict", "export", "reconstruct", "reconstruct --npz", "plot-curves", "evaluate"],
)
def test_an_existing_output_file_is_replaced_only_with_overwrite(
    runs: dict[str, Path], tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mine.out"
    out.write_text("mine")
    args = [*_file_commands(runs, out)[command], "--quiet"]
    assert main(args) == 2
    flag = "--npz" if command.endswith("--npz") else "--out"
    _one_line_error(capsys, f"{flag} {out}: exists", "--overwrite")
    assert out.read_text() == "mine"
    assert main([*args, "--overwrite"]) == 0
    assert out.read_bytes() != b"mine"


def test_prepare_replaces_another_store_only_with_overwrite(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "store"
    assert _prepare(corpus, out) == 0
    stamp = (out / "meta.json").read_text()
    assert _prepare(corpus, out) == 0 and (out / "meta.json").read_text() == stamp  # the same: nothing to do
    assert _prepare(corpus, out, "--fs", "25") == 2
    _one_line_error(capsys, f"--out {out}", "other inputs or options", "--overwrite")
    assert Store.open(out).fs == 50
    assert _prepare(corpus, out, "--fs", "25", "--overwrite") == 0 and Store.open(out).fs == 25


def test_a_signal_between_the_two_renames_of_a_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    import ecgmae.utils as utils

    out, tmp = tmp_path / "store", tmp_path / "store.tmp-1"
    out.mkdir()
    (out / "old.txt").write_text("old")
    tmp.mkdir()
    (tmp / "new.txt").write_text("new")
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # out has gone aside; SIGINT lands before tmp takes its place
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(utils.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        utils.swap_folder(tmp, out, check=lambda f: None)
    assert (out / "old.txt").read_text() == "old" and tmp.is_dir()  # as it was: nothing lost, nothing half-moved
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store", "store.tmp-1"]
