"""The typed run header: round trip, migration of every header shape ecgmae 0544e14 wrote, refusals."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import ecgmae
from conftest import save_raw_checkpoint
from ecgmae.checkpoint import FORMAT_VERSION, load_model, read_header, save_checkpoint
from ecgmae.config import ConfigError
from ecgmae.errors import CheckpointError
from ecgmae.header import HEADER_VERSION, DataInfo, RunHeader, TrainInfo
from ecgmae.models import (
    ECGMAE,
    ECGClassifier,
    ECGEncoder,
    ModelSpec,
    XResNet1d,
    XResNetConfig,
    build_model,
    get_config,
)

# Headers exactly as ecgmae 0544e14 (format 1) wrote them: an MAE run's encoder.safetensors and
# mae.safetensors, a fine-tuned classifier, a scratch xresnet1d50 and a SimCLR encoder.
V1 = {
    k: v
    for k, v in json.loads((Path(__file__).parent / "data" / "headers_v1.json").read_text()).items()
    if not k.startswith("_")
}
MODULES = {
    "mae_encoder": ECGEncoder,
    "mae": ECGMAE,
    "finetune_classifier": ECGClassifier,
    "cnn_classifier": XResNet1d,
    "simclr_encoder": ECGEncoder,
}


@pytest.mark.parametrize("name", sorted(V1))
def test_every_format_1_header_migrates_to_one_shape(name):
    old = V1[name]
    header = RunHeader.from_dict(copy.deepcopy(old), where=f"{name}.safetensors")
    assert header.kind == old["kind"]
    assert isinstance(build_model(header.model), MODULES[name])
    assert header.data.fs == old["data"]["fs"] and list(header.data.leads) == old["data"]["leads"]
    assert header.data.window_samples == old["data"]["window_samples"]
    assert header.train.steps == old["train"]["steps"] and header.train.config == old["train"]["config"]
    assert list(header.label_names) == old["label_names"] and header.metrics == old.get("metrics")
    assert header.ecgmae_version == old["ecgmae_version"]
    spec, m = header.model, old["model"]
    if name == "cnn_classifier":  # format 1 kept arch, layers and num_classes in the config too
        assert spec.config == XResNetConfig(
            arch="xresnet1d50", n_leads=12, kernel_size=5, head_hidden=128, head_dropout=0.5
        )
        assert (spec.arch, spec.num_classes, spec.encoder, spec.data.window_multiple) == ("xresnet1d50", 11, None, 1)
    elif name == "finetune_classifier":  # format 1 kept a classifier's encoder at model.encoder
        assert json.loads(json.dumps(dataclasses.asdict(spec.encoder))) == m["encoder"]
        assert (spec.num_classes, spec.head_dropout, spec.name) == (11, 0.0, "encoder")
    else:  # pre-training runs: the whole MAE config, unchanged; fields added since take their defaults
        added = {"lead_drop": 0.0}
        assert json.loads(json.dumps(dataclasses.asdict(spec.config))) == m["config"] | added
        assert spec.num_classes == 0 and spec.name == m["name"]
    assert header.train.method == old["train"].get("method")
    # written again, it is the current format and reads back to the same header
    new = json.loads(json.dumps(header.to_dict()))
    assert new["format_version"] == HEADER_VERSION == FORMAT_VERSION
    assert set(new["model"]) == {"name", "arch", "config", "num_classes", "head_dropout"}
    if spec.encoder is not None:  # every transformer run keeps its encoder at the same place
        assert new["model"]["config"]["encoder"] == dataclasses.asdict(spec.encoder) | {
            "conv_kernels": list(spec.encoder.conv_kernels)
        }
    assert RunHeader.from_dict(new) == header


@pytest.mark.parametrize("name", sorted(V1))
def test_a_format_1_checkpoint_still_loads_and_scores_the_same(name, tmp_path):
    """A file with a format-1 header and its weights loads through ``ecgmae.load`` with exactly those weights."""
    old = V1[name]
    torch.manual_seed(0)
    net = build_model(RunHeader.from_dict(copy.deepcopy(old)).model).eval()
    path = save_raw_checkpoint(tmp_path / f"{old['kind']}.safetensors", net.state_dict(), old)
    model = ecgmae.load(path)
    assert model.kind == old["kind"] and model.window == old["data"]["window_samples"]
    assert type(model.module) is type(net)
    loaded = model.module.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in net.state_dict().items())
    if model.kind == "mae":
        return  # reconstruct is compared on real runs (test_api)
    x = np.random.default_rng(1).normal(0, 0.3, (2, 12, model.window)).astype(np.float32)
    xb = torch.from_numpy(np.stack([p.x[:, : model.window] for p in model.prepare(x, fs=model.fs)[0]]))
    with torch.no_grad():  # one window per record: the API's output is the module's on the prepared window
        if model.kind == "classifier":
            ref, got = torch.sigmoid(net(xb)).numpy(), model.predict_proba(x, fs=model.fs)
        else:
            ref, got = net(xb).numpy(), model.embed(x, fs=model.fs)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_round_trip_of_a_current_header_through_a_file(tmp_path):
    spec = ModelSpec("classifier", "ecgmae_tiny", get_config("ecgmae_tiny", depth=1), num_classes=2, head_dropout=0.25)
    header = RunHeader(
        spec,
        DataInfo(
            fs=50.0,
            leads=("I", "II"),
            window_samples=100,
            eval_stride_samples=50,
            aggregate="max",
            preprocessing={"fs": 50.0},
            records=3,
            patients=None,
            sources=("folder",),
        ),
        TrainInfo({"seed": 3}, steps=7, best_val_auroc=0.75),
        label_names=("AF", "NORM"),
        metrics={"macro_auroc": 0.5},
    )
    assert RunHeader.from_dict(json.loads(json.dumps(header.to_dict()))) == header
    path = save_checkpoint(tmp_path / "classifier.safetensors", build_model(spec).state_dict(), header)
    read = read_header(path)
    assert read == dataclasses.replace(header, ecgmae_version=ecgmae.__version__)
    net, again, file = load_model(tmp_path, kind="classifier")
    assert isinstance(net, ECGClassifier) and again == read and file == path and not net.training


def _v2() -> dict:
    return RunHeader(ModelSpec("encoder", "ecgmae_tiny", get_config("ecgmae_tiny"))).to_dict()


def _set(d: dict, dotted: str, value: object) -> dict:
    *parents, last = dotted.split(".")
    for p in parents:
        d = d[p]
    d[last] = value
    return d


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format_version": HEADER_VERSION + 1}, "format version 3 is newer than this ecgmae reads"),
        ({"format_version": "2"}, "format_version must be a positive integer"),
        ({"kind": "optimizer"}, "unknown checkpoint kind 'optimizer'"),
        ({"extra": 1}, r"unknown header field\(s\) extra"),
        ({"model.extra": 1}, r"unknown header field\(s\) model\.extra"),
        ({"data.window": 1}, r"unknown header field\(s\) data\.window"),
        ({"train.lr": 1}, r"unknown header field\(s\) train\.lr"),
        ({"model": None}, "lacks model field 'config'"),
        ({"model": [1]}, "header field model must be a mapping, got list"),
        ({"model.arch": "resnet9"}, r"model\.arch is 'resnet9', not one of ecgmae, xresnet1d50"),
        (
            {"model.config.encoder.num_heads": 3},
            r"invalid model \(model\.embed_dim: 32 is not divisible by num_heads=3",
        ),
        ({"model.config.encoder.bogus": 3}, r"invalid model \(model\.config\.encoder: unknown key\(s\) bogus"),
        ({"model.num_classes": 4}, r"invalid model \(model\.num_classes: 4 for encoder weights"),
        ({"model.num_classes": -1}, r"model\.num_classes must be an integer >= 0"),
        ({"data.leads": "I,II"}, r"data\.leads must be a list of names"),
        ({"data.aggregate": "median"}, r"data\.aggregate must be mean or max"),
        ({"data.window_samples": True}, r"data\.window_samples must be an integer in \[1, 1000000\]"),
        ({"train.steps": 1.5}, r"train\.steps must be an integer >= 0"),
        ({"label_names": "AF"}, "label_names must be a list of names"),
        ({"metrics": [0.5]}, "metrics must be a mapping"),
    ],
)
def test_bad_headers_are_refused_in_one_line_naming_the_file_and_field(change, message):
    d = _v2()
    for key, value in change.items():
        _set(d, key, value)
    with pytest.raises(CheckpointError, match=message) as err:
        RunHeader.from_dict(d, where="runs/x/encoder.safetensors")
    assert str(err.value).startswith("runs/x/encoder.safetensors: ") and "\n" not in str(err.value)


def test_format_1_headers_are_checked_as_strictly():
    d = copy.deepcopy(V1["finetune_classifier"])
    del d["model"]["encoder"]
    with pytest.raises(CheckpointError, match=r"old\.safetensors: header lacks model field 'encoder'"):
        RunHeader.from_dict(d, where="old.safetensors")
    d = copy.deepcopy(V1["mae"])
    d["model"]["decoder"] = {}
    with pytest.raises(CheckpointError, match=r"unknown header field\(s\) model\.decoder"):
        RunHeader.from_dict(d)
    d = copy.deepcopy(V1["cnn_classifier"])
    d["model"]["config"]["blocks"] = 3
    with pytest.raises(CheckpointError, match=r"invalid model \(.*unknown key\(s\) blocks"):
        RunHeader.from_dict(d)
    d["model"]["config"] = {"arch": "xresnet1d18", "layers": [1, 10**6]}  # depth follows model.arch, as it always did
    assert RunHeader.from_dict(d).model.config.layers == (3, 4, 6, 3)


def test_a_cnn_cannot_be_pre_trained_and_a_classifier_needs_classes():
    with pytest.raises(ConfigError, match="a xresnet1d50 is a classifier, not encoder weights"):
        ModelSpec("encoder", "xresnet1d50", get_config("xresnet1d50"))
    with pytest.raises(ConfigError, match="num_classes: 0 for classifier weights"):
        ModelSpec("classifier", "ecgmae_tiny", get_config("ecgmae_tiny"))
