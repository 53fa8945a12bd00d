"""Contrastive pre-training on the same encoder as the MAE: SimCLR (NT-Xent) and CMSC (CLOCS).

Only the objective differs from masked reconstruction: an :class:`ECGEncoder` gives pooled features, a
small projection head maps them to the space where the loss is computed, and pre-training exports the
encoder alone. Augmentations are pure torch functions on ``(B, L, T)`` batches drawing from an explicit
``torch.Generator``, so a view is a function of (seed, step) only.

References: Chen et al. 2020 (SimCLR), Kiyasseh et al. 2021 (CLOCS: contrastive multi-segment coding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ecgmae.engine.config import AugmentConfig
from ecgmae.models.encoder import ECGEncoder, param_groups


# ------------------------------------------------------------------------------------ augmentations
def _uniform(shape: tuple[int, ...], gen: torch.Generator, x: torch.Tensor, low: float = 0.0,
             high: float = 1.0) -> torch.Tensor:
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


# ------------------------------------------------------------------------------------------- losses
def _same_record(ids: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor:
    """``(n, n)`` True where two rows come from the same record (never a negative of each other)."""
    if ids is None:
        return torch.eye(n, dtype=torch.bool, device=device)
    ids = ids.to(device)
    return ids[:, None] == ids[None, :]


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1,
            ids: torch.Tensor | None = None) -> torch.Tensor:
    """SimCLR's NT-Xent: each view's positive is the other view, negatives are all other 2B - 2 views.

    Args:
        z1, z2: ``(B, D)`` projections of the two views (normalised here).
        temperature: softmax temperature.
        ids: ``(B,)`` record ids; other rows of the same record are left out of the negatives.
    """
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=-1)  # (2B, D)
    sim = z @ z.T / temperature  # (2B, 2B)
    same = _same_record(ids, b, z.device).repeat(2, 2)
    pos = torch.arange(2 * b, device=z.device).roll(b)  # i <-> i + B
    excluded = same.clone()
    excluded[torch.arange(2 * b), pos] = False
    sim = sim.masked_fill(excluded, float("-inf"))
    return F.cross_entropy(sim, pos)


def cmsc_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1,
              ids: torch.Tensor | None = None) -> torch.Tensor:
    """CLOCS CMSC: adjacent segments of a record are positives, other records' segments negatives.

    Symmetric cross-view InfoNCE over the ``(B, B)`` similarity of segment 1 with segment 2.

    Args:
        z1, z2: ``(B, D)`` projections of the first and second segment (normalised here).
        temperature: softmax temperature.
        ids: ``(B,)`` record ids; a record drawn twice in a batch is not its own negative.
    """
    b = z1.shape[0]
    a, c = F.normalize(z1.float(), dim=-1), F.normalize(z2.float(), dim=-1)
    sim = a @ c.T / temperature  # (B, B)
    excluded = _same_record(ids, b, a.device) & ~torch.eye(b, dtype=torch.bool, device=a.device)
    sim = sim.masked_fill(excluded, float("-inf"))
    target = torch.arange(b, device=a.device)
    return 0.5 * (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target))


# -------------------------------------------------------------------------------------------- model
class ContrastiveModel(nn.Module):
    """Encoder + SimCLR projection head (``D -> D -> proj_dim``); pre-training exports the encoder only.

    Args:
        encoder: the encoder to pre-train (the same class the MAE wraps and the classifier loads).
        proj_dim: size of the projection the loss sees.
    """

    def __init__(self, encoder: ECGEncoder, proj_dim: int = 128) -> None:
        super().__init__()
        d = encoder.pooled_dim()
        self.encoder = encoder
        self.proj = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, proj_dim))

    def forward(self, x: torch.Tensor, lead_idx: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, L, T) -> (B, proj_dim)`` projections of the pooled encoder features."""
        return self.proj(self.encoder(x, lead_idx=lead_idx))

    def param_groups(self, weight_decay: float) -> list[dict]:
        """Pre-training optimiser groups (no decay on biases, norms, positions and special tokens)."""
        return param_groups(self.named_parameters(), weight_decay)
