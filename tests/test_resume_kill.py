"""``kill -9``, SIGTERM or Ctrl-C at a random point, then ``--resume``: the same weights and losses as an
uninterrupted run, at a fixed thread count and precision (1 thread in fp32; 2 threads and the default
precision, as shipped).

Each run is the real CLI in a subprocess. The first runs to the end undisturbed and measures how long
training goes on after ``last.ckpt`` first appears; the second is stopped at a seeded random moment
(after a random step's checkpoint, then up to two steps' time: mid-epoch or between epochs, with or
without a newer checkpoint) and then resumed.
"""

from __future__ import annotations

import csv
import json
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

from conftest import default_sigint, synth_store

pytestmark = pytest.mark.slow  # every test trains in subprocesses (20-50 s each)

SRC = Path(__file__).parents[1] / "src"
STEPS = 20
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(SRC)}


def _cmd(store: Path, out: Path, check_every: int, *extra: str) -> list[str]:
    # about 45 train records in batches of 16: 2 steps per epoch
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
        "--max-steps",
        str(STEPS),
        "--batch-size",
        "16",
        "--seed",
        "5",
        "--precision",
        "32",
        "--accelerator",
        "cpu",
        "--quiet",
        "--set",
        f"trainer.check_every={check_every}",
        *extra,
    ]


def _start(cmd: list[str], log: Path, env: dict[str, str] = ENV) -> subprocess.Popen:
    with open(log, "wb") as err:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True, preexec_fn=default_sigint
        )
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


