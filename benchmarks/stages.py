"""Resumable pipelines of ``ecgmae`` commands for the benchmark scripts: a stage runs once, its product marks it.

``Stages(out).run(name, args, product)`` runs ``python -m ecgmae ARGS`` unless ``product`` exists, and keeps
every attempt's command and wall time in ``OUT/stages.json``, so a pipeline killed at any point is re-run with
the same command and continues where it stopped (a stage whose command can itself resume, such as
``pretrain --resume``, continues inside the stage).
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ecgmae.utils import write_json_atomic

T0 = time.perf_counter()


def say(msg: str) -> None:
    """One progress line with the minutes since the script started."""
    print(f"[{(time.perf_counter() - T0) / 60:6.1f} min] {msg}", flush=True)


class Stages:
    """Commands of the pipeline and their wall times, kept in OUT/stages.json across resumed runs."""

    def __init__(self, out: Path) -> None:
        import json

        self.file = out / "stages.json"
        self.done: dict[str, Any] = json.loads(self.file.read_text()) if self.file.exists() else {}
        self.commands: list[dict[str, Any]] = []

    def run(self, name: str, args: list[str], product: Path, *, env: dict[str, str] | None = None) -> dict[str, Any]:
        """Run ``ecgmae ARGS`` (with ``env`` added to the environment) unless ``product`` exists.

        Returns the stage's record: ``command``, ``wall_s`` (summed over its attempts; an attempt killed
        together with this script has no wall time and counts 0) and ``attempts``.
        """
        cmd = [sys.executable, "-m", "ecgmae", *args]
        rec = self.done.get(name, {"command": None, "wall_s": None, "attempts": []})
        if product.exists():
            self.commands.append({**rec, "stage": name, "ran_now": False})
            same = rec["command"] == shlex.join(cmd)
            say(
                f"{name}: done already ({product})"
                + ("" if same or rec["command"] is None else f"; NOTE: made by {rec['command']}")
            )
            return rec
        say(f"{name}: {shlex.join(args)}")
        now = dt.datetime.now().isoformat(timespec="seconds")
        attempt = {"command": shlex.join(cmd), "env": env or {}, "started": now}
        rec.setdefault("attempts", []).append(attempt)
        self.done[name] = rec
        write_json_atomic(self.file, self.done)
        t = time.perf_counter()
        rc = -1
        try:
            rc = subprocess.run(cmd, check=False, env={**os.environ, **(env or {})}).returncode
        finally:  # an interrupted attempt (Ctrl-C) keeps its wall time too
            attempt["wall_s"] = round(time.perf_counter() - t, 1)
            attempt["exit"] = rc
            write_json_atomic(self.file, self.done)
        if rc:
            raise SystemExit(f"stage {name} failed (exit {rc}): {shlex.join(cmd)}; run the script again to resume")
        rec.update(
            command=shlex.join(cmd),
            wall_s=round(sum(a.get("wall_s") or 0 for a in rec["attempts"]), 1),
            date=dt.datetime.now().isoformat(timespec="seconds"),
        )
        write_json_atomic(self.file, self.done)
        self.commands.append({**rec, "stage": name, "ran_now": True})
        say(f"{name}: {attempt['wall_s'] / 60:.1f} min")
        return rec
