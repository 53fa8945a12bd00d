"""Named model variants: ``create_model("ecgmae_small", depth=4)``, ``list_models()``.

A variant is a function returning its default :class:`MAEConfig`; flat overrides go to the encoder
or the MAE by field name. Overriding ``fs`` without ``patch_size`` keeps the patch duration (0.5 s at
100 Hz becomes 125 samples at 250 Hz); convolution kernels always scale with ``fs``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ecgmae.config import ConfigError, from_dict, replace
from ecgmae.models.classifier import ECGClassifier
from ecgmae.models.config import ENCODER_FIELDS, MAE_FIELDS, EncoderConfig, MAEConfig
from ecgmae.models.mae import ECGMAE
from ecgmae.models.xresnet1d import ARCHS as CNN_ARCHS
from ecgmae.models.xresnet1d import create_xresnet1d

_MODELS: dict[str, Callable[[], MAEConfig]] = {}


def register_model(fn: Callable[[], MAEConfig]) -> Callable[[], MAEConfig]:
    """Decorator: register a variant under its function name."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is already registered")
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names of the registered variants, sorted."""
    return sorted(_MODELS)


def get_config(name: str, **overrides: Any) -> MAEConfig:
    """The variant's config with flat overrides applied (encoder or MAE field, by name).

    Raises:
        ConfigError: unknown model name, unknown override key, or a bad value.
    """
    if name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    base = _MODELS[name]()
    unknown = sorted(set(overrides) - ENCODER_FIELDS - MAE_FIELDS)
    if unknown:
        raise ConfigError(
            f"{name}: unknown override(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(ENCODER_FIELDS | MAE_FIELDS))}"
        )
    enc = {k: v for k, v in overrides.items() if k in ENCODER_FIELDS}
    if "fs" in enc and "patch_size" not in enc:
        enc["patch_size"] = max(1, round(base.encoder.patch_size * float(enc["fs"]) / base.encoder.fs))
    where = f"{name} overrides"
    mae = {k: v for k, v in overrides.items() if k in MAE_FIELDS}
    return replace(base, where, encoder=replace(base.encoder, where, **enc), **mae)


def create_model(name: str, **overrides: Any) -> ECGMAE:
    """Build the MAE of a registered variant (see :func:`get_config` for overrides)."""
    return ECGMAE(get_config(name, **overrides))


def create_classifier(
    name: str, num_classes: int, *, head_dropout: float = 0.0, **overrides: Any
) -> ECGClassifier:
    """Build the classifier variant: the named encoder (randomly initialised) with a K-way head.

    Overrides are the same as for :func:`get_config`; ``pool`` sets the encoder's (and so the head's) pooling.
    """
    cfg = get_config(name, **overrides)
    return ECGClassifier(cfg.encoder, num_classes, head_dropout=head_dropout)


def is_cnn(name: str) -> bool:
    """True for the supervised reference CNNs (``xresnet1d50``, ``xresnet1d101``): scratch training only."""
    return name in CNN_ARCHS


def classifier_from_header(model: dict[str, Any], where: str = "model") -> nn.Module:
    """Rebuild a classifier from the ``model`` section of its checkpoint header (weights not loaded).

    ``arch`` names a reference CNN with its ``config``; without it (or ``"ecgmae"``) the header holds an
    ``encoder`` config, ``num_classes`` and ``head_dropout`` for an :class:`ECGClassifier`.

    Raises:
        ConfigError: unknown architecture or invalid config; KeyError: a missing field.
    """
    arch = model.get("arch", "ecgmae")
    if arch == "ecgmae":
        enc = from_dict(EncoderConfig, model["encoder"], where=f"{where}.encoder")
        return ECGClassifier(enc, int(model["num_classes"]), head_dropout=float(model.get("head_dropout", 0.0)))
    cfg = {k: v for k, v in model["config"].items() if k not in ("arch", "layers")}  # both follow from arch
    return create_xresnet1d(arch, int(cfg.pop("n_leads")), int(cfg.pop("num_classes")), **cfg)


@register_model
def ecgmae_tiny() -> MAEConfig:
    """For tests: width 32, depth 2, one decoder block; fast on CPU."""
    enc = EncoderConfig(embed_dim=32, depth=2, num_heads=2, conv_channels=4, conv_bottleneck=8)
    return MAEConfig(encoder=enc, decoder_dim=32, decoder_depth=1, decoder_heads=2)


@register_model
def ecgmae_small() -> MAEConfig:
    """The default, chosen on real ECGs for a CPU budget (benchmarks/RESULTS.md): one token per 0.25 s
    across all leads (time tokens), width 128, depth 4, 4 heads; decoder 64 x 2; per-patch normalised
    targets, mask 0.5; "stats" pooling (mean, std and change between consecutive tokens: 512 features).
    About 0.9 M parameters."""
    enc = EncoderConfig(tokenization="time", patch_size=25, embed_dim=128, depth=4, num_heads=4,
                        conv_channels=16, conv_bottleneck=16, pool="stats")
    return MAEConfig(encoder=enc, decoder_dim=64, decoder_depth=2, decoder_heads=2, mask_ratio=0.5,
                     norm_target=True)


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
