"""Models: multi-scale convolution + transformer encoder, its masked autoencoder and classifier, reference CNNs.

Pure PyTorch; nothing here knows about data loading or Lightning. Every model takes ``(B, L, T)`` and
``lead_idx`` and has ``forward_features`` (the backbone's output before pooling) and
``forward_head(features, pre_logits=False)`` (pooling, then the head unless ``pre_logits``).
"""

from __future__ import annotations

from ecgmae.models.classifier import ECGClassifier
from ecgmae.models.config import DataConfig, EncoderConfig, MAEConfig, ModelSpec, XResNetConfig, data_config
from ecgmae.models.encoder import ECGEncoder
from ecgmae.models.mae import ECGMAE, MAEOutput
from ecgmae.models.registry import (
    build_model,
    config_for_data,
    create_model,
    default_data_config,
    get_config,
    list_models,
    pretraining_config,
    register_model,
)
from ecgmae.models.xresnet1d import XResNet1d

__all__ = [
    "ECGMAE",
    "DataConfig",
    "ECGClassifier",
    "ECGEncoder",
    "EncoderConfig",
    "MAEConfig",
    "MAEOutput",
    "ModelSpec",
    "XResNet1d",
    "XResNetConfig",
    "build_model",
    "config_for_data",
    "create_model",
    "data_config",
    "default_data_config",
    "get_config",
    "list_models",
    "pretraining_config",
    "register_model",
]
