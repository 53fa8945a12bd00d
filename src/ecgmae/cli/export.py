"""``ecgmae export``: a trained model as ONNX (dynamic batch), checked against PyTorch."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ecgmae.cli._common import add_command, add_overwrite


def add_parser(sub: Any) -> None:
    p = add_command(
        sub,
        "export",
        run=run,
        help="export a classifier (or an encoder's embedding) to ONNX with a parity check against PyTorch",
        example="ecgmae export --checkpoint runs/ft --format onnx --out model.onnx",
        description="Write an ONNX graph taking preprocessed windows x (batch, leads, window) float32 and "
        "returning logits and probabilities (classifier runs) or embedding (encoder runs); the batch axis "
        "is dynamic. The preprocessing, leads, rate and label names go into the ONNX metadata (key "
        "'ecgmae'). The file is written only if onnxruntime reproduces PyTorch within --atol.",
    )
    p.add_argument("--checkpoint", required=True, help="run directory or .safetensors file")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="export format (onnx)")
    p.add_argument("--out", required=True, type=Path, help="file to write (atomically)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version (default 17)")
    p.add_argument("--atol", type=float, default=1e-4, help="largest accepted |ONNX - PyTorch| (default 1e-4)")
    add_overwrite(p)


def run(args: argparse.Namespace) -> int:
    from ecgmae.checkpoint import checkpoint_files
    from ecgmae.export import export_onnx
    from ecgmae.guards import check_output_file

    check_output_file(args.out, checkpoint_files(args.checkpoint), overwrite=args.overwrite)

    rep = export_onnx(args.checkpoint, args.out, opset=args.opset, atol=args.atol)
    worst = max(rep["max_abs_diff"].values())
    print(
        f"{args.out}: {rep['kind']} x {rep['inputs']['x']} -> {', '.join(rep['outputs'])}; parity with "
        f"PyTorch at batch sizes {rep['batch_sizes_checked']}: max abs diff {worst:.3g}"
    )
    print(json.dumps(rep["max_abs_diff"]))
    return 0
