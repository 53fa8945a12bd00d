"""Pre-training throughput against this machine's limits (issue 7); prints one JSON line per measurement.

Lines, in order (``kind`` says which):

* ``peak``: in-process ``torch.mm`` peak of this machine (n^3 matmuls, median GFLOP/s) in fp32 and bf16.
* ``train``: one per configuration (shape x dtype x eager/compiled): warm-up, then ``--steps`` full
  training steps (forward, backward, AdamW) of ``ecgmae_small_lead`` on a synthetic batch, exactly as the
  engine runs them (all leads present, ``model.compile()`` in place). ``samples_per_s`` is the median
  step, ``gflops_achieved`` the step's FLOPs (``FlopCounterMode``, math SDPA path, counted once in
  eager) over the median step, ``mfu`` that over the matmul peak of the same dtype, ``peak_mem_mb`` the
  peak anonymous RSS above the level before the first step (CPU) or ``max_memory_allocated`` (GPU).
  Eager lines also give the MAE-vs-naive encoder ratio (encoder forward + backward on the visible tokens
  vs on every token; FLOPs and time). Compiled lines give the first step's time (compilation).
  Each configuration runs in its own process, so memory and compile caches do not leak between them.
* ``memory``: peak memory of the 100 Hz bf16 step at two batch sizes.
* ``data``: ``prepare`` records/s (10 s, 12-lead, 500 Hz WFDB in, 100 Hz out, one worker) at two store
  sizes, store -> batches samples/s through the engine's DataLoader + ``CropDataset`` (0 and 1 workers)
  with its ratio to the fastest model rate at that shape, and the loader's peak memory at both sizes.
* ``targets``: the issue's targets, each with its measured value and whether it is met.

Shapes: ``reference`` = the ST-MEM comparison (lead tokens, 250 Hz x 2250 samples, patch 75, width 256,
depth 8, 4 heads, decoder 128 x 2, mask 0.75); ``default`` = ``ecgmae_small_lead`` (the default model until
v0.2, the ST-MEM-sized lead-token encoder) at 100 Hz x 10 s.
Nothing is asserted. Examples::

    .venv/bin/python benchmarks/throughput.py --quick          # < 1 minute, no compile
    .venv/bin/python benchmarks/throughput.py                  # full run (compile included, ~15 min)
    .venv/bin/python benchmarks/throughput.py --no-compile --steps 10 --jsonl runs/bench.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # model_speed, data_speed beside this file

SHAPES = {"reference": ({"fs": 250.0, "patch_size": 75}, 2250), "default": ({"fs": 100.0}, 1000)}
CLEAN_CORES = 0.15  # a step is clean when other processes used less than this many cores meanwhile
PEER = {"fp32": 24.2, "bf16": 39.5, "bf16+compile": 48.9}  # ST-MEM s256d8, B=32, this machine


class PeakMemory:
    """Peak memory above the level at ``__enter__``, in MB: anonymous RSS polled on CPU, CUDA stats on GPU."""

    def __init__(self, cuda: bool = False, interval: float = 0.005) -> None:
        self.cuda, self.interval, self.peak_mb = cuda, interval, 0.0
        self._stop = threading.Event()

    @staticmethod
    def rss_anon_mb() -> float:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self._max = max(self._max, self.rss_anon_mb())

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated() / 2**20
        else:
            self._base = self._max = self.rss_anon_mb()
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            import torch

            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20 - self._base
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self._max, self.rss_anon_mb()) - self._base


def matmul_peak(dtype: str, n: int = 2048, reps: int = 10, device: str = "cpu") -> tuple[float, float]:
    """Median and best GFLOP/s of ``torch.mm`` on two n x n matrices of ``dtype`` (``fp32`` or ``bf16``)."""
    import torch

    dt = torch.float32 if dtype == "fp32" else torch.bfloat16
    a, b = (torch.randn(n, n, device=device).to(dt) for _ in range(2))
    times = []
    for i in range(reps + 2):
        t0 = time.perf_counter()
        torch.mm(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9, 2 * n**3 / min(times) / 1e9


def run_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """One training configuration, measured in this process (see the module docstring)."""
    import torch

    from ecgmae.models import create_model
    from ecgmae.models.mae import random_masking
    from model_speed import count_flops, encoder_step, synthetic_batch, train_step

    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    overrides, n_samples = SHAPES[cfg["shape"]]
    bf16, batch, cuda = cfg["dtype"] == "bf16", cfg["batch"], cfg["device"] == "cuda"
    model = create_model("ecgmae_small_lead", **overrides).to(cfg["device"])
    x = synthetic_batch(batch, n_samples, overrides["fs"]).to(cfg["device"])
    present = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    row: dict[str, Any] = {"kind": "train", **{k: cfg[k] for k in ("shape", "dtype", "compile", "batch")}}
    opt = torch.optim.AdamW(model.param_groups(0.05), lr=1e-4)
    if cfg["compile"]:
        model.compile()
    step = lambda: train_step(model, opt, x, 0.75, bf16, present=present, sync=cuda)  # noqa: E731
    times, other = [], []
    with PeakMemory(cuda) as mem:  # from before the first step: activations, gradients, AdamW state
        row["first_step_s"] = round(step(), 2)
        for _ in range(cfg["warmup"]):
            step()
        # Other processes on a shared machine slow a step far more than their share: time the clean
        # steps, running up to 3x the steps to find half that many clean ones.
        clean: list[float] = []
        while len(times) < cfg["steps"] or (len(clean) < cfg["steps"] // 2 and len(times) < 3 * cfg["steps"]):
            busy, own = _busy_s(), time.process_time()
            times.append(step())
            other.append(((_busy_s() - busy) - (time.process_time() - own)) / times[-1])
            if other[-1] < CLEAN_CORES:
                clean.append(times[-1])
    med = statistics.median(clean if len(clean) >= max(3, cfg["steps"] // 4) else times)
    row.update(
        steps=len(times),
        clean_steps=len(clean),
        samples_per_s=round(batch / med, 2),
        all_steps_samples_per_s=round(batch / statistics.median(times), 2),
        best_samples_per_s=round(batch / min(times), 2),
        peak_mem_mb=round(mem.peak_mb, 1),
        other_cores_in_steps=round(statistics.mean(other), 2),
        threads=torch.get_num_threads(),
    )
    with torch.compiler.set_stance("force_eager"):  # counted eagerly, after timing (not in the memory peak)
        flops = count_flops(model, x, 0.75, bf16)
    row["gflop_per_step"] = round(flops["total"] / 1e9, 2)
    row["patch_embed_gflop"] = round(flops["patch_embed"] / 1e9, 2)
    row["gflops_achieved"] = round(flops["total"] / med / 1e9, 1)
    if not cfg["compile"] and cfg["encoder_steps"]:  # encoder on visible tokens vs on all of them
        naive = count_flops(model, x, 0.0, bf16)
        n_time = n_samples // model.encoder.cfg.patch_size
        keeps = {r: random_masking(batch, 12, n_time, r, device=x.device).ids_keep for r in (0.75, 0.0)}
        enc_t: dict[float, list[float]] = {0.75: [], 0.0: []}
        for i in range(cfg["encoder_steps"] + 1):
            for r in enc_t:
                t = encoder_step(model, x, keeps[r], bf16)
                if i:
                    enc_t[r].append(t)
        row["encoder_flop_ratio"] = round(flops["encoder"] / naive["encoder"], 3)
        row["encoder_time_ratio"] = round(statistics.median(enc_t[0.75]) / statistics.median(enc_t[0.0]), 3)
    return row


def loader_memory(cfg: dict[str, Any]) -> dict[str, Any]:
    """Peak memory of one epoch of store -> batches (0 workers), from before the store is opened."""
    import torch

    from data_speed import loader_rate

    torch.set_num_threads(1)
    path = Path(cfg["store"])
    with PeakMemory() as mem:
        loader_rate(path, cfg["window"], cfg["batch"], 0, epochs=1)
    return {
        "kind": "data",
        "metric": "loader peak memory",
        "records": cfg["records"],
        "store_mb": round(sum(f.stat().st_size for f in path.iterdir()) / 2**20, 1),
        "peak_mem_mb": round(mem.peak_mb, 1),
    }


def spawn(cfg: dict[str, Any], wait_quiet: float = 0.0) -> dict[str, Any]:
    """Run :func:`run_config` (or :func:`loader_memory` when ``cfg`` names a store) in a fresh interpreter.

    The row gets ``other_cores``: CPU time that other processes of the machine used while it ran, in
    cores (0 = the machine was ours alone). With ``wait_quiet`` > 0, first wait up to that many seconds
    for the machine to be idle.
    """
    waited = _wait_quiet(wait_quiet) if wait_quiet > 0 else 0.0
    busy0, own0, t0 = _busy_s(), _own_cpu_s(), time.perf_counter()
    out = subprocess.run(
        [sys.executable, __file__, "--one", json.dumps(cfg)], stdout=subprocess.PIPE, text=True, check=False
    )
    other = (_busy_s() - busy0) - (_own_cpu_s() - own0)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    row = (
        json.loads(lines[-1])
        if lines and not out.returncode
        else {"kind": "train", **cfg, "error": f"exit code {out.returncode}"}
    )
    row["other_cores"] = round(max(other, 0.0) / (time.perf_counter() - t0), 2)
    if waited:
        row["waited_for_quiet_s"] = round(waited, 1)
    return row


def _busy_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (``/proc/stat``)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, *_ = (int(v) for v in f.readline().split()[1:])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _wait_quiet(max_s: float, threshold: float = 0.1) -> float:
    """Wait (up to ``max_s``) until other processes use under ``threshold`` cores; return the seconds waited."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_s:
        busy, own = _busy_s(), _own_cpu_s()
        time.sleep(1.0)
        if (_busy_s() - busy) - (_own_cpu_s() - own) < threshold:
            break
    return time.perf_counter() - t0 - 1.0


