"""The Trainer factory: hardware, precision, strategy, loggers and resumable checkpoints."""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ecgmae.config import ConfigError
from ecgmae.engine.config import TrainerConfig
from ecgmae.engine.progress import RunBar
from ecgmae.errors import Interrupted
from ecgmae.utils import lightning_bars, log, write_error

if TYPE_CHECKING:
    from lightning.fabric.plugins.precision.precision import _PRECISION_INPUT

# Lightning warnings that are expected here: the run directory holds config.json before the first
# checkpoint, a linear probe keeps its frozen encoder in eval mode, tiny runs have few batches.
_QUIET_WARNINGS = (
    r".*exists and is not empty.*",
    r".*module\(s\) in eval mode.*",
    r".*smaller than the logging interval.*",
    r".*`isinstance\(treespec, LeafSpec\)` is deprecated.*",
    # a run that stops (max_steps) before its first validation keeps its last weights
    r".*could not find the monitored key.*",
)


class _NoTips(logging.Filter):
    """Drop Lightning's advertising tips from the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.msg)


_LEVELS_BEFORE: dict[str, int] = {}  # Lightning's own logger levels, restored when a run is not quiet


def _tame_lightning_logs(quiet: bool) -> None:
    for name in (
        "lightning.pytorch",
        "lightning.fabric",
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
    ):
        lg = logging.getLogger(name)
        _LEVELS_BEFORE.setdefault(name, lg.level)
        if not any(isinstance(f, _NoTips) for f in lg.filters):
            lg.addFilter(_NoTips())
        for h in lg.handlers:
            if not any(isinstance(f, _NoTips) for f in h.filters):
                h.addFilter(_NoTips())
        # per run: a quiet run in the same process must not silence the next, unquiet one
        lg.setLevel(logging.WARNING if quiet else _LEVELS_BEFORE[name])


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written to a temporary file and renamed: never half a ``last.ckpt``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            os.replace(tmp, path)
        except BaseException as exc:  # a full disk, an interrupt: the previous checkpoint stays, no stray temp file
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError) and exc.filename in (None, str(tmp)):
                raise write_error(exc, path) from exc  # named as the checkpoint, not its temporary name
            raise


class StopOnSignal(Callback):
    """SIGINT or SIGTERM during training: finish the running step, save ``last.ckpt`` and stop.

    Lightning's own handling does not leave a resumable run: SIGTERM raises its ``SIGTERMException``, a
    ``SystemExit`` that ends the process with status 0 and no checkpoint (``OnExceptionCheckpoint`` would
    save on any exception, a non-finite loss or a Ctrl-C in the middle of an optimiser step included), and
    SIGINT is a KeyboardInterrupt wherever it lands, then ``sys.exit(1)``. Here the first signal is only
    noted; the run stops at the end of the next batch that stepped the optimiser (never between
    accumulated batches, and never on an epoch's last batch, so that the epoch's validation and
    checkpoint happen as in an uninterrupted run), with the checkpoint saved there, exactly as a per-step
    ``ModelCheckpoint`` saves it. ``--resume`` then continues bit-exactly (the training sampler skips the
    steps already taken in the epoch). A second signal stops at once. A signal after the last step lets
    the run finish. Single-process runs only: DDP keeps Lightning's handling, whose SIGTERMException the
    engine reports as an interruption.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.signum: int | None = None
        self._step = -1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.signum = None
        # Installed after Lightning's own SIGTERM handler (registered once the checkpoint is restored) and
        # in its place; Lightning's signal connector puts back every handler it found when the run ends.
        if trainer.world_size == 1 and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self._note)

    def _note(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # the second signal: stop now (last.ckpt stays the previous one)
            raise Interrupted(
                signum, f"stopped at once; {self.path} is the last saved checkpoint: resume with --resume"
            )
        self.signum = signum
        log.info("signal %d: stopping after the running step (send it again to stop at once)", signum)

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.signum is None or trainer.global_step == self._step:  # no signal, or between accumulated batches
            return
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch or trainer.global_step == trainer.max_steps:
            return  # the epoch's validation and checkpoint come first (or the run is done: it finishes)
        trainer.save_checkpoint(self.path)
        raise Interrupted(
            self.signum, f"stopped after step {trainer.global_step}; {self.path} saved: resume with --resume"
        )


def fit(trainer: L.Trainer, module: L.LightningModule, datamodule: L.LightningDataModule, *, resume: bool) -> None:
    """``trainer.fit``, from ``last.ckpt`` when ``resume``; an interruption is :class:`Interrupted`."""
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path="last" if resume else None)
    except SIGTERMException:  # DDP keeps Lightning's SIGTERM handling, whose exception would exit with status 0
        last = Path(trainer.default_root_dir) / "last.ckpt"
        raise Interrupted(signal.SIGTERM, f"{last} is the last saved checkpoint: resume with --resume") from None


