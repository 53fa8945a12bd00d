"""ONNX export of a trained model, checked against PyTorch before the file appears.

The exported graph takes preprocessed windows ``x: (batch, leads, window)`` float32 (the model's leads
in order, at its rate, in its units) with a dynamic batch size, and returns ``logits`` and
``probabilities`` (classifiers) or ``embedding`` (encoder runs). Everything needed to prepare its
input (rate, leads, window, stride, filters, normalisation, label names) is stored in the ONNX
metadata under the key ``ecgmae`` as JSON.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ecgmae.errors import ECGMAEError
from ecgmae.utils import atomic_path, log

DEFAULT_OPSET = 17


class _Classify(nn.Module):
    def __init__(self, net: nn.Module, lead_idx: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("lead_idx", lead_idx)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(x, lead_idx=self.lead_idx)
        return logits, torch.sigmoid(logits)


class _Embed(nn.Module):
    def __init__(self, encoder: nn.Module, lead_idx: torch.Tensor) -> None:
        super().__init__()
        self.encoder = encoder
        self.register_buffer("lead_idx", lead_idx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x, lead_idx=self.lead_idx)


def export_onnx(
    checkpoint: str | Path, out: str | Path, *, opset: int = DEFAULT_OPSET, atol: float = 1e-4, seed: int = 0
) -> dict[str, Any]:
    """Export a classifier (or an encoder run's pooled embedding) to ONNX and check it against PyTorch.

    The parity check runs the ONNX file with onnxruntime on seeded random windows at two batch sizes
    (1 and 3, so the dynamic batch axis is exercised) and compares every output with the PyTorch
    model; the file is written only when the largest absolute difference is within ``atol``.

    Args:
        checkpoint: run directory or ``.safetensors`` file.
        out: the ``.onnx`` file to write (atomically).
        opset: ONNX opset version.
        atol: largest absolute difference accepted.
        seed: seed of the check inputs.

    Returns:
        A report: ``path``, ``kind``, ``inputs``, ``outputs``, ``max_abs_diff`` (per output),
        ``batch_sizes_checked``, ``opset``.

    Raises:
        ECGMAEError: onnx/onnxruntime missing, or the exported graph disagrees with PyTorch.
    """
    try:
        import onnx
        import onnxruntime as ort
    except ImportError as exc:
        raise ECGMAEError(f"ONNX export needs onnx and onnxruntime ({exc}); pip install 'ecgmae[onnx]'") from None
    from ecgmae.api import load

    model = load(checkpoint, device="cpu")
    li = torch.as_tensor(model.lead_idx, dtype=torch.long)
    if model.kind == "classifier":
        wrapper: nn.Module = _Classify(model.module, li)
        outputs = ["logits", "probabilities"]
    else:
        wrapper = _Embed(model.encoder, li)
        outputs = ["embedding"]
    wrapper.eval()
    gen = torch.Generator().manual_seed(seed)
    shape = (len(model.leads), model.window)
    example = torch.randn(2, *shape, generator=gen)
    meta = {
        "format": "ecgmae-onnx-1",
        "kind": model.kind,
        "input": "x",
        "input_shape": ["batch", *shape],
        "outputs": outputs,
        "fs": model.fs,
        "leads": list(model.leads),
        "window_samples": model.window,
        "eval_stride_samples": model.stride,
        "aggregate": model.aggregate,
        "preprocessing": model.preprocessing.to_dict(),
        "label_names": model.label_names,
        "model": model.info.get("model"),
        "ecgmae_version": model.info.get("ecgmae_version"),
    }
    out = Path(out)
    with atomic_path(out) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and deprecation chatter of the TorchScript exporter
            torch.onnx.export(
                wrapper,
                (example,),
                str(tmp),
                input_names=["x"],
                output_names=outputs,
                dynamic_axes={"x": {0: "batch"}, **{name: {0: "batch"} for name in outputs}},
                opset_version=opset,
                dynamo=False,
            )
        proto = onnx.load(str(tmp))
        onnx.checker.check_model(proto)
        entry = proto.metadata_props.add()
        entry.key, entry.value = "ecgmae", json.dumps(meta)
        proto.doc_string = (
            f"ecgmae {model.kind}: x (batch, {shape[0]} leads {','.join(model.leads)}, "
            f"{shape[1]} samples at {model.fs:g} Hz, preprocessed as in metadata 'ecgmae') -> "
            f"{', '.join(outputs)}"
        )
        onnx.save(proto, str(tmp))
        diffs = _parity(str(tmp), wrapper, shape, outputs, gen, ort)
        worst = max(diffs.values())
        if not worst <= atol:
            raise ECGMAEError(
                f"{out}: ONNX outputs differ from PyTorch by up to {worst:.3g} (> {atol:g}); not written ({diffs})"
            )
    log.info("exported %s -> %s (max abs diff %.3g)", model.path, out, worst)
    return {
        "path": str(out),
        "kind": model.kind,
        "inputs": {"x": ["batch", *shape]},
        "outputs": outputs,
        "max_abs_diff": diffs,
        "batch_sizes_checked": [1, 3],
        "opset": opset,
    }


@torch.inference_mode()
def _parity(
    path: str, wrapper: nn.Module, shape: tuple[int, int], outputs: list[str], gen: torch.Generator, ort: Any
) -> dict[str, float]:
    """Largest absolute difference per output between onnxruntime and PyTorch, batches of 1 and 3."""
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    diffs = dict.fromkeys(outputs, 0.0)
    for batch in (1, 3):
        x = torch.randn(batch, *shape, generator=gen)
        ref = wrapper(x)
        ref = ref if isinstance(ref, tuple) else (ref,)
        got = session.run(outputs, {"x": x.numpy()})
        for name, r, g in zip(outputs, ref, got, strict=True):
            if g.shape != tuple(r.shape):
                raise ECGMAEError(f"{path}: ONNX output {name} has shape {g.shape}, PyTorch {tuple(r.shape)}")
            diffs[name] = max(diffs[name], float(np.abs(g - r.numpy()).max()))
    return diffs
