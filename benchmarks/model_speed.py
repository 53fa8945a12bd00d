"""MAE pre-training step throughput and achieved FLOP/s; prints one JSON line per measurement.

Each line: model, shape, dtype, variant (``mae`` = mask ratio 0.75, only visible patches encoded;
``naive`` = the same model with mask ratio 0, every patch encoded), samples/s of a full training step
(forward + backward + AdamW), the step's FLOPs (counted once with ``FlopCounterMode`` on the math
SDPA path, because the fused CPU kernel is invisible to the counter), GFLOP/s, the encoder's FLOPs and
its forward + backward time alone (``mae`` should cost about 1 - mask ratio of ``naive``), and the
1-minute load average before and after (this machine is shared: compare lines taken at low load).
Nothing is asserted.

Examples:
    PYTHONPATH=src .venv/bin/python benchmarks/model_speed.py            # ecgmae_small, 100 Hz and ST-MEM shape
    PYTHONPATH=src .venv/bin/python benchmarks/model_speed.py --base     # adds ecgmae_base (slow)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
from contextlib import nullcontext

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ecgmae.models import ECGMAE, create_model
from ecgmae.models.mae import random_masking

# name -> (model overrides, samples): 100 Hz x 10 s, and the ST-MEM comparison shape (250 Hz, 2250, patch 75).
SHAPES = {
    "100Hz_10s": ({"fs": 100.0}, 1000),
    "stmem_250Hz_2250": ({"fs": 250.0, "patch_size": 75}, 2250),
}


def synthetic_batch(batch: int, n_samples: int, fs: float, seed: int = 0) -> torch.Tensor:
    """ECG-like beats plus noise, ``(B, 12, T)`` in mV."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n_samples) / fs
    phase = torch.rand(batch, 1, 1, generator=g)
    beats = torch.exp(-(((t + phase) % 0.8 - 0.4) ** 2) / (2 * 0.02**2))
    amp = torch.linspace(-1.0, 1.5, 12)[None, :, None]
    return (amp * beats + 0.05 * torch.randn(batch, 12, n_samples, generator=g)).float()


def count_flops(model: ECGMAE, x: torch.Tensor, ratio: float, bf16: bool) -> dict[str, float]:
    """FLOPs of one forward + backward, total and per top-level part."""
    counter = FlopCounterMode(display=False)
    with counter:
        with sdpa_kernel(SDPBackend.MATH), _autocast(bf16):
            out = model(x, mask_ratio=ratio)
        out.loss.backward()
    model.zero_grad(set_to_none=True)
    parts = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    # forward_features is not a module call, so sum the encoder's direct children.
    children = re.compile(r"ECGMAE\.encoder\.(blocks\.\d+|patch_embed|norm)")
    encoder = sum(v for k, v in parts.items() if children.fullmatch(k))
    patch_embed = parts.get("ECGMAE.encoder.patch_embed", 0)
    return {"total": counter.get_total_flops(), "encoder": encoder, "patch_embed": patch_embed}


def _autocast(bf16: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()


def time_steps(model: ECGMAE, x: torch.Tensor, ratio: float, bf16: bool, warmup: int, steps: int) -> list[float]:
    """Seconds of each timed training step (forward, backward, AdamW)."""
    opt = torch.optim.AdamW(model.param_groups(0.05), lr=1e-4)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        with _autocast(bf16):
            loss = model(x, mask_ratio=ratio).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def time_encoder(model: ECGMAE, x: torch.Tensor, ratio: float, bf16: bool, reps: int) -> list[float]:
    """Seconds of the encoder's forward + backward alone, on the kept tokens of a fresh mask."""
    n_time = x.shape[-1] // model.encoder.cfg.patch_size
    keep = random_masking(x.shape[0], x.shape[1], n_time, ratio).ids_keep
    times = []
    for _ in range(reps + 1):  # the first is a warm-up
        t0 = time.perf_counter()
        with _autocast(bf16):
            out = model.encoder.forward_features(x, keep=keep)
        out.float().square().mean().backward()
        times.append(time.perf_counter() - t0)
    model.zero_grad(set_to_none=True)
    return times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", action="store_true", help="also measure ecgmae_base (slow)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--base-batch", type=int, default=8, help="batch for ecgmae_base")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median and best reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"comma list of {', '.join(SHAPES)}")
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--no-naive", action="store_true", help="skip the mask-ratio-0 baseline")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    models = [("ecgmae_small", args.batch)] + ([("ecgmae_base", args.base_batch)] if args.base else [])
    variants = [("mae", 0.75)] + ([] if args.no_naive else [("naive", 0.0)])
    for name, batch in models:
        for shape in args.shapes.split(","):
            overrides, n_samples = SHAPES[shape]
            torch.manual_seed(0)
            model = create_model(name, **overrides)
            x = synthetic_batch(batch, n_samples, overrides["fs"])
            for dtype in args.dtypes.split(","):
                bf16 = dtype == "bf16"
                for variant, ratio in variants:
                    flops = count_flops(model, x, ratio, bf16)
                    load = os.getloadavg()[0]
                    step = time_steps(model, x, ratio, bf16, args.warmup, args.steps)
                    enc = time_encoder(model, x, ratio, bf16, max(2, args.steps // 2))
                    med, best = statistics.median(step), min(step)
                    print(json.dumps({
                        "model": name, "shape": shape, "dtype": dtype, "variant": variant,
                        "mask_ratio": ratio, "batch": batch, "threads": torch.get_num_threads(),
                        "step_s": round(med, 4), "best_step_s": round(best, 4),
                        "samples_per_s": round(batch / med, 2), "best_samples_per_s": round(batch / best, 2),
                        "gflop_per_step": round(flops["total"] / 1e9, 2),
                        "gflop_per_s": round(flops["total"] / med / 1e9, 1),
                        "encoder_gflop": round(flops["encoder"] / 1e9, 2),
                        "patch_embed_gflop": round(flops["patch_embed"] / 1e9, 3),
                        "encoder_fwd_bwd_s": round(statistics.median(enc), 4),
                        "load_avg_1min": [round(load, 2), round(os.getloadavg()[0], 2)],
                    }), flush=True)


if __name__ == "__main__":
    main()
