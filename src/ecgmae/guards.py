"""Checks that refuse hostile or mistaken inputs before anything large is allocated or any work is done.

* :func:`check_checkpoint` compares a checkpoint's header with the tensors the file really holds (names and
  shapes come from the safetensors header; no tensor data is read). Loop-driving sizes (depths, patch
  size, kernel count) are checked against the file first, then the model is built on the ``meta`` device
  (no memory) and its parameter names and shapes must equal the file's. Only then is a real module built,
  so a header that claims a model of gigabytes is refused in milliseconds. (The header's own fields, the
  ``data`` section's rate, window and stride among them, are checked as it is read: :mod:`ecgmae.header`.)
* :func:`check_resume` makes sure ``last.ckpt`` is a complete, uncorrupted archive before it is resumed.
* :func:`check_device` turns a device name into a :class:`torch.device` that exists on this machine.
* :func:`check_output_file` refuses an output path that is a directory, the file a command reads, or an
  existing file without ``--overwrite``.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Iterable
from pathlib import Path

import torch

from ecgmae.config import ConfigError
from ecgmae.errors import CheckpointError
from ecgmae.header import MAX_FS, MAX_WINDOW, RunHeader
from ecgmae.models.config import EncoderConfig, MAEConfig, ModelSpec

__all__ = ["MAX_FS", "MAX_WINDOW", "check_checkpoint", "check_device", "check_output_file", "check_resume"]
# Memory the non-persistent buffers of a model may take beyond the size of its weight file.
_BUFFER_SLACK = 64 * 2**20

Shapes = dict[str, tuple[int, ...]]


def tensor_shapes(path: str | Path) -> Shapes:
    """Name -> shape of every tensor in a safetensors file, from its header alone (no data read)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: tuple(int(n) for n in f.get_slice(k).get_shape()) for k in f.keys()}


def check_checkpoint(path: Path, header: RunHeader, shapes: Shapes | None = None) -> None:
    """Refuse a checkpoint whose header does not describe its tensors, before any module is built.

    ``shapes``: the file's tensor shapes when the caller has it open already (default: read from ``path``).

    Raises:
        CheckpointError: naming the file and the header field that disagrees with the tensors.
    """
    from ecgmae.models import build_model

    shapes = tensor_shapes(path) if shapes is None else shapes
    _check_sizes(path, header.model, shapes)
    with torch.device("meta"):  # parameters and buffers get shapes but no memory
        try:
            net = build_model(header.model)
        except (ConfigError, ValueError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{path}: header describes an invalid model ({exc})") from None
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = [k for k in expected if k in shapes and expected[k] != shapes[k]]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(
                ", ".join(f"{k} is {list(shapes[k])} but the header implies {list(expected[k])}" for k in wrong[:3])
                + (f" (+{len(wrong) - 3} more)" if len(wrong) > 3 else "")
            )
        if missing:
            parts.append(f"{len(missing)} tensor(s) the header implies are missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} tensor(s) are not in the model (e.g. {unexpected[0]})")
        raise CheckpointError(f"{path}: weights do not fit the model described in its header: {'; '.join(parts)}")
    extra = sum(b.numel() * b.element_size() for name, b in net.named_buffers() if name not in expected)
    limit = max(_BUFFER_SLACK, path.stat().st_size)
    if extra > limit:
        raise CheckpointError(
            f"{path}: the header's model needs {extra / 2**20:.0f} MiB of derived buffers, "
            f"more than its weight file holds; refusing (model sizes look forged)"
        )


def _check_sizes(path: Path, spec: ModelSpec, shapes: Shapes) -> None:
    """The header's loop-driving sizes (depths, patch size, kernel count) against the file, before the meta build.

    A reference CNN's depth follows from its registered architecture, so its meta build is bounded already.
    """
    if spec.encoder is None:
        return
    _check_encoder(path, spec.encoder, shapes, "" if spec.kind == "encoder" else "encoder.", "model.config.encoder")
    if isinstance(spec.config, MAEConfig) and spec.kind == "mae":
        _check_count(
            path, "model.config.decoder_depth", spec.config.decoder_depth, shapes, "decoder_blocks.", "decoder blocks"
        )


def _check_encoder(path: Path, enc: EncoderConfig, shapes: Shapes, prefix: str, field: str) -> None:
    _check_count(path, f"{field}.depth", enc.depth, shapes, f"{prefix}blocks.", "encoder blocks")
    norm = shapes.get(f"{prefix}norm.weight")
    if norm != (enc.embed_dim,):
        have = "no such tensor" if norm is None else f"width {list(norm)}"
        raise CheckpointError(
            f"{path}: header field {field}.embed_dim={enc.embed_dim} does not match the "
            f"weights ({prefix}norm.weight: {have})"
        )
    widest = max((max(s) for s in shapes.values() if s), default=0)
    for name, value in (("patch_size", enc.patch_size), ("conv_kernels", len(enc.conv_kernels))):
        if value > widest:  # the patch projection and the branch weights are at least this wide
            raise CheckpointError(
                f"{path}: header field {field}.{name}={value} exceeds every tensor dimension in the file ({widest})"
            )


def _check_count(path: Path, field: str, value: int, shapes: Shapes, prefix: str, what: str) -> None:
    found = _indices(shapes, prefix)
    if value != len(found):  # gaps in the numbering are left to the exact comparison of names
        raise CheckpointError(f"{path}: header field {field}={value} but the file holds {len(found)} {what}")


def _indices(names: Iterable[str], prefix: str) -> set[int]:
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)\.")
    return {int(m.group(1)) for name in names if (m := pattern.match(name))}


def check_resume(path: Path) -> None:
    """Refuse a ``last.ckpt`` that is not a complete archive (truncated, overwritten, bit rot) before resuming.

    Torch checkpoints are zip archives whose members carry CRC-32s; every member is read and checked.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: damaged resume checkpoint ({type(exc).__name__}: {exc}); remove it, or "
            "pass --overwrite instead of --resume to start again"
        ) from None
    if bad is not None:
        raise CheckpointError(
            f"{path}: damaged resume checkpoint (member {bad} fails its CRC check); remove it, "
            "or pass --overwrite instead of --resume to start again"
        )


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device` that this machine has.

    Raises:
        ConfigError: not a device name, or a CUDA/MPS device this build or machine does not have.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"device {device!r}: not a device name (cpu, cuda, cuda:1, mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {device!r}: CUDA is not available (this torch build or machine has no usable GPU); use cpu"
            )
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise ConfigError(f"device {device!r}: this machine has {n} CUDA device(s), cuda:0 to cuda:{n - 1}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r}: MPS is not available on this machine; use cpu")
    elif dev.type not in ("cpu", "cuda", "mps", "xpu"):
        raise ConfigError(f"device {device!r}: unsupported device type {dev.type!r}; use cpu or cuda")
    return dev


def check_output_file(
    out: Path, reads: Iterable[str | Path | None] = (), flag: str = "--out", *, overwrite: bool
) -> None:
    """Refuse an output file that is a directory, lies under a file, is one of the files the command reads,
    or exists already without ``overwrite`` (``--overwrite``)."""
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"{flag} {out}: is a directory; name the file to write")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{flag} {out}: {parent} is a file, not a folder")
            break
    for src in reads:
        if src is not None and _same_file(out, Path(src)):
            raise ConfigError(f"{flag} {out}: is a file this command reads ({src}); write somewhere else")
    if not overwrite and (out.exists() or out.is_symlink()):
        raise ConfigError(f"{flag} {out}: exists; pass --overwrite to replace it")


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except OSError:
        return False
