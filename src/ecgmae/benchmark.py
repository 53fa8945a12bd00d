"""Method comparison under one protocol: pre-training methods x label fractions x seeds on one store.

For every seed, each pre-training method (``mae``, ``simclr``, ``cmsc``) is pre-trained once on the
store's train split, then linear-probed and fine-tuned at every label fraction; ``scratch`` trains the
reference CNN (or any registered model) from random weights; ``features`` fits a logistic regression on
hand-made ECG features (:mod:`ecgmae.eval.feature_probe`) on the linear probe's label subset, the baseline
every learned encoder has to beat. Everything is scored on the test split
by macro AUROC with a bootstrap 95 % CI. Re-running continues: finished runs are reused as long as the
training settings are unchanged, and a re-run may add methods, label fractions or seeds (the tables then
cover exactly what that call asked for).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ecgmae.config import ConfigError, to_dict
from ecgmae.engine.config import METHODS, FinetuneConfig, OptimConfig, PretrainConfig, TrainerConfig
from ecgmae.jobs import claim_out, epochs_for, stage_cost
from ecgmae.utils import Stages, log, write_json_atomic, write_text_atomic

PROTOCOLS = ("linprobe", "finetune")
FEATURES = "features"  # the hand-made feature baseline (no pre-training), reported as a linprobe row
EXTENDABLE = ("methods", "fractions", "seeds")  # settings a re-run into the same directory may change


@dataclass(frozen=True)
class BenchmarkConfig:
    """What to compare and how long each run trains.

    Attributes:
        methods: pre-training methods (:data:`ecgmae.engine.config.METHODS`), ``scratch`` (trains
            ``scratch_model`` with ``scratch_overrides``) and/or ``scratch:MODEL`` (any registered model,
            e.g. ``scratch:xresnet1d50``, from random weights as registered), so that one table can hold both
            the pre-trained architecture from scratch and a reference CNN; ``features`` adds the hand-made
            feature baseline (logistic regression, no pre-training).
        fractions: label fractions of the train split.
        seeds: seeds 0..seeds-1 (pre-training, label subsets, heads).
        model, model_overrides: the encoder every pre-training method trains.
        scratch_model, scratch_overrides: what ``scratch`` trains (a reference CNN such as ``xresnet1d50``, or
            a registered transformer with its overrides, e.g. the pre-trained architecture itself).
        pretrain_epochs, pretrain_lr: pre-training length and peak learning rate (all methods).
        finetune_epochs: downstream epochs at 100 % labels (more at small fractions, as in the demo).
        lrs: peak learning rate per downstream protocol; ``layer_decay`` applies to fine-tuning.
        max_steps: if >= 0, caps every run at this many optimiser steps (smoke tests).
        classes: subset of the store's labels (empty = all).
        batch_size, n_boot, trainer: as for the runs.
    """

    methods: tuple[str, ...] = ("mae", "simclr", "cmsc", "scratch")
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0)
    seeds: int = 3
    model: str = "ecgmae_small"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    scratch_model: str = "xresnet1d50"
    scratch_overrides: dict[str, Any] = field(default_factory=dict)
    pretrain_epochs: int = 10
    pretrain_lr: float = 1e-3
    finetune_epochs: int = 10
    lrs: dict[str, float] = field(default_factory=lambda: {"finetune": 1e-3, "linprobe": 1e-2, "scratch": 1e-3})
    layer_decay: float = 0.75
    max_steps: int = -1
    classes: tuple[str, ...] = ()
    batch_size: int = 64
    n_boot: int = 1000
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(log_every=5))

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in (*METHODS, "scratch", FEATURES) and not _scratch_model(m)]
        if bad or not self.methods:
            raise ConfigError(
                f"methods: {', '.join(bad) or 'none'} not among "
                f"{', '.join((*METHODS, 'scratch', FEATURES))} or scratch:MODEL"
            )
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"methods: listed twice in {', '.join(self.methods)}")
        from ecgmae.models import list_models, pretraining_config  # fail now, not after hours of pre-training

        known = list_models()
        for what, name in (
            ("model", self.model),
            ("scratch_model", self.scratch_model),
            *(("methods", _scratch_model(m)) for m in self.methods if _scratch_model(m)),
        ):
            if name not in known:
                raise ConfigError(f"{what}: unknown model {name!r}; available: {', '.join(known)}")
        pretraining_config(self.model)
        if not self.fractions or any(not 0 < f <= 1 for f in self.fractions):
            raise ConfigError(f"fractions must be in (0, 1], got {self.fractions}")
        if self.seeds < 1:
            raise ConfigError(f"seeds must be >= 1, got {self.seeds}")


# What a benchmark folder holds (and `--overwrite` may delete).
_NAMES = ("log.txt", "pretrain", "runs", "features", "results.json", "results.md", "auroc_vs_labels.png")


def run_benchmark(
    data: str | Path, out: str | Path, cfg: BenchmarkConfig, *, overwrite: bool = False, quiet: bool = False
) -> dict[str, Any]:
    """Run every combination into ``out``; writes results.json, results.md and auroc_vs_labels.png.

    Returns:
        ``{"settings", "runs" (one row per run), "summary" (one row per method, protocol, fraction)}``.
    """
    out, data = Path(out), Path(data)
    settings = {"data": str(data.resolve()), **to_dict(cfg)}
    # runs are keyed by method, fraction and seed, so a re-run may add any of those; the rest must match
    claim_out(
        out,
        {k: v for k, v in settings.items() if k not in EXTENDABLE},
        "benchmark_config.json",
        names=_NAMES,
        overwrite=overwrite,
    )
    from ecgmae.engine.joblog import job_log  # Lightning: imported when a job runs

    with job_log(out / "log.txt"), Stages(_stage_weights(data, out, cfg)) as stages:
        log.debug("benchmark settings: %s", json.dumps(settings))
        result = _run_all(data, out, cfg, settings, stages, quiet)
        stages.finish(f"benchmark done (full log: {out / 'log.txt'})")
    return result


@dataclass(frozen=True)
class _Stage:
    """One run of the benchmark: a pre-training (``protocol == "pretrain"``) or a downstream run."""

    seed: int
    method: str
    protocol: str  # "pretrain", "linprobe", "finetune" or "scratch"
    fraction: float = 1.0

    def path(self, out: Path) -> Path:
        if self.protocol == "pretrain":
            return out / "pretrain" / f"{self.method}_s{self.seed}"
        return out / "runs" / f"{self.method.replace(':', '-')}_{self.protocol}_{self.fraction:g}_s{self.seed}"

    def done(self, out: Path) -> bool:
        return (self.path(out) / ("encoder.safetensors" if self.protocol == "pretrain" else "metrics.json")).exists()


def _plan(cfg: BenchmarkConfig) -> list[_Stage]:
    """Every run in the order :func:`_run_all` runs them (and the stage lines count them)."""
    plan: list[_Stage] = []
    for seed in range(cfg.seeds):
        for method in cfg.methods:
            if method == FEATURES:
                protocols: tuple[str, ...] = ("linprobe",)
            elif method == "scratch" or _scratch_model(method):
                protocols = ("scratch",)
            else:
                plan.append(_Stage(seed, method, "pretrain"))
                protocols = PROTOCOLS
            plan.extend(_Stage(seed, method, p, f) for f in cfg.fractions for p in protocols)
    return plan


def _stage_weights(data: Path, out: Path, cfg: BenchmarkConfig) -> list[float]:
    """Expected cost of each stage (:func:`ecgmae.jobs.stage_cost`); 0 for finished runs and the feature baseline."""
    try:
        from ecgmae.data.store import Store

        store = Store.open(data)
        n_train, n_val, n_test = (len(store.split_indices(s)) for s in ("train", "val", "test"))
    except Exception:  # the run itself reports a bad store; the ETA just goes without weights
        n_train, n_val, n_test = 1, 0, 0
    weights = []
    for st in _plan(cfg):
        if st.protocol == "pretrain":
            epochs, n, test = cfg.pretrain_epochs, n_train, 0
        else:
            epochs, n, test = epochs_for(cfg.finetune_epochs, st.fraction), max(1, round(n_train * st.fraction)), n_test
        cost = stage_cost(epochs, n, n_val, test, max_steps=cfg.max_steps, batch_size=cfg.batch_size)
        weights.append(0.0 if st.done(out) or st.method == FEATURES else cost)
    return weights


def _run_all(
    data: Path, out: Path, cfg: BenchmarkConfig, settings: dict[str, Any], stages: Stages, quiet: bool
) -> dict[str, Any]:
    from ecgmae.engine.run import finetune, pretrain
    from ecgmae.eval.feature_probe import probe_features

    t0, rows = time.perf_counter(), []
    max_steps = cfg.max_steps if cfg.max_steps >= 0 else -1  # -1: the epochs decide
    for st in _plan(cfg):
        run, frac, seed, method = st.path(out), st.fraction, st.seed, st.method
        if st.protocol == "pretrain":
            what = f"pre-train {method} ({cfg.model}), seed {seed}: {cfg.pretrain_epochs} epochs"
            if st.done(out):
                stages.skip(what)
                continue
            stages.start(what)
            pcfg = PretrainConfig(
                method=method,
                model=cfg.model,
                model_overrides=dict(cfg.model_overrides),
                epochs=cfg.pretrain_epochs,
                batch_size=cfg.batch_size,
                seed=seed,
                optim=OptimConfig(lr=cfg.pretrain_lr),
                trainer=cfg.trainer,
                max_steps=max_steps,
            )
            pretrain(data, run, pcfg, resume=(run / "last.ckpt").exists(), overwrite=True, quiet=quiet)
            continue
        what = (
            f"{method} at {frac:.0%} labels, seed {seed}"
            if method == FEATURES
            else f"{method} {st.protocol} at {frac:.0%} labels, seed {seed}: "
            f"{epochs_for(cfg.finetune_epochs, frac)} epochs"
        )
        done = st.done(out)
        if done:
            stages.skip(what)
        else:
            stages.start(what)
        if not done and method == FEATURES:
            probe_features(
                data,
                run,
                fraction=frac,
                seed=seed,
                classes=cfg.classes,
                n_boot=cfg.n_boot,
                cache=out / "features" / "store_features.npz",
                quiet=quiet,
            )
        elif not done:
            model, overrides = _run_model(cfg, method)
            encoder = _Stage(seed, method, "pretrain").path(out) if st.protocol in PROTOCOLS else None
            fcfg = FinetuneConfig(
                mode=st.protocol,
                model=model,
                model_overrides=overrides,
                classes=cfg.classes,
                label_fraction=frac,
                epochs=epochs_for(cfg.finetune_epochs, frac),
                batch_size=cfg.batch_size,
                seed=seed,
                n_boot=cfg.n_boot,
                trainer=cfg.trainer,
                optim=OptimConfig(lr=cfg.lrs[st.protocol], layer_decay=cfg.layer_decay),
                max_steps=max_steps,
            )
            finetune(data, run, fcfg, encoder=encoder, overwrite=True, quiet=quiet)
        m = json.loads((run / "metrics.json").read_text())
        rows.append(
            {
                "method": method,
                "protocol": st.protocol,
                "label_fraction": frac,
                "seed": seed,
                "train_records": m["train_records"],
                "macro_auroc": m["macro_auroc"],
                "ci95": m["macro_auroc_ci95"],
                "run": str(run.relative_to(out)),
            }
        )
    summary = summarise(rows)
    result = {"settings": settings, "minutes": (time.perf_counter() - t0) / 60, "summary": summary, "runs": rows}
    write_json_atomic(out / "results.json", result)
    write_text_atomic(out / "results.md", f"# ecgmae benchmark\n\nStore: `{data}`\n\n{summary_table(summary)}\n")
    plot_auroc_vs_labels(summary, out / "auroc_vs_labels.png")
    return result


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (method, protocol, fraction): mean and std (ddof 1) of test macro AUROC over seeds, and the
    mean of the seeds' bootstrap 95 % CI bounds (the test-set sampling uncertainty of one run)."""
    keys = sorted(
        {(r["method"], r["protocol"], r["label_fraction"]) for r in rows}, key=lambda k: (k[2], _order(k[0]), k[1])
    )
    out = []
    for method, protocol, frac in keys:
        sel = [r for r in rows if (r["method"], r["protocol"], r["label_fraction"]) == (method, protocol, frac)]
        auc = np.array([r["macro_auroc"] for r in sel], dtype=np.float64)
        ci = np.array([r["ci95"] for r in sel], dtype=np.float64)
        out.append(
            {
                "method": method,
                "protocol": protocol,
                "label_fraction": frac,
                "seeds": len(sel),
                "train_records": sel[0]["train_records"],
                "mean": float(np.nanmean(auc)),
                "std": float(np.nanstd(auc, ddof=1)) if len(auc) > 1 else 0.0,
                "ci95": [float(np.nanmean(ci[:, 0])), float(np.nanmean(ci[:, 1]))],
            }
        )
    return out


