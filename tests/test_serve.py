"""``ecgmae serve`` over real sockets on 127.0.0.1: every endpoint, input form, limit and bad input;
batching; answers equal to ``ecgmae.load(...)`` in process."""

from __future__ import annotations

import io
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ecgmae
from conftest import SHARED_DATA
from ecgmae.data.io import read_record
from ecgmae.errors import DataError
from serve_util import need_serve, running
from test_api import build_runs

need_serve()
import httpx  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    return build_runs(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def clf(runs) -> ecgmae.api.Model:
    return ecgmae.load(runs["ft"])


@pytest.fixture(scope="module")
def enc(runs) -> ecgmae.api.Model:
    return ecgmae.load(runs["mae"])


@pytest.fixture(scope="module")
def clf_url(clf, runs):
    with running(clf, examples=runs["src"]) as url:
        yield url


@pytest.fixture(scope="module")
def enc_url(enc):
    with running(enc) as url:
        yield url


def _client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=60)


def _wfdb(src: Path, name: str) -> list[tuple[str, tuple[str, bytes]]]:
    return [("files", (f"{name}{ext}", (src / f"{name}{ext}").read_bytes())) for ext in (".hea", ".dat")]


def _records(runs, n: int) -> list[str]:
    return sorted(p.stem for p in runs["src"].glob("*.hea"))[:n]


def _ecg(seed: int, leads: int = 12, n: int = 700) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.normal(0, 0.05, (leads, n)), axis=1).astype(np.float32)


def _npy(x: np.ndarray, name: str = "rec.npy") -> tuple[str, tuple[str, bytes]]:
    buf = io.BytesIO()
    np.save(buf, x)
    return ("files", (name, buf.getvalue()))


