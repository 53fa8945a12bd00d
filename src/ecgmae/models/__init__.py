"""Models: multi-scale convolution + transformer encoder, its masked autoencoder and classifier.

Pure PyTorch; nothing here knows about data loading or Lightning.
"""

from __future__ import annotations

from ecgmae.models.classifier import ECGClassifier
from ecgmae.models.config import EncoderConfig, MAEConfig
from ecgmae.models.encoder import ECGEncoder
from ecgmae.models.mae import ECGMAE, MAEOutput
from ecgmae.models.registry import create_classifier, create_model, get_config, list_models, register_model

__all__ = [
    "ECGMAE",
    "ECGClassifier",
    "ECGEncoder",
    "EncoderConfig",
    "MAEConfig",
    "MAEOutput",
    "create_classifier",
    "create_model",
    "get_config",
    "list_models",
    "register_model",
]
