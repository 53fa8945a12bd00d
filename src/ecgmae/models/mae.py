"""ECGMAE: random masking, the encoder on visible patches only, a light decoder, loss on masked patches."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from ecgmae.models.config import MAEConfig
from ecgmae.models.encoder import ECGEncoder, param_groups
from ecgmae.models.layers import Block, grid_positions, init_weights, sincos_1d


class MAEOutput(NamedTuple):
    """What one MAE forward pass returns.

    Attributes:
        loss: scalar MSE over masked (present) patches.
        pred: reconstructed samples of every token, ``(B, N, patch_len)``.
        mask: ``(B, N)``, 1 = removed (hidden from the encoder), 0 = visible.
        target: what ``pred`` is compared with (per-patch normalised when ``norm_target``).
    """

    loss: torch.Tensor
    pred: torch.Tensor
    mask: torch.Tensor
    target: torch.Tensor


class Masking(NamedTuple):
    """A random split of ``N`` tokens: ``ids_keep (B, n_keep)``, ``mask (B, N)`` 1 = removed,
    ``ids_restore (B, N)`` (the rank of each token in the shuffled order)."""

    ids_keep: torch.Tensor
    mask: torch.Tensor
    ids_restore: torch.Tensor


def random_masking(
    batch: int,
    n_leads: int,
    n_time: int,
    ratio: float,
    mode: str = "patch",
    *,
    present: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Masking:
    """Choose which of ``N = n_leads * n_time`` tokens (lead-major) each sample keeps.

    Argsort of uniform noise, as in MAE; ``mode`` ties the noise across time (``"lead"``: whole leads)
    or across leads (``"time"``: whole time patches). Absent leads sort last, so they are never
    visible; the number kept is the same for every sample (so the batch stays rectangular) and is
    set by the sample with the fewest present leads.

    Args:
        batch: B.
        n_leads: lead rows (1 for time tokenisation).
        n_time: time patches per lead.
        ratio: fraction removed, in [0, 1); exactly ``floor(N * (1 - ratio))`` kept with all leads present.
        mode: ``"patch"``, ``"time"`` or ``"lead"``.
        present: ``(B, n_leads)`` bool, False = lead absent.
        device: where the tensors live.
        generator: optional RNG for reproducible masks.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    keep = 1.0 - ratio
    if present is None:
        n_present = n_leads
    else:
        n_present = int(present.sum(dim=1).min())
        if n_present == 0:
            raise ValueError("present: a sample has no leads present; nothing to encode")
    shape = {"patch": (batch, n_leads, n_time), "time": (batch, 1, n_time), "lead": (batch, n_leads, 1)}
    if mode not in shape:
        raise ValueError(f"mask mode {mode!r} is not one of patch, time, lead")
    score = torch.rand(shape[mode], device=device, generator=generator).expand(batch, n_leads, n_time)
    if mode == "patch":
        n_keep = max(1, _floor(n_present * n_time * keep))
    elif mode == "time":
        n_keep = max(1, _floor(n_time * keep)) * n_present
    else:
        n_keep = max(1, _floor(n_present * keep)) * n_time
    if present is not None:
        score = score + (~present.bool())[:, :, None].to(score.dtype) * 2.0  # absent leads last
    ids_shuffle = torch.argsort(score.reshape(batch, -1), dim=1, stable=True)  # (B, N)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(batch, n_leads * n_time, device=device)
    mask[:, :n_keep] = 0.0
    return Masking(ids_shuffle[:, :n_keep], torch.gather(mask, 1, ids_restore), ids_restore)


def subset_leads(present: torch.Tensor, p: float) -> torch.Tensor:
    """``present (B, L)`` bool -> the same with, for each example with probability ``p``, only a random
    subset of its present leads kept (1 to all but one of them, uniformly; all when it has one)."""
    b, n = present.shape
    present = present.bool()
    chosen = torch.rand(b, device=present.device) < p
    n_have = present.sum(dim=1)
    k = 1 + (torch.rand(b, device=present.device) * (n_have - 1).clamp_min(0)).floor().long()  # (B,)
    score = torch.rand(b, n, device=present.device) + (~present).float() * 2.0  # present leads rank first
    rank = score.argsort(dim=1).argsort(dim=1)
    keep = (rank < k[:, None]) & present
    return torch.where(chosen[:, None], keep, present)


def _floor(value: float) -> int:
    return math.floor(value + 1e-6)  # 10 * (1 - 0.9) must give 1, not 0


