"""Build the pre-trained weights that ship inside ecgmae, in one resumable command.

    nohup python benchmarks/release_weights.py --out runs/release > runs/release.log 2>&1 &
    python benchmarks/release_weights.py --out runs/release --install   # when it is done: copy into the package

Stages, each skipped when its product exists; a run killed at any point continues when the same command is
given again (pre-training resumes from its ``last.ckpt``):

1. corpus: ``ecgmae synth --engine deepfake --n N --fs 250 --seed SEED`` (``pip install 'ecgmae[deepfake]'``).
2. store: ``ecgmae prepare --source folder`` with prepare's defaults (100 Hz, 10 s, band-pass 0.5-40 Hz, mV).
3. pretrain: ``ecgmae pretrain --model MODEL --max-steps STEPS --seed SEED`` (plus ``--set`` overrides), with
   ``OMP_NUM_THREADS=THREADS``.
4. untrained: the same model with ``--max-steps 0``, the card's baseline.
5. checks: linear probes of the pre-trained encoder, the untrained one and the hand-made features on the real
   recordings of ``../shared/data`` (``real_checks.py``: the CinC 2021 sample with 12 leads and with lead II
   alone, MIT-BIH 100 premature beats, the CinC 2020 CPSC sample); ``OUT/checks.json`` and ``OUT/checks.md``.
6. ``--install``: ``src/ecgmae/weights/NAME/`` (encoder and MAE weights with the store path left out of their
   headers, and ``model_card.json`` with the recipe and the checks) and ``index.json`` with every file's sha256.

Reproducibility: the same recipe gives bit-identical weights (``tensor_sha256`` in the card) on the same
thread count, precision, torch build and deepfake-ecg version; the shipped weights used ``--threads 1``
(2-thread CPU runs are not bit-repeatable on a busy machine). ``--verify`` compares a finished run with the
installed card.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib.util
import json
import os
import platform
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import real_checks
from ecgmae.utils import write_json_atomic, write_text_atomic
from stages import Stages, say

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "src" / "ecgmae" / "weights"
# The recipe of the shipped model; every value is a flag of this script.
RECIPE: dict[str, Any] = {
    "name": "ecgmae-small-v1",
    "aliases": "ecgmae-small",
    "engine": "deepfake",
    "n": 48000,
    "corpus_fs": 250.0,
    "seed": 0,
    "model": "ecgmae_small",
    "steps": 24000,
    "set": [],
    "threads": 1,
}


def tensor_sha256(file: Path) -> str:
    """sha256 over the tensors of a safetensors file (names sorted; dtype, shape and bytes), not its header."""
    from safetensors.numpy import load_file

    h = hashlib.sha256()
    for name, arr in sorted(load_file(str(file)).items()):
        h.update(f"{name}:{arr.dtype}:{arr.shape};".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def file_sha256(file: Path) -> str:
    return hashlib.sha256(file.read_bytes()).hexdigest()


def corpus_recipe(corpus: Path) -> tuple[str, int, float, int] | None:
    """(engine, n, fs, seed) of a folder written by ``ecgmae synth``; None for anything else."""
    if (corpus / "source.json").is_file():
        d = json.loads((corpus / "source.json").read_text())
        return ("deepfake", d.get("n"), d.get("fs"), d.get("seed"))
    if (corpus / "classes.json").is_file():
        g = json.loads((corpus / "classes.json").read_text()).get("generator", {})
        return ("builtin", g.get("n"), g.get("fs"), g.get("seed"))
    return None


def pipeline(args: argparse.Namespace) -> tuple[dict[str, Any], Path, Path]:
    """Stages 1-4; returns the stages' records and the pre-training and untrained run directories."""
    out = args.out
    corpus, store, run, untrained = out / "corpus", out / "store", out / "pretrain", out / "untrained"
    if corpus.exists():
        got = corpus_recipe(corpus)
        if got != (args.engine, args.n, args.corpus_fs, args.seed):
            raise SystemExit(
                f"release_weights: {corpus} holds (engine, n, fs, seed) = {got}, not this recipe's; "
                "use another --out or delete it"
            )
    elif args.engine == "deepfake" and importlib.util.find_spec("deepfakeecg") is None:
        raise SystemExit("release_weights: the corpus needs the deepfake-ecg GAN: pip install 'ecgmae[deepfake]'")
    out.mkdir(parents=True, exist_ok=True)
    stages = Stages(out)
    env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    stages.run(
        "corpus",
        [
            "synth",
            "--engine",
            args.engine,
            "--n",
            str(args.n),
            "--fs",
            f"{args.corpus_fs:g}",
            "--seed",
            str(args.seed),
            "--out",
            str(corpus),
            "--quiet",
        ],
        corpus,
        env=env,
    )
    stages.run(
        "store",
        ["prepare", "--source", "folder", "--src", str(corpus), "--out", str(store), "--quiet"],
        store / "meta.json",
        env=env,
    )
    common = [
        "--data",
        str(store),
        "--model",
        args.model,
        "--seed",
        str(args.seed),
        "--quiet",
        *(a for kv in args.set for a in ("--set", kv)),
    ]
    resume = ["--resume"] if (run / "last.ckpt").exists() and not (run / "encoder.safetensors").exists() else []
    stages.run(
        "pretrain",
        ["pretrain", "--out", str(run), "--max-steps", str(args.steps), *common, *resume],
        run / "encoder.safetensors",
        env=env,
    )
    if untrained.exists() and not (untrained / "encoder.safetensors").exists():
        shutil.rmtree(untrained)
    stages.run(
        "untrained",
        ["pretrain", "--out", str(untrained), "--max-steps", "0", *common],
        untrained / "encoder.safetensors",
        env=env,
    )
    return stages.done, run, untrained


