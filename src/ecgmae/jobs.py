"""What the multi-run jobs (``demo`` and ``benchmark``) share: the folder a job owns, the downstream epoch
schedule, and the expected cost of a stage (what the stage lines' ETA is weighted by)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ecgmae.errors import DataError
from ecgmae.outputs import check_own_folder
from ecgmae.utils import write_json_atomic


def claim_out(
    out: Path, settings: dict[str, Any], stamp_name: str, *, names: tuple[str, ...], overwrite: bool = False
) -> None:
    """Make ``out`` the home of a multi-run job with these ``settings`` (JSON-able).

    Re-running with the same settings continues (finished runs are reused); other settings are refused
    unless ``overwrite``, which deletes ``out`` first. Only a job's own folder is used: ``out`` must be
    absent, empty or hold ``stamp_name``, and to be deleted it may hold nothing but ``names`` (glob
    patterns of what the job writes).

    Raises:
        DataError: ``out`` holds a job with other settings, or is not this job's folder.
    """
    stamp = out / stamp_name
    what = f"{stamp_name.split('_')[0]} folder"
    check_own_folder(
        out, what, marked=lambda f: (f / stamp_name).is_file(), names=(stamp_name, *names) if overwrite else None
    )
    if overwrite and out.exists():
        shutil.rmtree(out)
    if stamp.exists() and json.loads(stamp.read_text()) != json.loads(json.dumps(settings)):
        raise DataError(f"{out}: holds a run with other settings ({stamp}); use --overwrite or another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(stamp, settings)


def epochs_for(base: int, fraction: float) -> int:
    """Downstream epochs at a label ``fraction``: x3 below 50 %, x6 below 5 % (few labels, few steps)."""
    return base if fraction >= 0.5 else base * 3 if fraction >= 0.05 else base * 6


def stage_cost(
    epochs: int, n_train: int, n_val: int, n_test: int, *, max_steps: int = -1, batch_size: int = 1
) -> float:
    """Expected cost of one training run in records passed through the model.

    ``epochs`` over ``n_train`` records with a validation pass after each, then one test pass; a
    forward-only pass counts as a third of a training one. A run capped at ``max_steps >= 0`` trains at
    most that many batches and validates about once.
    """
    if max_steps >= 0:
        return min(epochs * n_train, max_steps * batch_size) + (n_val + n_test) / 3
    return epochs * (n_train + n_val / 3) + n_test / 3
