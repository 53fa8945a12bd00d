"""Contrastive pre-training on the same encoder as the MAE: SimCLR (NT-Xent) and CMSC (CLOCS).

Only the objective differs from masked reconstruction: an :class:`ECGEncoder` gives pooled features, a
small projection head maps them to the space where the loss is computed, and pre-training exports the
encoder alone. The views come from :mod:`ecgmae.engine.augment`.

References: Chen et al. 2020 (SimCLR), Kiyasseh et al. 2021 (CLOCS: contrastive multi-segment coding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ecgmae.models.encoder import ECGEncoder, param_groups


# ------------------------------------------------------------------------------------------- losses
def _same_record(ids: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor:
    """``(n, n)`` True where two rows come from the same record (never a negative of each other)."""
    if ids is None:
        return torch.eye(n, dtype=torch.bool, device=device)
    ids = ids.to(device)
    return ids[:, None] == ids[None, :]


def nt_xent(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1, ids: torch.Tensor | None = None
) -> torch.Tensor:
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


def cmsc_loss(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1, ids: torch.Tensor | None = None
) -> torch.Tensor:
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