def checks(out: Path, run: Path, untrained: Path, name: str, only: list[str]) -> dict[str, Any]:
    """Stage 5: the real-recording checks (re-used from OUT/checks.json when its runs are unchanged)."""
    file = out / "checks.json"
    key = {
        "pretrain": tensor_sha256(run / "encoder.safetensors"),
        "untrained": tensor_sha256(untrained / "encoder.safetensors"),
        "tasks": only,
        "hybrid": True,
    }
    if file.exists():
        old = json.loads(file.read_text())
        if old.get("weights") == key:
            say(f"checks: done already ({file})")
            return old
    tasks = [t for t in real_checks.load_tasks(say=say) if not only or t.name in only]
    res = real_checks.check({name: run, "untrained": untrained}, tasks, hybrid=[name], say=say)
    doc = {
        "weights": key,
        "tasks": {
            t.name: {
                "what": t.what,
                "records": len(t.signals),
                "classes": t.classes,
                "positives": t.Y.sum(axis=0).tolist(),
                "folds": t.folds,
                "repeats": t.repeats,
                "chooses": t.chooses,
            }
            for t in tasks
        },
        "results": res,
    }
    write_json_atomic(file, doc)
    write_text_atomic(out / "checks.md", real_checks.table(res, tasks) + "\n")
    return doc


def portable(stage: dict[str, Any]) -> str | None:
    """A stage's command as anyone can type it: its environment first, ``python`` for this interpreter's path."""
    cmd = stage.get("command")
    if not cmd:
        return None
    env = (stage.get("attempts") or [{}])[-1].get("env") or {}
    return " ".join([*(f"{k}={v}" for k, v in env.items()), cmd.replace(sys.executable, "python", 1)])


