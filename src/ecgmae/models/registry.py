"""Named model variants, timm-style: ``create_model("ecgmae_small", depth=4)``, ``list_models()``.

A variant is a function, registered under its name, that returns its default config: an
:class:`MAEConfig` for the transformer family, an :class:`XResNetConfig` for the reference CNNs. Each
config says what input it takes (:func:`~ecgmae.models.config.data_config`). Flat overrides go to the
field of that name (the encoder's or the MAE's for a transformer). Overriding ``fs`` without
``patch_size`` keeps the patch duration (0.5 s at 100 Hz becomes 125 samples at 250 Hz); convolution
kernels always scale with ``fs``.

:func:`build_model` rebuilds the module a checkpoint's :class:`ModelSpec` describes; every reader of a
checkpoint goes through it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ecgmae.config import ConfigError, replace
from ecgmae.models.classifier import ECGClassifier
from ecgmae.models.config import (
    ENCODER_FIELDS,
    MAE_FIELDS,
    DataConfig,
    EncoderConfig,
    MAEConfig,
    ModelConfig,
    ModelSpec,
    XResNetConfig,
    data_config,
)
from ecgmae.models.encoder import ECGEncoder
from ecgmae.models.mae import ECGMAE
from ecgmae.models.xresnet1d import XResNet1d

_MODELS: dict[str, Callable[[], ModelConfig]] = {}


def register_model(fn: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
    """Decorator: register a variant (a function returning its default config) under its function name."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is already registered")
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names of the registered variants, sorted."""
    return sorted(_MODELS)


def get_config(name: str, **overrides: Any) -> ModelConfig:
    """The variant's config with flat overrides applied (a field of the config, or of its encoder).

    Raises:
        ConfigError: unknown model name, unknown override key, or a bad value.
    """
    if name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    base = _MODELS[name]()
    where = f"{name} overrides"
    if isinstance(base, XResNetConfig):
        return replace(base, where, **overrides)
    unknown = sorted(set(overrides) - ENCODER_FIELDS - MAE_FIELDS)
    if unknown:
        raise ConfigError(
            f"{name}: unknown override(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(ENCODER_FIELDS | MAE_FIELDS))}"
        )
    enc = {k: v for k, v in overrides.items() if k in ENCODER_FIELDS}
    if "fs" in enc and "patch_size" not in enc:
        enc["patch_size"] = max(1, round(base.encoder.patch_size * float(enc["fs"]) / base.encoder.fs))
    mae = {k: v for k, v in overrides.items() if k in MAE_FIELDS}
    return replace(base, where, encoder=replace(base.encoder, where, **enc), **mae)


def config_for_data(name: str, overrides: dict[str, Any], fs: float, n_leads: int | None = None) -> ModelConfig:
    """The variant with ``overrides``, adapted to data at ``fs`` Hz (and with ``n_leads`` leads when given).

    Transformer variants take the rate (their patches keep their duration); a CNN takes any rate as is.
    """
    takes_rate = name in _MODELS and not isinstance(_MODELS[name](), XResNetConfig)  # unknown: get_config says
    extra: dict[str, Any] = {"fs": float(fs)} if takes_rate else {}
    if n_leads is not None:
        extra["n_leads"] = n_leads
    return get_config(name, **{**extra, **overrides})


def pretraining_config(name: str, **overrides: Any) -> MAEConfig:
    """:func:`get_config` for a variant that has an encoder to pre-train.

    Raises:
        ConfigError: as :func:`get_config`, or ``name`` is a supervised CNN.
    """
    cfg = get_config(name, **overrides)
    if not isinstance(cfg, MAEConfig):
        raise ConfigError(f"model: {name} is a supervised CNN; pre-training needs an ecgmae_* encoder")
    return cfg


def default_data_config(name: str) -> DataConfig:
    """The input a registered variant takes as registered (rate, leads, window multiple)."""
    return data_config(get_config(name))


def create_model(name: str, *, num_classes: int = 0, head_dropout: float = 0.0, **overrides: Any) -> nn.Module:
    """Build a registered variant (see :func:`get_config` for overrides), randomly initialised.

    ``num_classes=0`` gives a transformer variant's masked autoencoder (what pre-training trains);
    ``num_classes=K`` gives a K-way classifier: an :class:`ECGClassifier` around the variant's encoder
    (with ``head_dropout``) or the reference CNN.
    """
    cfg = get_config(name, **overrides)
    kind = "classifier" if num_classes else "mae"
    return build_model(ModelSpec(kind, name, cfg, num_classes=num_classes, head_dropout=head_dropout))


def build_model(spec: ModelSpec) -> nn.Module:
    """The module ``spec`` describes, randomly initialised (a checkpoint's weights are loaded after).

    Raises:
        ConfigError: a config the module refuses.
    """
    cfg = spec.config
    if isinstance(cfg, XResNetConfig):
        return XResNet1d(cfg, spec.num_classes)
    if spec.kind == "encoder":
        return ECGEncoder(cfg.encoder)
    if spec.kind == "mae":
        return ECGMAE(cfg)
    return ECGClassifier(cfg.encoder, spec.num_classes, head_dropout=spec.head_dropout)


@register_model
def ecgmae_tiny() -> MAEConfig:
    """For tests: width 32, depth 2, one decoder block; fast on CPU."""
    enc = EncoderConfig(embed_dim=32, depth=2, num_heads=2, conv_channels=4, conv_bottleneck=8)
    return MAEConfig(encoder=enc, decoder_dim=32, decoder_depth=1, decoder_heads=2)


@register_model
def ecgmae_small() -> MAEConfig:
    """The default, chosen on real ECGs for a CPU budget (benchmarks/RESULTS.md): one token per 0.25 s
    across all leads (time tokens), width 128, depth 4, 4 heads; decoder 64 x 2; per-patch normalised
    targets, mask 0.5; "stats" pooling (mean, std and change between consecutive tokens: 512 features);
    a quarter of pre-training examples show only a random subset of their leads (``lead_drop=0.25``), so
    recordings with fewer leads embed well. About 0.9 M parameters."""
    enc = EncoderConfig(
        tokenization="time",
        patch_size=25,
        embed_dim=128,
        depth=4,
        num_heads=4,
        conv_channels=16,
        conv_bottleneck=16,
        pool="stats",
    )
    return MAEConfig(
        encoder=enc, decoder_dim=64, decoder_depth=2, decoder_heads=2, mask_ratio=0.5, norm_target=True, lead_drop=0.25
    )


@register_model
def ecgmae_small_lead() -> MAEConfig:
    """The former default: one token per lead per 0.5 s (any lead subset is a valid input), width 256,
    depth 8, 4 heads; decoder 128 x 2, raw targets, mask 0.75 (about 7 M parameters; the ST-MEM shape)."""
    enc = EncoderConfig(embed_dim=256, depth=8, num_heads=4, conv_channels=16, conv_bottleneck=16)
    return MAEConfig(encoder=enc, decoder_dim=128, decoder_depth=2, decoder_heads=2)


@register_model
def ecgmae_base() -> MAEConfig:
    """ViT-B-sized (ST-MEM comparable): width 768, depth 12, 12 heads; decoder 256 x 4."""
    enc = EncoderConfig(embed_dim=768, depth=12, num_heads=12, conv_channels=32, conv_bottleneck=32)
    return MAEConfig(encoder=enc, decoder_dim=256, decoder_depth=4, decoder_heads=4)


@register_model
def xresnet1d50() -> XResNetConfig:
    """Supervised reference CNN (Strodthoff et al. 2020), stages of 3, 4, 6, 3 bottleneck blocks; scratch only."""
    return XResNetConfig(arch="xresnet1d50")


@register_model
def xresnet1d101() -> XResNetConfig:
    """As ``xresnet1d50`` with stages of 3, 4, 23, 3 blocks."""
    return XResNetConfig(arch="xresnet1d101")
