"""Safe weight files: safetensors tensors plus a JSON header with everything needed to rebuild.

A checkpoint is one ``.safetensors`` file whose metadata holds ``{"ecgmae": json}``: its
:class:`~ecgmae.header.RunHeader` (format version, what kind of weights it holds, the model spec, the
preprocessing the weights expect, label names and a summary of the run). Nothing is ever unpickled: a
file that is not safetensors is refused before any of it is used.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from ecgmae._version import __version__
from ecgmae.errors import CheckpointError
from ecgmae.header import HEADER_VERSION, RunHeader
from ecgmae.pretrained import locate, unknown_hint
from ecgmae.utils import atomic_path, write_error

FORMAT_VERSION = HEADER_VERSION
# What a run directory holds, in the order load() looks for it.
RUN_FILES = ("classifier.safetensors", "encoder.safetensors", "mae.safetensors")


def save_checkpoint(path: str | Path, state_dict: dict[str, torch.Tensor], header: RunHeader) -> Path:
    """Write ``state_dict`` and ``header`` (stamped with this ecgmae's version) to ``path`` atomically.

    Args:
        path: destination ``.safetensors`` file.
        state_dict: tensors (made contiguous, moved to CPU).
        header: what the weights are; see :class:`~ecgmae.header.RunHeader`.
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    meta = dataclasses.replace(header, ecgmae_version=__version__).to_dict()
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata={"ecgmae": json.dumps(meta)})
        except SafetensorError as exc:
            if "os error" not in str(exc):
                raise
            raise write_error(exc, path) from None  # a failed write (a full disk) is the machine's state: one line
    return path


def resolve(path: str | Path, kind: str | None = None) -> Path:
    """The weight file for ``path``: the file itself, or the first of :data:`RUN_FILES` in a run dir (a shipped
    model's name counts as its run dir: :func:`ecgmae.pretrained.locate`)."""
    path = locate(path)
    if path.is_dir():
        names = RUN_FILES if kind is None else (f"{kind}.safetensors",)
        for name in names:
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"{path}: no {' or '.join(names)} in this run directory")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file or run directory{unknown_hint(path)}")
    return path


def checkpoint_files(path: str | Path) -> list[Path]:
    """Every file a command given checkpoint ``path`` may read (for refusing an output that would overwrite one)."""
    path = locate(path)
    return [path / name for name in RUN_FILES] if path.is_dir() else [path]


def _open(path: Path) -> Any:
    """``safetensors.safe_open`` on a resolved weight file; anything but safetensors is a CheckpointError."""
    from safetensors import safe_open

    try:
        return safe_open(str(path), framework="pt")
    except Exception as exc:  # safetensors raises its own error types for non-safetensors files
        raise CheckpointError(
            f"{path}: not a safetensors checkpoint ({type(exc).__name__}: {exc}); ecgmae never unpickles weight files"
        ) from None


def _header(path: Path, f: Any) -> RunHeader:
    """The validated, migrated run header of an open safetensors file."""
    stored = f.metadata() or {}
    if "ecgmae" not in stored:
        raise CheckpointError(f"{path}: safetensors file without an ecgmae header (not written by ecgmae)")
    try:
        meta = json.loads(stored["ecgmae"])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: corrupt ecgmae header ({exc})") from None
    return RunHeader.from_dict(meta, where=str(path))


def read_header(path: str | Path) -> RunHeader:
    """The run header of a checkpoint, validated and migrated to the current format, without loading tensors."""
    file = resolve(path)
    with _open(file) as f:
        return _header(file, f)


def _load(file: Path, kind: str | None) -> tuple[dict[str, torch.Tensor], RunHeader]:
    """Header, checks and tensors of a resolved weight file, opened once."""
    from ecgmae.guards import check_checkpoint

    with _open(file) as f:
        header = _header(file, f)
        if kind is not None and header.kind != kind:
            raise CheckpointError(f"{file}: holds {header.kind} weights, expected {kind}")
        shapes = {k: tuple(int(n) for n in f.get_slice(k).get_shape()) for k in f.keys()}
        check_checkpoint(file, header, shapes)
        return {k: f.get_tensor(k) for k in f.keys()}, header


def load_checkpoint(path: str | Path, kind: str | None = None) -> tuple[dict[str, torch.Tensor], RunHeader]:
    """Tensors and header of a checkpoint (a file or a run directory).

    The header is checked against the tensors the file holds (names and shapes, from the safetensors
    header) before any tensor is read or any module built: see :func:`ecgmae.guards.check_checkpoint`.

    Raises:
        CheckpointError: missing file, not safetensors, newer format, the wrong ``kind``, or a header
            whose model or data section does not fit the tensors.
    """
    return _load(resolve(path, kind), kind)


def load_model(path: str | Path, kind: str | None = None) -> tuple[torch.nn.Module, RunHeader, Path]:
    """The module a checkpoint holds, built from its header alone, weights loaded strictly, in eval mode.

    Returns:
        ``(module, header, weight file)``.

    Raises:
        CheckpointError: as :func:`load_checkpoint`, or weights that do not fit the module.
    """
    from ecgmae.models import build_model

    file = resolve(path, kind)  # resolved and opened once
    state, header = _load(file, kind)
    net = build_model(header.model)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(
            f"{file}: weights do not fit the model described in its header ({' '.join(first[:3])[:400]})"
        ) from None
    return net.eval(), header, file
