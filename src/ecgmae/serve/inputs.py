"""Request body -> one record: JSON ``{signal, fs, leads}``, an uploaded WFDB record, ``.npy`` or one-file
export (``.xml``: GE MUSE, Philips Sierra, HL7 aECG; DICOM ``.dcm``; EDF ``.edf``: every suffix of
:data:`ecgmae.data.exports.FILE_READERS`), or an example.

Uploads are written into a private temporary folder (``TMPDIR``; ``/dev/shm`` is fastest) under their
own (checked) names and read with :func:`ecgmae.data.io.read_record`, which already refuses what a
hostile file can try (oversized headers, signal files outside the folder, FIFOs, truncated data, XML
entities, sizes a file declares but does not hold).
Receiving the body runs on the event loop, before the request takes a slot (:func:`receive`, under a
deadline and a byte budget shared by all connections); parsing it follows (:func:`parse`); writing,
reading and decoding the files run in a worker thread (:func:`load`), since a disk's ``mkdir`` can take
milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request

from ecgmae.data.exports import FILE_READERS
from ecgmae.data.io import Record, read_record
from ecgmae.data.safety import clip, safe_name
from ecgmae.data.signal import resample
from ecgmae.errors import ECGMAEError

OPTIONS = ("mask_ratio", "seed", "include_signal")  # request options beside the record
_JSON_KEYS = ("signal", "fs", "leads", *OPTIONS)  # examples are named by a form field
_FORM_FIELDS = ("fs", "leads", "example", *OPTIONS)
_SUFFIXES = (".hea", ".dat", ".mat", ".npy", *FILE_READERS)
_EXPORTS = ", ".join(FILE_READERS)  # one-file records (data/exports.py)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_FILES = 8
_TMP_PREFIX = "ecgmae-serve-"  # the private folder an upload is read from
_TMP_PATH_RE = re.compile(r"[^\s'\"(<]*" + _TMP_PREFIX + r"[^\\/\s'\"]*[\\/]")
_REPR_RE = re.compile(r"<([A-Za-z_][\w.]*) object at 0x[0-9A-Fa-f]+>")
_HOW = (
    "send JSON {signal, fs, leads}, or multipart files: a WFDB record (.hea + .dat/.mat), an .npy "
    f"with fs and leads fields, or one {_EXPORTS} export"
)


class RequestError(ECGMAEError):
    """A request the server refuses: ``status`` is the HTTP status, the message one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Payload:
    """A received request body, not yet read into a record.

    Attributes:
        body: JSON bytes (None for multipart).
        files: uploaded files by their (checked) names, in upload order.
        fields: multipart text fields.
        example: path of a server-side example record.
    """

    body: bytes | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)
    example: Path | None = None


