"""Typed run configurations for pre-training and downstream training (no Lightning imports)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from ecgmae.config import ConfigError

MODES = ("finetune", "linprobe", "scratch")
METHODS = ("mae", "simclr", "cmsc")
POSITIVES = ("record", "patient")
PRECISIONS = ("auto", "32", "32-true", "bf16-mixed", "16-mixed", "bf16-true")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up then cosine decay, all by optimiser step.

    Attributes:
        lr: peak learning rate (after warm-up).
        min_lr_ratio: the cosine ends at ``lr * min_lr_ratio``.
        warmup: warm-up length; a fraction of the total steps if < 1, else a step count.
        weight_decay: applied to weight matrices only (never to biases, norms, embeddings).
        betas: AdamW betas.
        layer_decay: layer-wise LR decay for fine-tuning (1.0 = off); block i of depth d gets
            ``layer_decay ** (d - i)`` of the head's rate.
        grad_clip: max global gradient norm (0 = off).
    """

    lr: float = 1e-3
    min_lr_ratio: float = 0.01
    warmup: float = 0.05
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    layer_decay: float = 1.0
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        for name in ("lr", "min_lr_ratio", "warmup", "weight_decay", "layer_decay", "grad_clip", "betas"):
            values = getattr(self, name)
            for v in values if isinstance(values, (tuple, list)) else (values,):
                if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                    raise ConfigError(f"optim.{name} must be a finite number, got {values!r}")
        if len(self.betas) != 2:
            raise ConfigError(f"optim.betas must be two numbers (AdamW's beta1, beta2), got {list(self.betas)}")
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        if not 0 < self.layer_decay <= 1:
            raise ConfigError(f"optim.layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.warmup < 0:
            raise ConfigError(f"optim.warmup must be >= 0, got {self.warmup}")


@dataclass(frozen=True)
class TrainerConfig:
    """Hardware and loop settings handed to Lightning's Trainer.

    Attributes:
        accelerator: "auto", "cpu", "gpu", ...
        devices: "auto", a count, or a comma-separated list of ids.
        num_nodes: nodes for multi-node DDP (SLURM or torchrun).
        strategy: "auto" picks DDP when more than one device or node is used.
        precision: "auto" = bf16-mixed where the hardware supports it (CUDA with bf16, CPUs with
            AVX-512 bf16), else 32; or any Lightning precision string.
        accumulate: gradient accumulation steps.
        num_workers: data-loader worker processes.
        compile: wrap the model with ``torch.compile`` (slow first step; worth it for long runs).
        log_every: log training metrics every N steps.
        check_every: validate and write ``last.ckpt`` about every N optimiser steps, rounded up to whole
            epochs (checkpoints stay at epoch ends, where ``--resume`` is exact); an epoch longer than N
            steps is checked at its end. 0 = every epoch (the downstream default, where the best
            validation epoch is kept); pre-training defaults to 200. On a small store (a few steps an
            epoch) this keeps validation and checkpoint writes from costing more than the training.
        deterministic: torch's deterministic algorithms (``torch.use_deterministic_algorithms``). None (the
            default) = on CPU only: there a run with the same seed, thread count and precision repeats bit
            for bit (without it, several threads accumulate some gradients, e.g. an embedding indexed by
            token, with atomic adds in whatever order the threads finish, and training amplifies the last
            bits), for a few percent per step. On GPUs it is off unless asked: some kernels have no
            deterministic version (Lightning then fails) or a slower one.
    """

    accelerator: str = "auto"
    devices: str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "auto"
    accumulate: int = 1
    num_workers: int = 0
    compile: bool = False
    log_every: int = 10
    check_every: int = 0
    deterministic: bool | None = None

    def __post_init__(self) -> None:
        if str(self.precision) not in PRECISIONS:
            raise ConfigError(f"trainer.precision must be one of {', '.join(PRECISIONS)}, got {self.precision}")
        if self.accumulate < 1:
            raise ConfigError(f"trainer.accumulate must be >= 1, got {self.accumulate}")
        if isinstance(self.check_every, bool) or not isinstance(self.check_every, int) or self.check_every < 0:
            raise ConfigError(f"trainer.check_every must be an integer >= 0, got {self.check_every!r}")
        if self.num_workers < 0:
            raise ConfigError(f"trainer.num_workers must be >= 0, got {self.num_workers}")
        if self.num_nodes < 1 or self.log_every < 1:
            raise ConfigError(
                f"trainer.num_nodes and trainer.log_every must be >= 1, got {self.num_nodes}, {self.log_every}"
            )


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths of the SimCLR augmentations (each applied to every view; 0 switches one off).

    Amplitudes are in the store's units after preprocessing (mV, or standard deviations when the store is
    standardised per lead).

    Attributes:
        scale: amplitude factor range ``[1 - scale, 1 + scale]``, in [0, 1).
        noise: Gaussian noise standard deviation, >= 0.
        baseline: largest constant offset per lead, >= 0.
        lead_drop: probability of zeroing a lead, in [0, 1) (one lead is always kept).
        time_mask: largest fraction of the window zeroed, in [0, 1).
    """

    scale: float = 0.5
    noise: float = 0.05
    baseline: float = 0.3
    lead_drop: float = 0.2
    time_mask: float = 0.2

    def __post_init__(self) -> None:
        for name in ("scale", "lead_drop", "time_mask"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"augment.{name} must be in [0, 1), got {value}")
        for name in ("noise", "baseline"):
            if getattr(self, name) < 0:
                raise ConfigError(f"augment.{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class PretrainConfig:
    """Pre-training run: masked autoencoder, or a contrastive objective on the same encoder.

    Attributes:
        method: "mae" (masked reconstruction), "simclr" (NT-Xent between two augmented crops) or
            "cmsc" (CLOCS: two adjacent segments of a record are positives).
        model: registered model name (``ecgmae.models.list_models()``).
        model_overrides: config fields to change, e.g. ``{depth: 4, mask_ratio: 0.8}``.
        epochs: passes over the training split (ignored when ``max_steps`` >= 0).
        max_steps: optimiser steps; -1 = use ``epochs``; 0 = write the freshly initialised encoder.
        batch_size: per device.
        window_seconds: crop length; None = the store's ``seconds`` (half of it for simclr and cmsc,
            which draw their two views from a span of two windows).
        temperature: softmax temperature of the contrastive losses.
        proj_dim: output size of the contrastive projection head (dropped after pre-training).
        augment: SimCLR augmentation strengths (crops are always random).
        positives: ``cmsc`` positive pairs: "record" (two adjacent segments of one record) or "patient"
            (a segment of the record and one of another record of the same patient when the store names
            patients; the record itself otherwise). Same-patient segments are never negatives then.
        splits: store splits used for pre-training (labels are never read).
        optim: optimiser and schedule.
        trainer: hardware and loop settings.
        seed: seeds data order, crops, masks and initialisation.
    """

    method: str = "mae"
    model: str = "ecgmae_small"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    max_steps: int = -1
    batch_size: int = 64
    window_seconds: float | None = None
    temperature: float = 0.1
    proj_dim: int = 128
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    positives: str = "record"
    splits: tuple[str, ...] = ("train",)
    # 3e-3: best of 1.5e-3 / 3e-3 for the default model on real ECGs (RESULTS.md); larger models want less
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=3e-3, weight_decay=0.05))
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(check_every=200))
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if self.proj_dim < 1:
            raise ConfigError(f"proj_dim must be >= 1, got {self.proj_dim}")
        if self.positives not in POSITIVES:
            raise ConfigError(f"positives must be one of {', '.join(POSITIVES)}, got {self.positives!r}")
        if self.positives == "patient" and self.method != "cmsc":
            raise ConfigError(f"positives='patient' applies to method cmsc, not {self.method!r}")
        _check_loop(self.epochs, self.max_steps, self.batch_size)
        _check_seconds("window_seconds", self.window_seconds)


@dataclass(frozen=True)
class FinetuneConfig:
    """Downstream classification run (fine-tune, linear probe or from scratch).

    Attributes:
        mode: "finetune" (all weights train, layer-wise LR decay), "linprobe" (encoder frozen), or
            "scratch" (random initialisation, no encoder checkpoint).
        model: registered model for ``scratch`` (an encoder checkpoint brings its own config).
        model_overrides: config fields to change for ``scratch``.
        classes: subset of the store's label names (empty = all with at least one positive).
        label_fraction: fraction of the training split used (seeded, at least one positive per class).
        epochs: passes over the (reduced) training split; -1 with ``max_steps``.
        max_steps: optimiser steps; -1 = use ``epochs``.
        batch_size: per device.
        window_seconds: crop length; None = the encoder's training window or the store's seconds.
        eval_stride_seconds: sliding-window stride at evaluation (records longer than the window).
        aggregate: how window scores combine into a record score: "mean" or "max".
        head_dropout: dropout before the linear head.
        n_boot: bootstrap resamples for the confidence intervals.
        leakage: what to do when patients of the test split were among the encoder's pre-training
            records (compared through the pre-training store named in its header): "warn" (log it and
            record it in metrics.json) or "refuse" (stop before training).
        optim: optimiser and schedule.
        trainer: hardware and loop settings.
        seed: seeds the label subset, data order, crops and head initialisation.
    """

    mode: str = "finetune"
    model: str = "ecgmae_small"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    classes: tuple[str, ...] = ()
    label_fraction: float = 1.0
    epochs: int = 10
    max_steps: int = -1
    batch_size: int = 64
    window_seconds: float | None = None
    eval_stride_seconds: float | None = None
    aggregate: str = "mean"
    head_dropout: float = 0.0
    n_boot: int = 1000
    leakage: str = "warn"
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, layer_decay=0.75))
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not 0 < self.label_fraction <= 1:
            raise ConfigError(f"label_fraction must be in (0, 1], got {self.label_fraction}")
        if self.aggregate not in ("mean", "max"):
            raise ConfigError(f"aggregate must be 'mean' or 'max', got {self.aggregate!r}")
        if self.leakage not in ("warn", "refuse"):
            raise ConfigError(f"leakage must be 'warn' or 'refuse', got {self.leakage!r}")
        _check_loop(self.epochs, self.max_steps, self.batch_size)
        _check_seconds("window_seconds", self.window_seconds)
        _check_seconds("eval_stride_seconds", self.eval_stride_seconds)


def _check_loop(epochs: int, max_steps: int, batch_size: int) -> None:
    if max_steps < -1:
        raise ConfigError(f"max_steps must be >= 0 (or -1 for epochs), got {max_steps}")
    if max_steps == -1 and epochs < 1:
        raise ConfigError(f"epochs must be >= 1 when max_steps is not set, got {epochs}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")


def _check_seconds(name: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive number of seconds (or unset for the default), got {value}")