def data_rows(n_small: int, n_large: int, batch: int, model_rate: float) -> list[dict[str, Any]]:
    """``prepare`` and store -> batches rates, and loader memory at two store sizes."""
    import torch

    from data_speed import loader_rate, prepare_rate, write_corpus

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the engine's loader workers run on one thread each
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        src, window = Path(tmp) / "raw", 1000  # 10 s at 100 Hz: the default shape
        write_corpus(Path(tmp), 5, start=90000)  # untimed warm-up: imports, filter design
        prepare_rate(Path(tmp), Path(tmp) / "warm", workers=1)
        src.mkdir()
        stores = {}
        for start, n in ((0, n_small), (n_small, n_large - n_small)):
            write_corpus(src, n, start=start)
            stores[start + n] = Path(tmp) / f"store{start + n}"
            rate = prepare_rate(src, stores[start + n], workers=1)
            rows.append(
                {
                    "kind": "data",
                    "metric": "prepare",
                    "records": start + n,
                    "workers": 1,
                    "records_per_s": round(rate, 1),
                }
            )
        for workers in (0, 1):
            rate = loader_rate(stores[n_large], window, batch, workers)
            rows.append(
                {
                    "kind": "data",
                    "metric": "store->batches",
                    "records": n_large,
                    "workers": workers,
                    "batch": batch,
                    "samples_per_s": round(rate, 1),
                    "x_model_rate": round(rate / model_rate, 1) if model_rate else None,
                }
            )
        for n, path in stores.items():
            rows.append(spawn({"store": str(path), "records": n, "window": window, "batch": batch}))
    torch.set_num_threads(threads)
    return rows


