"""Identity check for refactors: the same outputs, bit for bit, before and after a change.

    python benchmarks/identity.py OUT                # demo --fast + API outputs + evaluate report into OUT
    python benchmarks/identity.py --compare A B      # IDENTICAL, or what differs

Without ``--compare`` it works on one thread with fixed seeds and writes into ``OUT``:

- ``demo.json``: the rows of ``ecgmae demo --fast`` (``results.json`` without its timing);
- ``predict_proba.npy``: the demo's 100 %-label fine-tuned classifier on a few test records;
- ``embed_*.npy``: the demo encoder's embeddings of the same records with all 12 leads, with lead II only
  and with the 6 limb leads (absent leads exercise the missing-lead path);
- ``reconstruct_*.npy``: original, mask, reconstruction and presence of one record through the MAE;
- ``evaluate.json``: ``ecgmae evaluate``'s report of that classifier on the test split;
- ``cli_embed_w{1,2}_*.npy`` and ``cli_predict_w{1,2}.json``: ``ecgmae embed`` (the demo encoder) and ``ecgmae
  predict`` (the classifier) over the demo's WFDB folder with one record's data file truncated, with one and two
  reader processes: every array of the ``.npz`` and the CSV's text.

``--compare`` checks exact equality of every array (dtype, shape, bytes) and JSON document, and lists
what differs. Run it on the unchanged tree first (the baseline), then after each refactor step.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

LIMB = ("I", "II", "III", "AVR", "AVL", "AVF")
N_RECORDS = 6


def _records(demo: Path) -> list[Any]:
    from ecgmae.data.io import read_record

    heads = sorted((demo / "synth").rglob("*.hea"))[:N_RECORDS]
    return [read_record(h) for h in heads]


def _subset(rec: Any, leads: tuple[str, ...]) -> tuple[np.ndarray, float, list[str]]:
    names = [n.upper() for n in rec.leads]
    rows = [names.index(n) for n in leads]
    return np.asarray(rec.signal)[rows], float(rec.fs), list(leads)


def run(out: Path) -> None:
    import torch

    torch.set_num_threads(1)
    from ecgmae import load
    from ecgmae.cli import main

    out.mkdir(parents=True, exist_ok=True)
    demo = out / "demo"
    if main(["demo", "--fast", "--out", str(demo), "--overwrite", "--quiet"]) != 0:
        raise SystemExit("demo failed")
    res = json.loads((demo / "results.json").read_text())
    (out / "demo.json").write_text(json.dumps({"settings": res["settings"], "rows": res["rows"]}, indent=1))

    recs = _records(demo)
    clf = load(demo / "finetune_1")
    np.save(out / "predict_proba.npy", clf.predict_proba(recs))
    enc = load(demo / "pretrain")
    np.save(out / "embed_12.npy", enc.embed(recs))
    for name, leads in (("II", ("II",)), ("limb", LIMB)):
        parts = [_subset(r, leads) for r in recs]
        np.save(out / f"embed_{name}.npy", enc.embed([p[0] for p in parts], fs=[p[1] for p in parts], leads=leads))
        np.save(
            out / f"predict_proba_{name}.npy",
            clf.predict_proba([p[0] for p in parts], fs=[p[1] for p in parts], leads=leads),
        )
    r = enc.reconstruct(recs[0], mask_ratio=0.75, seed=0)
    for field in ("original", "mask", "reconstruction", "present"):
        np.save(out / f"reconstruct_{field}.npy", getattr(r, field))
    rep = out / "evaluate.json"
    if (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(demo / "finetune_1"),
                "--data",
                str(demo / "store"),
                "--n-boot",
                "200",
                "--out",
                str(rep),
                "--overwrite",
                "--quiet",
            ]
        )
        != 0
    ):
        raise SystemExit("evaluate failed")
    doc = json.loads(rep.read_text())
    for k in ("checkpoint", "store"):  # paths differ between output folders
        doc.pop(k, None)
    rep.write_text(json.dumps(doc, indent=1, sort_keys=True))
    _cli_outputs(out, demo, main)
    print(f"identity outputs in {out}")


def _cli_outputs(out: Path, demo: Path, main: Any) -> None:
    """``embed`` and ``predict`` over a copy of the demo's WFDB folder in which one record is truncated."""
    import shutil

    src = out / "cli_src"
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(demo / "synth", src)
    dat = sorted(src.rglob("*.dat"))[len(list(src.rglob("*.dat"))) // 2]
    dat.write_bytes(dat.read_bytes()[:1000])
    for w in ("1", "2"):
        emb, csv = out / f"cli_embed_w{w}.npz", out / f"cli_predict_w{w}.csv"
        base = ["--src", str(src), "--workers", w, "--overwrite", "--quiet"]
        if main(["embed", "--checkpoint", str(demo / "pretrain"), "--out", str(emb), *base]) != 0:
            raise SystemExit("embed failed")
        if main(["predict", "--checkpoint", str(demo / "finetune_1"), "--out", str(csv), *base]) != 0:
            raise SystemExit("predict failed")
        with np.load(emb) as z:
            for name in z.files:
                np.save(out / f"cli_embed_w{w}_{name}.npy", z[name])
        (out / f"cli_predict_w{w}.json").write_text(json.dumps({"csv": csv.read_text()}))


def compare(a: Path, b: Path) -> int:
    names = sorted(
        {p.name for p in a.iterdir() if p.suffix in (".npy", ".json")}
        | {p.name for p in b.iterdir() if p.suffix in (".npy", ".json")}
    )
    diffs = []
    for name in names:
        pa, pb = a / name, b / name
        if not pa.exists() or not pb.exists():
            diffs.append(f"{name}: only in {a if pa.exists() else b}")
            continue
        if name.endswith(".json"):
            ja, jb = json.loads(pa.read_text()), json.loads(pb.read_text())
            if ja != jb:
                diffs.append(f"{name}: JSON differs")
            continue
        xa, xb = np.load(pa), np.load(pb)
        if xa.dtype != xb.dtype or xa.shape != xb.shape:
            diffs.append(f"{name}: {xa.dtype}{xa.shape} vs {xb.dtype}{xb.shape}")
        elif xa.tobytes() != xb.tobytes():
            d = np.abs(xa.astype(np.float64) - xb.astype(np.float64))
            diffs.append(f"{name}: {int((xa != xb).sum())} values differ (max abs {np.nanmax(d):.3g})")
    if diffs:
        print("DIFFERENT\n" + "\n".join(f"  {d}" for d in diffs))
        return 1
    print(f"IDENTICAL ({len(names)} files)")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, nargs="?", help="folder for the outputs")
    p.add_argument("--compare", type=Path, nargs=2, metavar=("A", "B"), help="compare two output folders")
    args = p.parse_args(argv)
    if args.compare:
        return compare(*args.compare)
    if args.out is None:
        p.error("give an output folder or --compare A B")
    run(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
