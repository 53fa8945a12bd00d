"""benchmarks/release_weights.py at toy size: the same recipe gives the same weights, a finished run is not redone,
``--install`` puts a loadable model with its card into a weights folder and ``--verify`` compares with it."""

from __future__ import annotations

import json
from types import ModuleType

import pytest

import ecgmae
import ecgmae.pretrained as pretrained
from conftest import benchmark_script, shared_path


def _script() -> ModuleType:
    return benchmark_script("release_weights")


@pytest.mark.slow
def test_toy_release_reproduces_installs_and_verifies(tmp_path, monkeypatch):
    shared_path("cinc2020-cpsc-sample")  # the one check run here (skips when the samples are absent)
    rw = _script()
    recipe = [
        "--engine",
        "builtin",
        "--n",
        "24",
        "--steps",
        "4",
        "--model",
        "ecgmae_tiny",
        "--set",
        "batch_size=8",
        "--tasks",
        "cpsc2020",
        "--name",
        "toy-v1",
        "--aliases",
        "toy",
    ]
    rw.main(["--out", str(tmp_path / "a"), *recipe])
    rw.main(["--out", str(tmp_path / "b"), *recipe])
    a, b = (json.loads((tmp_path / d / "model_card.json").read_text())["release"] for d in "ab")
    assert a["tensor_sha256"] == b["tensor_sha256"]  # same recipe, same weights (1 thread, as shipped)
    assert a["steps"] == 4 and a["recipe"]["threads"] == 1 and a["commands"]["pretrain"]["attempts"] == 1
    md = (tmp_path / "a" / "model_card.md").read_text()  # the card for people: a table per check
    row = a["checks"]["results"]["cpsc2020"]["toy-v1"]
    assert "## cpsc2020" in md and f"| toy-v1 | {row['macro']:.3f} ± {row['macro_std']:.3f} |" in md
    stamp = (tmp_path / "a" / "pretrain" / "encoder.safetensors").stat().st_mtime_ns
    weights = tmp_path / "weights"
    monkeypatch.setattr(rw, "WEIGHTS", weights)
    monkeypatch.setattr(pretrained, "WEIGHTS", weights)
    rw.main(["--out", str(tmp_path / "a"), *recipe, "--install"])  # nothing re-run, then installed
    assert (tmp_path / "a" / "pretrain" / "encoder.safetensors").stat().st_mtime_ns == stamp
    model = ecgmae.load("toy")
    assert model.path == weights / "toy-v1" / "encoder.safetensors" and model.header.data.store is None
    rows = pretrained.list_pretrained()[0].release["checks"]["results"]["cpsc2020"]
    assert set(rows) == {"toy-v1", "untrained", "features", "toy-v1 + features"}  # the hybrid in its own row
    rw.main(["--out", str(tmp_path / "b"), *recipe, "--verify"])  # b's weights are a's
    with pytest.raises(SystemExit):
        rw.main(
            [
                "--out",
                str(tmp_path / "c"),
                *recipe[:-4],
                "--steps",
                "5",
                "--tasks",
                "cpsc2020",
                "--name",
                "toy-v1",
                "--verify",
            ]
        )  # another step count: other weights
