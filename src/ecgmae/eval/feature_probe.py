"""The hand-made feature baseline, probed like an encoder: the ``features`` method of ``ecgmae benchmark``.

Features (:func:`ecgmae.eval.features.ecg_features`) of every record of a store are computed once (from
the memory-mapped signals, over each record's real samples, absent leads as zero rows) and cached. For a
label fraction and seed, a one-vs-rest logistic regression is fitted on standardised features of exactly
the training records the linear probe of that fraction and seed trains on
(:func:`ecgmae.data.splits.label_subset`), its ``C`` chosen on the validation split, and the test split is
scored with the same report (macro AUROC with bootstrap CI) as every other run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ecgmae.eval.features import FEATURES_VERSION, ecg_features, feature_names
from ecgmae.utils import atomic_path, log, progress, write_json_atomic, write_text_atomic

C_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
FALLBACK_C = 1.0  # when the validation split cannot rank the grid (empty, or no class with both outcomes)


def record_features(store: Any, i: int) -> np.ndarray:
    """Features of record ``i`` of a :class:`~ecgmae.data.store.Store`: its valid samples, absent leads zeroed."""
    x = store.signal(i, 0, store.valid_length(i))
    x[~store.present(i)] = 0.0
    return ecg_features(x, store.fs)


def _cache_key(store: Any) -> dict[str, Any]:
    st = (store.path / "signals.npy").stat()
    return {
        "version": FEATURES_VERSION,
        "store": str(store.path.resolve()),
        "records": len(store),
        "fingerprint": store.meta.get("fingerprint"),
        "signals": [st.st_size, st.st_mtime_ns],
        "fs": store.fs,
        "leads": list(store.leads),
    }


def store_features(store: Any, cache: str | Path | None = None, *, quiet: bool = True) -> np.ndarray:
    """``(len(store), F)`` float32 features of every record of ``store``, in store order.

    Args:
        store: an open :class:`~ecgmae.data.store.Store`.
        cache: ``.npz`` file to reuse when it was computed from this very store (same records, signals
            file and feature version) and to write (atomically) otherwise; None = no cache.
        quiet: no progress bar.
    """
    key = _cache_key(store)
    if cache is not None and Path(cache).exists():
        try:
            with np.load(cache) as f:
                if json.loads(str(f["key"])) == key:
                    return f["features"]
            log.info("%s: feature cache is for another store or version; computing again", cache)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("%s: unreadable feature cache (%s); computing again", cache, exc)
    feats = np.stack(
        [record_features(store, int(i)) for i in progress(range(len(store)), quiet=quiet, unit="rec", desc="features")]
    )
    if cache is not None:
        with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
            np.savez(
                fh, features=feats, key=np.array(json.dumps(key)), names=np.array(feature_names(store.leads), dtype=str)
            )
    return feats


def fit_predict(x_train: np.ndarray, y_train: np.ndarray, xs: Sequence[np.ndarray], c: float) -> list[np.ndarray]:
    """One L2 logistic regression per class (``C = c``) on ``x_train``; positive-class probabilities of each
    array of ``xs``. A class without both outcomes in training predicts its constant training rate."""
    from ecgmae.eval.probe import fit_logistic

    outs = [np.zeros((len(x), y_train.shape[1])) for x in xs]
    for k in range(y_train.shape[1]):
        col = y_train[:, k]
        if col.min() == col.max():
            for o in outs:
                o[:, k] = float(col[0])
            continue
        model = fit_logistic(x_train, col, c)
        for o, x in zip(outs, xs, strict=True):
            o[:, k] = model.predict_proba(x)[:, 1]
    return outs


def probe_features(
    data: str | Path,
    out: str | Path,
    *,
    fraction: float,
    seed: int,
    classes: Sequence[str] = (),
    n_boot: int = 1000,
    cache: str | Path | None = None,
    c_grid: Sequence[float] = C_GRID,
    quiet: bool = True,
) -> dict[str, Any]:
    """Logistic regression on hand-made features at one label fraction; writes ``out/metrics.json``.

    Args:
        data: the prepared store.
        out: run directory (``metrics.json`` as a fine-tuning run writes it, ``train_records.txt``).
        fraction: label fraction of the train split (the linear probe's subset for ``seed``).
        seed: subset seed, solver seed and bootstrap seed.
        classes: label subset (empty = every class with a positive), as for ``ecgmae finetune``.
        n_boot: bootstrap resamples of the test CI.
        cache: feature cache file (see :func:`store_features`).
        c_grid: inverse regularisation strengths tried; the best validation macro AUROC wins (ties: the
            smaller C).
        quiet: no progress bar.

    Returns:
        The test report (:func:`ecgmae.eval.metrics.classification_report`) plus the run's settings.
    """
    from ecgmae.data.splits import label_subset, select_classes
    from ecgmae.data.store import Store
    from ecgmae.errors import DataError
    from ecgmae.eval.metrics import classification_report, macro_auroc

    store, out = Store.open(data), Path(out)
    class_idx = select_classes(store.label_names, store.labels, classes)
    names = [store.label_names[k] for k in class_idx]
    y = store.labels[:, class_idx].astype(np.int64)
    train_idx = label_subset(store.labels[:, class_idx], store.split_indices("train"), fraction, seed)
    val_idx, test_idx = store.split_indices("val"), store.split_indices("test")
    if len(train_idx) == 0 or len(test_idx) == 0:
        raise DataError(
            f"{store.path}: the feature probe needs train and test records "
            f"({len(train_idx)} train, {len(test_idx)} test)"
        )
    feats = store_features(store, cache, quiet=quiet).astype(np.float64)
    mean, std = feats[train_idx].mean(axis=0), feats[train_idx].std(axis=0)
    z = (feats - mean) / np.where(std > 1e-8, std, 1.0)
    val_auroc: dict[str, float | None] = {}
    for c in c_grid:
        if len(val_idx) == 0:
            break
        (p_val,) = fit_predict(z[train_idx], y[train_idx], [z[val_idx]], c)
        auc = macro_auroc(y[val_idx], p_val)
        val_auroc[f"{c:g}"] = auc if np.isfinite(auc) else None
    scored = {float(c): a for c, a in val_auroc.items() if a is not None}
    best = max(scored, key=lambda c: (scored[c], -c)) if scored else FALLBACK_C
    (p_test,) = fit_predict(z[train_idx], y[train_idx], [z[test_idx]], best)
    report = classification_report(y[test_idx], p_test, names, n_boot=n_boot, seed=seed)
    report.update(
        split="test",
        mode="linprobe",
        method="features",
        label_fraction=fraction,
        train_records=len(train_idx),
        seed=seed,
        encoder=None,
        C=best,
        val_macro_auroc=val_auroc,
        n_features=int(feats.shape[1]),
        store=str(store.path),
    )
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(
        out / "train_records.txt", "".join(f"{r}\n" for r in store.index["record"].iloc[train_idx].astype(str))
    )
    write_json_atomic(out / "metrics.json", report)
    log.info("features linprobe done: C=%g, test macro AUROC %.4f -> %s", best, report["macro_auroc"], out)
    return report


def source_record_features(leads: Sequence[str], rec: Any) -> tuple[str, np.ndarray]:
    """``(record id, features)`` of a :class:`~ecgmae.data.record.Record` mapped onto ``leads`` (absent ones as
    zero rows), at its own sampling rate; picklable with ``functools.partial`` for reader processes."""
    from ecgmae.data.signal import map_leads

    x, _ = map_leads(rec.signal, rec.leads, leads)
    return rec.record, ecg_features(x, rec.fs)
