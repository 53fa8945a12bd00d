"""Load test of ``ecgmae serve`` on 127.0.0.1 beside the in-process batched ``predict_proba`` rate (issue 15).

Starts the server in its own process on a free loopback port, lets ``--clients`` threads POST real
records (WFDB ``.hea`` + signal file, multipart, as a user would) to ``/v1/predict`` for ``--seconds``,
then stops it. Prints one JSON line and a summary: requests/s, latency p50/p95/p99, errors, the
server's peak resident memory (``VmHWM``), its model calls (records per call: the batching), its CPU
time per request, and the in-process rate and CPU time per record of ``ecgmae.load(...).predict_proba``
over batches of the same records (read once, as the reference; and read from their files each time,
as the server reads each upload). On a shared machine the CPU times compare better than the rates. The
server writes uploads under ``TMPDIR`` (``TMPDIR=/dev/shm`` keeps them in memory). Traffic stays on the
loopback address and stops by itself. Nothing is asserted.

    .venv/bin/python benchmarks/serve.py --checkpoint runs/demo/finetune_1
    .venv/bin/python benchmarks/serve.py --checkpoint runs/ft --records ../shared/data/cinc2021-sample \\
        --clients 16 --seconds 30 --jsonl runs/serve_bench.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ECGMAE_SHARED_DATA", ROOT.parent / "shared" / "data"))


def records(folder: Path, limit: int) -> list[tuple[str, list[tuple[str, tuple[str, bytes]]]]]:
    """``(header path, multipart files)`` of the WFDB records in ``folder`` (the header and its signal file)."""
    out = []
    for hea in sorted(folder.glob("*.hea"))[:limit]:
        sig = next((p for p in (hea.with_suffix(".mat"), hea.with_suffix(".dat")) if p.exists()), None)
        if sig is not None:
            out.append((str(hea), [("files", (p.name, p.read_bytes())) for p in (hea, sig)]))
    if not out:
        raise SystemExit(f"no WFDB records in {folder}")
    return out


def in_process(checkpoint: str, heads: list[str], batch: int, seconds: float, threads: int) -> dict[str, Any]:
    """Records/s of ``predict_proba`` over batches of ``batch`` records already read into memory."""
    import torch

    import ecgmae
    from ecgmae.data.io import read_record

    torch.set_num_threads(threads)

    model = ecgmae.load(checkpoint)
    recs = [read_record(h) for h in heads]
    model.predict_proba(recs[:batch])  # warm-up
    out: dict[str, Any] = {"batch": batch}
    for key, read in (("", False), ("with_read_", True)):  # records in memory; read from their files each time
        done, t0, cpu0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - t0 < seconds / 2:
            for i in range(0, len(recs), batch):
                part = [read_record(h) for h in heads[i : i + batch]] if read else recs[i : i + batch]
                done += len(model.predict_proba(part))
        out[f"{key}records_per_s"] = done / (time.perf_counter() - t0)
        out[f"{key}cpu_ms_per_record"] = 1e3 * (time.process_time() - cpu0) / done
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load_test(
    url: str, files: list[list[tuple[str, tuple[str, bytes]]]], clients: int, seconds: float
) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client(k: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            i = k
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    r = c.post("/v1/predict", files=files[i % len(files)])
                    status = str(r.status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                dt = time.perf_counter() - t0
                with lock:
                    if status == "200":
                        latencies.append(dt)
                    else:
                        errors[status] = errors.get(status, 0) + 1
                i += clients

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = np.asarray(latencies) * 1e3
    p50, p95, p99 = np.percentile(ms, [50, 95, 99]) if ms.size else (np.nan,) * 3
    return {
        "requests": int(ms.size),
        "requests_per_s": ms.size / wall,
        "p50_ms": float(p50),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "errors": errors,
        "wall_s": wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="classifier run directory")
    ap.add_argument("--records", type=Path, default=SHARED / "cinc2021-sample", help="folder of WFDB records")
    ap.add_argument("--limit", type=int, default=50, help="most records used (default 50)")
    ap.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the load test (default 20)")
    ap.add_argument("--batch-size", type=int, default=32, help="server --batch-size and in-process batch (default 32)")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads, in process and in the server (default 1: no oversubscription on a shared machine)",
    )
    ap.add_argument("--jsonl", type=Path, help="also append the result line here")
    args = ap.parse_args()

    recs = records(args.records, args.limit)
    ref = in_process(args.checkpoint, [h for h, _ in recs], args.batch_size, min(args.seconds, 20.0), args.threads)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ecgmae",
            "serve",
            "--checkpoint",
            args.checkpoint,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--quiet",
            "--batch-size",
            str(args.batch_size),
            "--max-concurrency",
            str(max(32, 2 * args.clients)),
            "--threads",
            str(args.threads),
        ],
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        for _ in range(1200):  # wait for start-up (model load, warm-up)
            if server.poll() is not None:
                raise SystemExit(f"the server exited with {server.returncode}")
            try:
                if httpx.get(url + "/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        cpu0 = cpu_seconds(server.pid)
        result = load_test(url, [f for _, f in recs], args.clients, args.seconds)
        result["server_cpu_ms_per_request"] = 1e3 * (cpu_seconds(server.pid) - cpu0) / max(1, result["requests"])
        calls = httpx.get(url + "/metrics", timeout=10).json()["model_calls"].get("predict", {})
        result["peak_rss_mb"] = peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=60)
    result.update(
        {
            "kind": "serve",
            "checkpoint": args.checkpoint,
            "records": len(recs),
            "clients": args.clients,
            "threads": args.threads,
            "model_calls": calls.get("calls", 0),
            "records_per_call": calls.get("records", 0) / max(1, calls.get("calls", 0)),
            "in_process_records_per_s": ref["records_per_s"],
            "in_process_batch": ref["batch"],
            "in_process_cpu_ms_per_record": ref["cpu_ms_per_record"],
            "in_process_with_read_records_per_s": ref["with_read_records_per_s"],
            "in_process_with_read_cpu_ms_per_record": ref["with_read_cpu_ms_per_record"],
            "ratio_in_process_to_served": ref["records_per_s"] / max(result["requests_per_s"], 1e-9),
            "cores": os.cpu_count(),
            "load_avg_1m": os.getloadavg()[0],
        }
    )
    line = json.dumps(result, sort_keys=True)
    print(line)
    if args.jsonl:
        with open(args.jsonl, "a") as f:
            f.write(line + "\n")
    print(
        f"served: {result['requests_per_s']:.1f} req/s ({result['requests']} in {result['wall_s']:.1f} s, "
        f"{args.clients} clients), latency p50 {result['p50_ms']:.0f} ms, p95 {result['p95_ms']:.0f} ms, "
        f"p99 {result['p99_ms']:.0f} ms, errors {sum(result['errors'].values())}, peak RSS "
        f"{result['peak_rss_mb']:.0f} MB, {result['records_per_call']:.1f} records per model call\n"
        f"in process: {ref['records_per_s']:.1f} records/s (predict_proba, batches of {ref['batch']}); "
        f"in process / served = {result['ratio_in_process_to_served']:.2f}x; reading each record from its "
        f"files too: {ref['with_read_records_per_s']:.1f} records/s\n"
        f"CPU time: {result['server_cpu_ms_per_request']:.1f} ms per served request (server process), "
        f"{ref['cpu_ms_per_record']:.1f} ms per record in process (1-minute load average "
        f"{result['load_avg_1m']:.1f} on {result['cores']} cores)"
    )


if __name__ == "__main__":
    main()
