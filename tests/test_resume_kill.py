"""``kill -9`` at a random point, then ``--resume``: the same weights and losses as an uninterrupted run.

Each run is the real CLI in a subprocess. The first runs to the end undisturbed and measures how long
training goes on after ``last.ckpt`` first appears; the second is SIGKILLed at a seeded random moment of
that span (mid-epoch or between epochs, with or without a newer checkpoint) and then resumed.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import synth_store

pytestmark = pytest.mark.slow  # every test trains in subprocesses (20-50 s each)

SRC = Path(__file__).parents[1] / "src"
STEPS = 20
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(SRC)}


def _cmd(store: Path, out: Path, check_every: int, *extra: str) -> list[str]:
    # about 45 train records in batches of 16: 2 steps per epoch
    return [sys.executable, "-m", "ecgmae", "pretrain", "--data", str(store), "--out", str(out),
            "--model", "ecgmae_tiny", "--max-steps", str(STEPS), "--batch-size", "16", "--seed", "5",
            "--precision", "32", "--accelerator", "cpu", "--quiet", "--set", f"trainer.check_every={check_every}",
            *extra]


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as err:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> float:
    """Poll until ``path`` exists; the time it appeared."""
    end = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None and not path.exists():
            raise AssertionError(f"run ended before writing {path}: {proc.log.read_text()[-2000:]}")
        assert time.monotonic() < end, f"no {path} after {timeout} s"
        time.sleep(0.005)
    return time.monotonic()


def _last_val_loss(run: Path) -> float:
    rows = [r for r in csv.DictReader((run / "metrics.csv").read_text().splitlines()) if r.get("val/loss")]
    return float(rows[-1]["val/loss"])


# check_every 0: validation and last.ckpt every epoch, saved at the training epoch's end (the case Lightning
# resumes with its epoch counter one ahead); 3: every 2nd epoch, saved at the validation's end
@pytest.mark.parametrize(("seed", "check_every"), [(0, 0), (1, 3)])
def test_sigkill_at_a_random_point_then_resume_is_bit_exact(tmp_path, seed, check_every):
    store = synth_store(tmp_path, 56, seed=5)
    full, cut = tmp_path / "full", tmp_path / "cut"

    proc = _start(_cmd(store, full, check_every), tmp_path / "full.log")
    first = _wait_for(full / "last.ckpt", proc)
    span = _wait_for(full / "encoder.safetensors", proc, timeout=300) - first  # training after the 1st checkpoint
    proc.wait(timeout=60)
    assert proc.returncode == 0, proc.log.read_text()[-2000:]

    proc = _start(_cmd(store, cut, check_every), tmp_path / "cut.log")
    _wait_for(cut / "last.ckpt", proc)
    time.sleep(random.Random(seed).uniform(0.0, 0.8) * span)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before the kill"
    assert not (cut / "encoder.safetensors").exists()
    killed_at = torch.load(cut / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]
    assert 0 < killed_at < STEPS

    res = subprocess.run(_cmd(store, cut, check_every, "--resume"), env=ENV, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]

    a, b = load_file(full / "encoder.safetensors"), load_file(cut / "encoder.safetensors")
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"killed after step {killed_at}: {len(differ)} tensors differ, e.g. {differ[:3]}"
    assert _last_val_loss(cut) == _last_val_loss(full)


# ---------------------------------------------------------------- SIGTERM / SIGINT: stop, save, resume
@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, float]:
    """A store and one undisturbed run of it: ``(store, run, seconds of training after the 1st checkpoint)``."""
    root = tmp_path_factory.mktemp("signals")
    store = synth_store(root, 56, seed=5)
    proc = _start(_cmd(store, root / "full", 0), root / "full.log")
    first = _wait_for(root / "full" / "last.ckpt", proc)
    span = _wait_for(root / "full" / "encoder.safetensors", proc, timeout=300) - first
    proc.wait(timeout=60)
    assert proc.returncode == 0, proc.log.read_text()[-2000:]
    return store, root / "full", span


@pytest.mark.parametrize(("seed", "sig"), [(2, signal.SIGTERM), (3, signal.SIGINT)])
def test_sigterm_or_sigint_saves_a_checkpoint_that_resumes_bit_exactly(tmp_path, uninterrupted, seed, sig):
    store, full, span = uninterrupted
    cut = tmp_path / "cut"
    proc = _start(_cmd(store, cut, 0), tmp_path / "cut.log")
    _wait_for(cut / "last.ckpt", proc)
    time.sleep(random.Random(seed).uniform(0.0, 0.8) * span)
    os.killpg(proc.pid, sig)  # the whole process group, as a terminal's Ctrl-C or a job scheduler does
    proc.wait(timeout=120)
    err = proc.log.read_text()
    assert proc.returncode == 128 + sig, f"exit {proc.returncode}: {err[-2000:]}"
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err[-2000:]
    stopped_at = torch.load(cut / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]
    assert 0 < stopped_at < STEPS and not (cut / "encoder.safetensors").exists()
    assert err.strip() == (f"ecgmae pretrain: interrupted: stopped after step {stopped_at}; {cut / 'last.ckpt'} "
                           "saved: resume with --resume")

    res = subprocess.run(_cmd(store, cut, 0, "--resume"), env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    a, b = load_file(full / "encoder.safetensors"), load_file(cut / "encoder.safetensors")
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"stopped after step {stopped_at}: {len(differ)} tensors differ, e.g. {differ[:3]}"
    assert _last_val_loss(cut) == _last_val_loss(full)


def test_sigint_during_finetune_saves_a_checkpoint_that_resumes_to_the_same_classifier(tmp_path, uninterrupted):
    store, _, _ = uninterrupted

    def cmd(out: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "ecgmae", "finetune", "--data", str(store), "--out", str(out), "--mode",
                "scratch", "--model", "ecgmae_tiny", "--epochs", "12", "--batch-size", "16", "--seed", "3",
                "--precision", "32", "--accelerator", "cpu", "--quiet", "--set", "n_boot=10", *extra]

    proc = _start(cmd(tmp_path / "full"), tmp_path / "full.log")
    first = _wait_for(tmp_path / "full" / "last.ckpt", proc)
    span = _wait_for(tmp_path / "full" / "classifier.safetensors", proc, timeout=300) - first
    proc.wait(timeout=60)
    assert proc.returncode == 0, proc.log.read_text()[-2000:]
    cut = tmp_path / "cut"
    proc = _start(cmd(cut), tmp_path / "cut.log")
    _wait_for(cut / "last.ckpt", proc)
    time.sleep(random.Random(4).uniform(0.0, 0.5) * span)
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=120)
    err = proc.log.read_text().strip()
    assert proc.returncode == 130 and err.startswith("ecgmae finetune: interrupted: stopped after step"), err[-2000:]
    assert len(err.splitlines()) == 1 and not (cut / "classifier.safetensors").exists()
    res = subprocess.run(cmd(cut, "--resume"), env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    a, b = load_file(tmp_path / "full" / "classifier.safetensors"), load_file(cut / "classifier.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