def deterministic(cfg: TrainerConfig) -> bool:
    """Whether a run uses deterministic algorithms: ``cfg.deterministic``, or on CPU when it is None."""
    if cfg.deterministic is not None:
        return cfg.deterministic
    return cfg.accelerator == "cpu" or (
        cfg.accelerator == "auto" and not torch.cuda.is_available() and not torch.backends.mps.is_available()
    )


def runtime(trainer: L.Trainer) -> dict[str, Any]:
    """What a run's numbers depend on beyond its config: torch's thread count, the precision and whether
    the algorithms are deterministic (stored in ``last.ckpt`` and in the weights' header)."""
    return {
        "threads": torch.get_num_threads(),
        "precision": str(trainer.precision),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "torch": str(torch.__version__),
    }


class RecordRuntime(Callback):
    """Keeps :func:`runtime` in ``last.ckpt`` and warns when a run resumes under another thread count or
    precision: the resumed weights then differ from an uninterrupted run's (slightly, then more)."""

    def __init__(self) -> None:
        self.trainer: L.Trainer | None = None
        self.saved: dict[str, Any] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        return {} if self.trainer is None else runtime(self.trainer)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.saved = dict(state_dict)
        if self.trainer is None or not state_dict:
            return
        now = runtime(self.trainer)
        changed = [
            f"{k} {state_dict[k]} -> {now[k]}"
            for k in ("threads", "precision", "deterministic")
            if k in state_dict and state_dict[k] != now[k]
        ]
        if changed:
            log.warning(
                "resuming with %s (OMP_NUM_THREADS, --precision, --deterministic): the weights will "
                "differ from an uninterrupted run's; resume as the run began to repeat it exactly",
                ", ".join(changed),
            )


