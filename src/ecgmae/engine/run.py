"""Run orchestration: store -> pretrain -> encoder checkpoint -> finetune/linprobe/scratch -> evaluate.

Each function reads only the artefacts of the step before and writes its own atomically into a run
directory: ``config.json`` (the run's header, written first: it marks the folder as a run),
``encoder.safetensors`` / ``mae.safetensors`` (pre-training) or ``classifier.safetensors`` (downstream),
``metrics.csv`` / ``metrics.json``, ``model_card.json``, ``last.ckpt``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import lightning as L
import numpy as np
import torch

from ecgmae.checkpoint import load_model, save_checkpoint
from ecgmae.config import ConfigError, to_dict
from ecgmae.data.dataset import CropDataset, WindowDataset
from ecgmae.data.record import lead_positions
from ecgmae.data.splits import group_keys, label_subset, select_classes
from ecgmae.data.store import Store
from ecgmae.engine.config import FinetuneConfig, PretrainConfig
from ecgmae.engine.data import PairSpanDataset, make_loader
from ecgmae.engine.joblog import seed_everything
from ecgmae.engine.modules import ClassifierModule, ContrastiveModule, MAEModule
from ecgmae.engine.predict import predict_records
from ecgmae.engine.setup import build_classifier, data_info, model_config, window_for
from ecgmae.engine.trainer import build_trainer, fit, runtime
from ecgmae.errors import CheckpointError, DataError
from ecgmae.eval.metrics import classification_report
from ecgmae.guards import check_resume
from ecgmae.header import RunHeader, TrainInfo
from ecgmae.models import ECGEncoder, MAEConfig, ModelSpec, build_model
from ecgmae.models.contrastive import ContrastiveModel
from ecgmae.outputs import check_own_folder, first_process, locked, read_json
from ecgmae.utils import log, write_json_atomic


class _Loaders(L.LightningDataModule):
    """Builds loaders inside Lightning so each DDP rank knows its rank and world size."""

    def __init__(self, train_ds: Any, val_ds: Any, batch_size: int, seed: int, workers: int) -> None:
        super().__init__()
        self.train_ds, self.val_ds = train_ds, val_ds
        self.batch_size, self.seed, self.workers = batch_size, seed, workers
        self._epoch_steps = 1

    def _kw(self) -> dict[str, Any]:
        t = self.trainer
        return {
            "batch_size": self.batch_size,
            "seed": self.seed,
            "num_workers": self.workers,
            "rank": t.global_rank if t else 0,
            "world_size": t.world_size if t else 1,
            "pin_memory": torch.cuda.is_available(),
        }

    def train_dataloader(self) -> Any:
        t = self.trainer  # steps per epoch as the schedule and the check interval count them
        self._epoch_steps = _steps(
            len(self.train_ds), self.batch_size, t.world_size if t else 1, t.accumulate_grad_batches if t else 1, 1, -1
        )
        return make_loader(self.train_ds, train=True, epoch_fn=self._epoch, skip_fn=self._skip, **self._kw())

    def _epoch(self) -> int:
        """The training epoch as the optimiser step count gives it, read as each pass over the data starts.

        Every epoch takes the same number of steps, so this is the epoch an uninterrupted run is in, and it
        survives ``--resume`` exactly (Lightning's epoch counter, which it hands the sampler, is one ahead
        after resuming a ``max_steps`` run).
        """
        t = self.trainer
        return 0 if t is None else t.global_step // max(1, self._epoch_steps)

    def _skip(self) -> int:
        """Records of this rank already trained on in the current epoch: 0 at an epoch's start, and after a
        mid-epoch checkpoint (an interrupted run stops at a step's end) the batches of the steps taken."""
        t = self.trainer
        if t is None:
            return 0
        return t.global_step % max(1, self._epoch_steps) * t.accumulate_grad_batches * self.batch_size

    def val_dataloader(self) -> Any:
        if self.val_ds is None or len(self.val_ds) == 0:
            return []
        return make_loader(self.val_ds, train=False, **self._kw())


def _steps(n_train: int, batch: int, world: int, accumulate: int, epochs: int, max_steps: int) -> int:
    """Optimiser steps of the run (what the LR schedule spans)."""
    if max_steps >= 0:
        return max_steps
    per_rank = math.ceil(n_train / world)
    batches = per_rank // batch if per_rank >= batch else 1
    return max(1, math.ceil(batches / accumulate) * epochs)


def _epoch_steps(n_train: int, batch: int, accumulate: int) -> Callable[[int], int]:
    """World size -> optimiser steps of one epoch (for the trainer's check interval)."""
    return lambda world: _steps(n_train, batch, world, accumulate, 1, -1)


def is_run_folder(folder: Path) -> bool:
    """True when ``folder`` holds the config.json (a run header) that a training command writes first, or
    (runs of older versions) a checkpoint a training command writes."""
    folder = Path(folder)
    header = read_json(folder / "config.json")
    if isinstance(header, dict) and "ecgmae_version" in header and isinstance(header.get("model"), dict):
        return True
    return any((folder / name).is_file() for name in ("last.ckpt", "encoder.safetensors", "classifier.safetensors"))


@contextlib.contextmanager
def _run_folder(out: Path, product: str, resume: bool, overwrite: bool) -> Iterator[None]:
    """Check ``out`` for a run that writes ``product``, create it and hold its lock while the block runs."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a directory; --out names the run directory to write")
    # a run writes its own names into the folder and deletes nothing, but never into someone else's folder
    check_own_folder(out, "run folder", marked=is_run_folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{out}: cannot create the run directory ({exc.strerror})") from None
    # one command per run folder: a second one would mix its checkpoints and metrics.csv with the first's
    with locked(out) if first_process() else contextlib.nullcontext():
        if (out / product).exists() and not (resume or overwrite):
            raise DataError(f"{out}: already holds {product}; pass --resume to continue or --overwrite to redo")
        if resume and not (out / "last.ckpt").exists():
            raise DataError(f"{out}: --resume given but there is no last.ckpt to resume from")
        if resume:
            check_resume(out / "last.ckpt")  # a damaged file is one clear line, not a traceback from unpickling
        yield


def _finish_logs(out: Path) -> None:
    csv = out / "logs" / "metrics.csv"
    if csv.exists():
        tmp = out / ".metrics.csv.tmp"
        shutil.copyfile(csv, tmp)
        tmp.replace(out / "metrics.csv")


def pretrain(
    data: str | Path,
    out: str | Path,
    cfg: PretrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
) -> Path:
    """Pre-train an encoder on ``data`` (a prepared store) with ``cfg.method``; returns the run directory.

    ``mae`` trains the masked autoencoder; ``simclr`` and ``cmsc`` train the same encoder under a
    contrastive loss with a projection head. Every method writes ``encoder.safetensors`` (with
    ``train.method`` in its header); only ``mae`` also writes ``mae.safetensors``.
    """
    store, out = Store.open(data), Path(out)
    with _run_folder(out, "encoder.safetensors", resume, overwrite):
        return _pretrain(store, out, cfg, resume=resume, quiet=quiet)


def _pretrain(store: Store, out: Path, cfg: PretrainConfig, *, resume: bool, quiet: bool) -> Path:
    mae_cfg = model_config(cfg.model, cfg.model_overrides, store)  # built once, adapted to the store
    if not isinstance(mae_cfg, MAEConfig):  # a supervised CNN has no encoder to pre-train
        raise ConfigError(f"model: {cfg.model} is a supervised CNN; pre-training needs an ecgmae_* encoder")
    spec = ModelSpec("encoder", cfg.model, mae_cfg)
    seed_everything(cfg.seed)
    contrastive = cfg.method != "mae"
    model: torch.nn.Module = (
        ContrastiveModel(cast(ECGEncoder, build_model(spec)), cfg.proj_dim)
        if contrastive
        else build_model(dataclasses.replace(spec, kind="mae"))
    )
    seconds = cfg.window_seconds
    if seconds is None and contrastive:  # two views come from a span of two windows
        seconds = float(store.meta.get("seconds") or store.preprocess_config.seconds) / 2
    window = window_for(store, seconds, spec.data.window_multiple)
    train_idx = np.concatenate([store.split_indices(s) for s in cfg.splits])
    val_idx = store.split_indices("val") if "val" not in cfg.splits else np.array([], dtype=np.int64)
    header = RunHeader(spec, data_info(store, train_idx, window), TrainInfo(to_dict(cfg), method=cfg.method))
    write_json_atomic(out / "config.json", header.to_dict())
    if cfg.max_steps != 0:
        train_ds: Any = CropDataset(store, train_idx, window, train=True, seed=cfg.seed)
        val_ds: Any = CropDataset(store, val_idx, window, train=False, seed=cfg.seed) if len(val_idx) else None
        if contrastive:
            groups = _groups(store, cfg.positives)
            train_ds = PairSpanDataset(train_ds, None if groups is None else groups[train_idx])
            val_ds = None if val_ds is None else PairSpanDataset(val_ds, None if groups is None else groups[val_idx])
        trainer = build_trainer(
            cfg.trainer,
            out,
            max_epochs=cfg.epochs,
            max_steps=cfg.max_steps,
            monitor=None,
            grad_clip=cfg.optim.grad_clip,
            quiet=quiet,
            has_val=val_ds is not None,
            epoch_steps=_epoch_steps(len(train_ds), cfg.batch_size, cfg.trainer.accumulate),
        )
        total = _steps(
            len(train_ds), cfg.batch_size, trainer.world_size, cfg.trainer.accumulate, cfg.epochs, cfg.max_steps
        )
        net, leads = _maybe_compile(model, cfg.trainer.compile), lead_positions(store.leads)
        module: L.LightningModule = (
            ContrastiveModule(
                net,
                cfg.optim,
                total,
                cfg.seed,
                method=cfg.method,
                temperature=cfg.temperature,
                augment_cfg=cfg.augment,
                lead_idx=leads,
            )
            if contrastive
            else MAEModule(
                net,
                cfg.optim,
                total,
                cfg.seed,
                lead_idx=leads,
                use_present=not store.all_present(np.concatenate([train_idx, val_idx])),
            )
        )
        loaders = _Loaders(train_ds, val_ds, cfg.batch_size, cfg.seed, cfg.trainer.num_workers)
        fit(trainer, module, loaders, resume=resume)
        if not trainer.is_global_zero:
            return out
        header = dataclasses.replace(
            header,
            train=dataclasses.replace(
                header.train,
                steps=int(trainer.global_step),
                final_loss=_last_metric(trainer, "train/loss_epoch"),
                runtime=runtime(trainer),
            ),
        )
        _finish_logs(out)
    save_checkpoint(out / "encoder.safetensors", cast(torch.nn.Module, model.encoder).state_dict(), header)
    if not contrastive:
        mae_spec = dataclasses.replace(spec, kind="mae")
        save_checkpoint(out / "mae.safetensors", model.state_dict(), dataclasses.replace(header, model=mae_spec))
    write_json_atomic(out / "model_card.json", _card(header))
    log.info("%s pre-training done: %s (%d steps)", cfg.method, out / "encoder.safetensors", header.train.steps)
    return out


def _groups(store: Store, positives: str) -> np.ndarray | None:
    """Patient groups over the whole store for ``positives='patient'``; None for record positives."""
    if positives != "patient":
        return None
    # an integer per record, shared by the records of one patient (records without one stand alone)
    _, groups = np.unique(
        group_keys(store.index["patient"].tolist(), store.index["record"].tolist()), return_inverse=True
    )
    if len(np.unique(groups)) == len(groups):
        log.warning(
            "positives='patient': the store names no patient with several records; "
            "each record is its own positive pair (as with positives='record')"
        )
    return groups


def _maybe_compile(model: torch.nn.Module, compile_: bool) -> torch.nn.Module:
    if compile_:
        model.compile()  # in place: state_dict keys stay the same
    return model


def _last_metric(trainer: L.Trainer, key: str) -> float | None:
    v = trainer.callback_metrics.get(key)
    return None if v is None else float(v)


def _card(header: RunHeader) -> dict[str, Any]:
    from ecgmae._version import __version__

    train = header.train
    card = {**header.to_dict(), "ecgmae_version": __version__, "seed": train.config.get("seed")}
    # pre-training has no test metrics: its card reports where the training loss ended
    if header.metrics is None:
        card["metrics"] = {"final_train_loss": train.final_loss, "steps": train.steps}
    return card


def finetune(
    data: str | Path,
    out: str | Path,
    cfg: FinetuneConfig,
    *,
    encoder: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Train a classifier (fine-tune, linear probe or scratch); returns the test metrics dict."""
    store, out = Store.open(data), Path(out)
    with _run_folder(out, "classifier.safetensors", resume, overwrite):
        return _finetune(store, out, cfg, encoder, resume=resume, quiet=quiet)


def _finetune(
    store: Store, out: Path, cfg: FinetuneConfig, encoder: str | Path | None, *, resume: bool, quiet: bool
) -> dict[str, Any]:
    if cfg.mode != "scratch" and encoder is None:
        raise CheckpointError(f"--mode {cfg.mode} needs --encoder RUN (a pre-training run directory)")
    seed_everything(cfg.seed)
    class_idx = select_classes(store.label_names, store.labels, cfg.classes)
    if not class_idx:
        raise DataError(
            f"{store.path}: the store has no labelled record (no class with a positive); "
            "fine-tuning needs labels: prepare it with --labels CSV or a labelled --source"
        )
    names = [store.label_names[k] for k in class_idx]
    model, spec, leakage = build_classifier(cfg, store, encoder, len(class_idx))
    if encoder is not None and cfg.mode != "scratch":
        # the encoder brings its model: the recorded config (header, card) names it, not the config's default
        cfg = dataclasses.replace(cfg, model=spec.name, model_overrides={})
    window = window_for(store, cfg.window_seconds, spec.data.window_multiple)
    stride = int(round((cfg.eval_stride_seconds or window / store.fs) * store.fs))
    train_idx = label_subset(store.labels[:, class_idx], store.split_indices("train"), cfg.label_fraction, cfg.seed)
    val_idx, test_idx = store.split_indices("val"), store.split_indices("test")
    info = data_info(store, train_idx, window, eval_stride_samples=stride, aggregate=cfg.aggregate)
    write_json_atomic(
        out / "config.json", RunHeader(spec, info, TrainInfo(to_dict(cfg)), label_names=tuple(names)).to_dict()
    )
    train_ds = CropDataset(store, train_idx, window, train=True, seed=cfg.seed)
    val_ds = WindowDataset(store, val_idx, window, stride) if len(val_idx) else None
    trainer = build_trainer(
        cfg.trainer,
        out,
        max_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        monitor="val/auroc",
        monitor_mode="max",
        grad_clip=cfg.optim.grad_clip,
        quiet=quiet,
        has_val=val_ds is not None,
        epoch_steps=_epoch_steps(len(train_ds), cfg.batch_size, cfg.trainer.accumulate),
    )
    total = _steps(len(train_ds), cfg.batch_size, trainer.world_size, cfg.trainer.accumulate, cfg.epochs, cfg.max_steps)
    module = ClassifierModule(
        model,
        cfg.optim,
        total,
        cfg.seed,
        mode=cfg.mode,
        class_idx=class_idx,
        aggregate=cfg.aggregate,
        lead_idx=lead_positions(store.leads),
        use_present=not store.all_present(np.concatenate([train_idx, val_idx])),
    )
    loaders = _Loaders(train_ds, val_ds, cfg.batch_size, cfg.seed, cfg.trainer.num_workers)
    fit(trainer, module, loaders, resume=resume)
    if not trainer.is_global_zero:
        return {}
    _restore_best(model, out / "best.ckpt")
    _finish_logs(out)
    probs, y = predict_records(
        model,
        store,
        test_idx,
        window,
        stride,
        aggregate=cfg.aggregate,
        class_idx=class_idx,
        batch_size=cfg.batch_size,
        lead_idx=lead_positions(store.leads),
    )
    report = classification_report(y, probs, names, n_boot=cfg.n_boot, seed=cfg.seed)
    report.update(
        split="test",
        mode=cfg.mode,
        label_fraction=cfg.label_fraction,
        train_records=len(train_idx),
        seed=cfg.seed,
        encoder=str(encoder) if encoder else None,
        leakage=leakage,
    )
    header = RunHeader(
        spec,
        info,
        TrainInfo(
            to_dict(cfg), steps=int(trainer.global_step), best_val_auroc=_best_score(trainer), runtime=runtime(trainer)
        ),
        label_names=tuple(names),
        metrics=report,
    )
    save_checkpoint(out / "classifier.safetensors", model.state_dict(), header)
    write_json_atomic(out / "metrics.json", report)
    write_json_atomic(out / "model_card.json", _card(header))
    (out / "best.ckpt").unlink(missing_ok=True)
    log.info("%s done: test macro AUROC %.4f -> %s", cfg.mode, report["macro_auroc"], out)
    return report


def _best_score(trainer: L.Trainer) -> float | None:
    cb = trainer.checkpoint_callback
    score = getattr(cb, "best_model_score", None)
    return None if score is None else float(score)


def _restore_best(model: torch.nn.Module, path: Path) -> None:
    """Load the best-validation weights (a checkpoint this run just wrote) into ``model``."""
    if not path.exists():
        return  # no validation split: the last weights are the result
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}
    state = {k.replace("_orig_mod.", ""): v for k, v in state.items()}
    model.load_state_dict(state)


