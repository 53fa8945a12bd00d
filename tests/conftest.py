"""Shared fixtures: the real-data folder ``../shared/data`` (skipped clearly when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ECGMAE_SHARED_DATA", ROOT.parent / "shared" / "data"))

# Two cores: keep torch from oversubscribing when pytest and numpy both use threads.
os.environ.setdefault("OMP_NUM_THREADS", "2")


def shared_path(*parts: str) -> Path:
    """Path inside ../shared/data, or skip the test naming what is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real-data sample not found at {path} (set ECGMAE_SHARED_DATA to its folder)")
    return path


@pytest.fixture
def shared_data() -> Path:
    return shared_path()
