"""Supervised reference CNN: ``xresnet1d50`` / ``xresnet1d101`` (fastai xresnet in 1-D).

As benchmarked on PTB-XL by Strodthoff et al. 2020 ("Deep learning for ECG analysis: benchmarks and
insights from PTB-XL"): a stem of three conv-bn-relu (kernel 5, the first with stride 2) and a max-pool,
four stages of bottleneck blocks (expansion 4, kernel 5, stages after the first downsample by 2 with an
average-pooled shortcut), and a head of concatenated adaptive average + max pooling, batch norm,
dropout and two linear layers. It is registered like every model (``create_model("xresnet1d50",
num_classes=5)``), trains from scratch only (``finetune --mode scratch``) and takes the same inputs as
:class:`~ecgmae.models.ECGClassifier`: ``(B, L, T)`` and ``lead_idx``.
"""

from __future__ import annotations

import torch
from torch import nn

from ecgmae.config import ConfigError
from ecgmae.models.config import XResNetConfig
from ecgmae.models.encoder import param_groups


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
        cfg: architecture, input leads and head settings.
        num_classes: K outputs.
    """

    def __init__(self, cfg: XResNetConfig, num_classes: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"{cfg.arch}: num_classes must be >= 1, got {num_classes}")
        self.cfg, self.num_classes = cfg, int(num_classes)
        ks = cfg.kernel_size
        stem = [cfg.n_leads, 32, 32, 64]
        self.stem = nn.Sequential(
            *[_conv_bn(stem[i], stem[i + 1], ks, stride=2 if i == 0 else 1) for i in range(3)],
            nn.MaxPool1d(3, stride=2, padding=1),
        )
        blocks: list[nn.Module] = []
        ni = 64
        for i, n in enumerate(cfg.layers):
            nh = 64 * 2 ** min(i, 3)
            for j in range(n):
                blocks.append(Bottleneck(ni, nh, nh * 4, stride=2 if (i > 0 and j == 0) else 1, ks=ks))
                ni = nh * 4
        self.blocks = nn.Sequential(*blocks)
        self.num_features = 2 * ni
        p = cfg.head_dropout
        self.head = nn.Sequential(
            nn.BatchNorm1d(self.num_features),
            nn.Dropout(p / 2),
            nn.Linear(self.num_features, cfg.head_hidden),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(cfg.head_hidden),
            nn.Dropout(p),
            nn.Linear(cfg.head_hidden, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight)

    def _expand(self, x: torch.Tensor, lead_idx: torch.Tensor | None) -> torch.Tensor:
        """Rows of ``x`` placed at their ``lead_idx`` channels; absent leads are zero: ``(B, n_leads, T)``."""
        n_leads = self.cfg.n_leads
        if lead_idx is None:
            if x.shape[1] != n_leads:
                raise ValueError(f"{self.cfg.arch}: input has {x.shape[1]} leads, the model {n_leads}; pass lead_idx")
            return x
        full = x.new_zeros(x.shape[0], n_leads, x.shape[2])
        full[:, lead_idx.to(x.device)] = x
        return full

    def forward_features(self, x: torch.Tensor, lead_idx: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, L, T) -> (B, C, T / 32)``: the last stage's feature map."""
        return self.blocks(self.stem(self._expand(x, lead_idx)))

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """``(B, C, T') -> (B, K)`` logits, or the ``(B, 2C)`` average + max pooled features when ``pre_logits``."""
        pooled = torch.cat([feats.mean(dim=-1), feats.amax(dim=-1)], dim=1)
        return pooled if pre_logits else self.head(pooled)

    def forward(self, x: torch.Tensor, lead_idx: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, L, T) -> (B, K)`` logits."""
        return self.forward_head(self.forward_features(x, lead_idx=lead_idx))

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor, lead_idx: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, L, T) -> (B, K)`` sigmoid probabilities."""
        return torch.sigmoid(self.forward(x, lead_idx=lead_idx).float())

    def param_groups(self, weight_decay: float, layer_decay: float = 1.0) -> list[dict]:
        """One learning rate everywhere (no pre-trained layers to protect); no decay on biases and norms."""
        return param_groups(self.named_parameters(), weight_decay)
