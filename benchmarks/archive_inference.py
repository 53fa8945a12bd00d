"""Inference over an archive: ``ecgmae embed`` and ``ecgmae predict`` end to end over a folder of WFDB files.

    python benchmarks/archive_inference.py                        # 100,000 records (12 GB of WFDB files)
    python benchmarks/archive_inference.py --n 5000 --sample 300  # the small-scale run
    python benchmarks/archive_inference.py --n 5000 --workers 1,2 --extra "--threads 1"

Generates (once; resumable, each file written atomically) ``--n`` synthetic 12-lead, 10 s, 500 Hz records as
WFDB format-16 files in ``OUT/archive/NNN/`` (1,000 per folder; one record in the middle has a truncated data
file, so the skip path runs too), a tiny classifier for ``predict`` (the shipped ``ecgmae-small`` encoder
fine-tuned for a few steps on 500 of the records), then runs each command as a user would, in its own
process, and prints one JSON line per run: records/s (and without the start-up: the same command's wall time
on one record), CPU ms per record (all processes), peak RSS of the largest process, the process tree's PSS by a
quarter, by half and over the whole run (memory must not grow with N: the three agree when it does not), the
load average before and after, and the CPU share other processes took meanwhile. Then the cost split, each
stage alone on ``--sample`` records in this process on one thread: reading, preprocessing, the model's forward
pass, and windows + pooling + writing. A table of everything closes the output.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stages import Stages, say

FS, SECONDS, PER_FOLDER, POOL = 500, 10, 1000, 500
REC_BYTES = 12 * FS * SECONDS * 2 + 1024  # format 16 data + header


# ------------------------------------------------------------------------------------------ the archive
def make_archive(out: Path, n: int) -> tuple[Path, int]:
    """``n`` records under ``out/archive`` (kept between runs; missing ones are written) and the bad one's index."""
    import numpy as np

    from ecgmae.data.io import read_record
    from ecgmae.data.sources.synthetic import write_wfdb_folder
    from ecgmae.data.wfdb_write import write_wfdb16

    pool = out / "pool"
    if not pool.is_dir():
        say(f"generating {POOL} synthetic records in {pool}")
        write_wfdb_folder(pool, POOL, fs=FS, seconds=SECONDS, quiet=True)
    archive, bad = out / "archive", n // 2
    todo = [i for i in range(n) if not _stem(archive, i).with_suffix(".hea").exists()]
    if not todo:
        return archive, bad
    need = len(todo) * REC_BYTES
    free = shutil.disk_usage(out).free
    if need > 0.9 * free:
        raise SystemExit(f"{len(todo)} records need {need / 1e9:.1f} GB, {free / 1e9:.1f} GB free: use a smaller --n")
    recs = [read_record(h) for h in sorted(pool.glob("*.hea"))]
    say(f"writing {len(todo)} records ({need / 1e9:.1f} GB) into {archive}")
    for k, i in enumerate(todo):
        rec, stem = recs[i % len(recs)], _stem(archive, i)
        stem.parent.mkdir(parents=True, exist_ok=True)
        signal = np.roll(rec.signal, 37 * (i // len(recs)), axis=1)  # copies of the pool differ in phase
        write_wfdb16(stem, signal, FS, rec.leads, [f"archive record {i}"], adc_gain=1000.0)
        if i == bad:  # cut the data file in half: "truncated", skipped with its reason
            dat = stem.with_suffix(".dat")
            os.truncate(dat, dat.stat().st_size // 2)
        if k % 10000 == 9999:
            say(f"  {k + 1} written")
    return archive, bad


def _stem(archive: Path, i: int) -> Path:
    return archive / f"{i // PER_FOLDER:03d}" / f"r{i:06d}"


def make_classifier(out: Path) -> Path:
    """A classifier run: ``ecgmae-small`` fine-tuned for 30 steps on a store of the pool's 500 records."""
    stages = Stages(out)
    store, run = out / "pool_store", out / "classifier"
    stages.run("prepare", ["prepare", "--source", "folder", "--src", str(out / "pool"), "--out", str(store),
                           "--quiet"], store / "meta.json")  # fmt: skip
    stages.run("finetune", ["finetune", "--data", str(store), "--encoder", "ecgmae-small", "--out", str(run),
                            "--max-steps", "30", "--quiet"], run / "classifier.safetensors")  # fmt: skip
    return run


# ------------------------------------------------------------------------------------ end to end runs
def _tree_pss(pid: int) -> int:
    """Proportional set size of ``pid`` and all its descendants, in bytes (forked readers share the parent's
    pages: their RSS would count those once per process, PSS divides them among the sharers)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += next(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError, StopIteration):
            continue
    return total


def _busy_jiffies() -> tuple[int, int]:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4], sum(v)  # busy (all but idle and iowait), all


def end_to_end(cmd: list[str], n_records: int, startup_s: float = 0.0) -> dict[str, Any]:
    """Run ``cmd``; wall time, CPU and peak RSS (``wait4``: the process and the children it reaped), PSS samples
    of the process tree, and the machine's load around it. ``startup_s``: the same command's wall time on one
    record (imports, loading the model), left out of ``steady_records_per_s``."""
    load0, (busy0, all0) = os.getloadavg(), _busy_jiffies()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    samples: list[tuple[float, int]] = []
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    reader.start()
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            samples.append((time.perf_counter() - t0, _tree_pss(proc.pid)))
            done.wait(0.05)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    done.set()
    poller.join()
    reader.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    (busy1, all1), load1 = _busy_jiffies(), os.getloadavg()
    text = "".join(lines)
    if proc.returncode != 0:
        raise SystemExit(f"{shlex.join(cmd)} failed ({proc.returncode}):\n{text[-3000:]}")
    cpu = usage.ru_utime + usage.ru_stime
    ticks = os.sysconf("SC_CLK_TCK")
    machine_busy_s = (busy1 - busy0) / ticks

    def rss_at(frac: float) -> float:
        return round(max([r for t, r in samples if t <= frac * wall] or [0]) / 2**20, 1)

    return {
        "records_per_s": round(n_records / wall, 1),
        "steady_records_per_s": round(n_records / max(wall - startup_s, 1e-9), 1),
        "wall_s": round(wall, 2),
        "startup_s": round(startup_s, 2),
        "cpu_ms_per_record": round(1000 * cpu / n_records, 3),
        "peak_rss_mb_largest_process": round(usage.ru_maxrss / 1024, 1),
        "peak_pss_mb_tree": rss_at(1.0),
        "pss_mb_tree_by_25pct": rss_at(0.25),
        "pss_mb_tree_by_50pct": rss_at(0.5),
        "load_before": [round(x, 2) for x in load0],
        "load_after": [round(x, 2) for x in load1],
        "others_cpu_pct_of_machine": round(100 * max(0.0, machine_busy_s - cpu) / ((all1 - all0) / ticks), 1),
        "cores": os.cpu_count(),
        "last_line": text.strip().splitlines()[-1] if text.strip() else "",
    }


# ----------------------------------------------------------------------------------------- cost split
def cost_split(archive: Path, sample: int, classifier: Path) -> dict[str, Any]:
    """Each stage alone on ``sample`` records, one thread, median of 3 repeats (ms per record)."""
    import numpy as np
    import torch

    from ecgmae import load
    from ecgmae.data.io import read_record
    from ecgmae.data.prepared import prepare_record
    from ecgmae.eval.pooling import pool_windows
    from ecgmae.inference import window_batches

    torch.set_num_threads(1)
    whole = 12 * FS * SECONDS * 2  # bytes of an intact data file (the truncated one is left out)
    heads = [h for h in sorted(archive.glob("*/*.hea")) if h.with_suffix(".dat").stat().st_size == whole][:sample]
    out: dict[str, Any] = {"sample": len(heads), "torch_threads": 1}

    def timed(name: str, fn: Any) -> Any:
        times, result = [], None
        for _ in range(3):
            t0 = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t0)
        out[name] = round(1000 * float(np.median(times)) / len(heads), 3)
        return result

    recs = timed("read_ms", lambda: [read_record(h) for h in heads])
    for what, run in (("embed", "ecgmae-small"), ("predict", str(classifier))):
        model = load(run)
        preps = timed(f"{what}_preprocess_ms", lambda m=model: [prepare_record(m.preprocessing, r) for r in recs])
        batches = list(window_batches(preps, model.window, model.stride, 64))
        net = model.module if what == "predict" else model.encoder

        def forward(net: Any = net, batches: list[Any] = batches, what: str = what) -> list[np.ndarray]:
            with torch.inference_mode():
                if what == "predict":
                    return [net.predict_proba(torch.as_tensor(x)).numpy() for _, x, _ in batches]
                return [net(torch.as_tensor(x)).numpy() for _, x, _ in batches]

        outs = timed(f"{what}_forward_ms", forward)
        ids = np.concatenate([i for i, _, _ in batches])

        def pool_write(outs: list[np.ndarray] = outs, ids: np.ndarray = ids) -> None:
            import io

            _, pooled = pool_windows(ids, np.concatenate(outs), "mean")
            np.save(io.BytesIO(), pooled.astype(np.float32))

        timed(f"{what}_windows_pool_write_ms", lambda b=batches, p=preps, m=model: (
            list(window_batches(p, m.window, m.stride, 64)), pool_write()))  # fmt: skip
        total = out["read_ms"] + out[f"{what}_preprocess_ms"] + out[f"{what}_forward_ms"]
        total += out[f"{what}_windows_pool_write_ms"]
        out[f"{what}_total_ms"] = round(total, 3)
        flops = _flops(net, batches[0][1][:1], what)
        out[f"{what}_model_mflop_per_record"] = round(flops / 1e6, 1)
        out[f"{what}_model_gflops"] = round(flops / 1e6 / out[f"{what}_forward_ms"], 1)
    return out


def _flops(net: Any, x: Any, what: str) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        net.predict_proba(torch.as_tensor(x)) if what == "predict" else net(torch.as_tensor(x))
    return float(fc.get_total_flops())


# ----------------------------------------------------------------------------------------------- main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/archive"), help="work folder (kept: generation resumes)")
    p.add_argument("--n", type=int, default=100_000, help="records in the archive (default 100,000)")
    p.add_argument("--workers", default="default", help="comma-separated --workers values ('default': no flag)")
    p.add_argument("--extra", default="", help="more flags for both commands, e.g. '--threads 1'")
    p.add_argument("--commands", default="embed,predict", help="which commands to run ('': only generate)")
    p.add_argument("--sample", type=int, default=500, help="records for the cost split (0: skip it)")
    p.add_argument("--repeats", type=int, default=1, help="runs of each command and --workers value")
    args = p.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    archive, bad = make_archive(args.out, args.n)
    n_scored = args.n - (1 if bad < args.n else 0)
    classifier = make_classifier(args.out) if "predict" in args.commands else None
    single = args.out / "one_record"  # the fixed cost of a run: imports, loading the model
    if not single.is_dir():
        single.mkdir()
        for f in _stem(archive, 0).parent.glob(f"{_stem(archive, 0).name}.*"):
            shutil.copy(f, single / f.name)
    rows: list[dict[str, Any]] = []
    workers = [w.strip() for w in args.workers.split(",")]
    commands = [c for c in args.commands.split(",") if c]
    for rep in range(args.repeats if commands else 0):
        for w in workers:
            for what in commands:
                ckpt, ext = ("ecgmae-small", "npz") if what == "embed" else (str(classifier), "csv")
                cmd = [sys.executable, "-m", "ecgmae", what, "--checkpoint", ckpt, "--src", str(archive),
                       "--out", str(args.out / f"out_{what}.{ext}"), "--overwrite", "--quiet"]  # fmt: skip
                cmd += [] if w == "default" else ["--workers", w]
                cmd += shlex.split(args.extra)
                one = [*cmd[: cmd.index("--src") + 1], str(single), *cmd[cmd.index("--src") + 2 :]]
                startup = end_to_end(one, 1)["wall_s"]
                row = {"command": what, "workers": w, "extra": args.extra, "n": args.n, "repeat": rep}
                row |= end_to_end(cmd, n_scored, startup)
                print(json.dumps(row), flush=True)
                rows.append(row)
    split = cost_split(archive, args.sample, classifier or Path()) if args.sample and commands else None
    if split:
        print(json.dumps({"cost_split": split}), flush=True)
    _table(rows, split)


def _table(rows: list[dict[str, Any]], split: dict[str, Any] | None) -> None:
    print("\n| command | workers | extra | N | records/s (without the start-up) | CPU ms/record | peak RSS MB of the "
          "largest process | tree PSS MB by 25 % / 50 % / peak | load before -> after | others' CPU % |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['command']} | {r['workers']} | {r['extra'] or '-'} | {r['n']} | {r['records_per_s']} "
              f"({r['steady_records_per_s']}) | {r['cpu_ms_per_record']} | {r['peak_rss_mb_largest_process']} | "
              f"{r['pss_mb_tree_by_25pct']} / {r['pss_mb_tree_by_50pct']} / {r['peak_pss_mb_tree']} | "
              f"{r['load_before'][0]} -> {r['load_after'][0]} | {r['others_cpu_pct_of_machine']} |")  # fmt: skip
    if split:
        print(f"\ncost split, one thread, {split['sample']} records, ms per record (median of 3):")
        print("| command | read | preprocess | model forward | windows + pool + write | total | model GFLOP/s |")
        print("|---|---|---|---|---|---|---|")
        for what in ("embed", "predict"):
            if f"{what}_total_ms" in split:
                print(f"| {what} | {split['read_ms']} | {split[f'{what}_preprocess_ms']} | "
                      f"{split[f'{what}_forward_ms']} | {split[f'{what}_windows_pool_write_ms']} | "
                      f"{split[f'{what}_total_ms']} | {split[f'{what}_model_gflops']} "
                      f"({split[f'{what}_model_mflop_per_record']} MFLOP/record) |")  # fmt: skip


if __name__ == "__main__":
    main()
