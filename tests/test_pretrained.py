"""Shipped weights found by name (``ecgmae.pretrained``), on a stand-in weights folder made from a tiny run: every
command that takes a run directory takes the name, the sha256 is checked, a path that exists wins, an unknown
name lists the shipped ones. (The real shipped model: ``test_shipped_weights.py``.)"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import ecgmae
import ecgmae.pretrained as pretrained
from ecgmae.cli import main
from ecgmae.errors import CheckpointError
from test_api import _ecg, build_runs

FILES = ("encoder.safetensors", "mae.safetensors", "model_card.json")


def make_weights(root: Path, run: Path, name: str = "tiny-v1", aliases: tuple[str, ...] = ("tiny",)) -> Path:
    """A weights folder like the package's: ``root/name/`` with the run's files and ``root/index.json``."""
    (root / name).mkdir(parents=True)
    for f in FILES:
        shutil.copy(run / f, root / name / f)
    card = json.loads((root / name / "model_card.json").read_text())
    card["release"] = {"trained_on": "48 built-in ECGs", "parameters": "0.1 M", "checks_macro_auroc": {"cinc": 0.5}}
    (root / name / "model_card.json").write_text(json.dumps(card))
    sha = {f: hashlib.sha256((root / name / f).read_bytes()).hexdigest() for f in FILES}
    index = {"format": 1, "models": [{"name": name, "aliases": list(aliases), "dir": name, "sha256": sha}]}
    (root / "index.json").write_text(json.dumps(index))
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    return build_runs(tmp_path_factory.mktemp("pretrained"))


@pytest.fixture
def shipped(runs, tmp_path, monkeypatch) -> Path:
    root = make_weights(tmp_path / "weights", runs["mae"])
    monkeypatch.setattr(pretrained, "WEIGHTS", root)
    monkeypatch.setattr(pretrained, "_verified", {})
    return root


def test_a_name_loads_the_shipped_run(runs, shipped):
    x = _ecg(0)
    want = ecgmae.load(runs["mae"]).embed(x, fs=100)
    for name in ("tiny", "tiny-v1", "TINY-V1"):
        model = ecgmae.load(name)
        assert model.path == shipped / "tiny-v1" / "encoder.safetensors"
        np.testing.assert_array_equal(model.embed(x, fs=100), want)
    assert ecgmae.load("tiny").reconstruct(_ecg(1), fs=100).reconstruction.shape == (12, 500)  # mae.safetensors
    assert [m.name for m in ecgmae.list_pretrained()] == ["tiny-v1"]
    assert pretrained.pretrained_names() == ["tiny-v1", "tiny"]


def test_a_path_that_exists_wins_over_a_name(runs, shipped, tmp_path, monkeypatch):
    shutil.copytree(runs["time"], tmp_path / "here" / "tiny")
    monkeypatch.chdir(tmp_path / "here")
    assert ecgmae.load("tiny").path == Path("tiny") / "encoder.safetensors"
    assert ecgmae.load("tiny").encoder_config.tokenization == "time"  # the folder's, not the shipped model's


def test_damaged_or_missing_files_are_refused(shipped):
    enc = shipped / "tiny-v1" / "encoder.safetensors"
    data = bytearray(enc.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    enc.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"^tiny-v1: .*encoder.safetensors does not match its sha256"):
        ecgmae.load("tiny")
    enc.unlink()
    with pytest.raises(CheckpointError, match=r"encoder.safetensors is missing; the install is incomplete"):
        ecgmae.load("tiny-v1")


def test_a_file_is_hashed_once_until_it_changes(shipped, monkeypatch):
    calls = []
    real = hashlib.sha256
    monkeypatch.setattr(pretrained.hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    pretrained.locate("tiny")
    pretrained.locate("tiny")
    assert len(calls) == len(FILES)
    card = shipped / "tiny-v1" / "model_card.json"
    card.write_text(card.read_text() + " ")  # changed after it was checked: checked again, and refused
    with pytest.raises(CheckpointError, match=r"model_card\.json does not match its sha256"):
        pretrained.locate("tiny")


def test_an_unknown_name_lists_the_shipped_ones(shipped):
    with pytest.raises(CheckpointError, match=r"^nosuch: no such checkpoint .*\(shipped models: tiny-v1, tiny\)$"):
        ecgmae.load("nosuch")
    with pytest.raises(CheckpointError, match=r"no such checkpoint file or run directory$"):
        ecgmae.load("some/dir")  # a path, not a name: no list


def test_a_bad_index_is_one_line(shipped):
    (shipped / "index.json").write_text(json.dumps({"format": 99, "models": []}))
    with pytest.raises(CheckpointError, match=r"index.json: not a valid index of shipped weights \(format 99"):
        ecgmae.load("tiny")


def test_commands_take_the_name(runs, shipped, tmp_path, capsys):
    out = tmp_path / "emb.npz"
    assert main(["embed", "--checkpoint", "tiny", "--src", str(runs["src"]), "--out", str(out), "--quiet"]) == 0
    by_path = tmp_path / "emb_path.npz"
    assert (
        main(["embed", "--checkpoint", str(runs["mae"]), "--src", str(runs["src"]), "--out", str(by_path), "--quiet"])
        == 0
    )
    np.testing.assert_array_equal(np.load(out)["embedding"], np.load(by_path)["embedding"])
    assert (
        main(
            [
                "finetune",
                "--data",
                str(runs["store"]),
                "--out",
                str(tmp_path / "lp"),
                "--mode",
                "linprobe",
                "--encoder",
                "tiny",
                "--max-steps",
                "2",
                "--batch-size",
                "16",
                "--quiet",
                "--precision",
                "32",
            ]
        )
        == 0
    )
    assert ecgmae.load(tmp_path / "lp").kind == "classifier"
    rec = next(runs["src"].glob("*.hea"))
    assert (
        main(["reconstruct", "--checkpoint", "tiny", "--record", str(rec), "--out", str(tmp_path / "r.png"), "--quiet"])
        == 0
    )
    pytest.importorskip("onnxruntime")
    assert main(["export", "--checkpoint", "tiny", "--out", str(tmp_path / "m.onnx"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["pretrained"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("tiny-v1: 48 built-in ECGs; 12 leads at 100.0 Hz, 0.1 M parameters,")
    assert line.endswith("linear-probe macro AUROC cinc 0.500 (also: tiny)")
    assert main(["pretrained", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tiny-v1"]["aliases"] == ["tiny"]


def test_without_shipped_weights_nothing_breaks(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pretrained, "WEIGHTS", tmp_path / "none")
    assert ecgmae.list_pretrained() == [] and pretrained.locate("ecgmae-small") == Path("ecgmae-small")
    assert main(["pretrained"]) == 0
    assert "no pre-trained models" in capsys.readouterr().out
