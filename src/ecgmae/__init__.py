"""ecgmae: masked autoencoders for ECG representation learning.

Importing the package does nothing but define names: heavy modules (torch, Lightning) load on first use.
"""

from __future__ import annotations

from typing import Any

from ecgmae._version import __version__

__all__ = ["__version__", "list_pretrained", "load"]


def __getattr__(name: str) -> Any:
    # Lazy: `ecgmae.load` pulls in torch only when it is first used; `list_pretrained` reads JSON only.
    if name == "load":
        from ecgmae.api import load

        return load
    if name == "list_pretrained":
        from ecgmae.pretrained import list_pretrained

        return list_pretrained
    raise AttributeError(f"module 'ecgmae' has no attribute {name!r}")
