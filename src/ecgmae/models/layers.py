"""Building blocks, each defined once: multi-scale convolutional patch embedding, transformer block,
sin-cos positions and weight initialisation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ecgmae.models.config import CONV_REF_FS


def scaled_width(samples_at_ref: int, fs: float, limit: int | None = None) -> int:
    """A width given in samples at 100 Hz, scaled to ``fs`` and made odd (so it centres on a sample).

    Args:
        samples_at_ref: width at 100 Hz.
        fs: target sampling rate in Hz.
        limit: largest useful width (wider kernels only see padding); the result never exceeds it.
    """
    k = max(1, round(samples_at_ref * fs / CONV_REF_FS))
    k |= 1
    if limit is not None and k > limit:
        k = limit if limit % 2 else limit - 1
    return max(k, 1)


def sincos_1d(n: int, dim: int, *, device: torch.device | None = None) -> torch.Tensor:
    """Fixed sin-cos position table ``(n, dim)`` for positions 0..n-1 (any n; MAE's 1-D formula).

    Built in float32 on ``device`` (some accelerators lack float64); cheap enough to rebuild per call.
    """
    omega = torch.arange(dim // 2, dtype=torch.float32, device=device) / (dim / 2.0)
    omega = 1.0 / 10000**omega  # (dim/2,)
    pos = torch.arange(n, dtype=torch.float32, device=device)
    out = pos[:, None] * omega[None, :]  # (n, dim/2)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def grid_positions(time: torch.Tensor, lead: torch.Tensor | None) -> torch.Tensor:
    """Token position embeddings ``(N, D)`` in lead-major order from a time table ``(n_time, D)`` and,
    for lead tokenisation, the embeddings of the input's leads ``(L, D)``: ``lead[l] + time[t]``."""
    if lead is None:
        return time
    return (lead[:, None, :] + time[None]).reshape(-1, time.shape[-1])


# Patches embedded at once in inference (16 windows of 10 s at 100 Hz): the sliding-window matrix of more (0.75 MB
# per window) falls out of the CPU's caches; every patch is embedded on its own, so the outputs are the same.
INFER_PATCHES = 640


class MultiScaleConvEmbed(nn.Module):
    """Patch ``(C, P)`` -> token ``(D,)`` through Inception-style parallel convolutions.

    Branches: convolutions with several kernel sizes and a max-pool followed by a 1x1 convolution,
    all computed as ONE matrix product over zero-padded sliding windows (a fixed mask keeps each
    branch to its own kernel support). Widths are given at 100 Hz and scaled with ``fs``; branch
    outputs are evaluated every ``stride`` samples (100 Hz resolution by default: the taps see every
    sample, but higher rates do not multiply the feature maps). Padding is per patch, so nothing
    crosses a patch boundary: a token depends on its own samples only. Branch features go through
    GELU, are averaged over windows of ``pool`` and, together with the raw patch, linearly
    projected to ``D``. With more input channels than ``bottleneck`` (time tokenisation), a 1x1
    bottleneck comes first.
    """

    # Buffers (register_buffer): declared so that they read as tensors, not ``Tensor | Module``.
    branch_mask: torch.Tensor
    window_idx: torch.Tensor
    pool_matrix: torch.Tensor

    def __init__(
        self,
        in_chans: int,
        patch_size: int,
        embed_dim: int,
        *,
        fs: float,
        kernels: tuple[int, ...],
        channels: int,
        bottleneck: int,
        pool: int,
        stride: int = 1,
    ) -> None:
        super().__init__()
        self.in_chans, self.patch_size = in_chans, patch_size
        limit = 2 * patch_size - 1
        self.kernel_sizes = tuple(scaled_width(k, fs, limit) for k in kernels)
        self.kmax = max(self.kernel_sizes)
        self.peak_width = scaled_width(3, fs, limit)
        self.stride = min(patch_size, max(1, round(stride * fs / CONV_REF_FS)))
        c = in_chans
        self.bottleneck: nn.Linear | None = None
        if bottleneck and in_chans > bottleneck:
            self.bottleneck = nn.Linear(in_chans, bottleneck, bias=False)
            c = bottleneck
        self.branch_chans = c
        n_out = (len(self.kernel_sizes) + 1) * channels
        # Columns: c*kmax window taps (channel-major), then c max-pooled inputs.
        self.branches = nn.Linear(c * self.kmax + c, n_out)
        mask = torch.zeros(n_out, c * self.kmax + c)
        centre = self.kmax // 2
        for i, k in enumerate(self.kernel_sizes):
            taps = torch.arange(centre - k // 2, centre + k // 2 + 1)
            cols = (torch.arange(c)[:, None] * self.kmax + taps[None, :]).flatten()
            mask[i * channels : (i + 1) * channels, cols] = 1.0
        mask[len(self.kernel_sizes) * channels :, c * self.kmax :] = 1.0
        self.register_buffer("branch_mask", mask, persistent=False)
        n_pos = (patch_size - 1) // self.stride + 1  # branch outputs per patch
        # Window taps as fixed indices: what ``unfold`` computes, used when exporting to ONNX.
        taps = torch.arange(n_pos)[:, None] * self.stride + torch.arange(self.kmax)[None, :]
        self.register_buffer("window_idx", taps, persistent=False)  # (n_pos, kmax)
        pool_len = math.ceil(n_pos / max(1, round(pool * fs / CONV_REF_FS / self.stride)))
        self.register_buffer("pool_matrix", _average_matrix(n_pos, pool_len), persistent=False)
        self.proj = nn.Linear(n_out * pool_len + in_chans * patch_size, embed_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Each branch drawn with its own fan-in (kernel taps x channels), as a convolution would be."""
        with torch.no_grad():
            fan_in = self.branch_mask.sum(dim=1, keepdim=True)  # (n_out, 1)
            bound = 1.0 / fan_in.sqrt()
            self.branches.weight.uniform_(-1.0, 1.0).mul_(bound).mul_(self.branch_mask)
            self.branches.bias.zero_()
            nn.init.xavier_uniform_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)
            if self.bottleneck is not None:
                nn.init.xavier_uniform_(self.bottleneck.weight)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """``(M, C, P) -> (M, D)``; M is every (kept) patch of the batch at once."""
        m = patches.shape[0]
        if m > INFER_PATCHES and not torch.is_grad_enabled() and not torch.onnx.is_in_onnx_export():
            step = -(-m // -(-m // INFER_PATCHES))  # equal blocks of at least half INFER_PATCHES: no small tail
            return torch.cat([self._embed(patches[i : i + step]) for i in range(0, m, step)])
        return self._embed(patches)

    def _embed(self, patches: torch.Tensor) -> torch.Tensor:
        m = patches.shape[0]
        h = patches
        if self.bottleneck is not None:
            h = self.bottleneck(h.transpose(1, 2)).transpose(1, 2)  # (M, c, P)
        c, half, s = self.branch_chans, self.kmax // 2, self.stride
        hp = F.pad(h, (half, half))  # zeros outside the patch
        peak = F.max_pool1d(h, self.peak_width, stride=s, padding=self.peak_width // 2).transpose(1, 2)
        if torch.onnx.is_in_onnx_export():
            win = hp[..., self.window_idx]  # the same windows; unfold does not export with a dynamic batch
        else:
            win = hp.unfold(-1, self.kmax, s)  # (M, c, n_pos, kmax); faster backward than the gather
        if torch.is_grad_enabled() or torch.onnx.is_in_onnx_export():
            cols = torch.cat([win.transpose(1, 2).reshape(m, -1, c * self.kmax), peak], dim=-1)
        else:  # inference: the same matrix, written once instead of copied twice (a third of the model's time)
            cols = hp.new_empty(m, win.shape[2], c * self.kmax + c)
            cols[..., : c * self.kmax].view(m, -1, c, self.kmax).copy_(win.transpose(1, 2))
            cols[..., c * self.kmax :].copy_(peak)
        weight = self.branches.weight * self.branch_mask
        feats = F.gelu(F.linear(cols, weight, self.branches.bias))  # (M, n_pos, F)
        feats = torch.matmul(self.pool_matrix.to(feats.dtype), feats)  # (M, pool_len, F)
        return self.proj(torch.cat([feats.flatten(1), patches.flatten(1).to(feats.dtype)], dim=1))  # (M, D)


def _average_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """``(n_out, n_in)`` rows averaging consecutive, near-equal windows (adaptive average pooling)."""
    out = torch.zeros(n_out, n_in)
    for q in range(n_out):
        start, end = (q * n_in) // n_out, -((-(q + 1) * n_in) // n_out)
        out[q, start:end] = 1.0 / (end - start)
    return out


class Attention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention``."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, n, D) -> (B, n, D)``."""
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, H, n, hd)
        if q.device.type == "cpu" and q.dtype == torch.bfloat16:
            out = matmul_attention(q, k, v)
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


def matmul_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T / sqrt(hd)) v`` as two batched matmuls, ``(B, H, n, hd)`` in and out.

    Used for bf16 on CPU only: there the fused flash-attention kernel's backward is 2-3x slower than
    these matmuls at ECG token counts (90-360; ``benchmarks/model_speed.py``). Everywhere else, and in
    fp32, ``F.scaled_dot_product_attention`` is as fast or faster.
    """
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (B, H, n, n)
    return scores.softmax(dim=-1) @ v


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch per sample with probability ``p`` while training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x * x.new_empty(shape).bernoulli_(keep).div_(keep)


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        *,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, n, D) -> (B, n, D)``."""
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def init_weights(module: nn.Module) -> None:
    """MAE initialisation for ``module.apply``: xavier-uniform linears, zero biases, unit norms."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
