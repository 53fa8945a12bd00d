"""MAE pre-training step throughput and achieved FLOP/s; prints one JSON line per measurement.

Each line: model, shape, dtype, variant (``mae`` = mask ratio 0.75, only visible patches encoded;
``naive`` = the same model with mask ratio 0, every patch encoded), samples/s of a full training step
(forward + backward + AdamW), the step's FLOPs (counted once with ``FlopCounterMode`` on the math
SDPA path, because the fused CPU kernel is invisible to the counter), GFLOP/s, the encoder's FLOPs and
its forward + backward time alone (``mae`` should cost about 1 - mask ratio of ``naive``), and the
1-minute load average before and after. The variants' steps are interleaved so both see the same load
on a shared machine; the best step is the least disturbed one.
Nothing is asserted.

Examples:
    PYTHONPATH=src .venv/bin/python benchmarks/model_speed.py         # ecgmae_small_lead, 100 Hz + ST-MEM shape
    PYTHONPATH=src .venv/bin/python benchmarks/model_speed.py --base  # adds ecgmae_base (slow)
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
        with sdpa_kernel(SDPBackend.MATH), _autocast(bf16, x.device.type):
            out = model(x, mask_ratio=ratio)
        out.loss.backward()
    model.zero_grad(set_to_none=True)
    parts = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    # forward_features is not a module call, so sum the encoder's direct children.
    children = re.compile(r"ECGMAE\.encoder\.(blocks\.\d+|patch_embed|norm)")
    encoder = sum(v for k, v in parts.items() if children.fullmatch(k))
    patch_embed = parts.get("ECGMAE.encoder.patch_embed", 0)
    return {"total": counter.get_total_flops(), "encoder": encoder, "patch_embed": patch_embed}


def _autocast(bf16: bool, device: str = "cpu"):
    return torch.autocast(device, dtype=torch.bfloat16) if bf16 else nullcontext()


def train_step(
    model: ECGMAE,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    ratio: float,
    bf16: bool,
    present: torch.Tensor | None = None,
    sync: bool = False,
) -> float:
    """Seconds of one training step (forward, backward, AdamW); ``sync`` waits for the GPU."""
    t0 = time.perf_counter()
    with _autocast(bf16, x.device.type):
        loss = model(x, mask_ratio=ratio, present=present).loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if sync:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def encoder_step(model: ECGMAE, x: torch.Tensor, keep: torch.Tensor, bf16: bool) -> float:
    """Seconds of the encoder's forward + backward alone on the ``keep`` tokens."""
    t0 = time.perf_counter()
    with _autocast(bf16, x.device.type):
        out = model.encoder.forward_features(x, keep=keep)
    out.float().square().mean().backward()
    model.zero_grad(set_to_none=True)
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def measure(model: ECGMAE, x: torch.Tensor, bf16: bool, variants: dict[str, float], args) -> dict[str, dict]:
    """Time every variant with steps interleaved (mae, naive, mae, ...) so both see the same load."""
    opt = torch.optim.AdamW(model.param_groups(0.05), lr=1e-4)
    n_time = x.shape[-1] // model.encoder.cfg.patch_size
    keeps = {v: random_masking(x.shape[0], x.shape[1], n_time, r).ids_keep for v, r in variants.items()}
    steps: dict[str, list[float]] = {v: [] for v in variants}
    encoder: dict[str, list[float]] = {v: [] for v in variants}
    for i in range(args.warmup + args.steps):
        for v, ratio in variants.items():
            t = train_step(model, opt, x, ratio, bf16)
            e = encoder_step(model, x, keeps[v], bf16)
            if i >= args.warmup:
                steps[v].append(t)
                encoder[v].append(e)
    return {v: {"steps": steps[v], "encoder": encoder[v]} for v in variants}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", action="store_true", help="also measure ecgmae_base (slow)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--base-batch", type=int, default=8, help="batch for ecgmae_base")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant (median, best)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"comma list of {', '.join(SHAPES)}")
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--no-naive", action="store_true", help="skip the mask-ratio-0 baseline")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    models = [("ecgmae_small_lead", args.batch)] + ([("ecgmae_base", args.base_batch)] if args.base else [])
    variants = {"mae": 0.75} if args.no_naive else {"mae": 0.75, "naive": 0.0}
    for name, batch in models:
        for shape in args.shapes.split(","):
            overrides, n_samples = SHAPES[shape]
            torch.manual_seed(0)
            model = create_model(name, **overrides)
            x = synthetic_batch(batch, n_samples, overrides["fs"])
            for dtype in args.dtypes.split(","):
                bf16 = dtype == "bf16"
                flops = {v: count_flops(model, x, r, bf16) for v, r in variants.items()}
                load = os.getloadavg()[0]
                times = measure(model, x, bf16, variants, args)
                for v, ratio in variants.items():
                    med, best = statistics.median(times[v]["steps"]), min(times[v]["steps"])
                    print(
                        json.dumps(
                            {
                                "model": name,
                                "shape": shape,
                                "dtype": dtype,
                                "variant": v,
                                "mask_ratio": ratio,
                                "batch": batch,
                                "threads": torch.get_num_threads(),
                                "step_s": round(med, 4),
                                "best_step_s": round(best, 4),
                                "samples_per_s": round(batch / med, 2),
                                "best_samples_per_s": round(batch / best, 2),
                                "gflop_per_step": round(flops[v]["total"] / 1e9, 2),
                                "gflop_per_s": round(flops[v]["total"] / med / 1e9, 1),
                                "best_gflop_per_s": round(flops[v]["total"] / best / 1e9, 1),
                                "encoder_gflop": round(flops[v]["encoder"] / 1e9, 2),
                                "patch_embed_gflop": round(flops[v]["patch_embed"] / 1e9, 3),
                                "encoder_fwd_bwd_s": round(statistics.median(times[v]["encoder"]), 4),
                                "best_encoder_fwd_bwd_s": round(min(times[v]["encoder"]), 4),
                                "load_avg_1min": [round(load, 2), round(os.getloadavg()[0], 2)],
                            }
                        ),
                        flush=True,
                    )


if __name__ == "__main__":
    main()
