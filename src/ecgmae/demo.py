"""The demo: synth -> prepare -> pretrain -> finetune / linprobe / scratch at 1 %, 10 %, 100 % labels.

Re-running continues: finished steps (a run directory with its final artefact) are reused as long
as the demo's settings are unchanged; ``overwrite`` starts again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecgmae.config import to_dict
from ecgmae.engine.config import MODES
from ecgmae.jobs import claim_out, epochs_for, stage_cost
from ecgmae.utils import Stages, log, write_json_atomic, write_text_atomic

# A small time-tokenised model: 40 tokens per 10 s record, so pre-training fits in minutes on a CPU.
DEMO_MODEL: dict[str, Any] = {
    "tokenization": "time",
    "embed_dim": 128,
    "depth": 4,
    "num_heads": 4,
    "patch_size": 25,
    "conv_channels": 16,
    "conv_bottleneck": 16,
    "decoder_dim": 64,
    "decoder_depth": 2,
    "norm_target": True,
    "mask_ratio": 0.75,
    "pool": "mean",
    "lead_drop": 0.0,
}


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo run (the defaults fit ~10 minutes on 2 CPU cores; ``fast()`` ~3 minutes).

    Attributes:
        n_records: synthetic records (split 80/10/10 by patient).
        synth_fs: rate the WFDB files are written at; ``fs`` is the rate they are prepared to.
        model, model_overrides: the registered model and its changes (see :data:`DEMO_MODEL`).
        pretrain_epochs, pretrain_lr: MAE pre-training length and peak learning rate.
        finetune_epochs: downstream epochs at 100 % labels (x3 at 10 %, x6 at 1 %, so that the number of
            updates stays reasonable).
        lrs: peak learning rate per downstream mode; ``layer_decay`` applies to fine-tuning.
        fractions: label fractions to compare.
        n_boot: bootstrap resamples for the confidence intervals.
    """

    n_records: int = 2000
    synth_fs: int = 500
    fs: int = 100
    seconds: float = 10.0
    model: str = "ecgmae_small"
    model_overrides: dict[str, Any] = field(default_factory=lambda: dict(DEMO_MODEL))
    pretrain_epochs: int = 60
    pretrain_lr: float = 1.5e-3
    finetune_epochs: int = 10
    lrs: dict[str, float] = field(default_factory=lambda: {"finetune": 3e-3, "linprobe": 1e-2, "scratch": 1e-3})
    layer_decay: float = 0.5
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0)
    batch_size: int = 64
    n_boot: int = 500
    seed: int = 0

    @staticmethod
    def fast() -> DemoConfig:
        return DemoConfig(n_records=400, synth_fs=250, pretrain_epochs=15, finetune_epochs=2, n_boot=200)


# What a demo folder holds (and `--overwrite` may delete): the stages' outputs and their temporary names.
_NAMES = (
    "log.txt",
    "synth",
    ".synth.*.partial",
    "store",
    "store.tmp-*",
    "store.old-*",
    ".store.lock",
    "pretrain",
    *(f"{mode}_*" for mode in MODES),
    "results.json",
    "results.md",
    "curves.png",
)


def run_demo(out: str | Path, cfg: DemoConfig, *, overwrite: bool = False, quiet: bool = False) -> list[dict]:
    """Run the whole pipeline into ``out``; returns one row per downstream run.

    The terminal gets one line per stage (what, elapsed, ETA) and one bar for the running training;
    everything logged, Lightning's messages included, is appended to ``out/log.txt``.
    """
    out = Path(out)
    settings = to_dict(cfg)
    claim_out(out, settings, "demo_config.json", names=_NAMES, overwrite=overwrite)
    from ecgmae.engine.joblog import job_log  # Lightning: imported when a job runs

    with job_log(out / "log.txt"), Stages(_stage_weights(out, cfg)) as stages:
        log.debug("demo settings: %s", json.dumps(settings))
        rows = _run_stages(out, cfg, settings, stages, quiet)
        stages.finish(f"demo done (full log: {out / 'log.txt'})")
    return rows


def _stage_weights(out: Path, cfg: DemoConfig) -> list[float]:
    """Expected cost of each stage in records passed through the model (a forward-only pass of validation or
    test counted as a third of a training one); 0 for the data stages and finished runs."""
    n_train, n_eval = int(cfg.n_records * 0.8), int(cfg.n_records * 0.1)
    weights = [0.0, 0.0]  # synthesise, prepare
    done = (out / "pretrain" / "encoder.safetensors").exists()
    weights.append(0.0 if done else stage_cost(cfg.pretrain_epochs, n_train, n_eval, 0))
    for frac in cfg.fractions:
        for mode in MODES:
            done = (out / f"{mode}_{frac:g}" / "metrics.json").exists()
            cost = stage_cost(epochs_for(cfg.finetune_epochs, frac), max(1, round(n_train * frac)), n_eval, n_eval)
            weights.append(0.0 if done else cost)
    return weights


