"""Philips XLI, the compression of Sierra ECG XML waveforms, decoded with every size checked first.

An XLI stream holds one chunk per lead. A chunk is an 8-byte little-endian header (int32 size of the
compressed bytes, an int16 that is always 1, the int16 first delta) and ``size`` bytes of LZW codes:
10 bits each, most significant bit first, a dictionary of 1023 entries that is never reset, code 1023
ends the chunk. The decompressed bytes are the lead's 16-bit delta codes, all high bytes then all low
bytes; a second-order predictor turns them into samples. The format is documented only by its public
readers (sierra-ecg-tools, MIT); this decoder was written from their description, not copied.

A hostile stream cannot make it allocate: each chunk's declared size is checked against the bytes
left, and decompression stops with an error as soon as its output passes ``max_bytes`` (LZW can
expand a byte into hundreds). Every problem is an :class:`XliError` saying what is wrong.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

LZW_BITS = 10
MAX_CODE = (1 << LZW_BITS) - 2  # 1022: the last dictionary entry; a larger code ends the chunk
_WEIGHTS = 1 << np.arange(LZW_BITS - 1, -1, -1)
_BLOCK = 5 * 8192  # bytes per numpy pass: a multiple of 5 bytes is a whole number of 10-bit codes
# Successive samples of a 16-bit signal differ by less than 2^16: a larger step is a corrupt stream
# (and would overflow the int64 sums of a long one).
_MAX_STEP = 1 << 16


class XliError(ValueError):
    """An XLI stream cannot be decoded: ``truncated`` says whether it ends too soon."""

    def __init__(self, problem: str, truncated: bool = False) -> None:
        super().__init__(problem)
        self.truncated = truncated


def _codes(data: bytes) -> Iterator[np.ndarray]:
    """The 10-bit codes of ``data``, most significant bit first, in blocks (a last partial code dropped)."""
    for start in range(0, len(data), _BLOCK):
        bits = np.unpackbits(np.frombuffer(data, np.uint8, count=min(_BLOCK, len(data) - start), offset=start))
        n = bits.size // LZW_BITS
        yield bits[: n * LZW_BITS].reshape(n, LZW_BITS) @ _WEIGHTS


def lzw_decode(data: bytes, max_bytes: int) -> bytes:
    """The bytes the LZW codes in ``data`` stand for, refusing more than ``max_bytes`` of them.

    Raises:
        XliError: a code that names no entry yet, or output past ``max_bytes``.
    """
    table = [bytes([i]) for i in range(256)]
    out = bytearray()
    prev = b""
    for block in _codes(data):
        for code in block.tolist():
            if code > MAX_CODE:
                return bytes(out)
            if code < len(table):
                entry = table[code]
            elif code == len(table) and prev:  # the entry being defined: prev plus its own first byte
                entry = prev + prev[:1]
            else:
                raise XliError(f"LZW code {code} names no entry (the table has {len(table)}): corrupt stream")
            out += entry
            if len(out) > max_bytes:
                raise XliError(f"decompresses to more than the {max_bytes} bytes its samples need")
            if prev and len(table) <= MAX_CODE:
                table.append(prev + entry[:1])
            prev = entry
    return bytes(out)


def unpack_deltas(raw: bytes) -> np.ndarray:
    """16-bit codes from decompressed bytes stored as all high bytes then all low bytes (int64)."""
    half = (len(raw) + 1) // 2
    b = np.frombuffer(raw, np.uint8).astype(np.int64)
    lo = np.zeros(half, np.int64)
    lo[: len(raw) - half] = b[half:]
    return ((b[:half] << 8) | lo).astype(np.uint16).astype(np.int16).astype(np.int64)


def decode_deltas(codes: np.ndarray, first: int) -> np.ndarray:
    """Samples from XLI delta codes: the first two are samples, each later one is twice the previous minus
    the one before minus a correction (``first`` for the third sample, then the previous code minus 64).

    Computed with cumulative sums rather than a loop over samples.

    Raises:
        XliError: a step of 2^16 or more between samples (not a 16-bit signal: a corrupt stream).
    """
    m = codes.size
    if m < 3:
        return codes.astype(np.int64)
    corrections = np.concatenate(([first], codes[2 : m - 1] - 64)).astype(np.int64)
    steps = (codes[1] - codes[0]) - np.cumsum(corrections)
    if np.abs(steps).max() >= _MAX_STEP:
        raise XliError("delta codes step by 2^16 or more between samples: corrupt stream")
    out = np.empty(m, np.int64)
    out[:2] = codes[:2]
    out[2:] = codes[1] + np.cumsum(steps)
    return out


def decode_xli(data: bytes, leads: int, samples: int) -> np.ndarray:
    """The first ``leads`` chunks of the XLI stream ``data``, each cut to ``samples``: int64 ``(leads, samples)``.

    Each chunk may decompress to at most ``2 * samples + 64`` bytes (a few bytes of padding are allowed and
    dropped) and must hold at least ``samples`` samples; chunks past ``leads`` are not read.

    Raises:
        XliError: a chunk header or chunk cut short, a chunk that decodes to too few or too many samples, or
            values outside 16 bits.
    """
    out = np.empty((leads, samples), np.int64)
    offset = 0
    for k in range(leads):
        if offset + 8 > len(data):
            raise XliError(f"stream ends after {k} of {leads} leads", truncated=True)
        size = int.from_bytes(data[offset : offset + 4], "little", signed=True)
        first = int.from_bytes(data[offset + 6 : offset + 8], "little", signed=True)
        offset += 8
        if size < 0 or size > len(data) - offset:
            raise XliError(
                f"lead {k + 1} declares {size} compressed bytes, {len(data) - offset} are left", truncated=True
            )
        try:
            raw = lzw_decode(data[offset : offset + size], 2 * samples + 64)
            values = decode_deltas(unpack_deltas(raw), first)
        except XliError as exc:
            raise XliError(f"lead {k + 1} {exc}", exc.truncated) from None
        offset += size
        if values.size < samples:
            raise XliError(f"lead {k + 1} decodes to {values.size} samples, {samples} declared", truncated=True)
        if values.size and (values.min() < -(1 << 15) or values.max() >= 1 << 15):
            raise XliError(f"lead {k + 1} decodes to values outside 16 bits: corrupt stream")
        out[k] = values[:samples]
    return out
