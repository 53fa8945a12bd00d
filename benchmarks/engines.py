"""Faster ways to run the model, and whether they pay: speed of the model alone and agreement with PyTorch fp32.

    python benchmarks/engines.py                      # ecgmae-small, one thread, batches of 64 and 8
    python benchmarks/engines.py --threads 2 --repeats 9

Engines: ``torch-fp32`` (what ``ecgmae embed`` runs), ``torch-bf16`` (``--precision bf16``: autocast),
``torch-int8`` (``torch.ao.quantization.quantize_dynamic`` of the transformer's and the patch projection's
linear layers), ``onnx-fp32`` (``ecgmae export`` run by ONNX Runtime) and ``onnx-int8`` (that file through
``onnxruntime.quantization.quantize_dynamic``). Speed: windows per second of the model alone on windows already
in memory (rounds alternate the engines; median). Agreement, on the real CinC 2021 sample (``../shared/data``; 12
leads, and lead II alone): cosine of each record's embedding with fp32's (min and mean), and the linear probe of
``real_checks.py`` (macro AUROC ± spread over repeats, the same folds for every engine). One JSON line per engine
and a table.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_checks import SHARED, load_tasks, probe

Run = Callable[[np.ndarray], np.ndarray]  # windows (B, L, T) float32 -> embeddings (B, D)


def engines(model: Any, folder: Path, threads: int) -> dict[str, Run]:
    """Each engine as a function of a batch of windows."""
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from ecgmae.export import export_onnx

    enc = model.encoder
    li = torch.as_tensor(model.lead_idx)
    q = copy.deepcopy(enc)
    q.blocks = torch.ao.quantization.quantize_dynamic(q.blocks, {torch.nn.Linear}, dtype=torch.qint8)
    proj = torch.nn.Sequential(q.patch_embed.proj)
    q.patch_embed.proj = torch.ao.quantization.quantize_dynamic(proj, {torch.nn.Linear}, dtype=torch.qint8)[0]
    export_onnx(model.path, folder / "fp32.onnx")
    quantize_dynamic(str(folder / "fp32.onnx"), str(folder / "int8.onnx"), weight_type=QuantType.QInt8)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sessions = {
        k: ort.InferenceSession(str(folder / f"{k}.onnx"), opts, providers=["CPUExecutionProvider"])
        for k in ("fp32", "int8")
    }

    def torch_run(net: Any, bf16: bool = False) -> Run:
        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                return net(torch.from_numpy(x), lead_idx=li).float().numpy()

        return run

    def onnx_run(name: str) -> Run:
        return lambda x: sessions[name].run(None, {"x": x})[0]

    return {
        "torch-fp32": torch_run(enc),
        "torch-bf16": torch_run(enc, bf16=True),
        "torch-int8": torch_run(q),
        "onnx-fp32": onnx_run("fp32"),
        "onnx-int8": onnx_run("int8"),
    }


def embed(model: Any, run: Run, signals: list[np.ndarray], fs: list[float], leads: list[Any]) -> np.ndarray:
    """Per-record embeddings through ``run``: the API's preprocessing, windows and pooling around it."""
    from ecgmae.eval.pooling import pool_windows
    from ecgmae.inference import window_batches

    preps = [model.prepare(x, f, names)[0][0] for x, f, names in zip(signals, fs, leads, strict=True)]
    batches = list(window_batches(preps, model.window, model.stride, 64))
    ids = np.concatenate([b[0] for b in batches])
    out = np.concatenate([run(np.ascontiguousarray(b[1], np.float32)) for b in batches])
    return pool_windows(ids, out, "mean")[1].astype(np.float32)


def speed(runs: dict[str, Run], x: np.ndarray, batch: int, repeats: int) -> dict[str, float]:
    """Windows per second of each engine over ``x`` in batches of ``batch``: median of alternating rounds."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    for run in runs.values():
        run(x[:batch])  # warm-up
    for _ in range(repeats):
        for name, run in runs.items():
            t0 = time.perf_counter()
            for i in range(0, len(x), batch):
                run(x[i : i + batch])
            times[name].append(time.perf_counter() - t0)
    return {k: round(len(x) / float(np.median(v)), 1) for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="ecgmae-small")
    p.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads (default 1)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--windows", type=int, default=256, help="windows timed per round")
    p.add_argument("--shared", type=Path, default=SHARED)
    args = p.parse_args()

    import torch

    import ecgmae

    torch.set_num_threads(args.threads)
    model = ecgmae.load(args.checkpoint)
    tasks = [t for t in load_tasks(args.shared, leads=("II",), say=lambda s: print(s, file=sys.stderr))
             if t.name.startswith("cinc")]  # fmt: skip
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        runs = engines(model, Path(tmp), args.threads)
        sig = tasks[0] if tasks else None
        rng = np.random.default_rng(0)
        if sig is not None:  # the real windows, repeated up to --windows
            base = np.concatenate([model.prepare(x, f, n)[0][0].x[None, :, : model.window]
                                   for x, f, n in zip(sig.signals, sig.fs, sig.leads, strict=True)])  # fmt: skip
        else:
            base = rng.standard_normal((64, len(model.leads), model.window)).astype(np.float32)
        x = np.ascontiguousarray(np.resize(base, (args.windows, *base.shape[1:])), np.float32)
        rates = {b: speed(runs, x, b, args.repeats) for b in (64, 8)}
        rows = []
        for name, run in runs.items():
            row: dict[str, Any] = {"engine": name, "threads": args.threads}
            row |= {f"windows_per_s_batch{b}": rates[b][name] for b in rates}
            for task in tasks:
                ref = embed(model, runs["torch-fp32"], task.signals, task.fs, task.leads)
                got = embed(model, run, task.signals, task.fs, task.leads)
                cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
                res = probe(task, got)
                row[task.name] = {"cos_min": round(float(cos.min()), 6), "cos_mean": round(float(cos.mean()), 6),
                                  "auroc": round(res["macro"], 3), "auroc_std": round(res["macro_std"], 3)}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\nload {load0[0]:.2f} -> {os.getloadavg()[0]:.2f}; {args.threads} thread(s); {args.checkpoint}")
    names = [t.name for t in tasks]
    print("| engine | windows/s, batch 64 | batch 8 | " + " | ".join(
        f"{n}: cosine min / mean | {n}: probe AUROC" for n in names) + " |")  # fmt: skip
    print("|---|---|---|" + "---|---|" * len(names))
    for r in rows:
        cells = [f"{r[n]['cos_min']:.6f} / {r[n]['cos_mean']:.6f} | {r[n]['auroc']:.3f} ± {r[n]['auroc_std']:.3f}"
                 for n in names]  # fmt: skip
        print(f"| {r['engine']} | {r['windows_per_s_batch64']} | {r['windows_per_s_batch8']} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