def cpu_supports_bf16() -> bool:
    """True on CPUs with native bf16 matmuls (AVX-512 bf16 or AMX), where bf16 autocast pays off."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
        return False


def resolve_precision(precision: str, accelerator: str = "auto") -> str:
    """Turn "auto" into a concrete Lightning precision for this machine."""
    if precision != "auto":
        return "32-true" if precision == "32" else precision
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    if accelerator in ("auto", "cpu") and cpu_supports_bf16():
        return "bf16-mixed"
    return "32-true"


def _devices(devices: str) -> Any:
    try:
        if devices == "auto":
            return "auto"
        if "," in devices:
            return [int(d) for d in devices.split(",") if d.strip()]
        return int(devices)
    except ValueError:
        raise ConfigError(f"trainer.devices: expected auto, a count or ids like 0,1; got {devices!r}") from None


def build_trainer(
    cfg: TrainerConfig,
    out: Path,
    *,
    max_epochs: int,
    max_steps: int,
    monitor: str | None = None,
    monitor_mode: str = "min",
    grad_clip: float = 0.0,
    quiet: bool = False,
    has_val: bool = True,
    epoch_steps: Callable[[int], int] | None = None,
) -> L.Trainer:
    """A Lightning Trainer writing ``out/last.ckpt`` (resume), ``out/best.ckpt`` (if ``monitor``) and
    CSV (+ TensorBoard when installed) logs under ``out/logs``.

    Checkpoints are saved at epoch ends, so ``--resume`` continues exactly where an uninterrupted run
    would be (data order and masks are functions of seed, epoch and step): every epoch, or every
    ``check_interval`` epochs when ``cfg.check_every`` asks for fewer checks (``epoch_steps(world_size)``
    gives the optimiser steps of one epoch). Validation runs with the checkpoint.
    """
    devices = _devices(cfg.devices)
    strategy = cfg.strategy
    many = (isinstance(devices, int) and devices > 1) or isinstance(devices, list) or cfg.num_nodes > 1
    if strategy == "auto" and many:
        strategy = "ddp"
    # last.ckpt: every epoch end, for --resume. best.ckpt: the best validation score so far.
    callbacks: list[Any] = [
        ModelCheckpoint(
            dirpath=out, filename="last", monitor=None, save_top_k=1, every_n_epochs=1, enable_version_counter=False
        ),
        StopOnSignal(out / "last.ckpt"),
        RecordRuntime(),
    ]
    if monitor and has_val:
        callbacks.append(
            ModelCheckpoint(
                dirpath=out,
                filename="best",
                monitor=monitor,
                mode=monitor_mode,
                save_top_k=1,
                every_n_epochs=1,
                enable_version_counter=False,
            )
        )
    loggers: list[Any] = [CSVLogger(save_dir=out, name="logs", version="")]
    try:
        import tensorboard  # noqa: F401
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=out, name="logs", version="", default_hp_metric=False))
    except ImportError:
        pass
    if not quiet:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    own_bar = not quiet and not lightning_bars()  # one bar per run; --verbose brings Lightning's back
    if own_bar:
        callbacks.append(RunBar())
    _tame_lightning_logs(quiet)
    for pattern in _QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    try:
        trainer = L.Trainer(
            accelerator=cfg.accelerator,
            devices=devices,
            num_nodes=cfg.num_nodes,
            strategy=strategy,
            # a user's string: Lightning checks it against its precision names (MisconfigurationException)
            precision=cast("_PRECISION_INPUT", resolve_precision(cfg.precision, cfg.accelerator)),
            max_epochs=max_epochs if max_steps < 0 else -1,
            max_steps=max_steps,
            accumulate_grad_batches=cfg.accumulate,
            gradient_clip_val=grad_clip or None,
            log_every_n_steps=cfg.log_every,
            deterministic=deterministic(cfg),
            callbacks=callbacks,
            logger=loggers,
            plugins=[AtomicCheckpointIO()],
            enable_progress_bar=not quiet and not own_bar,
            enable_model_summary=not quiet,
            num_sanity_val_steps=0,
            use_distributed_sampler=False,  # engine.data.EpochSampler shards by rank itself
            default_root_dir=out,
            limit_val_batches=1.0 if has_val else 0,
        )
    except MisconfigurationException as exc:  # e.g. --accelerator gpu or --devices 7 on a machine without them
        raise ConfigError(f"trainer: {str(exc).strip().splitlines()[0]}") from None
    every = check_interval(cfg.check_every, epoch_steps(trainer.world_size) if epoch_steps else 0)
    if every > 1:  # known only now: an epoch's length depends on the world size Lightning resolved
        trainer.check_val_every_n_epoch = every
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint):
                cb._every_n_epochs = every  # Lightning has no public setter; tested in test_engine_units
    return trainer


def check_interval(check_every: int, epoch_steps: int) -> int:
    """Epochs between validation + checkpoint: the fewest whole epochs that span ``check_every`` steps."""
    if check_every <= 0 or epoch_steps <= 0:
        return 1
    return max(1, math.ceil(check_every / epoch_steps))