def targets(
    trains: list[dict[str, Any]], mems: list[dict[str, Any]], data: list[dict[str, Any]], peaks: dict[str, float]
) -> dict[str, Any]:
    """The issue's targets with measured values (nothing asserted)."""
    ok = [r for r in trains if "samples_per_s" in r]
    ref = [r for r in ok if r["shape"] == "reference" and r["batch"] == 32]
    best = max(ref, key=lambda r: r["samples_per_s"], default=None)
    eager = [r for r in ok if "encoder_time_ratio" in r]
    loader1 = next((r for r in data if r.get("metric") == "store->batches" and r["workers"] == 1), None)
    prep = [r["records_per_s"] for r in data if r.get("metric") == "prepare"]
    out: dict[str, Any] = {"kind": "targets"}
    if best:
        out["reference_best"] = {
            "config": f"{best['dtype']}{'+compile' if best['compile'] else ''}",
            "samples_per_s": best["samples_per_s"],
            "mfu_bf16_peak": round(best["gflops_achieved"] / peaks["bf16"], 3),
            "met_48_samples_per_s": best["samples_per_s"] >= 48,
            "met_60pct_bf16_peak": best["gflops_achieved"] >= 0.6 * peaks["bf16"],
        }
    if eager:
        out["encoder_time_ratio_vs_naive"] = {f"{r['shape']}/{r['dtype']}": r["encoder_time_ratio"] for r in eager}
    if loader1:
        out["store_batches_x_model_1_worker"] = {
            "value": loader1["x_model_rate"],
            "met_10x": (loader1["x_model_rate"] or 0) >= 10,
        }
    if prep:
        out["prepare_records_per_s_per_worker"] = {"value": min(prep), "met_200": min(prep) >= 200}
    if len(mems) == 2 and all(m.get("peak_mem_mb") for m in mems):
        out["memory_batch_ratio"] = {
            f"B{mems[1]['batch']}/B{mems[0]['batch']}": round(mems[1]["peak_mem_mb"] / mems[0]["peak_mem_mb"], 2),
            "batch_ratio": mems[1]["batch"] / mems[0]["batch"],
        }
    loader_mem = [r for r in data if r.get("metric") == "loader peak memory" and "peak_mem_mb" in r]
    if len(loader_mem) == 2:
        out["loader_memory_mb_by_records"] = {str(r["records"]): r["peak_mem_mb"] for r in loader_mem}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 8, 3 steps, no compile, small data")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per configuration (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps after the first (default 3)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--shapes", default="reference,default", help="comma list of reference, default")
    parser.add_argument("--dtypes", default="fp32,bf16", help="comma list of fp32, bf16")
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time torch.compile (minutes of first step; default on, --no-compile skips)",
    )
    parser.add_argument("--compile-dtypes", default="bf16,fp32", help="dtypes to compile (default both)")
    parser.add_argument("--encoder-steps", type=int, default=5, help="MAE-vs-naive encoder timings (0: skip)")
    parser.add_argument(
        "--records",
        type=int,
        nargs=2,
        default=(300, 1200),
        metavar=("SMALL", "LARGE"),
        help="records in the two stores of the data measurements (default 300 1200)",
    )
    parser.add_argument("--no-data", action="store_true", help="skip the data-path measurements")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=60.0,
        help="seconds to wait for other processes to go idle before each measurement (0: never)",
    )
    parser.add_argument("--jsonl", type=Path, help="also write every line to this file (atomically)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one configuration as JSON
    args = parser.parse_args()
    if args.one:
        cfg = json.loads(args.one)
        print(json.dumps(loader_memory(cfg) if "store" in cfg else run_config(cfg)), flush=True)
        return
    if args.quick:
        args.steps, args.warmup, args.batch, args.compile = 3, 1, 8, False
        args.encoder_steps, args.records, args.wait_quiet = 1, (20, 40), 0.0

    import torch

    from ecgmae.utils import write_text_atomic

    lines: list[dict[str, Any]] = []

    def emit(row: dict[str, Any]) -> None:
        lines.append(row)
        print(json.dumps(row), flush=True)
        if args.jsonl:  # rewritten after every line, so an interrupted run keeps what it measured
            write_text_atomic(args.jsonl, "".join(json.dumps(r) + "\n" for r in lines))

    torch.set_num_threads(args.threads)
    if args.wait_quiet:
        _wait_quiet(args.wait_quiet)
    mm = {d: matmul_peak(d, reps=4 if args.quick else 10, device=args.device) for d in ("fp32", "bf16")}
    peaks = {d: best for d, (_, best) in mm.items()}  # MFU against the best: the conservative choice
    emit(
        {
            "kind": "peak",
            "threads": args.threads,
            "device": args.device,
            "cpu": _cpu_name(),
            "torch": torch.__version__,
            **{f"{d}_gflops_median": round(v[0], 1) for d, v in mm.items()},
            **{f"{d}_gflops_best": round(v[1], 1) for d, v in mm.items()},
        }
    )
    base = {
        "threads": args.threads,
        "device": args.device,
        "steps": args.steps,
        "warmup": args.warmup,
        "batch": args.batch,
        "encoder_steps": args.encoder_steps,
    }
    eager = [(s, d, False) for s in args.shapes.split(",") for d in args.dtypes.split(",")]
    compiled = [(s, d, True) for d in args.compile_dtypes.split(",") for s in args.shapes.split(",")]
    trains, mems, data = [], [], []  # compiled runs last: they are the slow ones
    for shape, dtype, comp in eager:
        trains.append(train_row(base, shape, dtype, comp, peaks, args))
        emit(trains[-1])
    for b in () if args.quick else (args.batch // 4, args.batch):
        row = spawn(
            {
                **base,
                "shape": "default",
                "dtype": "bf16",
                "compile": False,
                "batch": b,
                "encoder_steps": 0,
                "steps": min(args.steps, 5),
                "warmup": 1,
            },
            args.wait_quiet,
        )
        mems.append(
            {
                "kind": "memory",
                "shape": "default",
                "dtype": "bf16",
                "batch": b,
                "peak_mem_mb": row.get("peak_mem_mb"),
                "samples_per_s": row.get("samples_per_s"),
            }
        )
        emit(mems[-1])
    if not args.no_data:
        if args.wait_quiet:
            _wait_quiet(args.wait_quiet)
        rates = [r["samples_per_s"] for r in trains if r.get("shape") == "default" and "samples_per_s" in r]
        for row in data_rows(*args.records, args.batch, max(rates, default=0.0)):
            data.append(row)
            emit(row)
    for shape, dtype, comp in compiled if args.compile else ():
        trains.append(train_row(base, shape, dtype, comp, peaks, args))
        emit(trains[-1])
    mm2 = {d: matmul_peak(d, reps=4 if args.quick else 10, device=args.device) for d in ("fp32", "bf16")}
    emit(
        {
            "kind": "peak",
            "when": "end (MFU above uses the start)",
            **{f"{d}_gflops_best": round(v[1], 1) for d, v in mm2.items()},
        }
    )
    emit(targets(trains, mems, data, peaks))


def train_row(
    base: dict[str, Any], shape: str, dtype: str, comp: bool, peaks: dict[str, float], args: argparse.Namespace
) -> dict[str, Any]:
    """One training configuration in a subprocess, with MFU and the ratio to the peer's number."""
    row = spawn(
        {**base, "shape": shape, "dtype": dtype, "compile": comp, "encoder_steps": 0 if comp else args.encoder_steps},
        args.wait_quiet,
    )
    if "gflops_achieved" in row:
        row["peak_gflops"] = round(peaks[dtype], 1)
        row["mfu"] = round(row["gflops_achieved"] / peaks[dtype], 3)
        if shape == "reference" and args.batch == 32:
            peer = PEER["bf16+compile" if comp and dtype == "bf16" else dtype]
            row["x_peer"] = round(row["samples_per_s"] / peer, 2)
    return row


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    except OSError:
        return "?"


if __name__ == "__main__":
    main()