def _run_stages(out: Path, cfg: DemoConfig, settings: dict[str, Any], stages: Stages, quiet: bool) -> list[dict]:
    from ecgmae.data.signal import PreprocessConfig
    from ecgmae.data.sources.synthetic import write_wfdb_folder
    from ecgmae.data.splits import label_subset
    from ecgmae.data.store import Store, prepare_store
    from ecgmae.engine.config import FinetuneConfig, OptimConfig, PretrainConfig, TrainerConfig
    from ecgmae.engine.run import finetune, pretrain
    from ecgmae.viz import plot_curves

    t0 = time.perf_counter()
    synth = out / "synth"
    what = f"synthesise {cfg.n_records} 12-lead ECGs at {cfg.synth_fs} Hz"
    if not (synth / "labels.csv").exists():
        stages.start(what)
        write_wfdb_folder(
            synth,
            cfg.n_records,
            fs=cfg.synth_fs,
            seconds=cfg.seconds,
            seed=cfg.seed,
            noise="realistic",
            quiet=quiet,
            overwrite=True,
        )
    else:
        stages.skip(what)
    stages.start(f"prepare the store at {cfg.fs} Hz")
    # The demo's store is pinned to no band-pass (PreprocessConfig's default is 0.5-40 Hz, as `ecgmae prepare`),
    # as its model pins lead_drop 0: its recorded results (README, RESULTS.md) were made that way.
    pre_cfg = PreprocessConfig(fs=cfg.fs, seconds=cfg.seconds, bandpass=None)
    store = prepare_store(
        "folder", synth, out / "store", pre_cfg, seed=cfg.seed, quiet=quiet, overwrite=True
    )  # the demo's own store, of its synth folder
    opened = Store.open(store)
    train_idx = opened.split_indices("train")
    n_train = len(train_idx)
    trainer = TrainerConfig(log_every=5)
    pre = out / "pretrain"
    what = f"pre-train {cfg.model} (MAE): {cfg.pretrain_epochs} epochs on {n_train} records"
    if not (pre / "encoder.safetensors").exists():
        stages.start(what)
        pcfg = PretrainConfig(
            model=cfg.model,
            model_overrides=dict(cfg.model_overrides),
            epochs=cfg.pretrain_epochs,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            optim=OptimConfig(lr=cfg.pretrain_lr),
            trainer=trainer,
        )
        pretrain(store, pre, pcfg, resume=(pre / "last.ckpt").exists(), quiet=quiet)
    else:
        stages.skip(what)
    rows = []
    for frac in cfg.fractions:
        n_sub = len(label_subset(opened.labels, train_idx, frac, cfg.seed))  # as finetune draws it
        for mode in MODES:
            run = out / f"{mode}_{frac:g}"
            what = f"{mode} at {frac:.0%} labels: {epochs_for(cfg.finetune_epochs, frac)} epochs on {n_sub} records"
            if not (run / "metrics.json").exists():
                stages.start(what)
                fcfg = FinetuneConfig(
                    mode=mode,
                    model=cfg.model,
                    model_overrides=dict(cfg.model_overrides),
                    label_fraction=frac,
                    epochs=epochs_for(cfg.finetune_epochs, frac),
                    batch_size=cfg.batch_size,
                    seed=cfg.seed,
                    n_boot=cfg.n_boot,
                    optim=OptimConfig(lr=cfg.lrs[mode], layer_decay=cfg.layer_decay),
                    trainer=trainer,
                )
                finetune(store, run, fcfg, encoder=None if mode == "scratch" else pre, overwrite=True, quiet=quiet)
            else:
                stages.skip(what)
            m = json.loads((run / "metrics.json").read_text())
            rows.append(
                {
                    "mode": mode,
                    "label_fraction": frac,
                    "train_records": m["train_records"],
                    "macro_auroc": m["macro_auroc"],
                    "ci95": m["macro_auroc_ci95"],
                    "fmax": m["fmax"],
                }
            )
    write_json_atomic(
        out / "results.json", {"settings": settings, "rows": rows, "minutes": (time.perf_counter() - t0) / 60}
    )
    table = results_table(rows)
    write_text_atomic(out / "results.md", f"# ecgmae demo results\n\n{table}\n")
    curves = [pre, *(out / f"{m}_1" for m in MODES)]
    plot_curves([c for c in curves if (c / "metrics.csv").exists()], out / "curves.png")
    return rows


def results_table(rows: list[dict]) -> str:
    """Markdown table: one row per label fraction, one column per mode (test macro AUROC [95 % CI])."""
    fracs = sorted({r["label_fraction"] for r in rows})
    lines = [
        "| labels | records | " + " | ".join(f"{m} AUROC [95% CI]" for m in MODES) + " |",
        "|---|---|" + "---|" * len(MODES),
    ]
    for f in fracs:
        by = {r["mode"]: r for r in rows if r["label_fraction"] == f}
        n = next(iter(by.values()))["train_records"]
        cells = []
        for m in MODES:
            r = by.get(m)
            cells.append("-" if r is None else f"{r['macro_auroc']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]")
        lines.append(f"| {f:.0%} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
