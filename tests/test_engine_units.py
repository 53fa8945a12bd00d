"""Unit tests of the engine's pure pieces: schedule, sampler, label subsets, aggregation, checkpoints."""

from __future__ import annotations

import dataclasses
import itertools
import json
import pickle

import numpy as np
import pytest
import torch

from ecgmae.checkpoint import FORMAT_VERSION, load_checkpoint, read_header, save_checkpoint
from ecgmae.data.splits import label_subset, select_classes
from ecgmae.engine.config import OptimConfig
from ecgmae.engine.data import EpochSampler
from ecgmae.engine.modules import aggregate_records
from ecgmae.engine.optim import build_optimizer, lr_factor, warmup_steps
from ecgmae.errors import CheckpointError, DataError


def test_schedule_warmup_then_cosine():
    total, warm = 100, 10
    f = [lr_factor(s, total, warm, 0.01) for s in range(total + 5)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(f[10:]))  # monotone decay after warm-up
    assert f[total] == pytest.approx(0.01) and f[-1] == pytest.approx(0.01)
    assert warmup_steps(OptimConfig(warmup=0.05), 200) == 10
    assert warmup_steps(OptimConfig(warmup=7), 200) == 7


def test_optimizer_applies_lr_scale_and_schedule():
    w, b = torch.nn.Parameter(torch.ones(3, 3)), torch.nn.Parameter(torch.zeros(3))
    groups = [
        {"params": [w], "weight_decay": 0.1, "lr_scale": 1.0},
        {"params": [b], "weight_decay": 0.0, "lr_scale": 0.5},
    ]
    opt, sched = build_optimizer(groups, OptimConfig(lr=1e-2, warmup=0), total_steps=10)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-2, 5e-3])
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    for _ in range(10):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4)


def test_epoch_sampler_is_seeded_and_shards_ranks():
    s = EpochSampler(10, seed=3, shuffle=True)
    a = list(s)
    assert sorted(i for _, i in a) == list(range(10)) and all(e == 0 for e, _ in a)
    assert a == list(EpochSampler(10, seed=3, shuffle=True))
    s.set_epoch(1)
    b = list(s)
    assert [i for _, i in b] != [i for _, i in a] and all(e == 1 for e, _ in b)
    shards = [list(EpochSampler(11, seed=0, shuffle=True, rank=r, world_size=3)) for r in range(3)]
    assert {len(x) for x in shards} == {4}
    assert {i for sh in shards for _, i in sh} == set(range(11))
    with pytest.raises(DataError, match="empty"):
        EpochSampler(0, seed=0, shuffle=True)


def test_epoch_sampler_reads_its_epoch_from_epoch_fn_and_ignores_set_epoch():
    step = {"epoch": 1}
    s = EpochSampler(10, seed=3, shuffle=True, epoch_fn=lambda: step["epoch"])
    s.set_epoch(5)  # what Lightning hands it (one ahead after some resumes): ignored
    ref = EpochSampler(10, seed=3, shuffle=True)
    ref.set_epoch(1)
    assert list(s) == list(ref)
    step["epoch"] = 2  # read as each pass starts
    ref.set_epoch(2)
    assert list(s) == list(ref) and all(e == 2 for e, _ in s)


def test_label_subset_keeps_a_positive_per_class():
    rng = np.random.default_rng(0)
    labels = np.zeros((1000, 4), np.uint8)
    labels[:, 0] = rng.random(1000) < 0.5
    labels[[5, 17], 3] = 1  # a rare class
    idx = np.arange(1000)
    sub = label_subset(labels, idx, 0.01, seed=0)
    assert 10 <= len(sub) <= 13 and labels[sub, 3].sum() >= 1
    assert np.array_equal(sub, label_subset(labels, idx, 0.01, seed=0))
    assert not np.array_equal(sub, label_subset(labels, idx, 0.01, seed=1))
    assert np.array_equal(label_subset(labels, idx, 1.0, seed=0), idx)


def test_select_classes():
    labels = np.array([[1, 0, 1], [0, 0, 1]])
    assert select_classes(["A", "B", "C"], labels, []) == [0, 2]
    assert select_classes(["A", "B", "C"], labels, ["c", "A"]) == [2, 0]
    with pytest.raises(DataError, match="unknown class"):
        select_classes(["A", "B"], labels[:, :2], ["Z"])