def evaluate(
    checkpoint: str | Path,
    data: str | Path,
    *,
    split: str = "test",
    aggregate: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    batch_size: int = 64,
    quiet: bool = True,
) -> dict[str, Any]:
    """Score a classifier run on a store split: macro/per-class AUROC, F1, Fmax with bootstrap CIs."""
    model, header, file = load_model(checkpoint, kind="classifier")
    store = Store.open(data)
    d = header.data
    lacking = [k for k in ("fs", "window_samples", "eval_stride_samples") if getattr(d, k) is None]
    if lacking:
        raise CheckpointError(f"{file}: header lacks data.{', data.'.join(lacking)} (needed to evaluate)")
    if float(d.fs) != float(store.fs):  # type: ignore[arg-type]
        raise DataError(f"{store.path}: store is at {store.fs} Hz, the classifier expects {d.fs} Hz")
    names = list(header.label_names)
    class_idx = select_classes(store.label_names, store.labels, names)
    how = aggregate or d.aggregate or "mean"
    idx = store.split_indices(split)
    if len(idx) == 0:
        raise DataError(f"{store.path}: split {split!r} is empty")
    probs, y = predict_records(
        model,
        store,
        idx,
        d.window_samples,  # type: ignore[arg-type]
        d.eval_stride_samples,  # type: ignore[arg-type]
        aggregate=how,
        class_idx=class_idx,
        batch_size=batch_size,
        lead_idx=lead_positions(store.leads),
        quiet=quiet,
    )
    report = classification_report(y, probs, names, n_boot=n_boot, seed=seed)
    report.update(split=split, checkpoint=str(checkpoint), store=str(store.path), aggregate=how)
    return report