@dataclass
class Sample:
    """One record ready for the model: ``args`` go to ``Model.prepare`` / ``Model.reconstruct``."""

    name: str
    signal: Any
    fs: float | None
    leads: Any
    options: dict[str, Any]

    @property
    def args(self) -> tuple[Any, Any, Any]:
        return self.signal, self.fs, self.leads

    def data(self, default_leads: Sequence[str], max_values: int | None = None) -> dict[str, Any]:
        """The record as read, for drawing: rate, lead names and samples (a float64 array in mV, rounded to 0.1 µV).

        Args:
            default_leads: names of the rows of a JSON signal sent without ``leads`` (the model's).
            max_values: most samples over all leads; a longer record is resampled (anti-aliased) to
                ``fs / k`` with the smallest whole ``k`` that fits, and ``resampled_from`` gives its rate.
        """
        x = self.signal.signal if isinstance(self.signal, Record) else np.asarray(self.signal, np.float32)
        leads = self.signal.leads if isinstance(self.signal, Record) else _lead_list(self.leads or default_leads)
        fs = self.signal.fs if isinstance(self.signal, Record) else float(self.fs or 0)
        out: dict[str, Any] = {"fs": fs, "leads": list(leads)}
        if max_values is not None and x.size > max_values and fs > 0:
            per_lead = max(1, max_values // max(1, x.shape[0]))
            k = -(-x.shape[-1] // per_lead)
            x = resample(x, fs, fs / k)
            out.update(fs=fs / k, resampled_from=fs)
        out["data"] = np.round(x.astype(np.float64), 4)  # an array: the answer encodes it in pieces
        return out


class Intake:
    """Request bodies being received (before a request slot is taken) and their bytes, all connections together.

    Args:
        max_bytes: most bytes held by bodies being received at once (503 for the one that would pass it).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.bodies, self.bytes = max_bytes, 0, 0

    def take(self, n: int) -> None:
        if self.bytes + n > self.max_bytes:
            raise RequestError(
                503,
                f"server busy: {self.bytes} bytes of uploads being received from {self.bodies} "
                f"client(s), at most {self.max_bytes} at once; retry shortly",
            )
        self.bytes += n


@dataclass
class Received:
    """A request whose body has arrived, not yet parsed: ``kind`` is its content type."""

    request: Request
    kind: str
    body: bytes


async def read_body(request: Request, max_bytes: int, intake: Intake | None = None) -> bytes:
    """The whole body, refused with 413 as soon as it is known to exceed ``max_bytes``."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise RequestError(400, f"Content-Length {clip(length, 40)!r} is not a number")
        if int(length) > max_bytes:
            raise RequestError(
                413, f"request body is {int(length)} bytes; this server takes at most {max_bytes} (--max-upload-mb)"
            )
    intake = intake or Intake(max_bytes)
    chunks: list[bytes] = []
    size = 0
    intake.bodies += 1
    try:
        async for chunk in request.stream():
            if size + len(chunk) > max_bytes:
                raise RequestError(413, f"request body exceeds {max_bytes} bytes (--max-upload-mb)")
            intake.take(len(chunk))
            size += len(chunk)
            chunks.append(chunk)
    except ClientDisconnect:
        raise RequestError(400, "the client closed the connection before sending the whole body") from None
    finally:
        intake.bodies -= 1
        intake.bytes -= size
    return b"".join(chunks)


async def receive(request: Request, max_bytes: int, timeout_s: float, intake: Intake | None = None) -> Received:
    """Check the content type and read the body within ``timeout_s`` (408 beyond)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("application/json", "multipart/form-data"):
        raise RequestError(415, f"unsupported content type {clip(kind or '(none)', 60)!r}: {_HOW}")
    try:
        body = await asyncio.wait_for(read_body(request, max_bytes, intake), timeout_s)
    except asyncio.TimeoutError:
        raise RequestError(408, f"request body not received within {timeout_s:g} s (--body-timeout)") from None
    return Received(request, kind, body)


async def parse(received: Received, examples: dict[str, Path]) -> Payload:
    """Sort a received body into JSON, checked file names with their bytes, and fields."""
    body = received.body
    if received.kind == "application/json":
        return Payload(body=body)

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(received.request.scope, replay).form(max_files=MAX_FILES, max_fields=len(_FORM_FIELDS))
    except Exception as exc:  # python-multipart and Starlette raise several types for a bad body
        raise RequestError(400, f"unreadable multipart body ({clip(getattr(exc, 'detail', exc), 200)})") from None
    payload = Payload()
    try:
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                await _keep(payload, value)
            elif key in payload.fields:
                raise RequestError(400, f"field {safe_name(key)!r} given twice")
            elif key not in _FORM_FIELDS:
                raise RequestError(
                    400, f"unknown field {clip(safe_name(key), 60)!r}; expected files and {', '.join(_FORM_FIELDS)}"
                )
            else:
                payload.fields[key] = str(value)
    finally:
        await form.close()
    if "example" in payload.fields:
        payload.example = _example(payload.fields.pop("example"), examples, uploads=bool(payload.files))
    elif not payload.files:
        raise RequestError(400, f"no file uploaded: {_HOW}")
    return payload


async def _keep(payload: Payload, upload: UploadFile) -> None:
    name = upload.filename or ""
    if not _NAME_RE.match(name) or ".." in name:
        raise RequestError(
            400,
            f"file name {clip(safe_name(name), 80)!r} is not a plain file name (letters, "
            "digits, '.', '_', '-'; no folders)",
        )
    if Path(name).suffix.lower() not in _SUFFIXES:
        raise RequestError(
            400, f"{name}: unsupported file type; upload .hea with its .dat/.mat, one .npy, or one {_EXPORTS}"
        )
    if name in payload.files:
        raise RequestError(400, f"{name}: uploaded twice")
    payload.files[name] = await upload.read()  # the body was bounded by max_upload_bytes


def _example(name: str, examples: dict[str, Path], *, uploads: bool) -> Path:
    if uploads:
        raise RequestError(400, "send either files or an example name, not both")
    if name not in examples:
        if not examples:
            raise RequestError(404, "this server has no example records (start it with --examples DIR)")
        raise RequestError(404, f"no example record {clip(safe_name(name), 80)!r} (GET /v1/examples lists them)")
    return examples[name]


def load(payload: Payload, max_seconds: float) -> Sample:
    """Read the record of a payload (blocking: run it in a worker thread); uploads go through a temp folder."""
    if payload.body is not None:
        sample = _from_json(payload.body)
    elif payload.example is not None:
        sample = _from_example(payload)
    else:
        with tempfile.TemporaryDirectory(prefix=_TMP_PREFIX) as tmp:  # mode 0700: private to the server
            folder = Path(tmp)
            for name, data in payload.files.items():
                (folder / name).write_bytes(data)
            sample = _from_files(payload, folder)
    _check_length(sample, max_seconds)
    return sample


def _from_json(body: bytes) -> Sample:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise RequestError(400, f"request body is not valid JSON ({clip(exc, 200)})") from None
    if not isinstance(doc, dict):
        raise RequestError(400, "JSON body must be an object {signal, fs, leads}")
    unknown = [k for k in doc if k not in _JSON_KEYS]
    if unknown:
        raise RequestError(
            400, f"unknown key(s) {', '.join(repr(clip(k, 40)) for k in unknown[:5])}; expected {', '.join(_JSON_KEYS)}"
        )
    options = {k: doc[k] for k in OPTIONS if k in doc}
    if "signal" not in doc:
        raise RequestError(400, "JSON body lacks 'signal': a (leads, samples) list of lists in mV")
    try:
        x = np.array(doc["signal"])
    except (ValueError, TypeError, RecursionError):
        x = np.array([], dtype=object)
    if x.dtype.kind not in "iuf" or x.ndim != 2:
        raise RequestError(400, "signal must be a (leads, samples) list of lists of numbers in mV")
    fs, leads = doc.get("fs"), doc.get("leads")
    if fs is None or isinstance(fs, bool) or not isinstance(fs, (int, float)):
        raise RequestError(400, f"fs must be the sampling rate in Hz (a number), got {clip(json.dumps(fs), 40)}")
    if leads is not None and not (
        isinstance(leads, str) or (isinstance(leads, list) and all(isinstance(n, str) for n in leads))
    ):
        raise RequestError(400, "leads must be a list of lead names or one comma-separated string")
    return Sample("signal", x.astype(np.float32), float(fs), leads, options)


def _from_example(payload: Payload) -> Sample:
    assert payload.example is not None
    fields, options = _split_options(payload.fields)
    _no_fields(fields, "an example record")
    rec = read_record(payload.example, root=payload.example.parent)
    return Sample(rec.record, rec, None, None, options)


def _from_files(payload: Payload, folder: Path) -> Sample:
    fields, options = _split_options(payload.fields)
    names = list(payload.files)
    by_suffix: dict[str, list[str]] = {}
    for n in names:
        by_suffix.setdefault(Path(n).suffix.lower(), []).append(n)
    if ".npy" in by_suffix:
        if len(names) > 1:
            raise RequestError(400, f"upload one .npy alone, got {', '.join(names)}")
        fs = _number(fields.pop("fs", None), "fs")
        leads = fields.pop("leads", None)
        rec = read_record(folder / names[0], fs=fs, leads=tuple(_lead_list(leads)) if leads else None)
        return Sample(rec.record, rec, None, None, options)
    exports = [n for n in names if Path(n).suffix.lower() in FILE_READERS]
    if exports:
        if len(names) > 1:
            raise RequestError(400, f"upload one {_EXPORTS} export alone, got {', '.join(names)}")
        _no_fields(fields, "an export")
        rec = read_record(folder / names[0])
        return Sample(rec.record, rec, None, None, options)
    _no_fields(fields, "a WFDB record")
    heads = by_suffix.get(".hea", [])
    if len(heads) > 1:
        raise RequestError(400, f"upload one record at a time, got headers {', '.join(heads)}")
    if not heads:
        if len(names) == 1 and by_suffix.get(".mat"):  # a CPSC 2018 MATLAB record carries its own header
            rec = read_record(folder / names[0])
            return Sample(rec.record, rec, None, None, options)
        raise RequestError(400, f"{names[0]}: a WFDB signal file needs its .hea header (upload both)")
    rec = read_record(folder / heads[0])
    return Sample(rec.record, rec, None, None, options)


def _split_options(fields: dict[str, str]) -> tuple[dict[str, str], dict[str, Any]]:
    """A form's fields apart from the request options, and the options."""
    rest = dict(fields)
    return rest, {k: rest.pop(k) for k in OPTIONS if k in rest}


def _no_fields(fields: dict[str, str], what: str) -> None:
    if fields:
        raise RequestError(
            400,
            f"{', '.join(sorted(fields))}: {what} names its own rate and leads; send fs and leads only with an .npy",
        )


def _number(text: str | None, name: str) -> float | None:
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise RequestError(400, f"{name} must be a number, got {clip(safe_name(text), 40)!r}") from None
    if not math.isfinite(value):
        raise RequestError(400, f"{name} must be finite, got {clip(safe_name(text), 40)!r}")
    return value


def option(sample: Sample, name: str, default: float, kind: type = float) -> Any:
    """A numeric request option (JSON number or form text), or a 400 naming it."""
    value = sample.options.get(name, default)
    if isinstance(value, str):
        value = _number(value, name)
        if value is None:
            return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestError(400, f"{name} must be a number, got {clip(json.dumps(value), 40)}")
    if kind is int:
        if value != int(value):
            raise RequestError(400, f"{name} must be an integer, got {value}")
        return int(value)
    return float(value)


def flag(sample: Sample, name: str) -> bool:
    """A boolean request option: JSON true/false, or form text 1/0, true/false."""
    value = sample.options.get(name, False)
    if isinstance(value, str):
        if value.lower() not in ("1", "0", "true", "false", ""):
            raise RequestError(400, f"{name} must be true or false, got {clip(safe_name(value), 40)!r}")
        return value.lower() in ("1", "true")
    if not isinstance(value, bool):
        raise RequestError(400, f"{name} must be true or false, got {clip(json.dumps(value), 40)}")
    return value


def _check_length(sample: Sample, max_seconds: float) -> None:
    fs: float | None
    if isinstance(sample.signal, Record):
        n, fs = sample.signal.signal.shape[-1], sample.signal.fs
    else:
        n, fs = sample.signal.shape[-1], sample.fs
    if fs and fs > 0 and n / fs > max_seconds:
        raise RequestError(
            413,
            f"{sample.name}: {n / fs:g} s of signal; this server takes records up to {max_seconds:g} s (--max-seconds)",
        )


def public(message: str) -> str:
    """An error message as clients see it: the upload's temporary folder and object addresses taken out.

    Readers of other packages (wfdb, soundfile) name the file by its full path or by an object's repr
    (``<...LocalFileOpener object at 0x7f...>``); the client needs neither.
    """
    return _REPR_RE.sub(r"<\1>", _TMP_PATH_RE.sub("", message))


def _lead_list(leads: Any) -> list[str]:
    return [s.strip() for s in leads.split(",")] if isinstance(leads, str) else [str(n) for n in leads]
