"""Lightning modules: one training-step design for pre-training (MAE or contrastive) and classification.

Pre-training, fine-tuning, linear probing and training from scratch differ only in the loss of
``_step`` and in what is frozen; optimisers, schedules, seeding and the finite-loss check are shared.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ecgmae.engine.augment import augment, random_crop
from ecgmae.engine.config import AugmentConfig, OptimConfig
from ecgmae.engine.optim import build_optimizer
from ecgmae.eval.metrics import macro_auroc
from ecgmae.eval.pooling import aggregate_records
from ecgmae.inference import forward_windows, tokenization
from ecgmae.models.contrastive import cmsc_loss, nt_xent


class _Base(L.LightningModule):
    """Shared optimiser, schedule, per-step seeding and non-finite loss check."""

    # an ECGMAE, ContrastiveModel or ECGClassifier (or a reference CNN): each brings its own param_groups
    model: Any
    lead_idx: torch.Tensor | None  # a non-persistent buffer

    def __init__(
        self, model: nn.Module, optim: OptimConfig, total_steps: int, seed: int, lead_idx: list[int] | None = None
    ) -> None:
        super().__init__()
        self.model = model
        self.optim_cfg = optim
        self.total_steps = max(1, total_steps)
        self.seed = seed
        # which canonical lead each input row is (None = rows are the model's own leads, in order)
        li = None if lead_idx is None else torch.tensor(lead_idx, dtype=torch.long)
        self.register_buffer("lead_idx", li, persistent=False)

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser groups; the model decides what is decayed (never biases, norms, embeddings)."""
        return self.model.param_groups(self.optim_cfg.weight_decay)

    def configure_optimizers(self) -> Any:
        opt, sched = build_optimizer(self.param_groups(), self.optim_cfg, self.total_steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _reseed(self, offset: int = 0) -> None:
        # Masks, dropout and drop-path depend on (seed, step, rank) only: a resumed run repeats them.
        step = self.global_step if offset == 0 else offset
        torch.manual_seed((self.seed * 1_000_003 + step * 7_919 + self.global_rank * 104_729) % 2**63)

    def _check_finite(self, loss: torch.Tensor, batch: dict[str, Any]) -> None:
        if not torch.isfinite(loss):
            idx = batch.get("index")
            records = idx[:8].tolist() if torch.is_tensor(idx) else "?"
            raise FloatingPointError(
                f"non-finite training loss ({loss.item()}) at epoch {self.current_epoch}, step "
                f"{self.global_step} (batch records {records}...); lower the learning rate, enable gradient "
                "clipping, or train in precision 32"
            )


class MAEModule(_Base):
    """Masked-autoencoder pre-training: minimise reconstruction error on masked patches.

    Args:
        use_present: pass the batches' lead-presence masks to the model. Off when every record has every
            lead, which gives the same loss without a per-step host sync (and graph break under compile).
    """

    def __init__(
        self,
        model: nn.Module,
        optim: OptimConfig,
        total_steps: int,
        seed: int,
        lead_idx: list[int] | None = None,
        *,
        use_present: bool = True,
    ) -> None:
        super().__init__(model, optim, total_steps, seed, lead_idx)
        self.use_present = use_present

    def _present(self, batch: dict[str, Any]) -> torch.Tensor | None:
        return batch.get("present") if self.use_present else None

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        self._reseed()
        out = self.model(batch["x"], present=self._present(batch), lead_idx=self.lead_idx)
        self._check_finite(out.loss, batch)
        self.log("train/loss", out.loss, prog_bar=True, on_step=True, on_epoch=True)
        return out.loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        # Fixed masks per validation batch, so the validation loss is comparable across epochs.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 31 + batch_idx)
            out = self.model(batch["x"], present=self._present(batch), lead_idx=self.lead_idx)
        self.log("val/loss", out.loss, prog_bar=True, on_epoch=True, sync_dist=True)


class ContrastiveModule(_Base):
    """Contrastive pre-training of the encoder inside a ``ContrastiveModel``.

    Batches hold ``x: (B, L, 2W)``, two windows of each record side by side (``PairSpanDataset``).
    ``cmsc`` contrasts the two adjacent segments as they are; ``simclr`` takes two independent random
    crops of ``W`` from the span and augments each (scaling, noise, baseline, lead dropout, time mask).

    Args:
        method: "simclr" or "cmsc".
        temperature: softmax temperature of the loss.
        augment_cfg: SimCLR augmentation strengths.
    """

    def __init__(
        self,
        model: nn.Module,
        optim: OptimConfig,
        total_steps: int,
        seed: int,
        *,
        method: str,
        temperature: float = 0.1,
        augment_cfg: AugmentConfig | None = None,
        lead_idx: list[int] | None = None,
    ) -> None:
        super().__init__(model, optim, total_steps, seed, lead_idx)
        if method not in ("simclr", "cmsc"):
            raise ValueError(f"contrastive method must be simclr or cmsc, got {method!r}")
        self.method, self.temperature = method, temperature
        self.augment_cfg = augment_cfg or AugmentConfig()

    def _loss(self, batch: dict[str, Any], gen: torch.Generator) -> torch.Tensor:
        span = batch["x"]  # (B, L, 2W)
        w = span.shape[-1] // 2
        if self.method == "cmsc":
            x1, x2 = span[..., :w], span[..., w:]
        else:
            x1 = augment(random_crop(span, w, gen), gen, self.augment_cfg)
            x2 = augment(random_crop(span, w, gen), gen, self.augment_cfg)
        z1 = self.model(x1, lead_idx=self.lead_idx)
        z2 = self.model(x2, lead_idx=self.lead_idx)
        ids = batch.get("group", batch.get("index"))  # rows of one record (or patient) are never negatives
        ids = ids if torch.is_tensor(ids) else None
        fn = cmsc_loss if self.method == "cmsc" else nt_xent
        return fn(z1, z2, self.temperature, ids=ids)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        self._reseed()
        # views depend on (seed, step, rank) only, through the freshly seeded global generator
        gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
        loss = self._loss(batch, gen)
        self._check_finite(loss, batch)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        # fixed views per validation batch, so the validation loss is comparable across epochs
        gen = torch.Generator().manual_seed(self.seed * 31 + batch_idx)
        loss = self._loss(batch, gen)
        self.log("val/loss", loss, prog_bar=True, on_epoch=True, sync_dist=True)


class ClassifierModule(_Base):
    """Multi-label classification (BCE); selects on validation macro AUROC over records.

    Args:
        model: an ``ECGClassifier``.
        mode: "finetune" (layer-wise LR decay), "linprobe" (encoder frozen and in eval mode) or
            "scratch".
        class_idx: store label columns used as targets.
        aggregate: "mean" or "max" of window probabilities per record at validation.
        use_present: withhold absent leads (the batches' ``present``) from a lead-tokenised model, in
            training and validation, as inference does (:mod:`ecgmae.inference`). Off when every record
            has every lead, which gives the same logits without a per-step host sync.
    """

    def __init__(
        self,
        model: nn.Module,
        optim: OptimConfig,
        total_steps: int,
        seed: int,
        *,
        mode: str,
        class_idx: list[int],
        aggregate: str = "mean",
        lead_idx: list[int] | None = None,
        use_present: bool = True,
    ) -> None:
        super().__init__(model, optim, total_steps, seed, lead_idx)
        self.mode = mode
        self.use_present = use_present
        self.register_buffer("class_idx", torch.tensor(class_idx, dtype=torch.long), persistent=False)
        self.aggregate = aggregate
        self.tokens = tokenization(model)
        self._val: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        if mode == "linprobe":
            self.model.freeze_encoder()

    def param_groups(self) -> list[dict[str, Any]]:
        layer_decay = self.optim_cfg.layer_decay if self.mode == "finetune" else 1.0
        return self.model.param_groups(self.optim_cfg.weight_decay, layer_decay)

    def on_train_epoch_start(self) -> None:
        if self.mode == "linprobe":
            self.model.encoder.eval()  # frozen features: no dropout / drop-path noise

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        self._reseed()
        logits = self._logits(batch)
        target = batch["y"][:, self.class_idx].to(logits.dtype)
        loss = F.binary_cross_entropy_with_logits(logits.float(), target.float())
        self._check_finite(loss, batch)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def _logits(self, batch: dict[str, Any]) -> torch.Tensor:
        """Window logits of ``batch["x"]``, absent leads withheld as in inference."""
        present = batch.get("present") if self.use_present else None
        return forward_windows(
            lambda x, li: self.model(x, lead_idx=li), batch["x"], present, self.lead_idx, self.tokens
        )

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self._logits(batch).float()
        target = batch["y"][:, self.class_idx].float()
        self.log("val/loss", F.binary_cross_entropy_with_logits(logits, target), on_epoch=True, sync_dist=True)
        self._val.append((batch["record"].detach(), torch.sigmoid(logits).detach(), target.detach()))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        rec = torch.cat([r for r, _, _ in self._val])
        prob = torch.cat([p for _, p, _ in self._val])
        tgt = torch.cat([t for _, _, t in self._val])
        self._val.clear()
        if self.trainer.world_size > 1:
            rec, prob, tgt = _gather_padded(self, rec, prob, tgt)
        y, p = aggregate_records(rec.cpu().numpy(), prob.cpu().numpy(), tgt.cpu().numpy(), self.aggregate)
        auc = macro_auroc(y, p)
        self.log("val/auroc", float(np.nan_to_num(auc, nan=0.5)), prog_bar=True, on_epoch=True)


def _gather_padded(module: L.LightningModule, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """all_gather tensors whose first dimension differs across ranks (padded, record id -1)."""
    n = torch.tensor([tensors[0].shape[0]], device=module.device)
    sizes = torch.as_tensor(module.all_gather(n)).flatten()
    m = int(sizes.max())
    out = []
    for i, t in enumerate(tensors):
        pad = torch.full((m - t.shape[0], *t.shape[1:]), -1 if i == 0 else 0, dtype=t.dtype, device=t.device)
        g = torch.as_tensor(module.all_gather(torch.cat([t, pad])))  # (world, m, ...)
        out.append(g.reshape(-1, *t.shape[1:]))
    return out