def test_aggregate_records_mean_and_max():
    rec = np.array([0, 0, 1, -1])
    prob = np.array([[0.2], [0.6], [0.9], [0.5]])
    tgt = np.array([[1.0], [1.0], [0.0], [0.0]])
    y, p = aggregate_records(rec, prob, tgt, "mean")
    assert p[:, 0] == pytest.approx([0.4, 0.9]) and y[:, 0].tolist() == [1.0, 0.0]
    _, p = aggregate_records(rec, prob, tgt, "max")
    assert p[:, 0] == pytest.approx([0.6, 0.9])


def test_checkpoint_round_trip_and_refusals(tmp_path):
    from safetensors import safe_open

    from conftest import save_raw_checkpoint
    from ecgmae import __version__
    from ecgmae.header import RunHeader
    from ecgmae.models import ECGEncoder, ModelSpec, get_config

    cfg = get_config("ecgmae_tiny")
    sd = ECGEncoder(cfg.encoder).state_dict()
    header = RunHeader(ModelSpec("encoder", "ecgmae_tiny", cfg))
    path = save_checkpoint(tmp_path / "run" / "encoder.safetensors", sd, header)
    state, read = load_checkpoint(tmp_path / "run")  # a run directory resolves to its weight file
    assert torch.equal(state["norm.weight"], sd["norm.weight"])
    assert read == dataclasses.replace(header, ecgmae_version=__version__)
    with safe_open(str(path), "pt") as f:
        assert json.loads(f.metadata()["ecgmae"])["format_version"] == FORMAT_VERSION
    for version in (1, FORMAT_VERSION):  # header checked against tensors, in either format
        bad = save_raw_checkpoint(
            tmp_path / "x.safetensors", sd, {"format_version": version, "kind": "encoder", "model": {"x": 1}}
        )
        with pytest.raises(CheckpointError, match="lacks model field 'config'"):
            load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="expected classifier"):
        load_checkpoint(path, kind="classifier")

    # A pickle offered as a checkpoint is refused and never executed.
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (marker.write_text, ("executed",))

    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError, match="not a safetensors checkpoint"):
        read_header(evil)
    assert not marker.exists()

    # A newer format version is a clear error, not a stack trace.
    from safetensors.torch import save_file

    newer = tmp_path / "newer.safetensors"
    save_file(
        sd, str(newer), metadata={"ecgmae": json.dumps({"format_version": FORMAT_VERSION + 1, "kind": "encoder"})}
    )
    with pytest.raises(CheckpointError, match="newer"):
        read_header(newer)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        read_header(tmp_path / "missing.safetensors")


def test_a_checkpoint_write_that_fails_leaves_the_old_one_and_no_temp_file(tmp_path, monkeypatch):
    import errno

    import torch
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    from ecgmae.engine.trainer import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, tmp_path / "last.ckpt")

    def full(self, checkpoint, path, storage_options=None):
        with open(path, "wb") as f:
            f.write(b"half")  # some bytes made it before the disk filled up
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", full)
    with pytest.raises(OSError, match="No space"):
        io.save_checkpoint({"step": 2}, tmp_path / "last.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    assert torch.load(tmp_path / "last.ckpt", weights_only=True) == {"step": 1}


@pytest.mark.parametrize(
    ("accelerator", "asked", "expected"), [("cpu", None, True), ("cpu", False, False), ("cpu", True, True)]
)
def test_cpu_runs_use_deterministic_algorithms_unless_told_not_to(tmp_path, accelerator, asked, expected):
    from ecgmae.engine.config import TrainerConfig
    from ecgmae.engine.trainer import build_trainer, deterministic

    before = torch.are_deterministic_algorithms_enabled()
    try:
        cfg = TrainerConfig(accelerator=accelerator, devices="1", deterministic=asked)
        build_trainer(cfg, tmp_path, max_epochs=1, max_steps=1, quiet=True)
        assert deterministic(cfg) is expected and torch.are_deterministic_algorithms_enabled() is expected
    finally:
        torch.use_deterministic_algorithms(before)


def test_the_gradient_of_an_indexed_embedding_repeats_with_deterministic_algorithms(one_thread):
    """What made 2-thread runs differ: ``pos[keep]`` (positions of the visible tokens, repeated across the
    batch) accumulates its gradient with atomic adds from several threads unless torch is deterministic."""
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    keep = torch.randint(0, 120, (56, 60), generator=g)  # (B, n_keep) indices into 120 token positions
    upstream = torch.randn(56, 60, 64, generator=g)  # without deterministic algorithms: 29 of 29 repeats differed
    before = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        grads = []
        for _ in range(30):
            pos = torch.zeros(120, 64, requires_grad=True)
            (pos[keep] * upstream).sum().backward()
            grads.append(pos.grad)
        assert all(torch.equal(grads[0], x) for x in grads[1:])
    finally:
        torch.use_deterministic_algorithms(before)
