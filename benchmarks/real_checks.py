"""The real-recording checks an encoder is judged by: linear probes of its embeddings, beside hand-made features.

Used by ``quality_real.py`` (choosing defaults) and ``release_weights.py`` (the shipped model's card). Each
task is a small real labelled set from ``../shared/data``; a task whose files are absent is skipped with a
line. ``chooses`` says whether defaults may be chosen on it (only the CinC 2021 sample with 12 leads); the
others are checks that choose nothing.

- ``cinc``: the 50 CinC 2021 records (Georgia, PTB-XL, Ningbo), 12 leads, every class with at least 7
  positives and 7 negatives (NSIVCB, NSR, PAC, SB, STach, TAb), 5 x 5 repeated stratified CV.
- ``cinc_II``: the same records and classes with lead II alone (the other 11 absent), as from a Holter or a
  wearable.
- ``mitbih_pac``: MIT-BIH record 100 cut into 10 s segments, "holds an atrial premature beat" from the
  reference beat annotations; one patient, two leads (MLII, V5).
- ``cpsc2020``: the 10 CinC 2020 CPSC records, AF (4) and RBBB (3) against the rest, 3-fold CV repeated 10
  times: tiny, so its spread is wide.

The probe is :func:`ecgmae.eval.probe.cv_probe` (per class, standardised L2 logistic regression, C chosen by
an inner CV on the training folds); every embedding of a task shares the same folds, so rows are paired.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@dataclass(frozen=True)
class Task:
    """One probe task: signals (each ``(leads, samples)`` in mV), their rate and lead names, 0/1 labels."""

    name: str
    what: str
    signals: list[np.ndarray]
    fs: list[float]
    leads: list[tuple[str, ...]]
    Y: np.ndarray
    classes: list[str]
    folds: int
    repeats: int
    chooses: bool


def load_real(folder: Path, min_count: int) -> tuple[list[Any], list[str], np.ndarray]:
    """Records of a CinC folder (SNOMED ``# Dx:`` header lines), the classes kept and their 0/1 label matrix."""
    from ecgmae.data.io import read_record
    from ecgmae.data.sources.cinc import code_labels, dx_codes
    from ecgmae.eval.probe import frequent_classes

    recs = [read_record(p) for p in sorted(folder.glob("*.hea"))]
    labels = [set(code_labels(dx_codes(r.meta.get("comments", ())), "all")) for r in recs]
    names = sorted(set().union(*labels))
    Y = np.array([[n in s for n in names] for s in labels], dtype=np.int64).reshape(len(recs), len(names))
    keep = frequent_classes(Y, names, min_count)
    return recs, [names[k] for k in keep], Y[:, keep]


def load_beats(record: Path, seconds: float = 10.0) -> tuple[list[np.ndarray], float, tuple[str, ...], np.ndarray]:
    """10 s segments of an annotated WFDB record and whether each holds an atrial premature beat ('A')."""
    import wfdb

    from ecgmae.data.io import read_record

    rec = read_record(record.with_suffix(".hea"))
    ann = wfdb.rdann(str(record.with_suffix("")), "atr")
    seg = int(round(seconds * rec.fs))
    starts = range(0, rec.signal.shape[1] - seg + 1, seg)
    pac = np.array([s for s, sym in zip(ann.sample, ann.symbol, strict=True) if sym == "A"], dtype=np.int64)
    y = np.array([[bool(((pac >= a) & (pac < a + seg)).any())] for a in starts], dtype=np.int64)
    return [rec.signal[:, a : a + seg] for a in starts], rec.fs, tuple(rec.leads), y


def _cinc_task(
    name: str,
    what: str,
    folder: Path,
    min_count: int,
    folds: int,
    repeats: int,
    chooses: bool,
    subset: Sequence[str] = (),
) -> Task | None:
    if not any(folder.glob("*.hea")):
        return None
    recs, classes, Y = load_real(folder, min_count)
    if subset:
        lacking = [r for r in recs if not set(subset) <= set(r.leads)]
        if lacking:
            raise SystemExit(
                f"real_checks: {folder / lacking[0].record}: has only {', '.join(lacking[0].leads)}, "
                f"not {', '.join(subset)}"
            )
        sigs = [r.signal[[r.leads.index(n) for n in subset]] for r in recs]
        leads = [tuple(subset)] * len(recs)
    else:
        sigs, leads = [r.signal for r in recs], [tuple(r.leads) for r in recs]
    return Task(name, what, sigs, [float(r.fs) for r in recs], leads, Y, classes, folds, repeats, chooses)


def _beats_task(record: Path, folds: int, repeats: int) -> Task | None:
    if not record.with_suffix(".atr").exists():
        return None
    segs, fs, names, y = load_beats(record)
    return Task(
        "mitbih_pac",
        f"MIT-BIH {record.name}, atrial premature beat in 10 s (check)",
        segs,
        [fs] * len(segs),
        [names] * len(segs),
        y,
        ["PAC"],
        folds,
        repeats,
        False,
    )


TASKS = ("cinc", "cinc_leads", "mitbih_pac", "cpsc2020")


def load_tasks(
    shared: Path = SHARED,
    *,
    leads: Sequence[str] = ("II",),
    folds: int = 5,
    repeats: int = 5,
    min_count: int = 7,
    cinc: Path | None = None,
    beats: Path | None = None,
    only: Sequence[str] = TASKS,
    say: Callable[[str], None] = print,
) -> list[Task]:
    """Every task of ``only`` whose files are present (absent ones are skipped with a line), in a fixed order.

    ``cinc`` (a CinC folder) and ``beats`` (an annotated WFDB record) replace the samples in ``shared``;
    ``min_count``, ``folds`` and ``repeats`` apply to the CinC tasks and the beat check (CPSC keeps its own).
    """
    cinc = cinc or shared / "cinc2021-sample"
    beats = beats or shared / "wfdb-sample" / "100"
    cpsc = shared / "cinc2020-cpsc-sample"
    build: dict[str, Callable[[], Task | None]] = {
        "cinc": lambda: _cinc_task(
            "cinc", "CinC 2021 sample, 12 leads (chooses)", cinc, min_count, folds, repeats, True
        ),
        "cinc_leads": lambda: (
            _cinc_task(
                f"cinc_{'+'.join(leads)}",
                f"CinC 2021 sample, lead {'+'.join(leads)} alone (check)",
                cinc,
                min_count,
                folds,
                repeats,
                False,
                leads,
            )
            if leads
            else None
        ),
        "mitbih_pac": lambda: _beats_task(beats, folds, repeats),
        "cpsc2020": lambda: _cinc_task("cpsc2020", "CinC 2020 CPSC sample, AF and RBBB (check)", cpsc, 3, 3, 10, False),
    }
    tasks = []
    for name in TASKS:
        if name not in only:
            continue
        task = build[name]()
        if task is None and (name != "cinc_leads" or leads):
            say(f"real_checks: {name}: its files are not in {shared}; skipped")
        if task is not None:
            tasks.append(task)
    return tasks


PROBE_KEYS = ("macro", "macro_std", "macro_by_repeat", "per_class")


def probe(task: Task, X: np.ndarray, keep: Sequence[str] | None = PROBE_KEYS) -> dict[str, Any]:
    """``cv_probe`` of the task's labels from features ``X``: macro, its spread over repeats, per class
    (``keep``: the keys of cv_probe's result to return; None: all of them)."""
    from ecgmae.eval.probe import cv_probe

    res = cv_probe(X, task.Y, names=task.classes, folds=task.folds, repeats=task.repeats, seed=0)
    return res if keep is None else {k: res[k] for k in keep}


def embed(model: Any, task: Task, batch_size: int = 64) -> np.ndarray:
    """Embeddings of the task's signals by a loaded ``ecgmae`` model (its own preprocessing)."""
    out = [
        model.embed(task.signals[i : i + 1], fs=task.fs[i], leads=task.leads[i], batch_size=batch_size)[0]
        for i in range(len(task.signals))
    ]
    return np.stack(out)


def features(task: Task) -> np.ndarray:
    """The project's hand-made features (``ecgmae.eval.features.ecg_features``) of the task's signals."""
    from ecgmae.eval.features import ecg_features

    return np.stack([ecg_features(x, fs) for x, fs in zip(task.signals, task.fs, strict=True)])


def check(
    models: dict[str, str | Path],
    tasks: list[Task],
    *,
    with_features: bool = True,
    hybrid: Sequence[str] = (),
    keep: Sequence[str] | None = PROBE_KEYS,
    say: Callable[[str], None] = print,
) -> dict[str, dict[str, Any]]:
    """``{task: {row: probe result}}`` for every model (by name) and, with ``with_features``, the features.

    ``hybrid`` names models that get a second row ``NAME + features``: the embedding and the features side by
    side, the explicit hybrid read-out (beside the embedding's own row, never in place of it).
    """
    import ecgmae

    loaded = {name: ecgmae.load(path) for name, path in models.items()}
    out: dict[str, dict[str, Any]] = {}
    for task in tasks:
        rows: dict[str, Any] = {}
        F = features(task) if with_features or hybrid else None
        for name, model in loaded.items():
            E = embed(model, task)
            rows[name] = probe(task, E, keep)
            if name in hybrid and F is not None:
                rows[f"{name} + features"] = probe(task, np.hstack([E, F]), keep)
        if with_features and F is not None:
            rows["features"] = probe(task, F, keep)
        out[task.name] = rows
        say(f"{task.name}: " + ", ".join(f"{k} {v['macro']:.3f}" for k, v in rows.items()))
    return out


def table(results: dict[str, dict[str, Any]], tasks: list[Task]) -> str:
    """A markdown table: one row per embedding, one column per task (macro AUROC ± spread over repeats)."""
    names = list(dict.fromkeys(r for t in tasks for r in results.get(t.name, {})))
    head = ["embedding", *(t.name for t in tasks)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in names:
        cells = [n]
        for t in tasks:
            r = results.get(t.name, {}).get(n)
            cells.append("" if r is None else f"{r['macro']:.3f} ± {r['macro_std']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``python benchmarks/real_checks.py RUN [RUN ...]``: every check for each run (a path or a shipped name)."""
    import argparse
    import json

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run directories, checkpoint files or shipped model names")
    ap.add_argument("--shared", type=Path, default=SHARED, help="folder of the real samples (default %(default)s)")
    ap.add_argument("--leads", default="II", help="the fewer-leads check's leads, comma-separated ('' skips it)")
    ap.add_argument("--no-features", action="store_true", help="leave out the hand-made features' row")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    tasks = load_tasks(args.shared, leads=[n for n in args.leads.split(",") if n])
    res = check({r: r for r in args.runs}, tasks, with_features=not args.no_features)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    print(table(res, tasks))


if __name__ == "__main__":
    main()
