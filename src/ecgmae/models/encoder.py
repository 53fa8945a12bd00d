"""ECGEncoder: patch tokens -> multi-scale convolutional embedding -> transformer.

Token order for ``lead`` tokenisation is lead-major: token ``l * n_time + t`` is lead row ``l``,
time patch ``t``. For ``time`` tokenisation token ``t`` holds all ``n_leads`` rows of time patch ``t``
(flattened lead-major, ``(n_leads, P)``); inputs with fewer leads are zero-filled into their rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from ecgmae.models.config import EncoderConfig
from ecgmae.models.layers import Block, MultiScaleConvEmbed, grid_positions, init_weights, sincos_1d

# Parameters that never get weight decay whatever their shape (positions, lead and special tokens).
NO_DECAY_NAMES = frozenset({"time_pos", "lead_embed", "cls_token", "mask_token", "decoder_lead_embed"})


class ECGEncoder(nn.Module):
    """The encoder that pre-training exports and fine-tuning loads strictly.

    Args:
        cfg: encoder shape; stored as ``.cfg`` so a checkpoint can rebuild the module.
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embed_dim
        in_chans = 1 if cfg.tokenization == "lead" else cfg.n_leads
        self.patch_embed = MultiScaleConvEmbed(
            in_chans,
            cfg.patch_size,
            d,
            fs=cfg.fs,
            kernels=cfg.conv_kernels,
            channels=cfg.conv_channels,
            bottleneck=cfg.conv_bottleneck,
            pool=cfg.conv_pool,
            stride=cfg.conv_stride,
        )
        self.time_pos = nn.Parameter(torch.zeros(cfg.max_patches, d)) if cfg.pos_embed == "learned" else None
        self.lead_embed = nn.Parameter(torch.zeros(cfg.n_leads, d)) if cfg.tokenization == "lead" else None
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d)) if cfg.pool == "cls" else None
        rates = torch.linspace(0.0, cfg.drop_path, cfg.depth, device="cpu").tolist()  # cpu: also under a meta build
        self.blocks = nn.ModuleList(
            Block(d, cfg.num_heads, cfg.mlp_ratio, qkv_bias=cfg.qkv_bias, drop_path=r, eps=cfg.norm_eps) for r in rates
        )
        self.norm = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.apply(init_weights)
        self.patch_embed.reset_parameters()
        for p in (self.time_pos, self.lead_embed, self.cls_token):
            if p is not None:
                nn.init.normal_(p, std=0.02)

    @property
    def embed_dim(self) -> int:
        return self.cfg.embed_dim

    @property
    def depth(self) -> int:
        return self.cfg.depth

    @property
    def num_prefix_tokens(self) -> int:
        """1 with a cls token in front of the patch tokens, else 0."""
        return 0 if self.cls_token is None else 1

    def patch_len(self, n_leads: int | None = None) -> int:
        """Samples in one token: ``patch_size`` (lead) or ``n_leads * patch_size`` (time)."""
        if self.cfg.tokenization == "lead":
            return self.cfg.patch_size
        return (n_leads or self.cfg.n_leads) * self.cfg.patch_size

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, L, T) -> (B, N, patch_len)``; samples past the last whole patch are dropped."""
        b, n_leads, t = x.shape
        p = self.cfg.patch_size
        n_time = t // p
        x = x[..., : n_time * p].reshape(b, n_leads, n_time, p)
        if self.cfg.tokenization == "lead":
            return x.reshape(b, n_leads * n_time, p)
        return x.transpose(1, 2).reshape(b, n_time, n_leads * p)

    def unpatchify(self, patches: torch.Tensor, n_leads: int | None = None) -> torch.Tensor:
        """Exact inverse of :meth:`patchify`: ``(B, N, patch_len) -> (B, L, N_time * P)``.

        Args:
            patches: tokens' samples.
            n_leads: input rows L (default ``cfg.n_leads``).
        """
        b, n, _ = patches.shape
        n_leads = n_leads or self.cfg.n_leads
        p = self.cfg.patch_size
        if self.cfg.tokenization == "lead":
            if n % n_leads:
                raise ValueError(f"unpatchify: {n} tokens do not split into {n_leads} leads")
            return patches.reshape(b, n_leads, (n // n_leads) * p)
        return patches.reshape(b, n, n_leads, p).transpose(1, 2).reshape(b, n_leads, n * p)

    def check_input(self, x: torch.Tensor, lead_idx: torch.Tensor | None) -> torch.Tensor:
        """Validate ``x (B, L, T)`` and return ``lead_idx (L,)`` (default ``arange(L)``)."""
        cfg = self.cfg
        if x.ndim != 3:
            raise ValueError(f"encoder input: expected (batch, leads, samples), got shape {tuple(x.shape)}")
        n_leads, t = x.shape[1], x.shape[2]
        if n_leads < 1:
            raise ValueError("encoder input: no leads")
        if t < cfg.patch_size:
            raise ValueError(f"encoder input: {t} samples is shorter than one patch ({cfg.patch_size})")
        if lead_idx is None:
            if n_leads > cfg.n_leads:
                raise ValueError(f"encoder input: {n_leads} leads, model knows {cfg.n_leads}")
            return torch.arange(n_leads, device=x.device)
        if lead_idx.shape != (n_leads,):
            raise ValueError(f"lead_idx: shape {tuple(lead_idx.shape)} does not match {n_leads} input leads")
        # Reading values back would stall a GPU stream (and break a compiled graph) every step.
        if lead_idx.device.type == "cpu" and not torch.compiler.is_compiling():
            if lead_idx.min() < 0 or lead_idx.max() >= cfg.n_leads:
                raise ValueError(f"lead_idx: values must be in [0, {cfg.n_leads}), got {lead_idx.tolist()}")
            if lead_idx.unique().numel() != n_leads:
                raise ValueError(f"lead_idx: a lead appears twice (repeated index) in {lead_idx.tolist()}")
        return lead_idx.to(x.device)

    def expand_leads(self, x: torch.Tensor, lead_idx: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, L, T) -> (B, n_leads, T)``: rows placed at ``lead_idx``, absent leads zero."""
        if lead_idx is None and x.shape[1] == self.cfg.n_leads:
            self.check_input(x, None)
            return x
        lead_idx = self.check_input(x, lead_idx)
        out = x.new_zeros(x.shape[0], self.cfg.n_leads, x.shape[2])
        out[:, lead_idx] = x
        return out

    def position_table(self, n_time: int, lead_idx: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Additive embedding of every token position: ``(N, D)``, in :meth:`patchify` order."""
        if self.time_pos is None:
            time = sincos_1d(n_time, self.embed_dim, device=device)
        else:
            if n_time > self.cfg.max_patches:
                raise ValueError(
                    f"input has {n_time} time patches; learned positions hold max_patches={self.cfg.max_patches}"
                )
            time = self.time_pos[:n_time]
        return grid_positions(time, None if self.lead_embed is None else self.lead_embed[lead_idx])

    def forward_features(
        self, x: torch.Tensor, keep: torch.Tensor | None = None, lead_idx: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``x (B, L, T) -> tokens (B, n(+1 if cls), D)`` after the final norm.

        Args:
            x: signal in mV, leads first.
            keep: token indices to encode, ``(B, n_keep)`` in :meth:`patchify` order (after lead
                expansion for time tokenisation). Only these patches are embedded: the rest of the
                input is never read, so masked samples cannot leak into the output.
            lead_idx: each input row's position among the ``n_leads`` canonical leads.
        """
        if self.cfg.tokenization == "time":
            x, lead_idx = self.expand_leads(x, lead_idx), None
        lead_idx = self.check_input(x, lead_idx)
        b, _, t = x.shape
        patches = self.patchify(x)  # (B, N, p)
        pos = self.position_table(t // self.cfg.patch_size, lead_idx, x.device)  # (N, D)
        if keep is not None:
            patches = patches.gather(1, keep[..., None].expand(-1, -1, patches.shape[-1]))  # (B, n, p)
            pos = pos[keep]  # (B, n, D)
        n = patches.shape[1]
        in_chans = self.patch_embed.in_chans
        tokens = self.patch_embed(patches.reshape(b * n, in_chans, self.cfg.patch_size)).view(b, n, -1)
        tokens = tokens + pos  # (B, n, D)
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(b, -1, -1).to(tokens.dtype), tokens], dim=1)
        for blk in self.blocks:
            tokens = blk(tokens)
        return self.norm(tokens)

    def pooled_dim(self, mode: str | None = None) -> int:
        """Width of :meth:`pool`'s output for ``mode`` (default ``cfg.pool``)."""
        return {"meanstd": 2, "stats": 4}.get(mode or self.cfg.pool, 1) * self.cfg.embed_dim

    def pool(self, tokens: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        """``(B, n(+1), D) -> (B, F)``: the cls token, the mean of the patch tokens, mean and std, or stats.

        Args:
            tokens: output of :meth:`forward_features`.
            mode: ``"mean"``, ``"cls"``, ``"meanstd"`` (``F = 2 D``) or ``"stats"`` (``F = 4 D``: mean and
                std of the tokens, then mean absolute value and std of their first difference in time);
                default ``cfg.pool``.
        """
        mode = mode or self.cfg.pool
        if mode == "cls":
            if self.cls_token is None:
                raise ValueError("pool='cls' needs an encoder built with pool='cls' (it has no cls token)")
            return tokens[:, 0]
        patches = tokens[:, self.num_prefix_tokens :]  # (B, n, D)
        if mode == "meanstd":
            return torch.cat([patches.mean(dim=1), patches.std(dim=1, correction=0)], dim=-1)  # (B, 2D)
        if mode == "stats":
            if self.cfg.tokenization != "time":
                raise ValueError("pool='stats' needs time tokenisation (tokens in time order)")
            # the first difference in time, as torch.diff computes it (which ONNX export does not know)
            step = patches[:, 1:] - patches[:, :-1] if patches.shape[1] > 1 else torch.zeros_like(patches)
            return torch.cat(
                [
                    patches.mean(dim=1),
                    patches.std(dim=1, correction=0),
                    step.abs().mean(dim=1),
                    step.std(dim=1, correction=0),
                ],
                dim=-1,
            )  # (B, 4D)
        return patches.mean(dim=1)

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """``(B, n(+1), D) -> (B, F)`` pooled features as ``cfg.pool`` says (the encoder has no head, so
        ``pre_logits`` changes nothing; it is there for the contract every model shares)."""
        return self.pool(tokens)

    def forward(self, x: torch.Tensor, lead_idx: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, L, T) -> (B, F)`` pooled features (``F`` = :meth:`pooled_dim`)."""
        return self.forward_head(self.forward_features(x, lead_idx=lead_idx))

    def layer_id(self, name: str) -> int:
        """Depth of a parameter (name relative to the encoder) for layer-wise LR decay: 0..depth+1."""
        if name.startswith(("patch_embed.", "time_pos", "lead_embed", "cls_token")):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.depth + 1


def param_groups(
    named_params: Iterable[tuple[str, nn.Parameter]],
    weight_decay: float,
    *,
    layer_decay: float = 1.0,
    layer_of: Callable[[str], int] | None = None,
    num_layers: int = 0,
) -> list[dict]:
    """Optimiser parameter groups: no weight decay on ``ndim < 2``, biases, norms and embeddings.

    Args:
        named_params: ``module.named_parameters()``; frozen parameters are skipped.
        weight_decay: decay for weight matrices.
        layer_decay: LR multiplier per layer from the top: ``lr_scale = layer_decay ** (num_layers - id)``.
        layer_of: parameter name -> layer id in ``0..num_layers`` (default: everything at the top).
        num_layers: id of the top layer (the head).

    Returns:
        Groups with ``params``, ``weight_decay``, ``lr_scale`` and a ``name``, ordered by layer.
    """
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in named_params:
        if not p.requires_grad:
            continue
        decay = p.ndim >= 2 and name.rsplit(".", 1)[-1] not in NO_DECAY_NAMES
        layer = num_layers if layer_of is None else layer_of(name)
        key = (layer, decay)
        if key not in groups:
            groups[key] = {
                "name": f"layer{layer}_{'decay' if decay else 'no_decay'}",
                "params": [],
                "weight_decay": weight_decay if decay else 0.0,
                "lr_scale": layer_decay ** (num_layers - layer),
            }
        groups[key]["params"].append(p)
    return [groups[k] for k in sorted(groups)]
