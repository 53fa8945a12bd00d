"""Hostile checkpoints and mistyped flags on the model / command-line side (issue 13).

Each case builds its hostile file in a temp folder and asserts a clear one-line error (exit code 2 from the
command line), that nothing large is built first (the real module is never constructed, or the command runs
under an address-space limit), and that no work is done before an output path is refused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import ecgmae
import ecgmae.models
from conftest import save_raw_checkpoint
from ecgmae.checkpoint import load_checkpoint, load_model, save_checkpoint
from ecgmae.cli import main
from ecgmae.config import ConfigError, to_dict
from ecgmae.data.io import LEADS_12
from ecgmae.data.signal import PreprocessConfig
from ecgmae.errors import CheckpointError, DataError, ECGMAEError
from ecgmae.guards import MAX_WINDOW, check_device, check_resume
from ecgmae.header import DataInfo, RunHeader
from ecgmae.models import ECGMAE, ECGClassifier, ECGEncoder, ModelSpec, get_config

SRC = Path(__file__).resolve().parents[1] / "src"


def _header(**data: object) -> RunHeader:
    """An honest ``ecgmae_tiny`` encoder header (current format)."""
    d = DataInfo(fs=100.0, leads=LEADS_12, window_samples=500, preprocessing=PreprocessConfig(fs=100.0).to_dict())
    return RunHeader(ModelSpec("encoder", "ecgmae_tiny", get_config("ecgmae_tiny")), dataclasses.replace(d, **data))


def _meta_v1(kind: str, model: dict) -> dict:
    """A format-1 header (as ecgmae 0544e14 wrote them) with this model section."""
    d = {
        "fs": 100.0,
        "leads": list(LEADS_12),
        "window_samples": 500,
        "preprocessing": PreprocessConfig(fs=100.0).to_dict(),
    }
    return {"format_version": 1, "kind": kind, "model": model, "data": d, "label_names": []}


def encoder_file(path: Path, *, encoder: dict | None = None, state: dict | None = None, **data: object) -> Path:
    """A tiny encoder checkpoint: real ``ecgmae_tiny`` tensors, its (current format) header optionally forged."""
    torch.manual_seed(0)
    sd = ECGEncoder(get_config("ecgmae_tiny").encoder).state_dict() if state is None else state
    header = _header().to_dict()
    header["model"]["config"]["encoder"].update(encoder or {})
    header["data"].update(data)
    return save_raw_checkpoint(path, sd, header)


@pytest.fixture
def no_real_build(monkeypatch):
    """Fail the test if a real module is built from a header (what allocates the forged sizes); the
    shape check's build on the ``meta`` device allocates nothing and is allowed."""
    real = ecgmae.models.build_model

    def refuse(spec):
        if torch.empty(0).device.type != "meta":
            raise AssertionError("a module was built before the header was checked against the tensors")
        return real(spec)

    monkeypatch.setattr(ecgmae.models, "build_model", refuse)


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------------- forged model sizes
@pytest.mark.parametrize(("width", "depth"), [(4096, 1000), (8, 10**6)])
def test_forged_model_sizes_are_refused_before_anything_is_built(tmp_path, no_real_build, width, depth):
    path = encoder_file(tmp_path / "forged.safetensors", encoder={"embed_dim": width, "depth": depth, "num_heads": 2})
    start = time.perf_counter()
    with pytest.raises(
        CheckpointError,
        match=rf"forged\.safetensors: header field model\.config\.encoder\.depth="
        rf"{depth} but the file holds 2 encoder blocks",
    ):
        ecgmae.load(path)
    assert time.perf_counter() - start < 10


def test_forged_width_and_shapes_name_the_field(tmp_path, no_real_build):
    with pytest.raises(CheckpointError, match=r"model\.config\.encoder\.embed_dim=4096 does not match"):
        ecgmae.load(encoder_file(tmp_path / "w.safetensors", encoder={"embed_dim": 4096}))
    with pytest.raises(
        CheckpointError,
        match=r"weights do not fit .*mlp\.0\.weight is \[128, 32\] but the header "
        r"implies \[262144, 32\]",
    ):
        ecgmae.load(encoder_file(tmp_path / "m.safetensors", encoder={"mlp_ratio": 8192.0}))
    with pytest.raises(CheckpointError, match=r"model\.config\.encoder\.patch_size=10000000 exceeds every tensor"):
        ecgmae.load(encoder_file(tmp_path / "p.safetensors", encoder={"patch_size": 10**7}))
    sd = ECGEncoder(get_config("ecgmae_tiny").encoder).state_dict()
    with pytest.raises(CheckpointError, match=r"1 tensor\(s\) are not in the model \(e\.g\. extra\)"):
        ecgmae.load(encoder_file(tmp_path / "x.safetensors", state={**sd, "extra": torch.zeros(2)}))
    del sd["norm.bias"]
    with pytest.raises(CheckpointError, match=r"1 tensor\(s\) the header implies are missing \(e\.g\. norm\.bias\)"):
        ecgmae.load(encoder_file(tmp_path / "y.safetensors", state=sd))