class ECGMAE(nn.Module):
    """Masked autoencoder around an :class:`ECGEncoder`.

    Args:
        cfg: encoder and decoder shape, mask ratio and mode.
    """

    def __init__(self, cfg: MAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = ECGEncoder(cfg.encoder)
        ecfg, dd = cfg.encoder, cfg.decoder_dim
        self.decoder_embed = nn.Linear(ecfg.embed_dim, dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.decoder_lead_embed = nn.Parameter(torch.zeros(ecfg.n_leads, dd)) if ecfg.tokenization == "lead" else None
        self.decoder_blocks = nn.ModuleList(
            Block(dd, cfg.decoder_heads, ecfg.mlp_ratio, qkv_bias=ecfg.qkv_bias, eps=ecfg.norm_eps)
            for _ in range(cfg.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(dd, eps=ecfg.norm_eps)
        self.decoder_pred = nn.Linear(dd, self.encoder.patch_len())
        for name, module in self.named_children():
            if name != "encoder":
                module.apply(init_weights)
        nn.init.normal_(self.mask_token, std=0.02)
        if self.decoder_lead_embed is not None:
            nn.init.normal_(self.decoder_lead_embed, std=0.02)

    def param_groups(self, weight_decay: float) -> list[dict]:
        """Pre-training optimiser groups (no decay on biases, norms, positions and special tokens)."""
        return param_groups(self.named_parameters(), weight_decay)

    def forward(
        self,
        x: torch.Tensor,
        *,
        mask_ratio: float | None = None,
        present: torch.Tensor | None = None,
        lead_idx: torch.Tensor | None = None,
    ) -> MAEOutput:
        """Mask, encode the visible patches, reconstruct all, score the masked ones.

        Args:
            x: ``(B, L, T)`` signal in mV; absent leads zero-filled.
            mask_ratio: overrides ``cfg.mask_ratio``; 0 encodes everything and scores every patch
                (the unmasked baseline).
            present: ``(B, L)`` bool, False = lead absent: never visible and never scored.
            lead_idx: each input row's position among the canonical leads (default ``arange(L)``).
        """
        enc, cfg = self.encoder, self.cfg
        ratio = cfg.mask_ratio if mask_ratio is None else float(mask_ratio)
        if present is not None and present.shape != x.shape[:2]:
            raise ValueError(f"present: shape {tuple(present.shape)}, expected {tuple(x.shape[:2])}")
        lead_idx = enc.check_input(x, lead_idx)
        if enc.cfg.tokenization == "time":
            drop = self.training and cfg.lead_drop > 0
            partial = x.shape[1] != enc.cfg.n_leads  # rows the input lacks are absent
            x = enc.expand_leads(x, lead_idx)
            if present is not None or partial or drop:
                full = torch.zeros(x.shape[0], enc.cfg.n_leads, dtype=torch.bool, device=x.device)
                full[:, lead_idx] = True if present is None else present.bool()
                if drop:
                    full = subset_leads(full, cfg.lead_drop)
                    x = x * full[:, :, None].to(x.dtype)
                present = full
            lead_idx = enc.check_input(x, None)
        b, n_leads, t = x.shape
        n_time = t // enc.cfg.patch_size
        target = enc.patchify(x)  # (B, N, p)
        token_w = elem_w = None
        if enc.cfg.tokenization == "lead":
            masking = random_masking(b, n_leads, n_time, ratio, cfg.mask_mode, present=present, device=x.device)
            if present is not None:
                token_w = present.bool().repeat_interleave(n_time, dim=1).float()  # (B, N)
        else:
            masking = random_masking(b, 1, n_time, ratio, "patch", device=x.device)
            if present is not None:
                elem_w = present.repeat_interleave(enc.cfg.patch_size, dim=1)[:, None, :].float()  # (B, 1, p)
        latent = enc.forward_features(x, keep=masking.ids_keep, lead_idx=lead_idx)  # (B, n_keep(+1), D)
        pred = self.forward_decoder(latent, masking.ids_restore, lead_idx, n_time)  # (B, N, p)
        if cfg.norm_target:
            target = normalise_patches(target, elem_w)
        loss = masked_mse(pred, target, masking.mask, token_w, elem_w, all_visible=ratio == 0.0)
        return MAEOutput(loss, pred, masking.mask, target)

    def forward_decoder(
        self, latent: torch.Tensor, ids_restore: torch.Tensor, lead_idx: torch.Tensor, n_time: int
    ) -> torch.Tensor:
        """``latent (B, n_keep(+1), D) -> pred (B, N, patch_len)``; mask tokens fill the removed places."""
        k = self.encoder.num_prefix_tokens
        h = self.decoder_embed(latent)  # (B, n_keep(+1), dd)
        prefix, h = h[:, :k], h[:, k:]
        b, n_keep, dd = h.shape
        n = ids_restore.shape[1]
        h = torch.cat([h, self.mask_token.to(h.dtype).expand(b, n - n_keep, dd)], dim=1)
        h = h.gather(1, ids_restore[..., None].expand(-1, -1, dd))  # (B, N, dd), patchify order
        lead = None if self.decoder_lead_embed is None else self.decoder_lead_embed[lead_idx]
        h = h + grid_positions(sincos_1d(n_time, dd, device=h.device), lead)
        h = torch.cat([prefix, h], dim=1)
        for blk in self.decoder_blocks:
            h = blk(h)
        return self.decoder_pred(self.decoder_norm(h)[:, k:])

    def to_samples(
        self,
        x: torch.Tensor,
        present: torch.Tensor,
        lead_idx: torch.Tensor,
        pred: torch.Tensor,
        token_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder tokens ``(B, N, patch_len)`` and token mask ``(B, N)`` -> ``(B, L, T)`` samples (input units).

        With ``norm_target`` the predicted patch shapes are put back with the TRUE mean and spread of the
        input patches. Returns the reconstruction and the bool mask (True = hidden), both ``(B, L, T)``.
        """
        enc, li, p_size = self.encoder, lead_idx, self.encoder.cfg.patch_size
        b, n_rows, t = x.shape
        n_time = t // p_size
        if enc.cfg.tokenization == "time":
            full = torch.zeros(b, enc.cfg.n_leads, dtype=torch.bool, device=x.device)
            full[:, li] = present.bool()
            x_full, rows = enc.expand_leads(x, li), li
            elem_w = full.repeat_interleave(p_size, dim=1)[:, None, :].float()
        else:
            x_full, rows, elem_w = x, torch.arange(n_rows, device=x.device), None
        if self.cfg.norm_target:  # the decoder predicts normalised patches: back to input units
            mean, std = patch_stats(enc.patchify(x_full), elem_w)
            pred = pred * std + mean
        rec = enc.unpatchify(pred, x_full.shape[1])[:, rows]  # (B, L, n_time * P)
        if enc.cfg.tokenization == "time":
            mask = token_mask.bool().repeat_interleave(p_size, dim=1)[:, None, :].expand(b, n_rows, -1)
        else:
            mask = token_mask.bool().reshape(b, n_rows, n_time).repeat_interleave(p_size, dim=2)
        pad = t - n_time * p_size  # a window that is not a whole number of patches: the tail is not predicted
        if pad:
            rec = torch.nn.functional.pad(rec, (0, pad))
            mask = torch.nn.functional.pad(mask, (0, pad))
        return rec, mask


def patch_stats(
    patches: torch.Tensor, elem_w: torch.Tensor | None = None, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and ``sqrt(var + eps)`` of each patch, the one definition (the normalised target, and
    putting predicted patches back in input units).

    Args:
        patches: ``(B, N, p)`` tensor of raw samples.
        elem_w: ``(B, 1 or N, p)`` 0/1 weights (absent leads of a time token) or None.
    """
    if elem_w is None:
        mean = patches.mean(dim=-1, keepdim=True)
        var = patches.var(dim=-1, keepdim=True, unbiased=False)
    else:
        count = elem_w.sum(dim=-1, keepdim=True).clamp_min(1.0)
        mean = (patches * elem_w).sum(dim=-1, keepdim=True) / count
        var = (((patches - mean) * elem_w) ** 2).sum(dim=-1, keepdim=True) / count
    return mean, (var + eps).sqrt()


def normalise_patches(target: torch.Tensor, elem_w: torch.Tensor | None = None) -> torch.Tensor:
    """Each patch to zero mean, unit variance over its (present) samples; absent samples become 0."""
    mean, std = patch_stats(target, elem_w)
    if elem_w is None:
        return (target - mean) / std
    return (target - mean) / std * elem_w


def masked_mse(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    token_w: torch.Tensor | None = None,
    elem_w: torch.Tensor | None = None,
    *,
    all_visible: bool = False,
) -> torch.Tensor:
    """Mean squared error over masked tokens only (every token when ``all_visible``).

    Args:
        pred: ``(B, N, p)``.
        target: ``(B, N, p)``.
        mask: ``(B, N)``, 1 = removed.
        token_w: ``(B, N)`` token weights (0 = absent lead) or None.
        elem_w: ``(B, 1 or N, p)`` sample weights within a token (0 = absent lead) or None.
        all_visible: nothing was masked; score every present token instead of none.
    """
    err = (pred.float() - target.float()) ** 2  # (B, N, p)
    if elem_w is None:
        per_token = err.mean(dim=-1)
    else:
        per_token = (err * elem_w).sum(dim=-1) / elem_w.sum(dim=-1).clamp_min(1.0)
    w = torch.ones_like(mask) if all_visible else mask
    if token_w is not None:
        w = w * token_w
    return (per_token * w).sum() / w.sum().clamp_min(1.0)
