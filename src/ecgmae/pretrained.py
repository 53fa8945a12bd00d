"""Pre-trained weights shipped inside the package, loadable offline by name: ``ecgmae.load("ecgmae-small")``.

Each shipped model is an ordinary run directory under ``ecgmae/weights/<name>/`` (``encoder.safetensors``,
``mae.safetensors``, ``model_card.json``), listed in ``ecgmae/weights/index.json`` with the sha256 of every
file. A name (or one of its aliases) is accepted wherever a run directory is: :func:`locate` turns it into
that directory after checking every file against its sha256 (once per process and file state), so a damaged
or altered install is refused in one line instead of giving quietly wrong embeddings. A path that exists
always wins over a name.

The weights are made by ``benchmarks/release_weights.py``; the model card holds the recipe (corpus,
commands, steps, wall time, seed, threads) and the numbers of the real-recording checks.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from ecgmae.errors import CheckpointError

__all__ = ["WEIGHTS", "Pretrained", "list_pretrained", "locate", "pretrained_names"]

WEIGHTS = Path(__file__).resolve().parent / "weights"
INDEX_FORMAT = 1
_verified: dict[Path, tuple[int, int]] = {}  # file -> (size, mtime_ns) when its sha256 last matched


@dataclass(frozen=True)
class Pretrained:
    """One shipped model: its name, aliases, folder, the sha256 of its files and what its card says."""

    name: str
    aliases: tuple[str, ...]
    path: Path
    sha256: dict[str, str]

    @cached_property
    def card(self) -> dict[str, Any]:
        """The model card (``model_card.json``), read on first use; empty when the folder has none."""
        file = self.path / "model_card.json"
        if not file.is_file():
            return {}
        try:
            return dict(json.loads(file.read_text()))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{self.name}: {file} is unreadable ({exc}); reinstall ecgmae") from None

    @property
    def release(self) -> dict[str, Any]:
        """The card's ``release`` section: corpus, recipe, checks (empty when the card has none)."""
        return dict(self.card.get("release") or {})

    def summary(self) -> str:
        """One line: name, what it was trained on, leads, rate, size and the real-recording checks."""
        rel, data = self.release, self.card.get("data") or {}
        size = sum((self.path / f).stat().st_size for f in self.sha256 if (self.path / f).is_file()) / 1e6
        checks = ", ".join(f"{k} {v:.3f}" for k, v in (rel.get("checks_macro_auroc") or {}).items())
        return (
            f"{self.name}: {rel.get('trained_on', '?')}; {len(data.get('leads') or ())} leads at "
            f"{data.get('fs', '?')} Hz, {rel.get('parameters', '?')} parameters, {size:.1f} MB"
            + (f"; linear-probe macro AUROC {checks}" if checks else "")
        )


def _index(root: Path | None = None) -> list[Pretrained]:
    root = WEIGHTS if root is None else root
    file = root / "index.json"
    if not file.is_file():
        return []
    try:
        idx = json.loads(file.read_text())
        if idx.get("format") != INDEX_FORMAT:
            raise ValueError(f"format {idx.get('format')!r}, expected {INDEX_FORMAT}")
        return [
            Pretrained(m["name"], tuple(m.get("aliases", ())), root / m["dir"], dict(m["sha256"]))
            for m in idx["models"]
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{file}: not a valid index of shipped weights ({exc}); reinstall ecgmae") from None


def list_pretrained(root: Path | None = None) -> list[Pretrained]:
    """The models shipped with this install, in the order of the index."""
    return _index(root)


def pretrained_names(root: Path | None = None) -> list[str]:
    """Every name and alias a shipped model answers to."""
    return [n for m in _index(root) for n in (m.name, *m.aliases)]


def _find(name: str, root: Path | None) -> Pretrained | None:
    key = name.strip().lower()
    return next((m for m in _index(root) if key in {n.lower() for n in (m.name, *m.aliases)}), None)


def _check(model: Pretrained) -> None:
    """Every file of ``model`` against its sha256 (skipped for a file unchanged since it last matched)."""
    for fname, want in model.sha256.items():
        file = model.path / fname
        if not file.is_file():
            raise CheckpointError(f"{model.name}: {file} is missing; the install is incomplete (reinstall ecgmae)")
        st = file.stat()
        if _verified.get(file) == (st.st_size, st.st_mtime_ns):
            continue
        h = hashlib.sha256()
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() != want:
            raise CheckpointError(
                f"{model.name}: {file} does not match its sha256 (the installed file is damaged "
                "or was changed; reinstall ecgmae)"
            )
        _verified[file] = (st.st_size, st.st_mtime_ns)


def locate(path: str | Path, root: Path | None = None) -> Path:
    """``path`` as a path; a shipped model's name (when no such path exists) as its checked folder.

    Raises:
        CheckpointError: the name is a shipped model's but its files are missing or do not match their sha256.
    """
    p = Path(path)
    if p.exists() or len(p.parts) != 1:
        return p
    model = _find(str(path), root)
    if model is None:
        return p
    _check(model)
    return model.path


def unknown_hint(path: str | Path, root: Path | None = None) -> str:
    """For a bare name that is neither a path nor a shipped model: the shipped names, to put in an error."""
    p = Path(path)
    if len(p.parts) != 1 or p.suffix:
        return ""
    names = pretrained_names(root)
    return f" (shipped models: {', '.join(names)})" if names else ""
