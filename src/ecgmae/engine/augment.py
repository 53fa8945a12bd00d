"""Augmentations for contrastive pre-training: pure torch functions on ``(B, L, T)`` batches.

Each draws from an explicit ``torch.Generator``, so a view is a function of (seed, step) only. They
live in the engine because their settings (:class:`~ecgmae.engine.config.AugmentConfig`) are part of
a training run's config; the models only see the views.
"""

from __future__ import annotations

import torch

from ecgmae.engine.config import AugmentConfig


def _uniform(
    shape: tuple[int, ...], gen: torch.Generator, x: torch.Tensor, low: float = 0.0, high: float = 1.0
) -> torch.Tensor:
    """Uniform draws on the generator's (CPU) device, moved to ``x``'s device and dtype."""
    u = torch.rand(shape, generator=gen)
    return (low + (high - low) * u).to(device=x.device, dtype=x.dtype)


def random_crop(x: torch.Tensor, length: int, gen: torch.Generator) -> torch.Tensor:
    """``(B, L, T) -> (B, L, length)``: an independent random crop start per example."""
    b, _, t = x.shape
    if length > t:
        raise ValueError(f"crop of {length} samples from a {t}-sample input")
    starts = torch.randint(0, t - length + 1, (b,), generator=gen).to(x.device)
    idx = starts[:, None] + torch.arange(length, device=x.device)  # (B, length)
    return x.gather(2, idx[:, None, :].expand(-1, x.shape[1], -1))


def amplitude_scale(x: torch.Tensor, gen: torch.Generator, low: float = 0.5, high: float = 1.5) -> torch.Tensor:
    """Multiply each example by one factor drawn from ``[low, high]``."""
    return x * _uniform((x.shape[0], 1, 1), gen, x, low, high)


def gaussian_noise(x: torch.Tensor, gen: torch.Generator, std: float = 0.05) -> torch.Tensor:
    """Add white noise of ``std`` (input units, mV or standardised)."""
    return x + std * torch.randn(x.shape, generator=gen).to(device=x.device, dtype=x.dtype)


def baseline_shift(x: torch.Tensor, gen: torch.Generator, max_shift: float = 0.3) -> torch.Tensor:
    """Add a constant offset per example and lead, drawn from ``[-max_shift, max_shift]``."""
    return x + _uniform((x.shape[0], x.shape[1], 1), gen, x, -max_shift, max_shift)


def lead_dropout(x: torch.Tensor, gen: torch.Generator, p: float = 0.2) -> torch.Tensor:
    """Zero each lead with probability ``p``; every example keeps at least one lead."""
    b, n_leads, _ = x.shape
    drop = torch.rand((b, n_leads), generator=gen) < p
    keep_one = torch.randint(0, n_leads, (b,), generator=gen)
    drop[torch.arange(b), keep_one] = False
    return x * (~drop).to(device=x.device, dtype=x.dtype)[:, :, None]


def time_mask(x: torch.Tensor, gen: torch.Generator, max_frac: float = 0.2) -> torch.Tensor:
    """Zero one random stretch of up to ``max_frac`` of the samples per example (all leads)."""
    b, _, t = x.shape
    length = (torch.rand(b, generator=gen) * max_frac * t).long()  # (B,)
    start = (torch.rand(b, generator=gen) * (t - length + 1).float()).long()
    pos = torch.arange(t)[None, :]
    hidden = (pos >= start[:, None]) & (pos < (start + length)[:, None])  # (B, T)
    return x * (~hidden).to(device=x.device, dtype=x.dtype)[:, None, :]


def augment(x: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig | None = None) -> torch.Tensor:
    """Scaling, noise, baseline shift, lead dropout and time masking, in that order (``None``: defaults)."""
    cfg = cfg or AugmentConfig()
    if cfg.scale:
        x = amplitude_scale(x, gen, 1 - cfg.scale, 1 + cfg.scale)
    if cfg.noise:
        x = gaussian_noise(x, gen, cfg.noise)
    if cfg.baseline:
        x = baseline_shift(x, gen, cfg.baseline)
    if cfg.lead_drop and x.shape[1] > 1:
        x = lead_dropout(x, gen, cfg.lead_drop)
    if cfg.time_mask:
        x = time_mask(x, gen, cfg.time_mask)
    return x