def _step(ckpt: Path, proc: subprocess.Popen) -> int:
    """The step of ``ckpt`` (written atomically), -1 before it exists; fails if ``proc`` ended."""
    assert proc.poll() is None, f"run ended early: {proc.log.read_text()[-2000:]}"
    if not ckpt.exists():
        return -1
    return int(torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"])


def _at_a_random_moment(
    proc: subprocess.Popen, ckpt: Path, rng: random.Random, span: float, steps: int = STEPS
) -> None:
    """Return at a seeded random moment of a run: once the checkpoint of a random step is written (8 or more
    steps before the end), then up to two steps' time later (mid-epoch, or at an epoch's end). ``span``: the
    seconds an undisturbed run trains after its first checkpoint. Steps, not seconds, keep the moment inside
    the run however busy the machine is."""
    at = rng.randint(2, steps - 8)
    while _step(ckpt, proc) < at:
        time.sleep(0.02)
    time.sleep(rng.uniform(0.0, 2.0) * span / steps)


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
    _at_a_random_moment(proc, cut / "last.ckpt", random.Random(seed), span)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before the kill"
    assert not (cut / "encoder.safetensors").exists()
    killed_at = torch.load(cut / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]
    assert 0 < killed_at < STEPS

    res = subprocess.run(
        _cmd(store, cut, check_every, "--resume"), env=ENV, capture_output=True, text=True, timeout=300
    )
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
    _at_a_random_moment(proc, cut / "last.ckpt", random.Random(seed), span)
    os.killpg(proc.pid, sig)  # the whole process group, as a terminal's Ctrl-C or a job scheduler does
    proc.wait(timeout=120)
    err = proc.log.read_text()
    assert proc.returncode == 128 + sig, f"exit {proc.returncode}: {err[-2000:]}"
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err[-2000:]
    stopped_at = torch.load(cut / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]
    assert 0 < stopped_at < STEPS and not (cut / "encoder.safetensors").exists()
    assert err.strip() == (
        f"ecgmae pretrain: interrupted: stopped after step {stopped_at}; {cut / 'last.ckpt'} "
        "saved: resume with --resume"
    )

    res = subprocess.run(_cmd(store, cut, 0, "--resume"), env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    a, b = load_file(full / "encoder.safetensors"), load_file(cut / "encoder.safetensors")
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"stopped after step {stopped_at}: {len(differ)} tensors differ, e.g. {differ[:3]}"
    assert _last_val_loss(cut) == _last_val_loss(full)


def test_sigint_during_finetune_saves_a_checkpoint_that_resumes_to_the_same_classifier(tmp_path, uninterrupted):
    store, _, _ = uninterrupted

    def cmd(out: Path, *extra: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "ecgmae",
            "finetune",
            "--data",
            str(store),
            "--out",
            str(out),
            "--mode",
            "scratch",
            "--model",
            "ecgmae_tiny",
            "--epochs",
            "12",
            "--batch-size",
            "16",
            "--seed",
            "3",
            "--precision",
            "32",
            "--accelerator",
            "cpu",
            "--quiet",
            "--set",
            "n_boot=10",
            *extra,
        ]

    proc = _start(cmd(tmp_path / "full"), tmp_path / "full.log")
    first = _wait_for(tmp_path / "full" / "last.ckpt", proc)
    span = _wait_for(tmp_path / "full" / "classifier.safetensors", proc, timeout=300) - first
    proc.wait(timeout=60)
    assert proc.returncode == 0, proc.log.read_text()[-2000:]
    cut = tmp_path / "cut"
    proc = _start(cmd(cut), tmp_path / "cut.log")
    _at_a_random_moment(proc, cut / "last.ckpt", random.Random(4), span, steps=24)  # 12 epochs of 2 steps
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=120)
    err = proc.log.read_text().strip()
    assert proc.returncode == 130 and err.startswith("ecgmae finetune: interrupted: stopped after step"), err[-2000:]
    assert len(err.splitlines()) == 1 and not (cut / "classifier.safetensors").exists()
    res = subprocess.run(cmd(cut, "--resume"), env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    a, b = load_file(tmp_path / "full" / "classifier.safetensors"), load_file(cut / "classifier.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- the shipped way: 2 threads, default precision
ENV2 = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "PYTHONPATH": str(SRC)}
SHIPPED_STEPS = 40


def _shipped(store: Path, out: Path, *extra: str) -> list[str]:
    # the default batch (64) over ~45 train records: one batch of all of them per epoch, where 2 threads
    # accumulating an indexed embedding's gradient with atomic adds used to make runs differ
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
        "--max-steps",
        str(SHIPPED_STEPS),
        "--seed",
        "5",
        "--accelerator",
        "cpu",
        "--quiet",
        "--set",
        "trainer.check_every=0",
        *extra,
    ]


@pytest.mark.slow
def test_two_thread_runs_repeat_and_resume_bit_exactly(tmp_path, uninterrupted):
    """Two threads and the default precision, as shipped (on a busy core: the test's): two same-seed runs give
    the same weights, and so does one killed at a seeded random moment and resumed."""
    store = uninterrupted[0]
    runs = [tmp_path / "a", tmp_path / "b"]
    procs = [
        subprocess.Popen(_shipped(store, r), env=ENV2, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for r in runs
    ]  # at the same time: the threads compete for the core
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    a, b = (load_file(r / "encoder.safetensors") for r in runs)
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"two same-seed 2-thread runs differ in {len(differ)} tensors, e.g. {differ[:3]}"
    header = json.loads((runs[0] / "model_card.json").read_text())["train"]["runtime"]
    assert header["threads"] == 2 and header["deterministic"] is True

    cut = tmp_path / "cut"
    proc = _start(_shipped(store, cut), tmp_path / "cut.log", env=ENV2)
    at = random.Random(7).randint(2, SHIPPED_STEPS // 2)
    while _step(cut / "last.ckpt", proc) < at:  # one step an epoch: a checkpoint after every step
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before the kill"
    res = subprocess.run(_shipped(store, cut, "--resume"), env=ENV2, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    c = load_file(cut / "encoder.safetensors")
    differ = [k for k in a if not torch.equal(a[k], c[k])]
    assert not differ, f"killed after step {at} or later and resumed: {len(differ)} tensors differ"


def test_resuming_with_another_thread_count_warns(tmp_path, uninterrupted):
    store, run = uninterrupted[0], tmp_path / "r"
    for env, steps in ((ENV, "4"), (ENV, "8"), (ENV2, "12")):  # begun on 1 thread, resumed on 1, then on 2
        res = subprocess.run(
            _cmd(store, run, 0, "--max-steps", steps, *(["--resume"] if steps != "4" else [])),
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert res.returncode == 0, res.stderr[-2000:]
        warned = "resuming with threads 1 -> 2" in res.stderr and "differ from an uninterrupted" in res.stderr
        assert warned == (env is ENV2), res.stderr
    assert json.loads((run / "model_card.json").read_text())["train"]["runtime"]["threads"] == 2
