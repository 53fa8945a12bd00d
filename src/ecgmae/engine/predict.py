"""Record-level inference: sliding windows over each record, window scores aggregated per record."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ecgmae.data.dataset import WindowDataset
from ecgmae.data.store import Store
from ecgmae.inference import infer_records, tokenization
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
    batches = (
        (b["record"].numpy(), b["x"], b["present"])  # absent leads withheld as in the API
        for b in progress(loader, quiet=quiet, desc="predict", unit="batch")
    )
    _, p = infer_records(
        lambda x, li: torch.sigmoid(model(x, lead_idx=li).float()),
        batches,
        lead_idx=li,
        tokens=tokenization(model),
        how=aggregate,
    )
    y_all = store.labels[np.asarray(indices)]
    if class_idx is not None:
        y_all = y_all[:, class_idx]
    # pooled rows come out by record position, which is 0..len(indices)-1 here (every record has a window)
    return p, y_all
