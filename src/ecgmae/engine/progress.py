"""One progress bar per training run, in place of Lightning's nested epoch and validation bars.

The bar counts the run's optimiser steps (all epochs together, so its ETA is the run's), and shows the
epoch and the latest training loss and validation score. ``--verbose`` brings Lightning's own bars back
(see :func:`ecgmae.engine.trainer.build_trainer`).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from ecgmae.utils import in_stages

# what the bar shows: label -> metric keys (first present wins)
_SHOWN = {"loss": ("train/loss_step", "train/loss"), "val_loss": ("val/loss",), "val_auroc": ("val/auroc",)}


class RunBar(Callback):
    """A single tqdm bar over a fit's optimiser steps on stderr (rank zero only)."""

    def __init__(self) -> None:
        self.bar: Any = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        from tqdm.auto import tqdm

        total = trainer.estimated_stepping_batches
        tty = sys.stderr.isatty()
        self.bar = tqdm(
            total=int(total) if math.isfinite(total) else None,
            initial=trainer.global_step,
            desc=Path(trainer.default_root_dir).name or "train",
            unit="step",
            dynamic_ncols=True,
            leave=not in_stages(),
            file=sys.stderr,
            mininterval=0.5 if tty else 30.0,
        )

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.bar is None:
            return
        step = trainer.global_step
        if step > self.bar.n:
            self.bar.set_postfix(self._postfix(trainer), refresh=False)
            self.bar.update(step - self.bar.n)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.bar is not None:
            self.bar.set_postfix(self._postfix(trainer), refresh=False)  # drawn with the next step

    @staticmethod
    def _postfix(trainer: L.Trainer) -> dict[str, str]:
        metrics = trainer.progress_bar_metrics
        shown = {"epoch": str(trainer.current_epoch)}
        for label, keys in _SHOWN.items():
            value = next((metrics[k] for k in keys if isinstance(metrics.get(k), (int, float))), None)
            if value is not None:
                shown[label] = f"{value:.3g}"
        return shown

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._close()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._close()
