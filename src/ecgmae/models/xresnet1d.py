"""Supervised reference CNN: ``xresnet1d50`` / ``xresnet1d101`` (fastai xresnet in 1-D).

As benchmarked on PTB-XL by Strodthoff et al. 2020 ("Deep learning for ECG analysis: benchmarks and
insights from PTB-XL"): a stem of three conv-bn-relu (kernel 5, the first with stride 2) and a max-pool,
four stages of bottleneck blocks (expansion 4, kernel 5, stages after the first downsample by 2 with an
average-pooled shortcut), and a head of concatenated adaptive average + max pooling, batch norm,
dropout and two linear layers. It trains from scratch only (``finetune --mode scratch``) and takes the
same inputs as :class:`~ecgmae.models.ECGClassifier`: ``(B, L, T)`` and ``lead_idx``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ecgmae.config import ConfigError
from ecgmae.models.encoder import param_groups

ARCHS: dict[str, tuple[int, ...]] = {"xresnet1d50": (3, 4, 6, 3), "xresnet1d101": (3, 4, 23, 3)}


def _conv_bn(ni: int, nf: int, ks: int, stride: int = 1, act: bool = True, zero_bn: bool = False) -> nn.Sequential:
    bn = nn.BatchNorm1d(nf)
    nn.init.constant_(bn.weight, 0.0 if zero_bn else 1.0)  # zero-init last BN: each block starts as identity
    layers: list[nn.Module] = [nn.Conv1d(ni, nf, ks, stride=stride, padding=ks // 2, bias=False), bn]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    """1x1 -> k x 1 (stride) -> 1x1 convolutions plus a pooled / projected shortcut: ``(B, ni, T) -> (B, nf, T/s)``."""

    def __init__(self, ni: int, nh: int, nf: int, stride: int, ks: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            _conv_bn(ni, nh, 1), _conv_bn(nh, nh, ks, stride=stride), _conv_bn(nh, nf, 1, act=False, zero_bn=True)
        )
        pool: list[nn.Module] = [nn.AvgPool1d(stride, ceil_mode=True)] if stride != 1 else []
        proj: list[nn.Module] = [_conv_bn(ni, nf, 1, act=False)] if ni != nf else []
        self.idpath = nn.Sequential(*pool, *proj)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.convs(x) + self.idpath(x))


class XResNet1d(nn.Module):
    """xresnet1d classifier: logits for multi-label (sigmoid) use.

    Args:
        layers: bottleneck blocks per stage, e.g. ``(3, 4, 6, 3)`` for xresnet1d50.
        n_leads: input channels (the 12 canonical leads, or a store's own leads).
        num_classes: K outputs.
        kernel_size: of the stem and of the middle convolution of every block.
        head_hidden: width of the head's hidden layer.
        head_dropout: dropout in the head.
        arch: the registered name (recorded in checkpoints).
    """

    patch_size = 1  # any window length works (no patches)

    def __init__(
        self,
        layers: Sequence[int],
        n_leads: int,
        num_classes: int,
        *,
        kernel_size: int = 5,
        head_hidden: int = 128,
        head_dropout: float = 0.5,
        arch: str = "xresnet1d",
    ) -> None:
        super().__init__()
        if num_classes < 1 or n_leads < 1:
            raise ConfigError(f"{arch}: num_classes and n_leads must be >= 1, got {num_classes}, {n_leads}")
        self.layers, self.n_leads, self.num_classes = tuple(int(n) for n in layers), int(n_leads), int(num_classes)
        self.kernel_size, self.head_hidden, self.head_dropout, self.arch = kernel_size, head_hidden, head_dropout, arch
        stem = [n_leads, 32, 32, 64]
        self.stem = nn.Sequential(
            *[_conv_bn(stem[i], stem[i + 1], kernel_size, stride=2 if i == 0 else 1) for i in range(3)],
            nn.MaxPool1d(3, stride=2, padding=1),
        )
        blocks: list[nn.Module] = []
        ni = 64
        for i, n in enumerate(self.layers):
            nh = 64 * 2 ** min(i, 3)
            for j in range(n):
                blocks.append(Bottleneck(ni, nh, nh * 4, stride=2 if (i > 0 and j == 0) else 1, ks=kernel_size))
                ni = nh * 4
        self.blocks = nn.Sequential(*blocks)
        self.num_features = 2 * ni
        self.head = nn.Sequential(
            nn.BatchNorm1d(self.num_features), nn.Dropout(head_dropout / 2), nn.Linear(self.num_features, head_hidden),
            nn.ReLU(inplace=True), nn.BatchNorm1d(head_hidden), nn.Dropout(head_dropout),
            nn.Linear(head_hidden, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight)

    def config_dict(self) -> dict[str, Any]:
        """Plain-data constructor arguments (what a checkpoint stores to rebuild the model)."""
        return {"layers": list(self.layers), "n_leads": self.n_leads, "num_classes": self.num_classes,
                "kernel_size": self.kernel_size, "head_hidden": self.head_hidden,
                "head_dropout": self.head_dropout, "arch": self.arch}

    def _expand(self, x: torch.Tensor, lead_idx: torch.Tensor | None) -> torch.Tensor:
        """Rows of ``x`` placed at their ``lead_idx`` channels; absent leads are zero: ``(B, n_leads, T)``."""
        if lead_idx is None:
            if x.shape[1] != self.n_leads:
                raise ValueError(f"{self.arch}: input has {x.shape[1]} leads, the model {self.n_leads}; "
                                 "pass lead_idx")
            return x
        full = x.new_zeros(x.shape[0], self.n_leads, x.shape[2])
        full[:, lead_idx.to(x.device)] = x
        return full

    def forward_features(self, x: torch.Tensor, lead_idx: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, L, T) -> (B, 2C)`` concatenated average and max pooled features of the last stage."""
        h = self.blocks(self.stem(self._expand(x, lead_idx)))  # (B, C, T / 32)
        return torch.cat([h.mean(dim=-1), h.amax(dim=-1)], dim=1)

    def forward(self, x: torch.Tensor, lead_idx: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, L, T) -> (B, K)`` logits."""
        return self.head(self.forward_features(x, lead_idx=lead_idx))

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor, lead_idx: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, L, T) -> (B, K)`` sigmoid probabilities."""
        return torch.sigmoid(self.forward(x, lead_idx=lead_idx).float())

    def param_groups(self, weight_decay: float, layer_decay: float = 1.0) -> list[dict]:
        """One learning rate everywhere (no pre-trained layers to protect); no decay on biases and norms."""
        return param_groups(self.named_parameters(), weight_decay)


def create_xresnet1d(arch: str, n_leads: int, num_classes: int, **kw: Any) -> XResNet1d:
    """Build a registered variant (``xresnet1d50``, ``xresnet1d101``); ``kw`` as for :class:`XResNet1d`.

    Raises:
        ConfigError: unknown variant or argument.
    """
    if arch not in ARCHS:
        raise ConfigError(f"unknown CNN {arch!r}; available: {', '.join(sorted(ARCHS))}")
    kw = {k: v for k, v in kw.items() if k not in ("layers", "arch")}
    try:
        return XResNet1d(ARCHS[arch], n_leads, num_classes, arch=arch, **kw)
    except TypeError as exc:
        raise ConfigError(f"{arch}: {exc}") from None
