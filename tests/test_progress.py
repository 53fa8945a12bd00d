"""The terminal during training: stage lines and one bar per run, Lightning's bars only with --verbose,
and the full log (Lightning's messages included) in OUT/log.txt."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import synth_store
from ecgmae.cli import main
from ecgmae.utils import Stages, fmt_seconds, setup_logging

TRAIN = ["--batch-size", "8", "--accelerator", "cpu", "--devices", "1", "--precision", "32"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return synth_store(tmp_path_factory.mktemp("progress"), 30, seed=3)


@pytest.fixture(autouse=True)
def _plain_logging():
    torch.set_num_threads(1)
    yield
    setup_logging()  # a --verbose test leaves Lightning's bars on for whatever runs next


def test_benchmark_prints_stage_lines_and_logs_everything_to_a_file(store, tmp_path, capfd):
    out = tmp_path / "bench"
    args = [
        "benchmark",
        "--data",
        str(store),
        "--out",
        str(out),
        "--methods",
        "mae,scratch:ecgmae_tiny",
        "--label-fractions",
        "1",
        "--seeds",
        "1",
        "--max-steps",
        "2",
        "--n-boot",
        "5",
        "--set",
        "model=ecgmae_tiny",
        *TRAIN,
    ]
    assert main(args) == 0
    cap = capfd.readouterr()
    shown = cap.out + cap.err
    assert "Validation DataLoader" not in shown and "GPU available" not in shown and "Epoch 0" not in shown
    lines = [ln for ln in shown.replace("\r", "\n").splitlines() if ln.strip()]
    assert len(lines) <= 40, "\n".join(lines)
    for stage in (
        "[1/4] pre-train mae (ecgmae_tiny), seed 0",
        "[2/4] mae linprobe at 100% labels",
        "[4/4] scratch:ecgmae_tiny scratch at 100% labels",
    ):
        assert stage in cap.err
    assert "ETA ~" in cap.err and "benchmark done" in cap.err
    log = (out / "log.txt").read_text()
    assert "[1/4] pre-train mae" in log and "[4/4] scratch:ecgmae_tiny" in log
    assert "GPU available" in log and "Total params" in log  # Lightning's own lines are kept, in the file
    # a re-run reuses every run: its stages are in the log (debug), the terminal only gets the table
    assert main(args) == 0
    assert "[1/4]" not in capfd.readouterr().err
    assert "[1/4] pre-train mae (ecgmae_tiny), seed 0: 10 epochs: reused" in (out / "log.txt").read_text()


def test_single_run_draws_one_bar_and_verbose_brings_lightnings_back(store, tmp_path, capfd):
    base = ["pretrain", "--data", str(store), "--model", "ecgmae_tiny", "--epochs", "2", *TRAIN]
    assert main([*base, "--out", str(tmp_path / "quietly")]) == 0
    cap = capfd.readouterr()
    assert "Validation DataLoader" not in cap.out + cap.err and "Epoch 0" not in cap.out + cap.err
    assert "quietly: 100%" in cap.err and "6/6" in cap.err  # one bar over both epochs' steps
    assert main([*base, "--out", str(tmp_path / "loudly"), "--verbose"]) == 0
    cap = capfd.readouterr()
    assert "Epoch 1" in cap.out + cap.err and "Validation DataLoader" in cap.out + cap.err


def test_stage_eta_extrapolates_the_measured_stages(caplog):
    now = [0.0]
    stages = Stages([0, 10, 30])
    stages._clock = lambda: now[0]
    stages.t0 = 0.0
    with caplog.at_level("INFO", logger="ecgmae"), stages:
        stages.start("data")
        now[0] = 5.0
        stages.start("first run")
        now[0] = 25.0  # 10 units took 20 s: the last 30 units take about a minute
        stages.start("second run")
        now[0] = 85.0
        stages.finish()
    assert [r.getMessage() for r in caplog.records] == [
        "[1/3] data | 0 s elapsed",
        "[2/3] first run | 5 s elapsed",
        "[3/3] second run | 25 s elapsed, ETA ~1m00s",
        "done in 1m25s",
    ]
    assert fmt_seconds(7300) == "2h01m"


def test_the_terminal_handler_follows_stderr_when_it_is_replaced(monkeypatch):
    import io
    import sys

    from ecgmae.utils import log, setup_logging

    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    setup_logging()
    log.warning("one")
    monkeypatch.setattr(sys, "stderr", second)
    first.close()  # a closed earlier stream (a finished test's capture) is never written again
    log.warning("two")
    assert second.getvalue() == "two\n"
