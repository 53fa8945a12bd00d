"""The two filters every record goes through, computed as scipy computes them, bit for bit, with less overhead.

Preprocessing is half the CPU time of ``ecgmae embed`` over an archive, and most of it was these two calls:

- :func:`resample_poly` is ``scipy.signal.resample_poly(x, up, down, axis=-1, window=h)`` for float32 ``x``
  and ``h``. scipy's Cython loop accumulates each output sample in float32 over the filter taps in a fixed
  order (``out = out + x * h``, one rounding per product and per sum, no fused multiply-add); here the same
  products and sums run in the same order, vectorised over every output sample of a polyphase branch at
  once, so the result is identical. It pays when each of those vectorised steps covers enough samples
  (:data:`MIN_SAMPLES_PER_STEP`); otherwise scipy runs.
- :func:`sosfiltfilt` is ``scipy.signal.sosfiltfilt(sos, x, axis=-1, padtype="odd", padlen=padlen)`` with
  the filter's initial conditions (``sosfilt_zi``, a small linear solve per section) computed once per
  filter instead of once per record, and the same ``sosfilt`` calls.

``tests/test_archive_inference.py`` checks both against scipy over many rates, lengths and lead counts.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["MIN_SAMPLES_PER_STEP", "resample_poly", "sosfiltfilt"]

# Output samples each vectorised step must cover for the numpy path to beat scipy's loop (measured on a
# 12-lead 10 s record: 500 -> 100 Hz covers 12,000 and takes 0.4 ms against 0.6; 360 -> 100 Hz covers 2,400 in
# each of its 5 branches and loses, 0.52 ms against 0.39).
MIN_SAMPLES_PER_STEP = 4096


@functools.lru_cache(maxsize=64)
def _branches(h_bytes: bytes, up: int, down: int, n_in: int) -> tuple[np.ndarray, int, int]:
    """resample_poly's padded filter as upfirdn arranges it: ``(up, taps per phase)`` flipped phases, the
    output length and the first output sample kept."""
    h = np.frombuffer(h_bytes, dtype=np.float32).copy()
    half_len = (h.size - 1) // 2
    h *= up
    n_out = n_in * up // down + bool(n_in * up % down)
    n_pre_pad = down - half_len % down
    n_pre_remove = (half_len + n_pre_pad) // down
    n_post_pad = 0

    def out_len(taps: int) -> int:  # scipy.signal._upfirdn._output_len
        return ((n_in - 1) * up + taps - 1) // down + 1

    while out_len(h.size + n_pre_pad + n_post_pad) < n_out + n_pre_remove:
        n_post_pad += 1
    padded = np.concatenate([np.zeros(n_pre_pad, np.float32), h, np.zeros(n_post_pad, np.float32)])
    full = np.zeros(padded.size + (-padded.size % up), np.float32)
    full[: padded.size] = padded
    return np.ascontiguousarray(full.reshape(-1, up).T[:, ::-1]), n_out, n_pre_remove


def resample_poly(x: np.ndarray, up: int, down: int, h: np.ndarray) -> np.ndarray:
    """``scipy.signal.resample_poly(x, up, down, axis=-1, window=h)`` for float32 ``(L, T)`` ``x`` and ``h``
    (``up`` and ``down`` coprime, ``up != down``), identical to it bit for bit."""
    from scipy import signal

    n_leads, n_in = x.shape
    phases, n_out, first_kept = _branches(np.asarray(h, np.float32).tobytes(), up, down, n_in)
    if n_leads * -(-n_out // up) < MIN_SAMPLES_PER_STEP:
        return np.asarray(signal.resample_poly(x, up, down, axis=-1, window=h), np.float32)
    taps = phases.shape[1]
    # Output n reads input samples n*down//up - taps + 1 ... n*down//up with the phase (n*down) % up. With
    # taps-1 zeros in front, term j of output n is padded[n*down//up + j]; the zeros stand for the samples
    # scipy skips or takes as 0 at the edges (adding +-0 to a sum changes nothing).
    last = ((first_kept + n_out - 1) * down) // up + taps
    rows = -(-(last + 1) // down) + 1
    padded = np.zeros((rows * down, n_leads), np.float32)  # time-major, so every step reads one block
    padded[taps - 1 : taps - 1 + n_in] = x.T
    split = np.ascontiguousarray(padded.reshape(rows, down, n_leads).transpose(1, 0, 2))  # [s, k] = padded[k*down+s]
    out = np.empty((n_out, n_leads), np.float32)
    for o in range(min(up, n_out)):  # kept outputs o, o + up, o + 2 up...: one phase, inputs down apart
        n0 = first_kept + o
        count = (n_out - 1 - o) // up + 1
        base, phase = (n0 * down) // up, (n0 * down) % up
        acc = np.zeros((count, n_leads), np.float32)
        term = np.empty_like(acc)
        for j, c in enumerate(phases[phase]):
            if c == 0:  # +-0 added to the sum: skipped
                continue
            k, s = divmod(base + j, down)
            np.multiply(split[s, k : k + count], c, out=term)
            np.add(acc, term, out=acc)
        out[o::up] = acc
    return np.ascontiguousarray(out.T)


@functools.lru_cache(maxsize=32)
def _zi(sos_bytes: bytes, n_sections: int) -> np.ndarray:
    from scipy.signal import sosfilt_zi

    return sosfilt_zi(np.frombuffer(sos_bytes).reshape(n_sections, 6)).reshape(n_sections, 1, 2)


def sosfiltfilt(sos: np.ndarray, x: np.ndarray, padlen: int) -> np.ndarray:
    """``scipy.signal.sosfiltfilt(sos, x, axis=-1, padlen=padlen)`` for a float64 ``sos`` and a 2-D ``x`` with more
    than ``padlen`` samples, identical to it (float64, as scipy returns it)."""
    from scipy.signal import sosfilt

    sos = np.ascontiguousarray(sos, np.float64)
    zi = _zi(sos.tobytes(), sos.shape[0])
    n = padlen
    if n > 0:  # odd extension at both ends (scipy.signal._arraytools.odd_ext)
        ext = np.concatenate(
            (2 * x[:, :1] - x[:, n:0:-1], x, 2 * x[:, -1:] - x[:, -2 : -(n + 2) : -1]),
            axis=-1,
        )
    else:
        ext = x
    y, _ = sosfilt(sos, ext, axis=-1, zi=zi * ext[:, :1])
    y, _ = sosfilt(sos, y[:, ::-1], axis=-1, zi=zi * y[:, -1:])
    y = y[:, ::-1]
    return y[:, n:-n] if n > 0 else y
