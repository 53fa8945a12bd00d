"""Record-level inference: sliding windows over each record, window scores aggregated per record."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ecgmae.data.dataset import WindowDataset
from ecgmae.data.store import Store
from ecgmae.eval.pooling import aggregate_records
from ecgmae.utils import progress


@torch.no_grad()
def predict_records(
    model: nn.Module,
    store: Store,
    indices: np.ndarray,
    window: int,
    stride: int,
    *,
    aggregate: str = "mean",
    class_idx: list[int] | None = None,
    batch_size: int = 64,
    lead_idx: list[int] | None = None,
    quiet: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities per record (in the order of ``indices``) and their label rows.

    Returns:
        ``(probs, labels)``: (len(indices), K) float64 and (len(indices), K) uint8.
    """
    model.eval()
    ds = WindowDataset(store, indices, window, stride)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False)
    li = None if lead_idx is None else torch.tensor(lead_idx, dtype=torch.long)
    recs, probs = [], []
    for batch in progress(loader, quiet=quiet, desc="predict", unit="batch"):
        recs.append(batch["record"].numpy())
        probs.append(torch.sigmoid(model(batch["x"], lead_idx=li).float()).numpy())
    rec = np.concatenate(recs)
    prob = np.concatenate(probs)
    y_all = store.labels[np.asarray(indices)]
    if class_idx is not None:
        y_all = y_all[:, class_idx]
    _, p = aggregate_records(rec, prob, y_all[rec], aggregate)
    # aggregate_records orders by record position, which is 0..len(indices)-1 here
    return p, y_all