def _refused(r: httpx.Response, status: int, fragment: str) -> str:
    """The one-line error of a refused request."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    text = r.json()["error"]
    assert fragment in text, text
    assert "\n" not in text and "Traceback" not in text and "ecgmae-serve-" not in text  # no temp paths leak
    return text


def _metrics(c: httpx.Client) -> dict[str, Any]:
    return c.get("/metrics").json()


def _until(c: httpx.Client, check, what: str) -> dict[str, Any]:
    """Poll /metrics until ``check(metrics)`` holds (a state wait, not a timing assertion)."""
    for _ in range(3000):
        m = _metrics(c)
        if check(m):
            return m
        time.sleep(0.01)
    raise AssertionError(f"server never reached: {what}; last metrics {m}")


class Gate:
    """Wraps a model method so that calls block until :meth:`open` (deterministic batching and limits)."""

    def __init__(self, model: Any, name: str) -> None:
        self.event, self.calls = threading.Event(), []
        inner = getattr(model, name)

        def gated(items, *args, **kw):
            self.calls.append(len(items))
            assert self.event.wait(60), "gate never opened"
            return inner(items, *args, **kw)

        setattr(model, name, gated)

    def open(self) -> None:
        self.event.set()


# ------------------------------------------------------------------------------------------ endpoints
def test_model_card_health_metrics_and_pages(clf, clf_url, runs):
    with _client(clf_url) as c:
        assert c.get("/healthz").json() == {"status": "ok", "kind": "classifier", "version": ecgmae.__version__}
        card = c.get("/v1/model").json()
        assert card["kind"] == "classifier" and card["labels"] == clf.label_names and card["fs"] == clf.fs
        assert card["leads"] == list(clf.leads) and card["window_samples"] == clf.window == 500
        assert card["embed_dim"] == clf.embed_dim and card["aggregate"] == clf.aggregate
        assert card["endpoints"] == ["/v1/embed", "/v1/predict"] and card["card"]["data"] is not None
        assert card["limits"]["max_upload_bytes"] == 16 << 20 and card["checkpoint"] == "ft/classifier.safetensors"
        assert card["examples"] == len(list(runs["src"].glob("*.hea")))
        page = c.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert '<canvas id="ecg"' in page.text and "http" not in page.text.split("<footer")[0]  # no CDN
        js = c.get("/static/viewer.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        assert "function draw" in js.text and c.get("/static/viewer.css").status_code == 200
        _refused(c.get("/static/../pyproject.toml"), 404, "Not Found")
        _refused(c.get("/nope"), 404, "GET /nope: Not Found")
        _refused(c.get("/v1/predict"), 405, "Method Not Allowed")
        c.post("/v1/predict", json={"signal": [[1.0]], "fs": "x"})
        m = _metrics(c)
        assert m["requests"]["GET /healthz"]["200"] >= 1 and m["requests"]["POST /v1/predict"]["400"] >= 1
        lat = m["latency_ms"]["POST /v1/predict"]
        assert lat["count"] >= 1 and 0 <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert m["in_flight"] == 0 and m["queued"] == {"embed": 0, "predict": 0}


def test_predict_wfdb_upload_equals_in_process(clf, clf_url, runs):
    name = _records(runs, 1)[0]
    rec = read_record(runs["src"] / f"{name}.hea")
    expect = clf.predict_proba(rec)
    with _client(clf_url) as c:
        r = c.post("/v1/predict", files=_wfdb(runs["src"], name), data={"include_signal": "1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["record"] == name and list(body["probabilities"]) == clf.label_names
    assert np.array_equal(np.array(list(body["probabilities"].values())), expect)  # exactly, not close
    sig = body["signal"]  # the record as the server read it, for drawing
    assert sig["fs"] == rec.fs and sig["leads"] == list(rec.leads)
    np.testing.assert_allclose(np.array(sig["data"]), rec.signal, atol=6e-5)


def test_predict_json_and_npy_equal_in_process(clf, clf_url):
    x = _ecg(1, leads=3, n=900)
    leads = ["ii", "V1", "aVF"]
    expect = clf.predict_proba(x, fs=150, leads=leads)
    with _client(clf_url) as c:
        by_json = c.post("/v1/predict", json={"signal": x.tolist(), "fs": 150, "leads": leads})
        by_npy = c.post("/v1/predict", files=[_npy(x)], data={"fs": "150", "leads": "ii,V1,aVF"})
        full = c.post("/v1/predict", files=[_npy(_ecg(2), "twelve.npy")], data={"fs": "100"})  # 12 rows: default leads
    for r in (by_json, by_npy):
        assert r.status_code == 200, r.text
        assert np.array_equal(np.array(list(r.json()["probabilities"].values())), expect)
    assert by_npy.json()["record"] == "rec" and by_json.json()["record"] == "signal"
    assert np.array_equal(np.array(list(full.json()["probabilities"].values())), clf.predict_proba(_ecg(2), fs=100))


def test_embed_every_form_equals_in_process(clf, enc, clf_url, enc_url, runs):
    name = _records(runs, 1)[0]
    rec = read_record(runs["src"] / f"{name}.hea")
    x = _ecg(3)
    with _client(enc_url) as c:
        r = c.post("/v1/embed", json={"signal": x.tolist(), "fs": 100})
        z = np.array(r.json()["embedding"], dtype=np.float32)
        assert r.status_code == 200 and np.array_equal(z, enc.embed(x, fs=100))
        z = np.array(c.post("/v1/embed", files=_wfdb(runs["src"], name)).json()["embedding"], dtype=np.float32)
        assert np.array_equal(z, enc.embed(rec))
        r = c.post("/v1/embed", files=[_npy(x)], data={"fs": "100", "include_signal": "true"})
        assert np.array_equal(np.array(r.json()["embedding"], dtype=np.float32), enc.embed(x, fs=100))
        assert r.json()["signal"]["leads"] == list(enc.leads)
    with _client(clf_url) as c:  # a classifier embeds with its fine-tuned encoder
        z = np.array(c.post("/v1/embed", json={"signal": x.tolist(), "fs": 100}).json()["embedding"], np.float32)
        assert z.shape == (clf.embed_dim,) and np.array_equal(z, clf.embed(x, fs=100))


def _expand(spans: list[list[list[int]]], n: int) -> np.ndarray:
    mask = np.zeros((len(spans), n), bool)
    for i, row in enumerate(spans):
        for a, b in row:
            mask[i, a:b] = True
    return mask


def test_reconstruct_equals_in_process_and_is_seeded(enc, enc_url, runs):
    x = _ecg(4, n=800)
    expect = enc.reconstruct(x, fs=100, mask_ratio=0.6, seed=3)
    req = {"signal": x.tolist(), "fs": 100, "mask_ratio": 0.6, "seed": 3}
    with _client(enc_url) as c:
        a, b = c.post("/v1/reconstruct", json=req), c.post("/v1/reconstruct", json=req)
        other = c.post("/v1/reconstruct", json={**req, "seed": 4}).json()
        name = _records(runs, 1)[0]
        files = c.post("/v1/reconstruct", files=_wfdb(runs["src"], name), data={"mask_ratio": "0.5", "seed": "1"})
        none = c.post("/v1/reconstruct", json={**req, "mask_ratio": 0})
    assert a.status_code == 200, a.text
    assert a.content == b.content  # same request, same answer
    r = a.json()
    assert r["fs"] == 100 and r["leads"] == list(enc.leads) and r["mask_ratio"] == 0.6 and r["seed"] == 3
    assert np.array_equal(np.array(r["original"], np.float32), expect.original)
    assert np.array_equal(np.array(r["reconstruction"], np.float32), expect.reconstruction)
    assert np.array_equal(_expand(r["mask"], 800), expect.mask) and r["present"] == expect.present.tolist()
    assert r["masked_rmse"] == pytest.approx(expect.masked_rmse(), rel=1e-12)
    assert _expand(other["mask"], 800).tolist() != _expand(r["mask"], 800).tolist()
    ref = enc.reconstruct(read_record(runs["src"] / f"{name}.hea"), mask_ratio=0.5, seed=1)
    assert np.array_equal(np.array(files.json()["reconstruction"], np.float32), ref.reconstruction)
    assert none.status_code == 200 and none.json()["masked_rmse"] is None  # NaN is not JSON


def test_examples(clf, clf_url, runs):
    names = _records(runs, 2)
    with _client(clf_url) as c:
        listed = c.get("/v1/examples").json()["examples"]
        assert names[0] in listed and len(listed) == len(list(runs["src"].glob("*.hea")))
        r = c.post("/v1/predict", files={"example": (None, names[1])})
        assert np.array_equal(np.array(list(r.json()["probabilities"].values())),
                              clf.predict_proba(read_record(runs["src"] / f"{names[1]}.hea")))
        _refused(c.post("/v1/predict", files={"example": (None, "../synth/" + names[1])}), 404, "no example record")
        _refused(c.post("/v1/predict", files={"example": (None, "nope")}), 404, "GET /v1/examples lists them")
        both = [*_wfdb(runs["src"], names[0]), ("example", (None, names[1]))]
        _refused(c.post("/v1/predict", files=both), 400, "either files or an example")


def test_endpoints_the_checkpoint_cannot_serve(clf_url, enc_url):
    body = {"signal": _ecg(5).tolist(), "fs": 100}
    with _client(clf_url) as c:
        _refused(c.post("/v1/reconstruct", json=body), 409, "/v1/reconstruct needs a pre-training run")
        assert "/v1/reconstruct" not in c.get("/v1/model").json()["endpoints"]
    with _client(enc_url) as c:
        _refused(c.post("/v1/predict", json=body), 409, "/v1/predict needs a classifier run")
        assert c.get("/v1/model").json()["endpoints"] == ["/v1/embed", "/v1/reconstruct"]


def test_classifier_with_its_pretraining_run_does_both(clf, enc):
    with running(clf, mae=enc) as url, _client(url) as c:
        card = c.get("/v1/model").json()
        assert card["endpoints"] == ["/v1/embed", "/v1/predict", "/v1/reconstruct"]
        assert card["reconstruct_checkpoint"] == "mae/encoder.safetensors"
        x = _ecg(6, n=500)
        r = c.post("/v1/reconstruct", json={"signal": x.tolist(), "fs": 100, "seed": 2}).json()
        assert np.array_equal(np.array(r["reconstruction"], np.float32),
                              enc.reconstruct(x, fs=100, seed=2).reconstruction)


# ---------------------------------------------------------------------------------------- bad input
def _hea(folder: Path, text: str, name: str = "x") -> list[tuple[str, tuple[str, bytes]]]:
    return [("files", (f"{name}.hea", text.encode()))]


BAD_JSON = [
    ("not JSON", {"content": b"{nope", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
    ("an array", {"json": [1, 2]}, 400, "must be an object"),
    ("unknown key", {"json": {"signal": [[1.0]], "fs": 100, "lead": "II"}}, 400, "unknown key(s) 'lead'"),
    ("no signal", {"json": {"fs": 100}}, 400, "lacks 'signal'"),
    ("ragged", {"json": {"signal": [[1.0, 2.0], [1.0]], "fs": 100}}, 400, "list of lists of numbers"),
    ("strings", {"json": {"signal": [["1", "2"]], "fs": 100, "leads": ["II"]}}, 400, "list of lists of numbers"),
    ("1-D", {"json": {"signal": [1.0, 2.0], "fs": 100}}, 400, "list of lists of numbers"),
    ("no fs", {"json": {"signal": [[1.0, 2.0]], "leads": ["II"]}}, 400, "fs must be the sampling rate"),
    ("fs text", {"json": {"signal": [[1.0, 2.0]], "fs": "fast", "leads": ["II"]}}, 400, "fs must be"),
    ("leads type", {"json": {"signal": [[1.0, 2.0]], "fs": 100, "leads": 7}}, 400, "leads must be a list"),
    ("wrong leads", {"json": {"signal": [[1.0] * 50] * 3, "fs": 100, "leads": ["I", "II"]}}, 400,
     "3 rows but 2 lead names"),
    ("unknown lead", {"json": {"signal": [[1.0] * 50], "fs": 100, "leads": ["Z9"]}}, 400, "Z9"),
    ("twice", {"json": {"signal": [[1.0] * 50] * 2, "fs": 100, "leads": ["I", "i"]}}, 400, "given twice"),
    ("rows vs model", {"json": {"signal": [[1.0] * 50] * 3, "fs": 100}}, 400, "pass leads=[...]"),
    ("NaN", {"content": b'{"signal": [[1.0, NaN, 2.0]], "fs": 100, "leads": ["II"]}',
             "headers": {"content-type": "application/json"}}, 400, "1 NaN/inf sample(s) in row(s) [0]"),
    ("rate below", {"json": {"signal": [[1.0] * 50], "fs": 50, "leads": ["II"]}}, 400, "50"),
    ("plain text", {"content": b"1,2,3", "headers": {"content-type": "text/plain"}}, 415, "unsupported content type"),
    ("bad flag", {"json": {"signal": [[1.0] * 50], "fs": 100, "leads": ["II"], "include_signal": "yes"}}, 400,
     "include_signal must be true or false"),
]


@pytest.mark.parametrize(("what", "request_kw", "status", "fragment"), BAD_JSON, ids=[b[0] for b in BAD_JSON])
def test_bad_json_is_a_one_line_4xx(clf_url, what, request_kw, status, fragment):
    with _client(clf_url) as c:
        _refused(c.post("/v1/predict", **request_kw), status, fragment)
        assert c.get("/healthz").status_code == 200


def test_same_message_as_the_library(clf, clf_url, runs, tmp_path):
    """The server says what the CLI says: the DataError text of ecgmae.load(...) and read_record."""
    x = _ecg(7, leads=2)
    x[1, 5] = np.nan
    np.save(tmp_path / "rec.npy", x)
    name = _records(runs, 1)[0]
    (tmp_path / f"{name}.hea").write_bytes((runs["src"] / f"{name}.hea").read_bytes())
    expect = []
    for fn in (lambda: clf.predict_proba(x, fs=100, leads=["I", "II"]),
               lambda: read_record(tmp_path / "rec.npy", fs=100, leads=("I", "II")),
               lambda: read_record(tmp_path / f"{name}.hea")):
        with pytest.raises(DataError) as err:
            fn()
        expect.append(str(err.value))
    body = json.dumps({"signal": x.tolist(), "fs": 100, "leads": ["I", "II"]})  # NaN: Python's JSON extension
    with _client(clf_url) as c:
        got = [_refused(c.post("/v1/predict", content=body, headers={"content-type": "application/json"}), 400,
                        "NaN/inf"),
               _refused(c.post("/v1/predict", files=[_npy(x)], data={"fs": "100", "leads": "I,II"}), 400, "NaN/inf"),
               _refused(c.post("/v1/predict", files=_wfdb(runs["src"], name)[:1]), 400, "not found")]
    assert got == expect


def test_bad_uploads_are_one_line_4xx(clf_url, enc_url, runs):
    name = _records(runs, 1)[0]
    hea, dat = _wfdb(runs["src"], name)
    text = hea[1][1].decode()
    escape = text.replace(f"{name}.dat", "../../etc/hostname")
    cases = [
        ([("files", ("../x.hea", hea[1][1]))], {}, 400, "'../x.hea' is not a plain file name"),
        ([("files", ("sub/x.hea", hea[1][1]))], {}, 400, "not a plain file name"),
        ([("files", (".hea", hea[1][1]))], {}, 400, "not a plain file name"),
        ([("files", ("x.exe", b"MZ"))], {}, 400, "x.exe: unsupported file type"),
        ([dat], {}, 400, f"{name}.dat: a WFDB signal file needs its .hea header"),
        ([hea, dat, ("files", ("y.hea", hea[1][1]))], {}, 400, "one record at a time"),
        ([hea, hea], {}, 400, "uploaded twice"),
        ([("files", (f"{name}.hea", escape.encode())), dat], {}, 400, "outside"),
        ([("files", ("x.hea", b"\x00\xff garbage"))], {}, 400, "x.hea"),
        ([hea, dat], {"fs": "500"}, 400, "fs: a WFDB record names its own rate"),
        ([hea, dat], {"colour": "red"}, 400, "unknown field 'colour'"),
        ([_npy(_ecg(8))], {}, 400, "rec.npy: sampling rate unknown"),
        ([_npy(_ecg(8))], {"fs": "abc"}, 400, "fs must be a number, got 'abc'"),
        ([_npy(_ecg(8)[None])], {"fs": "100"}, 400, "holds 1 records"),
        ([("files", ("x.npy", b"\x93NUMPY not really"))], {"fs": "100"}, 400, "x.npy"),
        ([_npy(_ecg(8)), hea], {"fs": "100"}, 400, "upload one .npy alone"),
        ([], {"fs": "100"}, 400, "no file uploaded"),
    ]
    with _client(clf_url) as c:
        for files, data, status, fragment in cases:
            _refused(c.post("/v1/predict", files=files or {"fs": (None, "100")}, data=data if files else None),
                     status, fragment)
        broken = c.post("/v1/predict", content=b"--zz\r\nbroken", headers={"content-type": "multipart/form-data"})
        assert broken.status_code == 400, broken.text
        assert c.get("/healthz").status_code == 200
    body = {"signal": _ecg(9).tolist(), "fs": 100}
    with _client(enc_url) as c:
        _refused(c.post("/v1/reconstruct", json={**body, "mask_ratio": 1.5}), 400, "mask_ratio must be in [0, 1)")
        _refused(c.post("/v1/reconstruct", json={**body, "seed": -1}), 400, "seed must be in")
        _refused(c.post("/v1/reconstruct", json={**body, "seed": 1.5}), 400, "seed must be an integer")
        _refused(c.post("/v1/reconstruct", files=[_npy(_ecg(9))], data={"fs": "100", "mask_ratio": "lots"}), 400,
                 "mask_ratio must be a number, got 'lots'")


# ------------------------------------------------------------------------------------------- limits
def test_upload_size_and_record_length_limits(clf, runs):
    name = _records(runs, 1)[0]  # 5 s at 200 Hz
    with running(clf, max_upload_bytes=50_000, max_seconds=4) as url, _client(url) as c:
        _refused(c.post("/v1/predict", json={"signal": _ecg(1, n=3000).tolist(), "fs": 500}), 413,
                 "takes at most 50000 (--max-upload-mb)")

        def chunks():  # no Content-Length: counted while read
            for _ in range(100):
                yield b" " * 1000

        _refused(c.post("/v1/predict", content=chunks(), headers={"content-type": "application/json"}), 413,
                 "exceeds 50000 bytes")
        _refused(c.post("/v1/predict", files=_wfdb(runs["src"], name)), 413,
                 f"{name}: 5 s of signal; this server takes records up to 4 s (--max-seconds)")
        one = {"fs": 100, "leads": ["II"]}
        _refused(c.post("/v1/embed", json={"signal": _ecg(1, 1, 450).tolist(), **one}), 413, "signal: 4.5 s of signal")
        assert c.post("/v1/embed", json={"signal": _ecg(1, 1, 400).tolist(), **one}).status_code == 200
        assert c.get("/healthz").status_code == 200


def test_a_real_holter_record_is_too_long(clf):
    src = SHARED_DATA / "wfdb-sample"
    if not (src / "100.hea").exists():
        pytest.skip(f"real-data sample not found at {src} (set ECGMAE_SHARED_DATA to its folder)")
    files = [("files", (n, (src / n).read_bytes())) for n in ("100.hea", "100.dat")]
    with running(clf) as url, _client(url) as c:
        _refused(c.post("/v1/predict", files=files), 413, "100: 1805.56 s of signal; this server takes records up to "
                 "300 s")


def test_timeout_and_concurrency_limits(runs):
    model = ecgmae.load(runs["ft"])
    with running(model, timeout_s=1.0, max_concurrency=1) as url, _client(url) as c:
        gate = Gate(model, "predict_prepared")
        body = {"signal": _ecg(1).tolist(), "fs": 100}
        first: dict[str, httpx.Response] = {}
        t = threading.Thread(target=lambda: first.update(r=c.post("/v1/predict", json=body)))
        t.start()
        try:
            _until(c, lambda m: m["in_flight"] == 1 and gate.calls, "the first request inside the model")
            busy = c.post("/v1/predict", json=body)
            _refused(busy, 503, "server busy: 1 requests in progress (--max-concurrency 1)")
            assert busy.headers["retry-after"] == "1"
            t.join()
            _refused(first["r"], 504, "no answer within 1 s (--timeout)")
            # the slot stays taken until the model really finishes: still busy
            _refused(c.post("/v1/predict", json=body), 503, "server busy")
        finally:
            gate.open()
            t.join()
        _until(c, lambda m: m["in_flight"] == 0, "the timed-out work to finish")
        ok = c.post("/v1/predict", json=body)
        assert ok.status_code == 200 and np.array_equal(np.array(list(ok.json()["probabilities"].values())),
                                                        model.predict_proba(_ecg(1), fs=100))
        m = _metrics(c)["requests"]["POST /v1/predict"]
        assert m == {"200": 1, "503": 2, "504": 1}


def test_concurrent_requests_share_model_calls(runs):
    model = ecgmae.load(runs["ft"])
    names = _records(runs, 7)
    with running(model, batch_size=16, batch_wait_ms=5) as url, _client(url) as c:
        gate = Gate(model, "predict_prepared")
        out: dict[str, dict[str, float]] = {}

        def send(name: str) -> None:
            with _client(url) as own:
                r = own.post("/v1/predict", files=_wfdb(runs["src"], name))
                out[name] = r.json()["probabilities"]

        threads = [threading.Thread(target=send, args=(names[0],))]
        threads[0].start()
        try:
            _until(c, lambda m: gate.calls == [1], "the first record inside the model")
            threads += [threading.Thread(target=send, args=(n,)) for n in names[1:]]
            for t in threads[1:]:
                t.start()
            _until(c, lambda m: m["queued"]["predict"] == 6, "six records waiting for the model")
        finally:
            gate.open()
            for t in threads:
                t.join()
        assert gate.calls == [1, 6]  # seven requests, two model calls
        assert _metrics(c)["model_calls"]["predict"] == {"calls": 2, "records": 7, "largest_batch": 6}
    recs = [read_record(runs["src"] / f"{n}.hea") for n in names]
    batch = model.predict_proba(recs)  # in process, as one batch
    for n, row in zip(names, batch, strict=True):
        np.testing.assert_allclose(list(out[n].values()), row, rtol=0, atol=1e-6)


def test_the_server_survives_an_internal_error(runs):
    model = ecgmae.load(runs["mae"])

    def broken(items, **kw):
        raise RuntimeError("boom")

    with running(model) as url, _client(url) as c:
        model.embed_prepared = broken
        r = c.post("/v1/embed", json={"signal": _ecg(1).tolist(), "fs": 100})
        assert r.status_code == 500 and r.json() == {"error": "internal error (RuntimeError); the server log has "
                                                              "the details"}
        del model.embed_prepared
        assert c.post("/v1/embed", json={"signal": _ecg(1).tolist(), "fs": 100}).status_code == 200


# --------------------------------------------------------------------------------------------- CLI
def test_cli_help_and_missing_extra(monkeypatch, capsys, runs):
    from ecgmae.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = capsys.readouterr().out
    assert "Example:\n  ecgmae serve --checkpoint runs/ft" in text and "--max-upload-mb" in text
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    assert main(["serve", "--checkpoint", str(runs["ft"])]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "ecgmae serve: error: serving needs uvicorn (the serve extra): pip install 'ecgmae[serve]'"


def test_importing_ecgmae_does_not_import_the_web_stack():
    code = ("import sys, ecgmae, ecgmae.api, ecgmae.cli, ecgmae.serve, ecgmae.cli.serve; ecgmae.cli.build_parser(); "
            "print(sorted(m for m in ('starlette', 'uvicorn', 'fastapi', 'python_multipart') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]"


def test_the_command_serves_on_a_real_socket(runs, clf):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "ecgmae", "serve", "--checkpoint", str(runs["ft"]), "--port",
                             str(port), "--quiet"], env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin",
                                                          "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with _client(f"http://127.0.0.1:{port}") as c:
            for _ in range(1200):
                try:
                    if c.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    assert proc.poll() is None, proc.communicate()
                    time.sleep(0.05)
            x = _ecg(3)
            r = c.post("/v1/predict", json={"signal": x.tolist(), "fs": 100})
            assert np.array_equal(np.array(list(r.json()["probabilities"].values())), clf.predict_proba(x, fs=100))
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: uvicorn shuts down, then the command reports the interrupt
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.strip().endswith("ecgmae serve: interrupted") and f"on http://127.0.0.1:{port}/" in out


def test_bad_flags_are_one_line(capsys, runs):
    from ecgmae.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--checkpoint", str(runs["ft"]), "--port", "70000"])
    assert "must be a port 1-65535, got 70000" in capsys.readouterr().err
    assert main(["serve", "--checkpoint", str(runs["ft"]), "--examples", str(runs["ft"] / "nope")]) == 2
    assert "ecgmae serve: error: --examples" in capsys.readouterr().err