def test_derived_buffers_beyond_the_file_are_refused(tmp_path, no_real_build):
    """Tensors that fit the header exactly, but the header's patch and kernel sizes imply 8 GB of index buffers."""
    forged = {
        "embed_dim": 2,
        "num_heads": 1,
        "depth": 1,
        "patch_size": 20000,
        "conv_kernels": [39999],
        "conv_channels": 1,
        "conv_bottleneck": 0,
        "conv_pool": 1,
    }
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in ECGEncoder(get_config("ecgmae_tiny", **forged).encoder).state_dict().items()}
    state = {k: torch.zeros(s) for k, s in shapes.items()}
    path = encoder_file(tmp_path / "b.safetensors", encoder=forged, state=state)
    assert path.stat().st_size < 2 * 2**20
    with pytest.raises(CheckpointError, match=r"b\.safetensors: the header's model needs \d+ MiB of derived buffers"):
        ecgmae.load(path)


def test_forged_decoder_and_classifier_headers(tmp_path):
    cfg = get_config("ecgmae_tiny")
    mae = to_dict(cfg) | {"decoder_depth": 10**6}
    save_raw_checkpoint(tmp_path / "mae.safetensors", ECGMAE(cfg).state_dict(), _meta_v1("mae", {"config": mae}))
    with pytest.raises(CheckpointError, match=r"decoder_depth=1000000 but the file holds 1 decoder blocks"):
        load_checkpoint(tmp_path / "mae.safetensors")
    # format 1 kept a classifier's encoder at model.encoder; read, it is model.config.encoder like every run's
    head = {"name": "encoder", "encoder": to_dict(cfg.encoder) | {"depth": 10**6}, "num_classes": 3}
    clf = ECGClassifier(cfg.encoder, 3).state_dict()
    save_raw_checkpoint(tmp_path / "c.safetensors", clf, _meta_v1("classifier", head))
    with pytest.raises(
        CheckpointError,
        match=r"model\.config\.encoder\.depth=1000000 but the file holds 2 encoder "
        r"blocks",
    ):
        load_model(tmp_path / "c.safetensors", kind="classifier")
    head = {"name": "encoder", "encoder": to_dict(cfg.encoder), "num_classes": 10**12}
    save_raw_checkpoint(tmp_path / "k.safetensors", clf, _meta_v1("classifier", head))
    with pytest.raises(CheckpointError, match=r"head\.weight is \[3, 32\] but the header implies \[10+, 32\]"):
        load_model(tmp_path / "k.safetensors", kind="classifier")
    forged = _header().to_dict()  # the current format: the same checks
    forged["kind"], forged["model"]["num_classes"] = "classifier", 10**12
    save_raw_checkpoint(tmp_path / "k2.safetensors", clf, forged)
    with pytest.raises(CheckpointError, match=r"k2\.safetensors: weights do not fit .*head\.weight is \[3, 32\]"):
        load_model(tmp_path / "k2.safetensors")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("window_samples", 10**12),
        ("window_samples", 0),
        ("window_samples", -5),
        ("window_samples", 2.5),
        ("window_samples", "500"),
        ("eval_stride_samples", 0),
        ("fs", -1),
        ("fs", float("nan")),
    ],
)
def test_hostile_data_section_is_refused_on_load(tmp_path, key, value):
    path = encoder_file(tmp_path / "d.safetensors", **{key: value})
    with pytest.raises(CheckpointError, match=rf"d\.safetensors: header field data\.{key} must be"):
        ecgmae.load(path)


