"""Optimiser hygiene: decay only weight matrices, and a schedule that is a pure function of the step."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from ecgmae.engine.config import OptimConfig


def warmup_steps(cfg: OptimConfig, total_steps: int) -> int:
    """Warm-up length in steps: a fraction of ``total_steps`` if ``cfg.warmup < 1``, else a count."""
    if cfg.warmup < 1:
        return int(round(cfg.warmup * total_steps))
    return int(cfg.warmup)


def lr_factor(step: int, total_steps: int, warmup: int, min_ratio: float) -> float:
    """Multiplier of the peak LR at ``step``: linear warm-up to 1, then cosine down to ``min_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if total_steps <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(
    groups: Iterable[dict[str, Any]], cfg: OptimConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over ``groups`` (each may carry ``lr_scale``) with the warm-up + cosine schedule.

    The schedule is stepped every optimiser step; each group's LR is ``lr * lr_scale * factor``.
    """
    groups = [dict(g) for g in groups if len(g["params"]) > 0]
    for g in groups:
        g["lr"] = cfg.lr * g.get("lr_scale", 1.0)
    betas = (float(cfg.betas[0]), float(cfg.betas[1]))
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
    warm = warmup_steps(cfg, total_steps)

    def factor(step: int) -> float:
        return lr_factor(step, total_steps, warm, cfg.min_lr_ratio)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, [factor] * len(groups))
    return opt, sched
