"""Safe weight files: safetensors tensors plus a JSON header with everything needed to rebuild.

A checkpoint is one ``.safetensors`` file whose metadata holds ``{"ecgmae": json}`` with the format
version, what kind of weights it holds (``encoder``, ``mae``, ``classifier``), the model config, the
preprocessing the weights expect (fs, leads, filters, normalisation), label names and a summary of the
run. Nothing is ever unpickled: a file that is not safetensors is refused before any of it is used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ecgmae._version import __version__
from ecgmae.errors import CheckpointError
from ecgmae.utils import atomic_path

FORMAT_VERSION = 1
KINDS = ("encoder", "mae", "classifier")
# What a run directory holds, in the order load() looks for it.
RUN_FILES = ("classifier.safetensors", "encoder.safetensors", "mae.safetensors")


def save_checkpoint(path: str | Path, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write ``state_dict`` and ``meta`` to ``path`` atomically.

    Args:
        path: destination ``.safetensors`` file.
        state_dict: tensors (made contiguous, moved to CPU).
        meta: JSON-serialisable; must contain ``kind`` (one of :data:`KINDS`) and ``model``.
    """
    from safetensors.torch import save_file

    if meta.get("kind") not in KINDS:
        raise ValueError(f"meta['kind'] must be one of {KINDS}, got {meta.get('kind')!r}")
    full = {"format_version": FORMAT_VERSION, "ecgmae_version": __version__, **meta}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"ecgmae": json.dumps(full)})
    return path


def resolve(path: str | Path, kind: str | None = None) -> Path:
    """The weight file for ``path``: the file itself, or the first of :data:`RUN_FILES` in a run dir."""
    path = Path(path)
    if path.is_dir():
        names = RUN_FILES if kind is None else (f"{kind}.safetensors",)
        for name in names:
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"{path}: no {' or '.join(names)} in this run directory")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file or run directory")
    return path


def read_meta(path: str | Path) -> dict[str, Any]:
    """The ecgmae header of a checkpoint, validated, without loading tensors."""
    from safetensors import safe_open

    path = resolve(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for non-safetensors files
        raise CheckpointError(
            f"{path}: not a safetensors checkpoint ({type(exc).__name__}: {exc}); ecgmae never unpickles "
            "weight files"
        ) from None
    if "ecgmae" not in header:
        raise CheckpointError(f"{path}: safetensors file without an ecgmae header (not written by ecgmae)")
    try:
        meta = json.loads(header["ecgmae"])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: corrupt ecgmae header ({exc})") from None
    version = meta.get("format_version")
    if not isinstance(version, int):
        raise CheckpointError(f"{path}: header has no integer format_version")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version} is newer than this ecgmae ({__version__}) reads "
            f"(up to {FORMAT_VERSION}); upgrade ecgmae"
        )
    if meta.get("kind") not in KINDS:
        raise CheckpointError(f"{path}: unknown checkpoint kind {meta.get('kind')!r}")
    return meta


def load_checkpoint(path: str | Path, kind: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and header of a checkpoint (a file or a run directory).

    The header is checked against the tensors the file holds (names and shapes, from the safetensors
    header) before any tensor is read or any module built: see :func:`ecgmae.guards.check_checkpoint`.

    Raises:
        CheckpointError: missing file, not safetensors, newer format, the wrong ``kind``, or a header
            whose model or data section does not fit the tensors.
    """
    from safetensors.torch import load_file

    from ecgmae.guards import check_checkpoint

    path = resolve(path, kind)
    meta = read_meta(path)
    if kind is not None and meta["kind"] != kind:
        raise CheckpointError(f"{path}: holds {meta['kind']} weights, expected {kind}")
    check_checkpoint(path, meta)
    return load_file(str(path)), meta


# ------------------------------------------------------------------------- rebuilding models
def load_classifier(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """Rebuild a classifier (eval mode) and its header from the checkpoint alone.

    An :class:`~ecgmae.models.ECGClassifier`, or the reference CNN named by the header's ``model.arch``.
    """
    from ecgmae.config import ConfigError
    from ecgmae.models import classifier_from_header

    state, meta = load_checkpoint(path, kind="classifier")
    try:
        model = classifier_from_header(meta["model"], where=f"{path}: model")
    except KeyError as exc:
        raise CheckpointError(f"{path}: header lacks model field {exc}") from None
    except ConfigError as exc:
        raise CheckpointError(f"{path}: header describes an invalid model ({exc})") from None
    load_state(model, state, path)
    model.eval()
    return model, meta


def load_state(module: Any, state: dict[str, Any], path: str | Path) -> None:
    """``module.load_state_dict(state)`` strictly, as a CheckpointError naming the file on mismatch."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(f"{path}: weights do not fit the model described in its header "
                              f"({' '.join(first[:3])[:400]})") from None
