"""Shared fixtures: the real-data folder ``../shared/data`` (skipped clearly when absent)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ECGMAE_SHARED_DATA", ROOT.parent / "shared" / "data"))

# The serve tests' module-scoped fixtures (runs, clf, enc, clf_url, enc_url) live in serve_util.py.
pytest_plugins = ("serve_util",)

# Two cores: keep torch from oversubscribing when pytest and numpy both use threads.
os.environ.setdefault("OMP_NUM_THREADS", "2")


def shared_path(*parts: str) -> Path:
    """Path inside ../shared/data, or skip the test naming what is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real-data sample not found at {path} (set ECGMAE_SHARED_DATA to its folder)")
    return path


def default_sigint() -> None:
    """``preexec_fn`` for a child a test sends SIGINT: SIGINT as a terminal gives it. A shell without job control
    starts background jobs with SIGINT ignored, and an ignored signal stays ignored across exec (a CI job started
    that way would otherwise see the child shrug off Ctrl-C)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def benchmark_script(name: str) -> ModuleType:
    """``benchmarks/NAME.py`` imported as a fresh module (it puts its own folder on ``sys.path``, as when run)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # registered before it runs, as an import would (its dataclasses look it up)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def shared_data() -> Path:
    return shared_path()


@pytest.fixture
def one_thread():
    """Model tests run single-threaded: small ops are faster and other tests share the two cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def ecg_like(b: int, leads: int, t: int, fs: float = 100.0, seed: int = 0, noise: float = 0.05):
    """(B, leads, T) float tensor in mV: beats (narrow Gaussians every 0.8 s), lead-dependent amplitude, noise."""
    import torch

    g = torch.Generator().manual_seed(seed)
    time = torch.arange(t) / fs
    phase = torch.rand(b, 1, 1, generator=g) * 0.8
    beats = torch.exp(-(((time + phase) % 0.8 - 0.4) ** 2) / (2 * 0.02**2))  # (B, 1, T)
    amp = torch.linspace(-1.0, 1.5, leads)[None, :, None]
    return (amp * beats + noise * torch.randn(b, leads, t, generator=g)).float()


def synth_store(root: Path, n: int, *, seed: int, synth_fs: float = 250, fs: float = 50, seconds: float = 5) -> Path:
    """A small prepared store of synthetic labelled 12-lead records (WFDB written at ``synth_fs``, stored at ``fs``)."""
    from ecgmae.data.signal import PreprocessConfig
    from ecgmae.data.sources.synthetic import write_wfdb_folder
    from ecgmae.data.store import prepare_store

    src = write_wfdb_folder(root / "synth", n, fs=synth_fs, seconds=seconds, seed=seed, noise="low", quiet=True)
    # no band-pass: tests feed stored signals back through the API, which then only resamples them
    cfg = PreprocessConfig(fs=fs, seconds=seconds, bandpass=None)
    return prepare_store("folder", src, root / "store", cfg, seed=0, quiet=True)


def save_raw_checkpoint(path: Path, state: dict, header: dict) -> Path:
    """A checkpoint whose stored header is exactly ``header``: an older format or forged fields, which
    ``save_checkpoint`` (typed, current format) never writes."""
    import json

    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata={"ecgmae": json.dumps(header)})
    return path


def sklearn_macro_auroc(run: Path, store: Path, split: str = "test") -> tuple[float, dict[str, float]]:
    """Macro and per-class AUROC of a classifier run on a store split, computed here from scratch: the
    run's probabilities (through the public API) against the store's labels, scored by scikit-learn."""
    from sklearn.metrics import roc_auc_score

    import ecgmae
    from ecgmae.data.store import Store

    model = ecgmae.load(run)
    st = Store.open(store)
    ids, probs, skipped = model.run_source("store", store, predict=True, split=split, quiet=True)
    assert not skipped
    rows = {r: i for i, r in enumerate(st.index["record"])}
    y = st.labels[[rows[r] for r in ids]][:, [st.label_names.index(n) for n in model.label_names]]
    per = {
        n: float(roc_auc_score(y[:, k], probs[:, k]))
        for k, n in enumerate(model.label_names)
        if 0 < y[:, k].sum() < len(y)
    }
    return float(np.mean(list(per.values()))), per