def test_an_honest_checkpoint_still_loads_and_is_written_0644(tmp_path):
    old = os.umask(0o022)
    try:
        torch.manual_seed(0)
        sd = ECGEncoder(get_config("ecgmae_tiny").encoder).state_dict()
        path = save_checkpoint(tmp_path / "ok.safetensors", sd, _header(window_samples=MAX_WINDOW // 2000))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    model = ecgmae.load(path)
    x = np.random.default_rng(0).normal(0, 0.1, (12, 700)).astype(np.float32)
    assert model.window == 500 and model.embed(x, fs=100).shape == (model.embed_dim,)
    with pytest.raises(DataError, match="batch_size must be a positive integer, got 0"):
        model.embed(x, fs=100, batch_size=0)


ULIMIT_RUN = """
import resource, sys
import torch, ecgmae.api, ecgmae.cli, ecgmae.data.corpus
vm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize:")) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + 2**31, vm + 2**31))
sys.exit(ecgmae.cli.main(sys.argv[1:]))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to size the memory limit")
@pytest.mark.slow
def test_embed_command_on_forged_headers_stays_within_2_gb_and_seconds(tmp_path):
    for width, depth in ((4096, 1000), (8, 10**6)):
        path = encoder_file(
            tmp_path / f"forged{depth}.safetensors", encoder={"embed_dim": width, "depth": depth, "num_heads": 2}
        )
        env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
        start = time.perf_counter()
        res = subprocess.run(
            [
                sys.executable,
                "-c",
                ULIMIT_RUN,
                "embed",
                "--checkpoint",
                str(path),
                "--src",
                str(tmp_path / "corpus"),
                "--out",
                str(tmp_path / "z.npz"),
                "--device",
                "cpu",
                "--quiet",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert res.returncode == 2, res.stderr[-2000:]
        line = _one_line(res.stderr)
        assert line.startswith("ecgmae embed: error:") and f"depth={depth}" in line
        assert time.perf_counter() - start < 120


# -------------------------------------------------------------------------------- commands
def test_embed_and_predict_refuse_bad_outputs_and_devices_before_any_work(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    model_file = encoder_file(run / "encoder.safetensors")
    before = model_file.read_bytes()
    (tmp_path / "outdir").mkdir()

    def no_work(*args, **kwargs):
        raise AssertionError("work started before --out was checked")

    monkeypatch.setattr(ecgmae.api, "load", no_work)
    cases = [
        (["embed", "--checkpoint", str(run), "--out", str(model_file)], "is a file this command reads"),
        (["embed", "--checkpoint", str(model_file), "--out", str(model_file)], "is a file this command reads"),
        (["predict", "--checkpoint", str(run), "--out", str(tmp_path / "outdir")], "is a directory"),
        (["embed", "--checkpoint", str(run), "--out", str(model_file / "z.npz")], "is a file, not a folder"),
    ]
    for argv, message in cases:
        assert main([*argv, "--src", str(tmp_path / "corpus"), "--quiet"]) == 2
        line = _one_line(capsys.readouterr().err)
        assert line.startswith(f"ecgmae {argv[0]}: error: --out") and message in line, line
    assert model_file.read_bytes() == before
    monkeypatch.undo()
    if torch.cuda.device_count() < 8:
        assert (
            main(
                [
                    "embed",
                    "--checkpoint",
                    str(run),
                    "--src",
                    str(tmp_path / "corpus"),
                    "--out",
                    str(tmp_path / "z.npz"),
                    "--device",
                    "cuda:7",
                    "--quiet",
                ]
            )
            == 2
        )
        assert "device 'cuda:7':" in _one_line(capsys.readouterr().err)
    for bad in ("0", "-3", "x"):
        with pytest.raises(SystemExit) as exc:
            main(["embed", "--checkpoint", str(run), "--src", "c", "--out", "z.npz", "--batch-size", bad])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "error: argument --batch-size:" in err and "Traceback" not in err


def test_check_device_names_what_is_wrong():
    assert check_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="not a device name"):
        check_device("gpu:zero")
    with pytest.raises(ECGMAEError, match="not a device name"):  # one base class catches every user error
        ecgmae.load("nowhere", device="gpu:zero")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            check_device("cuda")


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--lr", "nan"], "--lr"),
        (["--lr", "0"], "--lr"),
        (["--max-steps", "-1"], "--max-steps"),
        (["--window-seconds", "0"], "--window-seconds"),
        (["--batch-size", "1.5"], "--batch-size"),
        (["--epochs", "0"], "--epochs"),
        (["--workers", "-3"], "--workers"),
    ],
)
def test_training_flags_are_validated_at_parse_time(tmp_path, capsys, argv, flag):
    with pytest.raises(SystemExit) as exc:
        main(["pretrain", "--data", str(tmp_path), "--out", str(tmp_path / "r"), *argv])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"error: argument {flag}" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("sets", "yaml_text", "message"),
    [
        (["batch_size=1.5"], None, "command line.batch_size: expected an integer, got 1.5"),
        (["optim.lr=.nan"], None, "command line.optim.lr: expected a number, got nan"),
        (["window_seconds=0"], None, "window_seconds must be a positive number of seconds"),
        ([], "optim:\n  lr: [1, 2]\n", "optim.lr: expected a number, got [1, 2]"),
        ([], "trainer:\n  num_workers: -3\n", "trainer.num_workers must be >= 0"),
        ([], "optim:\n  betas: [0.9, .inf]\n", "optim.betas must be a finite number"),
        ([], "optim:\n  betas: [0.9, 0.95, 0.99]\n", "optim.betas must be two numbers"),
    ],
)
def test_config_values_are_type_checked(tmp_path, capsys, sets, yaml_text, message):
    argv = ["pretrain", "--data", str(tmp_path / "store"), "--out", str(tmp_path / "r"), "--print-config"]
    if yaml_text:
        (tmp_path / "c.yaml").write_text(yaml_text)
        argv += ["--config", str(tmp_path / "c.yaml")]
    for item in sets:
        argv += ["--set", item]
    assert main(argv) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("ecgmae pretrain: error:") and message in line, line


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    from conftest import synth_store

    return synth_store(tmp_path_factory.mktemp("hostile"), 6, seed=1, synth_fs=100, fs=50, seconds=5)


def test_pretrain_refuses_a_file_as_out_and_a_damaged_last_ckpt(store, tmp_path, capsys):
    base = [
        "pretrain",
        "--data",
        str(store),
        "--model",
        "ecgmae_tiny",
        "--max-steps",
        "1",
        "--quiet",
        "--accelerator",
        "cpu",
    ]
    (tmp_path / "afile").write_text("keep me")
    assert main([*base, "--out", str(tmp_path / "afile")]) == 2
    assert "exists and is not a directory" in _one_line(capsys.readouterr().err)
    assert (tmp_path / "afile").read_text() == "keep me"
    assert main([*base, "--out", str(tmp_path / "afile" / "run")]) == 2
    assert "cannot create the run directory" in _one_line(capsys.readouterr().err)
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"state_dict": {"w": torch.arange(1000.0)}, "epoch": 3}, run / "last.ckpt")
    check_resume(run / "last.ckpt")  # a complete archive passes
    good = (run / "last.ckpt").read_bytes()
    at = good.find(np.arange(1000, dtype=np.float32).tobytes()) + 2000  # inside the tensor's bytes
    damaged = {
        "garbage": b"not a checkpoint at all",
        "truncated": good[: len(good) // 2],
        "bit-flip": good[:at] + bytes([good[at] ^ 0xFF]) + good[at + 1 :],
        "empty": b"",
    }
    for what, data in damaged.items():
        (run / "last.ckpt").write_bytes(data)
        assert main([*base, "--out", str(run), "--resume"]) == 2, what
        line = _one_line(capsys.readouterr().err)
        assert "last.ckpt: damaged resume checkpoint" in line and "--overwrite" in line, (what, line)
    assert sorted(p.name for p in run.iterdir()) == ["last.ckpt"]  # nothing written


def test_header_json_is_what_the_checks_read(tmp_path):
    """The forged files above differ from honest ones in the header only (same tensors)."""
    honest = encoder_file(tmp_path / "a.safetensors")
    forged = encoder_file(tmp_path / "b.safetensors", encoder={"depth": 10**6})
    from safetensors import safe_open

    with safe_open(str(honest), "pt") as f, safe_open(str(forged), "pt") as g:
        assert set(f.keys()) == set(g.keys())
        assert json.loads(g.metadata()["ecgmae"])["model"]["config"]["encoder"]["depth"] == 10**6


def test_training_hardware_this_machine_lacks_is_one_line(store, tmp_path, capsys):
    base = ["pretrain", "--data", str(store), "--model", "ecgmae_tiny", "--max-steps", "1", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "d"), "--devices", "two"]) == 2
    assert "trainer.devices: expected auto, a count or ids like 0,1; got 'two'" in _one_line(capsys.readouterr().err)
    if not torch.cuda.is_available():
        assert main([*base, "--out", str(tmp_path / "g"), "--accelerator", "gpu"]) == 2
        line = _one_line(capsys.readouterr().err)
        assert line.startswith("ecgmae pretrain: error: trainer:"), line
    assert not (tmp_path / "d" / "encoder.safetensors").exists()


def test_bad_leads_in_a_header_without_preprocessing_name_the_file(tmp_path):
    path = encoder_file(tmp_path / "l.safetensors", preprocessing=None, leads=["I", "XX"])
    with pytest.raises(CheckpointError, match=r"l\.safetensors: data: .*XX"):
        ecgmae.load(path)


@pytest.mark.parametrize("code", ["ENOSPC", "EACCES"])
def test_a_full_or_read_only_disk_is_one_line(monkeypatch, capsys, code):
    import errno

    import ecgmae.cli.synth as synth_cli

    def full(args):
        raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)), "/data/out/signals.npy")

    monkeypatch.setattr(synth_cli, "run", full)
    assert main(["synth", "--out", "/tmp/never", "--n", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ecgmae synth: error: ") and "/data/out/signals.npy" in err[0]

    def bug(args):
        raise OSError(errno.EBADF, "bad file descriptor")

    monkeypatch.setattr(synth_cli, "run", bug)
    with pytest.raises(OSError):  # anything else is a bug and keeps its traceback
        main(["synth", "--out", "/tmp/never", "--n", "1"])