def card(args: argparse.Namespace, done: dict[str, Any], run: Path, doc: dict[str, Any]) -> dict[str, Any]:
    """The shipped model card: the run's own card plus a ``release`` section (recipe, commands, checks)."""
    import torch

    from ecgmae.checkpoint import read_header

    base = json.loads((run / "model_card.json").read_text())
    header = read_header(run / "encoder.safetensors")
    base["data"]["store"] = None
    res = doc["results"]
    from safetensors.numpy import load_file

    n_params = sum(int(v.size) for v in load_file(str(run / "encoder.safetensors")).values())
    base["release"] = {
        "name": args.name,
        "aliases": [a for a in args.aliases.split(",") if a],
        "trained_on": (
            f"{args.n:,} DeepFake ECGs (deepfake-ecg GAN trained on real 12-lead ECGs; seed {args.seed})"
            if args.engine == "deepfake"
            else f"{args.n:,} built-in synthetic ECGs (seed {args.seed})"
        )
        + f", prepared at {header.data.fs:g} Hz with prepare's defaults",
        "parameters": f"{n_params / 1e6:.2f} M (encoder)",
        "recipe": {k: getattr(args, k) for k in RECIPE},
        "steps": header.train.steps,
        "batch_size": header.train.config.get("batch_size"),
        "commands": {
            k: {"command": portable(v), "wall_s": v.get("wall_s"), "attempts": len(v.get("attempts", []))}
            for k, v in done.items()
        },
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "threads": args.threads,
            "python": platform.python_version(),
        },
        "tensor_sha256": tensor_sha256(run / "encoder.safetensors"),
        "date": dt.date.today().isoformat(),
        "checks": doc,
        "checks_macro_auroc": {t: round(r[args.name]["macro"], 3) for t, r in res.items()},
        "features_macro_auroc": {t: round(r["features"]["macro"], 3) for t, r in res.items() if "features" in r},
        "untrained_macro_auroc": {t: round(r["untrained"]["macro"], 3) for t, r in res.items()},
        "hybrid_macro_auroc": {t: round(r[f"{args.name} + features"]["macro"], 3) for t, r in res.items()},
        "how_to_reproduce": "python benchmarks/release_weights.py --out runs/release "
        + " ".join(
            f"--{k.replace('_', '-')} {shlex.quote(str(v))}"
            for k, v in {k: getattr(args, k) for k in RECIPE}.items()
            if k != "set"
        )
        + "".join(f" --set {shlex.quote(s)}" for s in args.set),
    }
    return base


def card_markdown(card_doc: dict[str, Any]) -> str:
    """The model card's checks as markdown: per task, one row per embedding with its macro and per-class AUROC."""
    rel = card_doc["release"]
    lines = [
        f"# {rel['name']}",
        "",
        f"Pre-trained on {rel['trained_on']}; {rel['parameters']} parameters, "
        f"{rel['steps']} steps of batch {rel['batch_size']}, seed {rel['recipe']['seed']}, "
        f"{rel['machine']['threads']} thread(s), torch {rel['machine']['torch']}.",
        "",
        f"Reproduce: `{rel['how_to_reproduce']}`",
        "",
    ]
    for task, info in rel["checks"]["tasks"].items():
        rows = rel["checks"]["results"][task]
        lines += [
            f"## {task}: {info['what']}",
            "",
            f"{info['records']} recordings; {info['folds']}-fold CV x {info['repeats']} repeats; positives "
            + ", ".join(f"{c} {p}" for c, p in zip(info["classes"], info["positives"], strict=True)),
            "",
            "| embedding | macro AUROC | " + " | ".join(info["classes"]) + " |",
            "|---|---|" + "---|" * len(info["classes"]),
        ]
        for name, r in rows.items():
            lines.append(
                f"| {name} | {r['macro']:.3f} ± {r['macro_std']:.3f} | "
                + " | ".join(f"{r['per_class'][c]:.3f}" for c in info["classes"])
                + " |"
            )
        lines.append("")
    return "\n".join(lines)


