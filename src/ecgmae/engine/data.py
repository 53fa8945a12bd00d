"""Data loading for the engine: seeded per-epoch order, rank sharding (label-fraction subsets: data.splits).

Order and crops are pure functions of (seed, epoch, rank), so a resumed run sees exactly the batches an
uninterrupted one would, on any number of workers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sized
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ecgmae.data.dataset import crop_start
from ecgmae.errors import DataError

__all__ = ["EpochKeyed", "EpochSampler", "PairSpanDataset", "make_loader"]


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` keys: a seeded permutation per epoch, sharded across ranks.

    Each rank gets ``ceil(n / world)`` keys (wrapping around) so that all ranks take the same number of
    steps, as DDP requires. Lightning calls :meth:`set_epoch` at the start of every epoch.

    Args:
        epoch_fn: when given, the epoch is ``epoch_fn()`` read as each pass starts, and :meth:`set_epoch`
            is ignored. The engine passes ``global_step // steps_per_epoch``: Lightning's own epoch counter
            (what it gives ``set_epoch``) runs one ahead after resuming a step-limited run from an
            end-of-epoch checkpoint, while the step count is restored exactly.
        skip_fn: when given, ``skip_fn()`` keys of this rank's pass are left out at its start, read as each
            pass starts: the engine passes the keys of the steps already taken in the epoch, so that a run
            resumed from a mid-epoch checkpoint (an interrupted run's) goes on with the next batch.
    """

    def __init__(
        self,
        n: int,
        *,
        seed: int,
        shuffle: bool,
        rank: int = 0,
        world_size: int = 1,
        epoch_fn: Callable[[], int] | None = None,
        skip_fn: Callable[[], int] | None = None,
    ) -> None:
        if n <= 0:
            raise DataError("no training records: the selected split is empty")
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.epoch_fn, self.skip_fn = epoch_fn, skip_fn

    def set_epoch(self, epoch: int) -> None:
        if self.epoch_fn is None:
            self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.n / self.world_size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.epoch_fn is not None:
            self.epoch = int(self.epoch_fn())
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        else:
            order = np.arange(self.n)
        total = len(self) * self.world_size
        order = np.resize(order, total)  # wrap so every rank has the same count
        skip = int(self.skip_fn()) if self.skip_fn is not None else 0
        for i in order[self.rank : total : self.world_size][skip:]:
            yield self.epoch, int(i)


class EpochKeyed(Dataset):
    """Wrap a dataset with ``set_epoch``/``__getitem__(i)`` so it accepts ``(epoch, i)`` keys.

    Setting the epoch inside the worker that fetches the item keeps crops deterministic whatever the
    number of workers and whenever the loader's iterator is created.
    """

    def __init__(self, base: Any) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, i = key
        if getattr(self.base, "epoch", None) != epoch:
            self.base.set_epoch(epoch)
        return self.base[i]


class PairSpanDataset(Dataset):
    """Two windows per item side by side, ``x: (L, 2 * window)``, for the contrastive objectives.

    By default both windows come from one record: one of at least two windows gives a random (train) or
    centred crop of ``2 * window`` samples, i.e. two adjacent non-overlapping segments; a shorter one gives
    its first and its last window, which overlap. With ``groups`` (a patient code per item), the second
    window comes from another record of the same group when there is one (CLOCS's same-patient positives),
    and each item carries ``group`` so that the loss never uses a same-patient segment as a negative.
    Crops and partners are pure functions of ``(seed, epoch, item)`` like :class:`CropDataset`'s.

    Args:
        base: a ``CropDataset`` of single windows (its store, indices, window, seed and train flag are used).
        groups: optional ``(len(base),)`` integer group per item; None = every record is its own group.
    """

    def __init__(self, base: Any, groups: np.ndarray | None = None) -> None:
        self.base = base
        self.epoch = 0
        self.groups = None if groups is None else np.asarray(groups, dtype=np.int64)
        if self.groups is not None and len(self.groups) != len(base):
            raise ValueError(f"groups: {len(self.groups)} entries for {len(base)} items")
        self._members: dict[int, np.ndarray] = {}
        if self.groups is not None:
            order = np.argsort(self.groups, kind="stable")
            bounds = np.flatnonzero(np.diff(self.groups[order])) + 1
            for members in np.split(order, bounds):
                if len(members) > 1:
                    self._members.update({int(m): members for m in members})

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def _key(self, i: int, salt: int) -> list[int]:
        return [self.base.seed % 2**63, self.epoch, i, salt]

    def partner(self, i: int) -> int:
        """The item whose record gives item ``i``'s second window (``i`` itself without a group mate)."""
        members = self._members.get(i)
        if members is None:
            return i
        others = members[members != i]
        if not self.base.train:
            return int(others[0])
        return int(others[np.random.default_rng(self._key(i, 3)).integers(len(others))])

    def starts(self, i: int) -> tuple[int, int]:
        """First samples of item ``i``'s two windows (when both come from its own record)."""
        b, w = self.base, self.base.window
        valid = b.store.valid_length(int(b.indices[i]))
        if valid < 2 * w:
            return 0, max(0, valid - w)
        s = crop_start(valid - 2 * w, b.train, self._key(i, 2))
        return s, s + w

    def __getitem__(self, i: int) -> dict[str, Any]:
        rec, j = int(self.base.indices[i]), self.partner(i)
        if j == i:
            s1, s2 = self.starts(i)
            a, b = self.base._item(rec, s1), self.base._item(rec, s2)
        else:
            other, base, w = int(self.base.indices[j]), self.base, self.base.window
            a = base._item(rec, crop_start(base.store.valid_length(rec) - w, base.train, self._key(i, 4)))
            b = base._item(other, crop_start(base.store.valid_length(other) - w, base.train, self._key(i, 5)))
        group = rec if self.groups is None else int(self.groups[i])
        return {**a, "x": torch.cat([a["x"], b["x"]], dim=-1), "valid": a["valid"] + b["valid"], "group": group}


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    train: bool,
    seed: int,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
    epoch_fn: Callable[[], int] | None = None,
    skip_fn: Callable[[], int] | None = None,
) -> DataLoader:
    """A DataLoader over ``dataset``: epoch-keyed shuffled batches for training, in order otherwise.

    ``epoch_fn``, ``skip_fn`` (training only): where the training epoch and the records of the epoch
    already trained on are read from, see :class:`EpochSampler`.
    """
    if not isinstance(dataset, Sized):
        raise TypeError(f"make_loader: needs a map-style dataset with a length, got {type(dataset).__name__}")
    sampler: Sampler[int] | list[int]
    if train:
        sampler = EpochSampler(
            len(dataset), seed=seed, shuffle=True, rank=rank, world_size=world_size, epoch_fn=epoch_fn, skip_fn=skip_fn
        )
        dataset = EpochKeyed(dataset)
        drop_last = len(sampler) >= batch_size
    else:
        n = len(dataset)
        sampler = list(range(rank, n, world_size))
        drop_last = False
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=False,
        worker_init_fn=_worker_init,
    )


def _worker_init(worker_id: int) -> None:
    # Workers share the two cores with the main process; one thread each avoids oversubscription.
    torch.set_num_threads(1)
