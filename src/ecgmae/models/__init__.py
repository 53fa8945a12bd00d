"""Models: multi-scale convolution + transformer encoder, its masked autoencoder and classifier.

Pure PyTorch; nothing here knows about data loading or Lightning.
"""

from __future__ import annotations

from ecgmae.models.classifier import ECGClassifier
from ecgmae.models.config import EncoderConfig, MAEConfig
from ecgmae.models.encoder import ECGEncoder
from ecgmae.models.mae import ECGMAE, MAEOutput
from ecgmae.models.registry import (
    classifier_from_header,
    create_classifier,
    create_model,
    get_config,
    is_cnn,
    list_models,
    register_model,
)
from ecgmae.models.xresnet1d import XResNet1d, create_xresnet1d

__all__ = [
    "ECGMAE",
    "ECGClassifier",
    "ECGEncoder",
    "EncoderConfig",
    "MAEConfig",
    "MAEOutput",
    "XResNet1d",
    "classifier_from_header",
    "create_classifier",
    "create_model",
    "create_xresnet1d",
    "get_config",
    "is_cnn",
    "list_models",
    "register_model",
]