def install(args: argparse.Namespace, run: Path, card_doc: dict[str, Any]) -> Path:
    """Stage 6: write the weights, their card and the index into the package (atomically per file)."""
    import dataclasses

    from ecgmae.checkpoint import load_checkpoint, save_checkpoint

    dest = WEIGHTS / args.name
    dest.mkdir(parents=True, exist_ok=True)
    for fname in ("encoder.safetensors", "mae.safetensors"):
        state, header = load_checkpoint(run / fname)
        header = dataclasses.replace(header, data=dataclasses.replace(header.data, store=None))
        save_checkpoint(dest / fname, state, header)
    write_json_atomic(dest / "model_card.json", card_doc)
    index_file = WEIGHTS / "index.json"
    index = json.loads(index_file.read_text()) if index_file.exists() else {"format": 1, "models": []}
    entry = {
        "name": args.name,
        "aliases": card_doc["release"]["aliases"],
        "dir": args.name,
        "sha256": {f: file_sha256(dest / f) for f in ("encoder.safetensors", "mae.safetensors", "model_card.json")},
    }
    taken = set(entry["aliases"]) | {args.name}
    models = [
        dict(m, aliases=[a for a in m.get("aliases", []) if a not in taken])
        for m in index["models"]
        if m["name"] != args.name
    ]
    index["models"] = [entry, *models]
    write_json_atomic(index_file, index)
    return dest


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/release"))
    ap.add_argument("--name", default=RECIPE["name"], help="shipped name (default %(default)s)")
    ap.add_argument("--aliases", default=RECIPE["aliases"], help="other names, comma-separated (default %(default)s)")
    ap.add_argument(
        "--engine",
        choices=("deepfake", "builtin"),
        default=RECIPE["engine"],
        help="corpus generator of ecgmae synth (default %(default)s)",
    )
    ap.add_argument("--n", type=int, default=RECIPE["n"], help="DeepFake ECGs to synthesise (default %(default)s)")
    ap.add_argument("--corpus-fs", type=float, default=RECIPE["corpus_fs"], help="corpus rate (default %(default)s)")
    ap.add_argument("--seed", type=int, default=RECIPE["seed"], help="corpus and pre-training seed")
    ap.add_argument("--model", default=RECIPE["model"], help="registered model (default %(default)s)")
    ap.add_argument("--steps", type=int, default=RECIPE["steps"], help="optimiser steps (default %(default)s)")
    ap.add_argument(
        "--set",
        action="append",
        default=list(RECIPE["set"]),
        metavar="KEY=VALUE",
        help="pretrain --set override, repeatable (e.g. model_overrides.depth=6)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=RECIPE["threads"],
        help="OMP_NUM_THREADS for every stage (default %(default)s: bit-repeatable on CPU)",
    )
    ap.add_argument("--tasks", default="", help="only these real checks, comma-separated (default: all)")
    ap.add_argument("--install", action="store_true", help="copy the finished run into src/ecgmae/weights/")
    ap.add_argument("--verify", action="store_true", help="compare the finished run's weights with the installed card")
    args = ap.parse_args(argv)
    done, run, untrained = pipeline(args)
    doc = checks(args.out, run, untrained, args.name, [t for t in args.tasks.split(",") if t])
    card_doc = card(args, done, run, doc)
    write_json_atomic(args.out / "model_card.json", card_doc)
    write_text_atomic(args.out / "model_card.md", card_markdown(card_doc))
    say("checks (linear-probe macro AUROC):\n" + (args.out / "checks.md").read_text())
    if args.verify:
        shipped = WEIGHTS / args.name / "model_card.json"
        if not shipped.exists():
            raise SystemExit(f"release_weights: --verify: {shipped} is not installed")
        want = json.loads(shipped.read_text())["release"]["tensor_sha256"]
        same = want == card_doc["release"]["tensor_sha256"]
        say(f"verify: the weights {'ARE' if same else 'are NOT'} bit-identical to the shipped {args.name}")
        if not same:
            raise SystemExit(1)
    if args.install:
        say(f"installed {install(args, run, card_doc)}")


if __name__ == "__main__":
    from ecgmae.errors import ECGMAEError

    try:
        main()
    except ECGMAEError as exc:
        raise SystemExit(f"release_weights: {exc}") from None
