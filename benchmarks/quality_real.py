"""Real-data quality in one command: pre-train on realistic unlabelled ECGs, linear-probe real labelled ones.

    python benchmarks/quality_real.py --out runs/quality_real   # about 35 min on 2 idle CPU cores

Steps, each skipped when its output exists (a re-run resumes; delete a folder to redo that step):

1. corpus: ``ecgmae synth --engine deepfake --n N --fs 250`` (needs ``pip install 'ecgmae[deepfake]'``).
2. store: ``ecgmae prepare --source folder`` with prepare's default options (``--fs``, ``--prepare-args``
   add flags), so the shipped defaults are what is measured.
3. pre-training: every method of ``--methods`` with the default model and learning rate for the steps of
   ``STEPS`` (or ``--steps``; set so each method gets about the same wall-clock budget), once per seed;
   plus ``random``: the same encoder untrained (``--max-steps 0``).
4. probe: every run's embeddings of the real CinC 2021 sample (``--real``), beside the hand-made features
   (``ecgmae.eval.features``) of the raw records, in a repeated stratified k-fold logistic regression
   (``ecgmae.eval.probe.cv_probe``; classes with at least ``--min-count`` positives and negatives). All rows
   share the same folds, so the difference to random init is paired per repeat.
5. fewer leads (``--leads``, default lead II alone): the same CinC probe with only those leads given to every
   run and to the features, the others absent, as from a Holter monitor or a wearable.
6. held-out check (``--beats``, default MIT-BIH record 100 from ../shared/data/wfdb-sample): its 30 min cut
   into 10 s segments, label "holds an atrial premature beat" from the reference annotations, probed the same
   way. One patient, two leads (the others absent): a different task from the CinC classes, not used to
   choose any default.

Prints progress lines and a markdown table; writes ``OUT/results.json`` and ``OUT/results.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import real_checks
from ecgmae.utils import write_json_atomic, write_text_atomic
from stages import Stages, say

STEPS: dict[str, int] = {"mae": 4500, "simclr": 3250, "cmsc": 2900}  # about 8-9 minutes each on 2 idle cores (measured)
REPO = Path(__file__).resolve().parents[1]
SETTINGS = ("classes", "records", "folds", "repeats", "Cs", "inner_folds", "seed")  # the probe's, kept once
FEWER_KEYS = ("macro", "macro_std", "per_class")
BEAT_KEYS = ("macro", "macro_std", "macro_by_repeat")


def parse_steps(text: str | None, methods: list[str]) -> dict[str, int]:
    """``mae=2500,simclr=1200`` (others from STEPS) or one number for every method."""
    steps = dict(STEPS)
    if text and "=" not in text:
        steps = {m: int(text) for m in methods}
    elif text:
        steps.update({k.strip(): int(v) for k, v in (p.split("=", 1) for p in text.split(","))})
    missing = [m for m in methods if m not in steps]
    if missing:
        raise SystemExit(f"quality_real: no step count for {', '.join(missing)}; pass --steps {missing[0]}=N")
    return {m: steps[m] for m in methods}


def paired(a: list[float], b: list[float]) -> dict[str, float]:
    d = np.asarray(a) - np.asarray(b)
    return {"mean": float(d.mean()), "std": float(d.std(ddof=1)) if len(d) > 1 else 0.0}


def table(rows: list[dict[str, Any]], classes: list[str]) -> str:
    few = next((r["fewer_leads"]["leads"] for r in rows if "fewer_leads" in r), None)
    head = [
        "what",
        "seed",
        "steps",
        "wall min",
        "macro AUROC",
        "vs random",
        *([f"{'+'.join(few)} only"] if few else []),
        *classes,
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        d = r.get("vs_random")
        cells = [
            r["what"],
            "" if r["seed"] is None else str(r["seed"]),
            "" if r["steps"] is None else str(r["steps"]),
            "" if r["wall_s"] is None else f"{r['wall_s'] / 60:.1f}",
            f"{r['macro']:.3f} ± {r['macro_std']:.3f}",
            "" if d is None else f"{d['mean']:+.3f} ± {d['std']:.3f}",
            *([f"{r['fewer_leads']['macro']:.3f} ± {r['fewer_leads']['macro_std']:.3f}"] if few else []),
            *(f"{r['per_class'][c]:.3f}" for c in classes),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/quality_real"))
    ap.add_argument("--n", type=int, default=12000, help="deepfake records to synthesise (default 12000)")
    ap.add_argument("--corpus-fs", type=float, default=250.0, help="rate of the synthesised corpus (default 250)")
    ap.add_argument("--fs", type=float, help="store rate passed to prepare (default: prepare's own, 100 Hz)")
    ap.add_argument("--prepare-args", default="", help="extra flags for ecgmae prepare, one quoted string")
    ap.add_argument("--methods", default="mae,simclr,cmsc")
    ap.add_argument("--steps", help="mae=2500,simclr=1200,... (others from STEPS) or one count for all")
    ap.add_argument("--seeds", type=int, default=1, help="pre-train each method (and random) with seeds 0..K-1")
    ap.add_argument("--extra-pretrain-args", default="", help="extra flags for every ecgmae pretrain")
    ap.add_argument("--real", type=Path, default=REPO.parent / "shared" / "data" / "cinc2021-sample")
    ap.add_argument(
        "--beats",
        type=Path,
        default=REPO.parent / "shared" / "data" / "wfdb-sample" / "100",
        help="held-out check: an MIT-BIH record with .atr beat annotations (skipped when absent)",
    )
    ap.add_argument(
        "--leads",
        default="II",
        help="fewer-leads check: CinC probed again with only these leads (comma list; '' skips)",
    )
    ap.add_argument("--min-count", type=int, default=7, help="keep classes with this many positives and negatives")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m and m != "random"]  # random is always run
    steps = parse_steps(args.steps, methods)
    out = args.out
    if not any(args.real.glob("*.hea")):
        print(f"quality_real: no real labelled records (*.hea) in {args.real}; pass --real DIR. skipped")
        return
    corpus, store = out / "corpus", out / "store"
    if corpus.exists():
        src = json.loads((corpus / "source.json").read_text()) if (corpus / "source.json").exists() else {}
        if (src.get("n"), src.get("fs")) != (args.n, args.corpus_fs):
            raise SystemExit(
                f"quality_real: {corpus} holds n={src.get('n')} fs={src.get('fs')}, not n={args.n} "
                f"fs={args.corpus_fs:g}; use another --out or delete it"
            )
    elif importlib.util.find_spec("deepfakeecg") is None:
        raise SystemExit("quality_real: the corpus needs the deepfake-ecg GAN: pip install 'ecgmae[deepfake]'")
    out.mkdir(parents=True, exist_ok=True)
    stages = Stages(out)
    stages.run(
        "corpus",
        [
            "synth",
            "--engine",
            "deepfake",
            "--n",
            str(args.n),
            "--fs",
            f"{args.corpus_fs:g}",
            "--out",
            str(corpus),
            "--quiet",
        ],
        corpus,
    )
    stages.run(
        "store",
        [
            "prepare",
            "--source",
            "folder",
            "--src",
            str(corpus),
            "--out",
            str(store),
            "--quiet",
            *(["--fs", f"{args.fs:g}"] if args.fs else []),
            *shlex.split(args.prepare_args),
        ],
        store / "meta.json",
    )
    runs: list[dict[str, Any]] = []
    extra = shlex.split(args.extra_pretrain_args)
    for seed in range(args.seeds):
        for method in ["random", *methods]:
            name = method if seed == 0 else f"{method}-s{seed}"
            run_dir = out / name
            if run_dir.exists() and not (run_dir / "encoder.safetensors").exists():
                shutil.rmtree(run_dir)  # an interrupted run: start it again so its wall time is honest
            n_steps = 0 if method == "random" else steps[method]
            rec = stages.run(
                name,
                [
                    "pretrain",
                    "--data",
                    str(store),
                    "--out",
                    str(run_dir),
                    "--method",
                    "mae" if method == "random" else method,
                    "--max-steps",
                    str(n_steps),
                    "--seed",
                    str(seed),
                    "--quiet",
                    *extra,
                ],
                run_dir / "encoder.safetensors",
            )
            runs.append(
                {
                    "what": method,
                    "name": name,
                    "seed": seed,
                    "steps_asked": n_steps,
                    "wall_s": rec["wall_s"],
                    "path": str(run_dir),
                }
            )

    import torch

    import ecgmae
    from ecgmae.checkpoint import read_header

    subset = [n.strip() for n in args.leads.split(",") if n.strip()]
    tasks = real_checks.load_tasks(
        leads=subset,
        folds=args.folds,
        repeats=args.repeats,
        min_count=args.min_count,
        cinc=args.real,
        beats=args.beats,
        only=("cinc", "cinc_leads", "mitbih_pac"),
        say=say,
    )
    cinc = tasks[0]
    say(f"probe: {len(cinc.signals)} real records from {args.real}, classes {', '.join(cinc.classes)}")
    if not cinc.classes:
        raise SystemExit(f"quality_real: no class of {args.real} has {args.min_count} positives and negatives")
    res = real_checks.check({run["name"]: run["path"] for run in runs}, tasks, keep=None, say=say)
    fewer = res.get(f"cinc_{'+'.join(subset)}") if subset else None
    settings: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for run in [*runs, {"what": "features", "name": "features", "seed": None, "steps": None, "wall_s": None}]:
        if run["name"] != "features":  # the steps it really had
            run["steps"] = read_header(Path(run["path"]) / "encoder.safetensors").train.steps
        probed = res["cinc"][run["name"]]
        settings.update({k: probed.pop(k) for k in SETTINGS})
        rows.append({**run, **probed})
        if fewer is not None:
            rows[-1]["fewer_leads"] = {"leads": subset, **{k: fewer[run["name"]][k] for k in FEWER_KEYS}}
    rand = {r["seed"]: r["macro_by_repeat"] for r in rows if r["what"] == "random"}
    rand_mean = np.mean(list(rand.values()), axis=0).tolist()
    for r in rows:
        if r["what"] != "random":
            r["vs_random"] = paired(r["macro_by_repeat"], rand.get(r["seed"], rand_mean))
    by_method = {}
    for what in ["random", *methods]:
        m = [r["macro"] for r in rows if r["what"] == what]
        by_method[what] = {
            "macro_mean": float(np.mean(m)),
            "macro_std_over_seeds": float(np.std(m, ddof=1)) if len(m) > 1 else 0.0,
            "seeds": len(m),
        }
    beats = None
    if "mitbih_pac" in res:
        task = next(t for t in tasks if t.name == "mitbih_pac")
        beats = {
            "record": str(args.beats),
            "segments": len(task.signals),
            "positives": int(task.Y.sum()),
            "leads": list(task.leads[0]),
            "rows": [
                {"name": name, **{k: res["mitbih_pac"][name][k] for k in BEAT_KEYS}}
                for name in ["features", *(run["name"] for run in runs)]
            ],
        }
    md = table(rows, cinc.classes)
    if args.seeds > 1:
        md += "\n\nmean over seeds: " + ", ".join(
            f"{k} {v['macro_mean']:.3f} ± {v['macro_std_over_seeds']:.3f}" for k, v in by_method.items()
        )
    md += (
        f"\n\nmacro AUROC ± std over {args.repeats} repeats of {args.folds}-fold CV on {len(cinc.signals)} real "
        f"records; 'vs random': paired difference to the untrained encoder of the same seed "
        "(features: to the mean of the random seeds)"
        + (
            f"; '{'+'.join(subset)} only': the same probe with only lead(s) {', '.join(subset)} given "
            "(the others absent)"
            if subset
            else ""
        )
        + ".\n"
    )
    if beats:
        md += (
            f"\nHeld-out check, not used to choose defaults: {beats['segments']} segments of 10 s of "
            f"{args.beats.name} ({beats['positives']} with an atrial premature beat), same probe:\n\n"
            + "\n".join(f"- {r['name']}: {r['macro']:.3f} ± {r['macro_std']:.3f}" for r in beats["rows"])
            + "\n"
        )
    result = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "ecgmae": ecgmae.__version__,
        },
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "steps": steps,
        "commands": stages.commands,
        "real": {
            "path": str(args.real),
            "records": len(cinc.signals),
            "classes": cinc.classes,
            "fewer_leads": subset,
            "positives": {c: int(p) for c, p in zip(cinc.classes, cinc.Y.sum(axis=0), strict=True)},
        },
        "probe": settings,
        "rows": rows,
        "by_method": by_method,
        "beats": beats,
    }
    write_json_atomic(out / "results.json", result)
    write_text_atomic(out / "results.md", md)
    print("\n" + md)
    say(f"wrote {out / 'results.json'} and {out / 'results.md'}")


if __name__ == "__main__":
    from ecgmae.errors import ECGMAEError

    try:
        main()
    except ECGMAEError as exc:  # bad data or checkpoint: one line, no stack trace
        raise SystemExit(f"quality_real: {exc}") from None