def _scratch_model(method: str) -> str:
    """``MODEL`` of a ``scratch:MODEL`` entry ("" for anything else)."""
    prefix, _, model = method.partition(":")
    return model if prefix == "scratch" and model else ""


def _run_model(cfg: BenchmarkConfig, method: str) -> tuple[str, dict[str, Any]]:
    """(model name, overrides) a downstream run of ``method`` builds (pre-trained runs bring their encoder's)."""
    if method == "scratch":
        return cfg.scratch_model, dict(cfg.scratch_overrides)
    if _scratch_model(method):
        return _scratch_model(method), {}
    return cfg.model, dict(cfg.model_overrides)


def _order(method: str) -> tuple[int, str]:
    known = (*METHODS, "scratch")
    return (known.index(method), "") if method in known else (len(known), method)


def summary_table(summary: Sequence[dict[str, Any]]) -> str:
    """Markdown: one row per method and protocol, one column per label fraction (mean ± std [CI])."""
    fracs = sorted({s["label_fraction"] for s in summary})
    combos = sorted({(s["method"], s["protocol"]) for s in summary}, key=lambda k: (_order(k[0]), k[1]))
    lines = [
        "| method | protocol | " + " | ".join(f"{f:.0%} labels" for f in fracs) + " |",
        "|---|---|" + "---|" * len(fracs),
    ]
    for method, protocol in combos:
        cells = []
        for f in fracs:
            s = next(
                (s for s in summary if (s["method"], s["protocol"], s["label_fraction"]) == (method, protocol, f)), None
            )
            cells.append(
                "-" if s is None else f"{s['mean']:.3f} ± {s['std']:.3f} [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]"
            )
        lines.append(f"| {method} | {protocol} | " + " | ".join(cells) + " |")
    lines.append("\nTest macro AUROC: mean ± std over seeds [mean of the seeds' bootstrap 95 % CI bounds].")
    return "\n".join(lines)


def plot_auroc_vs_labels(summary: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Test macro AUROC against label fraction (log axis), one line per method and protocol, ± std."""
    from ecgmae.viz import _pyplot, save_figure

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    combos = sorted({(s["method"], s["protocol"]) for s in summary}, key=lambda k: (_order(k[0]), k[1]))
    methods = list(dict.fromkeys(m for m, _ in combos))
    colors = plt.get_cmap("tab10")
    for method, protocol in combos:
        pts = sorted(
            (s for s in summary if (s["method"], s["protocol"]) == (method, protocol)),
            key=lambda s: s["label_fraction"],
        )
        ax.errorbar(
            [s["label_fraction"] for s in pts],
            [s["mean"] for s in pts],
            yerr=[s["std"] for s in pts],
            marker="o",
            capsize=3,
            label=method if protocol == "scratch" else f"{method} {protocol}",
            color=colors(methods.index(method) % 10),
            linestyle="--" if protocol == "linprobe" else "-",
        )
    ax.set_xscale("log")
    ax.set_xlabel("label fraction")
    ax.set_ylabel("test macro AUROC")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)
