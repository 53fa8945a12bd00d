"""The run header: what a checkpoint says about its weights, as one typed, versioned value.

Every checkpoint (``encoder``, ``mae`` or ``classifier`` weights) carries a :class:`RunHeader`: the
model (:class:`~ecgmae.models.ModelSpec`, which :func:`~ecgmae.models.build_model` turns back into the
module), the data its weights expect (:class:`DataInfo`), how it was trained (:class:`TrainInfo`), the
label names and, for classifiers, the test metrics. :meth:`RunHeader.from_dict` is the only reader of
the stored JSON: it refuses unknown or missing fields with one line naming the file and the field, and
migrates older headers, so nothing else reads a header by string keys.

Format versions: 1 (ecgmae 0.1.0 up to 0544e14) kept a classifier's encoder at ``model.encoder`` and a
reference CNN's settings (with its ``arch``, ``layers`` and ``num_classes``) at ``model.config``; 2 keeps
every model as ``{name, arch, config, num_classes, head_dropout}``, the encoder of every transformer run at
``model.config.encoder``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from ecgmae._version import __version__
from ecgmae.config import ConfigError, from_dict, to_dict
from ecgmae.errors import CheckpointError
from ecgmae.models.config import CNN_LAYERS, KINDS, MAEConfig, ModelSpec, XResNetConfig

HEADER_VERSION = 2
# Largest window or stride (samples) a checkpoint may ask for: 1e6 samples is 33 min at 500 Hz.
MAX_WINDOW = 1_000_000
# Highest sampling rate (Hz) a checkpoint may declare.
MAX_FS = 1_000_000.0


@dataclass(frozen=True)
class DataInfo:
    """The data the weights were trained on and expect (the ``data`` section).

    Attributes:
        fs: sampling rate in Hz.
        leads: lead names of the model's input rows, in order.
        window_samples: samples per window.
        preprocessing: the store's :class:`~ecgmae.data.signal.PreprocessConfig` as a dict.
        eval_stride_samples: step between evaluation windows (classifiers; None means the window).
        aggregate: how window scores combine per record, ``mean`` or ``max`` (classifiers).
        store, records, patients, sources: where the training records came from.
    """

    fs: float | None = None
    leads: tuple[str, ...] = ()
    window_samples: int | None = None
    preprocessing: dict[str, Any] | None = None
    eval_stride_samples: int | None = None
    aggregate: str | None = None
    store: str | None = None
    records: int | None = None
    patients: int | None = None
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrainInfo:
    """How the weights were trained (the ``train`` section).

    Attributes:
        config: the run's :class:`~ecgmae.engine.config.PretrainConfig` or ``FinetuneConfig`` as a dict.
        method: pre-training method (``mae``, ``simclr``, ``cmsc``); None for classifiers.
        steps: optimiser steps taken.
        final_loss: last epoch's training loss (pre-training).
        best_val_auroc: best validation macro AUROC (classifiers with a validation split).
        runtime: what the weights depend on beyond the config (torch threads, precision, deterministic
            algorithms, torch version): the same seed and runtime give the same weights.
    """

    config: dict[str, Any] = field(default_factory=dict)
    method: str | None = None
    steps: int = 0
    final_loss: float | None = None
    best_val_auroc: float | None = None
    runtime: dict[str, Any] | None = None


@dataclass(frozen=True)
class RunHeader:
    """Everything a checkpoint says about its weights; ``from_dict`` / ``to_dict`` are the stored JSON."""

    model: ModelSpec
    data: DataInfo = field(default_factory=DataInfo)
    train: TrainInfo = field(default_factory=TrainInfo)
    label_names: tuple[str, ...] = ()
    metrics: dict[str, Any] | None = None
    ecgmae_version: str = __version__  # of the ecgmae that wrote it

    @property
    def kind(self) -> str:
        """``encoder``, ``mae`` or ``classifier``."""
        return self.model.kind

    def to_dict(self) -> dict[str, Any]:
        """The stored JSON (current format version)."""
        m = self.model
        cfg = to_dict(m.config)
        if isinstance(m.config, XResNetConfig):
            del cfg["arch"]  # stored once, as model.arch
        return {
            "format_version": HEADER_VERSION,
            "ecgmae_version": self.ecgmae_version,
            "kind": m.kind,
            "model": {
                "name": m.name,
                "arch": m.arch,
                "config": cfg,
                "num_classes": m.num_classes,
                "head_dropout": m.head_dropout,
            },
            "data": to_dict(self.data),
            "train": to_dict(self.train),
            "label_names": list(self.label_names),
            "metrics": self.metrics,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = "header") -> RunHeader:
        """Validate a stored header (any format version up to :data:`HEADER_VERSION`) and migrate it.

        Args:
            d: the parsed JSON.
            where: the file, named in errors.

        Raises:
            CheckpointError: one line naming ``where`` and the field: a newer format, an unknown kind,
                a missing or unknown field, a value of the wrong type, or an invalid model config.
        """
        if not isinstance(d, dict):
            raise CheckpointError(f"{where}: header must be a mapping, got {type(d).__name__}")
        version = d.get("format_version", 1)  # headers without a version are the first format
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise CheckpointError(f"{where}: header field format_version must be a positive integer, got {version!r}")
        if version > HEADER_VERSION:
            raise CheckpointError(
                f"{where}: checkpoint format version {version} is newer than this ecgmae reads "
                f"(up to {HEADER_VERSION}); upgrade ecgmae"
            )
        if d.get("kind") not in KINDS:
            raise CheckpointError(
                f"{where}: unknown checkpoint kind {d.get('kind')!r} (expected one of {', '.join(KINDS)})"
            )
        if version == 1:
            d = {**d, "model": _model_v1(d.get("model"), d["kind"], where)}
        _no_unknown(d, (*(f.name for f in dataclasses.fields(cls)), "format_version", "kind"), "", where)
        label_names = d.get("label_names") or []
        if not isinstance(label_names, list) or not all(isinstance(n, str) for n in label_names):
            raise CheckpointError(f"{where}: header field label_names must be a list of names")
        metrics = d.get("metrics")
        if metrics is not None and not isinstance(metrics, dict):
            raise CheckpointError(f"{where}: header field metrics must be a mapping, got {type(metrics).__name__}")
        version_str = d.get("ecgmae_version", "")
        return cls(
            model=_model(d.get("model"), d["kind"], where),
            data=_data(d.get("data"), where),
            train=_train(d.get("train"), where),
            label_names=tuple(label_names),
            metrics=metrics,
            ecgmae_version=str(version_str),
        )


def _no_unknown(d: dict[str, Any], allowed: Any, section: str, where: str) -> None:
    unknown = sorted(f"{section}.{k}" if section else str(k) for k in set(d) - set(allowed))
    if unknown:
        raise CheckpointError(f"{where}: unknown header field(s) {', '.join(unknown)}")


def _section(d: Any, name: str, where: str) -> dict[str, Any]:
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise CheckpointError(f"{where}: header field {name} must be a mapping, got {type(d).__name__}")
    return d


def _model_v1(m: Any, kind: str, where: str) -> dict[str, Any]:
    """A format-1 ``model`` section in the format-2 shape."""
    m = _section(m, "model", where)
    name = m.get("name", "")
    arch = m.get("arch", "ecgmae")
    if kind != "classifier" or arch == "ecgmae":
        key = "encoder" if kind == "classifier" else "config"
        if key not in m:
            raise CheckpointError(f"{where}: header lacks model field {key!r}")
        _no_unknown(
            m,
            ("name", "arch", "encoder", "num_classes", "head_dropout") if kind == "classifier" else ("name", "config"),
            "model",
            where,
        )
        config = {"encoder": m["encoder"]} if kind == "classifier" else m["config"]  # decoder: the defaults
        return {
            "name": name,
            "arch": "ecgmae",
            "config": config,
            "num_classes": m.get("num_classes", 0),
            "head_dropout": m.get("head_dropout", 0.0),
        }
    if "config" not in m:
        raise CheckpointError(f"{where}: header lacks model field 'config'")
    _no_unknown(m, ("name", "arch", "config", "num_classes"), "model", where)
    config = dict(_section(m["config"], "model.config", where))
    num_classes = config.pop("num_classes", m.get("num_classes", 0))
    config = {k: v for k, v in config.items() if k not in ("arch", "layers")}  # both follow from arch
    return {"name": name, "arch": arch, "config": config, "num_classes": num_classes, "head_dropout": 0.0}


def _model(m: Any, kind: str, where: str) -> ModelSpec:
    m = _section(m, "model", where)
    for key in ("config", "arch"):
        if key not in m:
            raise CheckpointError(f"{where}: header lacks model field {key!r}")
    _no_unknown(m, ("name", "arch", "config", "num_classes", "head_dropout"), "model", where)
    if m["arch"] != "ecgmae" and m["arch"] not in CNN_LAYERS:
        raise CheckpointError(
            f"{where}: header field model.arch is {m['arch']!r}, not one of {', '.join(('ecgmae', *CNN_LAYERS))}"
        )
    cfg = _section(m["config"], "model.config", where)
    try:
        config: MAEConfig | XResNetConfig = (
            from_dict(MAEConfig, cfg, where="model.config")
            if m["arch"] == "ecgmae"
            else from_dict(XResNetConfig, {**cfg, "arch": m["arch"]}, where="model.config")
        )
        num_classes = _int(m.get("num_classes", 0), "model.num_classes", where)
        head_dropout = _num(m.get("head_dropout", 0.0), "model.head_dropout", where)
        return ModelSpec(kind, str(m.get("name", "")), config, num_classes, head_dropout)
    except ConfigError as exc:
        raise CheckpointError(f"{where}: header describes an invalid model ({exc})") from None


def _data(d: Any, where: str) -> DataInfo:
    d = _section(d, "data", where)
    _no_unknown(d, (f.name for f in dataclasses.fields(DataInfo)), "data", where)
    for key in ("window_samples", "eval_stride_samples"):
        value = d.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WINDOW
        ):
            raise CheckpointError(
                f"{where}: header field data.{key} must be an integer in [1, {MAX_WINDOW}] samples, got {value!r}"
            )
    fs = d.get("fs")
    if fs is not None and (
        isinstance(fs, bool) or not isinstance(fs, (int, float)) or not (math.isfinite(fs) and 0 < fs <= MAX_FS)
    ):
        raise CheckpointError(f"{where}: header field data.fs must be a rate in (0, {MAX_FS:g}] Hz, got {fs!r}")
    for key in ("leads", "sources"):
        if not isinstance(d.get(key, []), list) or not all(isinstance(v, str) for v in d.get(key, [])):
            raise CheckpointError(f"{where}: header field data.{key} must be a list of names, got {d[key]!r}")
    if d.get("aggregate") not in (None, "mean", "max"):
        raise CheckpointError(f"{where}: header field data.aggregate must be mean or max, got {d['aggregate']!r}")
    _section(d.get("preprocessing"), "data.preprocessing", where)
    for key in ("records", "patients"):
        if d.get(key) is not None:
            _int(d[key], f"data.{key}", where)
    return DataInfo(
        **{
            **d,
            "fs": None if fs is None else float(fs),
            "leads": tuple(d.get("leads", ())),
            "sources": tuple(d.get("sources", ())),
        }
    )


def _train(t: Any, where: str) -> TrainInfo:
    t = _section(t, "train", where)
    _no_unknown(t, (f.name for f in dataclasses.fields(TrainInfo)), "train", where)
    _section(t.get("config"), "train.config", where)
    if t.get("runtime") is not None:
        _section(t["runtime"], "train.runtime", where)
    if t.get("method") is not None and not isinstance(t["method"], str):
        raise CheckpointError(f"{where}: header field train.method must be a name, got {t['method']!r}")
    scores = {
        k: None if t.get(k) is None else _num(t[k], f"train.{k}", where) for k in ("final_loss", "best_val_auroc")
    }
    steps = _int(t.get("steps", 0), "train.steps", where)
    return TrainInfo(**{**t, "config": t.get("config") or {}, "steps": steps, **scores})


def _int(value: Any, name: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CheckpointError(f"{where}: header field {name} must be an integer >= 0, got {value!r}")
    return value


def _num(value: Any, name: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CheckpointError(f"{where}: header field {name} must be a number, got {value!r}")
    return float(value)
