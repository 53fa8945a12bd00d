"""Model configuration: frozen dataclasses that round-trip through ``ecgmae.config.to_dict/from_dict``.

A checkpoint stores a :class:`ModelSpec` (which module, which registered variant, its config);
:func:`ecgmae.models.build_model` rebuilds the same module from it alone. Values are checked when a
config is built, so a bad value fails with a ``ConfigError`` naming the field, not as a shape error
deep inside a forward pass.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ecgmae.config import ConfigError

TOKENIZATIONS = ("lead", "time")
POS_EMBEDS = ("sincos", "learned")
POOLS = ("mean", "cls", "meanstd", "stats")
MASK_MODES = ("patch", "lead", "time")

# Convolution kernel and feature-pooling widths are given in samples at this rate and scaled with ``fs``.
CONV_REF_FS = 100.0


@dataclass(frozen=True)
class EncoderConfig:
    """Encoder shape: patch tokens, multi-scale convolutional embedding, transformer.

    Attributes:
        n_leads: number of canonical leads the model knows (12: I II III aVR aVL aVF V1-V6). Inputs
            may hold a subset; ``lead_idx`` says which.
        fs: sampling rate in Hz that the model expects; convolution kernels scale with it.
        patch_size: samples per time patch at ``fs`` (50 at 100 Hz = 0.5 s).
        tokenization: ``"lead"`` = one token per lead per time patch (plus a learned lead embedding;
            any lead subset is a valid input); ``"time"`` = one token per time patch across all leads.
        embed_dim: transformer width.
        depth: number of transformer blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / ``embed_dim``.
        qkv_bias: bias in the attention input projection.
        pos_embed: ``"sincos"`` (fixed, any number of patches) or ``"learned"`` (``max_patches`` rows; the
            ViT/MAE ablation, for comparing with published learned-position models).
        max_patches: most time patches a learned position table holds.
        pool: ``"mean"`` over patch tokens, the ``"cls"`` token (the ViT convention, to compare with
            CLS-token encoders; fine-tuning then trains it), or ``"meanstd"``: the mean and the
            standard deviation of the patch tokens side by side (``2 * embed_dim`` features; the spread
            over time keeps beat-to-beat variation, e.g. irregular rhythms, that a mean averages away),
            or ``"stats"``: mean and standard deviation of the tokens and of their change from one time
            patch to the next (mean absolute and standard deviation of the first difference; ``4 *
            embed_dim`` features; a premature beat or an irregular rhythm changes consecutive tokens
            more than a regular one). ``"stats"`` needs ``tokenization="time"`` (tokens in time order).
        conv_kernels: kernel sizes of the parallel convolution branches, in samples at 100 Hz; scaled
            with ``fs`` and made odd.
        conv_channels: output channels of each convolution branch and of the max-pool branch.
        conv_bottleneck: channels of the 1x1 bottleneck in front of the branches when the token holds
            more input channels than this (time tokenisation); 0 disables it.
        conv_pool: width, in samples at 100 Hz, of the average pooling that condenses branch features
            inside a patch before the projection (the raw patch always goes in at full resolution).
        conv_stride: step, in samples at 100 Hz, between branch outputs inside a patch (1 = every
            100 Hz sample; the kernels still see every input sample).
        drop_path: stochastic depth rate of the last block (linear from 0).
        norm_eps: LayerNorm epsilon.
    """

    n_leads: int = 12
    fs: float = 100.0
    patch_size: int = 50
    tokenization: str = "lead"
    embed_dim: int = 256
    depth: int = 8
    num_heads: int = 4
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    pos_embed: str = "sincos"
    max_patches: int = 256
    pool: str = "mean"
    conv_kernels: tuple[int, ...] = (3, 7, 15)
    conv_channels: int = 16
    conv_bottleneck: int = 16
    conv_pool: int = 5
    conv_stride: int = 1
    drop_path: float = 0.0
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        _choice("tokenization", self.tokenization, TOKENIZATIONS)
        _choice("pos_embed", self.pos_embed, POS_EMBEDS)
        _choice("pool", self.pool, POOLS)
        if self.pool == "stats" and self.tokenization != "time":
            raise ConfigError("model.pool: 'stats' needs tokenization='time' (tokens in time order)")
        for name in (
            "n_leads",
            "patch_size",
            "embed_dim",
            "depth",
            "num_heads",
            "max_patches",
            "conv_channels",
            "conv_pool",
            "conv_stride",
        ):
            _positive_int(name, getattr(self, name))
        if not self.fs > 0:
            raise ConfigError(f"model.fs: must be > 0 Hz, got {self.fs}")
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"model.embed_dim: {self.embed_dim} is not divisible by num_heads={self.num_heads}")
        if self.pos_embed == "sincos" and self.embed_dim % 2:
            raise ConfigError(f"model.embed_dim: sincos positions need an even width, got {self.embed_dim}")
        if not self.mlp_ratio > 0:
            raise ConfigError(f"model.mlp_ratio: must be > 0, got {self.mlp_ratio}")
        if not self.conv_kernels or any(not isinstance(k, int) or k < 1 for k in self.conv_kernels):
            raise ConfigError(f"model.conv_kernels: need positive integers, got {self.conv_kernels}")
        if not isinstance(self.conv_bottleneck, int) or self.conv_bottleneck < 0:
            raise ConfigError(f"model.conv_bottleneck: must be an integer >= 0, got {self.conv_bottleneck}")
        if not 0.0 <= self.drop_path < 1.0:
            raise ConfigError(f"model.drop_path: must be in [0, 1), got {self.drop_path}")


@dataclass(frozen=True)
class MAEConfig:
    """Masked autoencoder: an encoder plus a light decoder that reconstructs the masked patches.

    Attributes:
        encoder: the encoder's config (exported alone for fine-tuning).
        decoder_dim: decoder width (narrower than the encoder).
        decoder_depth: decoder blocks (1-4 is plenty).
        decoder_heads: decoder attention heads.
        mask_ratio: fraction of tokens removed, in [0, 1).
        mask_mode: ``"patch"`` masks tokens independently (lead-patches for lead tokenisation),
            ``"time"`` masks whole time patches across all leads, ``"lead"`` masks whole leads
            (lead tokenisation only). ``time`` and ``lead`` are the masking ablations of multi-lead MAE
            papers (harder pretext tasks: a masked moment cannot be read off another lead, a masked lead
            must be inferred from the others); set them with ``--set model_overrides.mask_mode=...``.
        norm_target: reconstruct each patch normalised to zero mean and unit variance.
        lead_drop: probability that a pre-training example shows the encoder only a random subset of its
            leads (1 to all but one, uniformly; the others zero, as absent leads are, and not scored), so
            recordings with fewer leads (Holter, wearables, MIT-BIH) embed well. Training only; time
            tokenisation only (lead tokens take any lead subset as it is).
    """

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 2
    mask_ratio: float = 0.75
    mask_mode: str = "patch"
    norm_target: bool = False
    lead_drop: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.encoder, EncoderConfig):
            raise ConfigError(f"model.encoder: expected an EncoderConfig, got {type(self.encoder).__name__}")
        for name in ("decoder_dim", "decoder_depth", "decoder_heads"):
            _positive_int(name, getattr(self, name))
        if self.decoder_dim % self.decoder_heads:
            raise ConfigError(
                f"model.decoder_dim: {self.decoder_dim} is not divisible by decoder_heads={self.decoder_heads}"
            )
        if self.decoder_dim % 2:
            raise ConfigError(f"model.decoder_dim: sincos positions need an even width, got {self.decoder_dim}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ConfigError(f"model.mask_ratio: must be in [0, 1), got {self.mask_ratio}")
        _choice("mask_mode", self.mask_mode, MASK_MODES)
        if not 0.0 <= self.lead_drop <= 1.0:
            raise ConfigError(f"model.lead_drop: must be in [0, 1], got {self.lead_drop}")
        if self.lead_drop and self.encoder.tokenization != "time":
            raise ConfigError(
                f"model.lead_drop: {self.lead_drop} needs tokenization='time' (lead tokens take "
                "any lead subset as they are); with tokenization='lead' set lead_drop=0 "
                "(pretrain --lead-drop 0)"
            )
        if self.mask_mode == "lead" and self.encoder.tokenization != "lead":
            raise ConfigError(
                "model.mask_mode: 'lead' masking needs tokenization='lead' "
                f"(got tokenization={self.encoder.tokenization!r}; use 'patch' or 'time')"
            )


# Bottleneck blocks per stage of each reference CNN.
CNN_LAYERS: dict[str, tuple[int, ...]] = {"xresnet1d50": (3, 4, 6, 3), "xresnet1d101": (3, 4, 23, 3)}


@dataclass(frozen=True)
class XResNetConfig:
    """A reference CNN (``xresnet1d50``, ``xresnet1d101``); its depth follows from ``arch`` alone.

    Attributes:
        arch: the registered architecture (:data:`CNN_LAYERS` gives its blocks per stage).
        n_leads: input channels (the 12 canonical leads, or a store's own leads).
        kernel_size: of the stem and of the middle convolution of every block.
        head_hidden: width of the head's hidden layer.
        head_dropout: dropout in the head.
    """

    arch: str = "xresnet1d50"
    n_leads: int = 12
    kernel_size: int = 5
    head_hidden: int = 128
    head_dropout: float = 0.5

    def __post_init__(self) -> None:
        _choice("arch", self.arch, tuple(CNN_LAYERS))
        for name in ("n_leads", "kernel_size", "head_hidden"):
            _positive_int(name, getattr(self, name))
        _probability("head_dropout", self.head_dropout)

    @property
    def layers(self) -> tuple[int, ...]:
        """Bottleneck blocks per stage."""
        return CNN_LAYERS[self.arch]


ModelConfig = MAEConfig | XResNetConfig


@dataclass(frozen=True)
class DataConfig:
    """The input a registered variant is designed for (timm's default data config).

    Attributes:
        fs: sampling rate in Hz (runs adapt transformer variants to their store's rate).
        n_leads: canonical leads the model knows.
        window_multiple: a window is a whole number of these samples (the patch size; 1 for a CNN).
    """

    fs: float
    n_leads: int
    window_multiple: int


def data_config(cfg: ModelConfig) -> DataConfig:
    """The input ``cfg``'s model takes."""
    if isinstance(cfg, XResNetConfig):
        return DataConfig(fs=100.0, n_leads=cfg.n_leads, window_multiple=1)
    return DataConfig(fs=cfg.encoder.fs, n_leads=cfg.encoder.n_leads, window_multiple=cfg.encoder.patch_size)


KINDS = ("encoder", "mae", "classifier")


@dataclass(frozen=True)
class ModelSpec:
    """What a checkpoint's weights are: the ``model`` section of its run header.

    Attributes:
        kind: ``"encoder"`` (an :class:`ECGEncoder`), ``"mae"`` (an :class:`ECGMAE`) or
            ``"classifier"`` (an :class:`ECGClassifier` or a reference CNN).
        name: the registered variant the run was built from (provenance; ``config`` decides the shape).
        config: an :class:`MAEConfig` for the transformer family (every encoder is at
            ``config.encoder``; a classifier never uses the decoder fields), an :class:`XResNetConfig`
            for a reference CNN.
        num_classes: outputs of a classifier; 0 for pre-training runs.
        head_dropout: dropout in front of an :class:`ECGClassifier`'s linear head (a CNN's head
            settings are in its config).
    """

    kind: str
    name: str
    config: ModelConfig
    num_classes: int = 0
    head_dropout: float = 0.0

    def __post_init__(self) -> None:
        _choice("kind", self.kind, KINDS)
        if (self.kind == "classifier") != (self.num_classes > 0):
            raise ConfigError(
                f"model.num_classes: {self.num_classes} for {self.kind} weights (a classifier has "
                ">= 1 output, pre-training runs 0)"
            )
        if isinstance(self.config, XResNetConfig) and self.kind != "classifier":
            raise ConfigError(f"model.config: a {self.config.arch} is a classifier, not {self.kind} weights")
        _probability("head_dropout", self.head_dropout)

    @property
    def arch(self) -> str:
        """``"ecgmae"`` for the transformer family, else the CNN's registered architecture."""
        return self.config.arch if isinstance(self.config, XResNetConfig) else "ecgmae"

    @property
    def encoder(self) -> EncoderConfig | None:
        """The transformer encoder's config (None for a CNN)."""
        return None if isinstance(self.config, XResNetConfig) else self.config.encoder

    @property
    def data(self) -> DataConfig:
        """The input the model takes (its rate, leads and window multiple)."""
        return data_config(self.config)


ENCODER_FIELDS = frozenset(f.name for f in dataclasses.fields(EncoderConfig))
MAE_FIELDS = frozenset(f.name for f in dataclasses.fields(MAEConfig)) - {"encoder"}


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"model.{name}: {value!r} is not one of {', '.join(allowed)}")


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"model.{name}: must be a positive integer, got {value!r}")


def _probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:  # what nn.Dropout accepts
        raise ConfigError(f"model.{name}: must be in [0, 1], got {value}")
