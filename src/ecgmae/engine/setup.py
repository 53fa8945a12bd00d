"""What a training run is built from: the model config adapted to a store, the crop window, the data
section of the run header, a pre-trained encoder checked against the store (rate, leads, and patients
shared with the test split), and the classifier around it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from ecgmae.checkpoint import load_checkpoint
from ecgmae.data.leakage import pretraining_leakage
from ecgmae.data.record import lead_positions
from ecgmae.data.store import Store
from ecgmae.engine.config import FinetuneConfig
from ecgmae.errors import CheckpointError, DataError
from ecgmae.header import DataInfo, RunHeader
from ecgmae.models import MAEConfig, ModelSpec, build_model, config_for_data
from ecgmae.models.classifier import ECGClassifier
from ecgmae.models.config import ModelConfig
from ecgmae.utils import log


def model_config(name: str, overrides: dict[str, Any], store: Store) -> ModelConfig:
    """The registered config adapted to the store's rate (patches keep their duration).

    Models know the 12 canonical leads and take any subset through ``lead_idx``; a store with other
    lead names gets a model with exactly its own leads.
    """
    n_leads = len(store.leads) if lead_positions(store.leads) is None else None
    return config_for_data(name, overrides, store.fs, n_leads)


def window_for(store: Store, seconds: float | None, patch: int) -> int:
    """Crop length in samples, a whole number of patches, checked against the records' lengths.

    A window longer than every stored record is refused (it would only be zero padding, and memory grows
    with it); one longer than most records' real signal is allowed with a warning that says how much of
    each crop is padding.
    """
    seconds = seconds or float(store.meta.get("seconds") or store.preprocess_config.seconds)
    n = int(round(seconds * store.fs)) // patch * patch
    if n <= 0:
        raise DataError(f"{store.path}: a {seconds} s window at {store.fs} Hz holds no whole {patch}-sample patch")
    lengths = store.index["length"].to_numpy()
    if len(lengths) and n > lengths.max():
        raise DataError(
            f"{store.path}: a {seconds:g} s window is longer than every record of the store "
            f"(longest {lengths.max() / store.fs:g} s); use --window-seconds "
            f"{lengths.max() / store.fs:g} or less"
        )
    valid = store.index["valid"].to_numpy()
    padding = 1.0 - float(np.minimum(valid, n).mean()) / n if len(valid) else 0.0
    if padding > 0.25:
        log.warning(
            "%s: a %g s window is %.0f %% zero padding on average (median record %g s of signal)",
            store.path,
            seconds,
            100 * padding,
            float(np.median(valid)) / store.fs,
        )
    return n


def data_info(store: Store, indices: np.ndarray, window: int, **evaluation: Any) -> DataInfo:
    idx = store.index.iloc[indices]
    return DataInfo(
        store=str(store.path),
        fs=store.fs,
        leads=tuple(store.leads),
        window_samples=window,
        preprocessing=store.meta.get("preprocessing", {}),
        records=len(idx),
        patients=int(idx["patient"].nunique()) if "patient" in idx else None,
        sources=tuple(sorted(map(str, idx["source"].unique()))) if "source" in idx else (),
        **evaluation,
    )


def encoder_from_checkpoint(
    path: str | Path, store: Store, leakage: str = "warn"
) -> tuple[ModelSpec, dict[str, torch.Tensor], dict[str, Any]]:
    """Model spec and encoder weights of a pre-training run, checked against the store: its rate and leads, and
    (:func:`check_leakage`, with policy ``leakage``) the test patients among its pre-training records."""
    state, header = load_checkpoint(path, kind="encoder")
    enc, want_fs, want_leads = header.model.encoder, header.data.fs, header.data.leads
    if enc is None or want_fs is None:
        raise CheckpointError(f"{path}: header lacks {'data.fs' if enc else 'an encoder config'}")
    if float(want_fs) != float(store.fs):
        raise DataError(
            f"{store.path}: store is at {store.fs} Hz but the encoder {path} expects {want_fs} Hz; "
            f"prepare the data with --fs {want_fs}"
        )
    if enc.tokenization != "lead" and tuple(store.leads) != want_leads:
        raise DataError(
            f"{store.path}: store leads {','.join(store.leads)} differ from the encoder's "
            f"{','.join(want_leads)} (a time-tokenised model needs the same leads)"
        )
    return header.model, state, check_leakage(header, store, leakage)


def build_classifier(
    cfg: FinetuneConfig, store: Store, encoder: str | Path | None, num_classes: int
) -> tuple[torch.nn.Module, ModelSpec, dict[str, Any] | None]:
    """The classifier to train, its spec and the encoder's leakage record (None from scratch): around a
    pre-trained encoder (its weights loaded), or from scratch."""
    leakage = None
    if encoder is not None and cfg.mode != "scratch":
        pre, state, leakage = encoder_from_checkpoint(encoder, store, cfg.leakage)
        spec = ModelSpec("classifier", pre.name, pre.config, num_classes, cfg.head_dropout)
    else:
        config, state = model_config(cfg.model, cfg.model_overrides, store), None
        spec = ModelSpec(
            "classifier", cfg.model, config, num_classes, cfg.head_dropout if isinstance(config, MAEConfig) else 0.0
        )  # a CNN's head is in its config
    model = build_model(spec)
    if state is not None:
        cast(ECGClassifier, model).load_encoder(state)
    return model, spec, leakage


def check_leakage(pre: RunHeader, store: Store, policy: str) -> dict[str, Any]:
    """Patients of the test split among the pre-training records of the encoder with header ``pre``: logged,
    refused or recorded."""
    res: dict[str, Any] = pretraining_leakage(pre.data.store, pre.train.config.get("splits"), store)
    where = f"{pre.data.store}" + (f" (splits {','.join(res['pretrain_splits'])})" if res["pretrain_splits"] else "")
    if not res["checked"]:
        log.info(
            "%s: the encoder's pre-training store %s is not there; test patients not checked for overlap",
            store.path,
            pre.data.store,
        )
    elif res["shared_patients"]:
        msg = (
            f"{store.path}: {res['shared_patients']} patient(s) of the test split were in the encoder's "
            f"pre-training data {where}, e.g. {', '.join(res['examples'][:3])}; test scores may be optimistic"
        )
        if policy == "refuse":
            raise DataError(msg + " (--leakage refuse)")
        log.warning("%s; --leakage refuse stops instead", msg)
    return res
