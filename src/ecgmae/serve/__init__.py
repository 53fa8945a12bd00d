"""An HTTP service and viewer page for a trained model: ``ecgmae serve --checkpoint RUN``.

Needs the ``serve`` extra (``pip install 'ecgmae[serve]'``: Starlette, uvicorn, httptools, python-multipart).
Importing this package imports none of them; :mod:`ecgmae.serve.app` does.

Modules: ``limits`` (what a request may cost), ``inputs`` (request body -> record, through
:func:`ecgmae.data.io.read_record`), ``batching`` (requests arriving together share one model call),
``metrics`` (counts and latencies), ``app`` (routes), ``protocol`` (connection cap, header and body
deadlines under the HTTP parser), ``server`` (uvicorn), ``static/`` (the viewer).
"""

from __future__ import annotations

import importlib.util

from ecgmae.errors import ECGMAEError

__all__ = ["EXTRA_HINT", "require_extra"]

EXTRA_HINT = "pip install 'ecgmae[serve]'"
_MODULES = {
    "starlette": "starlette",
    "uvicorn": "uvicorn",
    "httptools": "httptools",
    "python_multipart": "python-multipart",
}


def require_extra() -> None:
    """Raise a one-line :class:`ECGMAEError` naming the missing packages when the extra is not installed."""
    missing = [pkg for mod, pkg in _MODULES.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise ECGMAEError(f"serving needs {', '.join(missing)} (the serve extra): {EXTRA_HINT}")
