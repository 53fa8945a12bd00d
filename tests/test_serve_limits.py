"""``ecgmae serve`` limits and bad input: every refusal is a one-line 4xx (the library's text), the server
keeps running; timeouts, concurrency, and concurrent requests sharing model calls."""

from __future__ import annotations

import base64
import importlib.util
import json
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

import ecgmae
from conftest import SHARED_DATA
from ecgmae.data.io import read_record
from ecgmae.errors import DataError
from serve_util import (
    Gate,
    client,
    ecg,
    get_metrics,
    need_serve,
    npy,
    records,
    refused,
    running,
    until,
    wfdb,
)

need_serve()
import httpx  # noqa: E402

# ---------------------------------------------------------------------------------------- bad input
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
    (
        "wrong leads",
        {"json": {"signal": [[1.0] * 50] * 3, "fs": 100, "leads": ["I", "II"]}},
        400,
        "3 rows but 2 lead names",
    ),
    ("unknown lead", {"json": {"signal": [[1.0] * 50], "fs": 100, "leads": ["Z9"]}}, 400, "Z9"),
    ("twice", {"json": {"signal": [[1.0] * 50] * 2, "fs": 100, "leads": ["I", "i"]}}, 400, "given twice"),
    ("rows vs model", {"json": {"signal": [[1.0] * 50] * 3, "fs": 100}}, 400, "pass leads=[...]"),
    (
        "NaN",
        {
            "content": b'{"signal": [[1.0, NaN, 2.0]], "fs": 100, "leads": ["II"]}',
            "headers": {"content-type": "application/json"},
        },
        400,
        "1 NaN/inf sample(s) in row(s) [0]",
    ),
    ("rate below", {"json": {"signal": [[1.0] * 50], "fs": 50, "leads": ["II"]}}, 400, "50"),
    ("plain text", {"content": b"1,2,3", "headers": {"content-type": "text/plain"}}, 415, "unsupported content type"),
    (
        "bad flag",
        {"json": {"signal": [[1.0] * 50], "fs": 100, "leads": ["II"], "include_signal": "yes"}},
        400,
        "include_signal must be true or false",
    ),
]


@pytest.mark.parametrize(("what", "request_kw", "status", "fragment"), BAD_JSON, ids=[b[0] for b in BAD_JSON])
def test_bad_json_is_a_one_line_4xx(clf_url, what, request_kw, status, fragment):
    with client(clf_url) as c:
        refused(c.post("/v1/predict", **request_kw), status, fragment)
        assert c.get("/healthz").status_code == 200


def test_same_message_as_the_library(clf, clf_url, runs, tmp_path):
    """The server says what the CLI says: the DataError text of ecgmae.load(...) and read_record."""
    x = ecg(7, leads=2)
    x[1, 5] = np.nan
    np.save(tmp_path / "rec.npy", x)
    name = records(runs, 1)[0]
    (tmp_path / f"{name}.hea").write_bytes((runs["src"] / f"{name}.hea").read_bytes())
    expect = []
    for fn in (
        lambda: clf.predict_proba(x, fs=100, leads=["I", "II"]),
        lambda: read_record(tmp_path / "rec.npy", fs=100, leads=("I", "II")),
        lambda: read_record(tmp_path / f"{name}.hea"),
    ):
        with pytest.raises(DataError) as err:
            fn()
        expect.append(str(err.value))
    body = json.dumps({"signal": x.tolist(), "fs": 100, "leads": ["I", "II"]})  # NaN: Python's JSON extension
    with client(clf_url) as c:
        got = [
            refused(c.post("/v1/predict", content=body, headers={"content-type": "application/json"}), 400, "NaN/inf"),
            refused(c.post("/v1/predict", files=[npy(x)], data={"fs": "100", "leads": "I,II"}), 400, "NaN/inf"),
            refused(c.post("/v1/predict", files=wfdb(runs["src"], name)[:1]), 400, "not found"),
        ]
    assert got == expect


def test_bad_uploads_are_one_line_4xx(clf_url, enc_url, runs):
    name = records(runs, 1)[0]
    hea, dat = wfdb(runs["src"], name)
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
        ([npy(ecg(8))], {}, 400, "rec.npy: sampling rate unknown"),
        ([npy(ecg(8))], {"fs": "abc"}, 400, "fs must be a number, got 'abc'"),
        ([npy(ecg(8)[None])], {"fs": "100"}, 400, "holds 1 records"),
        ([("files", ("x.npy", b"\x93NUMPY not really"))], {"fs": "100"}, 400, "x.npy"),
        ([npy(ecg(8)), hea], {"fs": "100"}, 400, "upload one .npy alone"),
        ([], {"fs": "100"}, 400, "no file uploaded"),
    ]
    with client(clf_url) as c:
        for files, data, status, fragment in cases:
            refused(
                c.post("/v1/predict", files=files or {"fs": (None, "100")}, data=data if files else None),
                status,
                fragment,
            )
        broken = c.post("/v1/predict", content=b"--zz\r\nbroken", headers={"content-type": "multipart/form-data"})
        assert broken.status_code == 400, broken.text
        assert c.get("/healthz").status_code == 200
    body = {"signal": ecg(9).tolist(), "fs": 100}
    with client(enc_url) as c:
        refused(c.post("/v1/reconstruct", json={**body, "mask_ratio": 1.5}), 400, "mask_ratio must be in [0, 1)")
        refused(c.post("/v1/reconstruct", json={**body, "seed": -1}), 400, "seed must be in")
        refused(c.post("/v1/reconstruct", json={**body, "seed": 1.5}), 400, "seed must be an integer")
        refused(
            c.post("/v1/reconstruct", files=[npy(ecg(9))], data={"fs": "100", "mask_ratio": "lots"}),
            400,
            "mask_ratio must be a number, got 'lots'",
        )


def test_hostile_exports_are_one_line_4xx(clf_url):
    from test_muse import MUSE_BOMB, lead_block, muse_xml

    x = np.arange(500, dtype=np.int16)
    good = muse_xml([lead_block("I", x), lead_block("II", x)]).encode()
    cut = muse_xml([lead_block("I", x, data=base64.b64encode(x.tobytes()).decode()[:-3])]).encode()
    trillion = muse_xml([lead_block("I", x, count=10**12, nbytes=2 * 10**12)]).encode()
    cases = [
        ([("bomb.xml", MUSE_BOMB.encode())], {}, "bomb.xml: unsafe XML refused"),
        ([("cut.xml", cut)], {}, "cut.xml: lead I: base64 text of 1333 characters is cut short"),
        ([("big.xml", trillion)], {}, "big.xml: lead I declares 1000000000000 samples"),
        ([("other.xml", b"<CardiologyXML/>")], {}, "other.xml: unsupported XML export (root <CardiologyXML>)"),
        ([("a.xml", good)], {"fs": "500"}, "fs: an export names its own rate"),
        ([("a.xml", good), ("a.dcm", b"x")], {}, "export alone, got a.xml, a.dcm"),
    ]
    if importlib.util.find_spec("pydicom") and (SHARED_DATA / "hospital-formats").is_dir():
        from test_dicom_ecg import huge_waveform, real_dcm

        data = real_dcm().read_bytes()
        with tempfile.TemporaryDirectory() as tmp:
            huge = huge_waveform(Path(tmp)).read_bytes()
        cases += [
            ([("huge.dcm", huge)], {}, "huge.dcm: waveform declares 2147483648 samples x 12 channels"),
            ([("cut.dcm", data[: len(data) // 2])], {}, "cut.dcm: truncated: an element runs past the end"),
            ([("photo.dcm", b"\x89PNG" + bytes(300))], {}, "photo.dcm: not a DICOM file"),
        ]
    with client(clf_url) as c:
        for files, data, fragment in cases:
            refused(c.post("/v1/predict", files=[("files", f) for f in files], data=data), 400, fragment)
        assert c.post("/v1/predict", files=[("files", ("a.xml", good))]).status_code == 200
        assert c.get("/healthz").status_code == 200


# ------------------------------------------------------------------------------------------- limits
def test_upload_size_and_record_length_limits(clf, runs):
    name = records(runs, 1)[0]  # 5 s at 200 Hz
    with running(clf, max_upload_bytes=50_000, max_seconds=4) as url, client(url) as c:
        refused(
            c.post("/v1/predict", json={"signal": ecg(1, n=3000).tolist(), "fs": 500}),
            413,
            "takes at most 50000 (--max-upload-mb)",
        )

        def chunks():  # no Content-Length: counted while read
            for _ in range(100):
                yield b" " * 1000

        refused(
            c.post("/v1/predict", content=chunks(), headers={"content-type": "application/json"}),
            413,
            "exceeds 50000 bytes",
        )
        refused(
            c.post("/v1/predict", files=wfdb(runs["src"], name)),
            413,
            f"{name}: 5 s of signal; this server takes records up to 4 s (--max-seconds)",
        )
        one = {"fs": 100, "leads": ["II"]}
        refused(c.post("/v1/embed", json={"signal": ecg(1, 1, 450).tolist(), **one}), 413, "signal: 4.5 s of signal")
        assert c.post("/v1/embed", json={"signal": ecg(1, 1, 400).tolist(), **one}).status_code == 200
        assert c.get("/healthz").status_code == 200


def test_a_real_holter_record_is_too_long(clf):
    src = SHARED_DATA / "wfdb-sample"
    if not (src / "100.hea").exists():
        pytest.skip(f"real-data sample not found at {src} (set ECGMAE_SHARED_DATA to its folder)")
    files = [("files", (n, (src / n).read_bytes())) for n in ("100.hea", "100.dat")]
    with running(clf) as url, client(url) as c:
        refused(
            c.post("/v1/predict", files=files), 413, "100: 1805.56 s of signal; this server takes records up to 300 s"
        )


def test_timeout_and_concurrency_limits(runs):
    model = ecgmae.load(runs["ft"])
    with running(model, timeout_s=1.0, max_concurrency=1) as url, client(url) as c:
        gate = Gate(model, "predict_prepared")
        body = {"signal": ecg(1).tolist(), "fs": 100}
        first: dict[str, httpx.Response] = {}
        t = threading.Thread(target=lambda: first.update(r=c.post("/v1/predict", json=body)))
        t.start()
        try:
            until(c, lambda m: m["in_flight"] == 1 and gate.calls, "the first request inside the model")
            busy = c.post("/v1/predict", json=body)
            refused(busy, 503, "server busy: 1 requests in progress (--max-concurrency 1)")
            assert busy.headers["retry-after"] == "1"
            t.join()
            refused(first["r"], 504, "no answer within 1 s (--timeout)")
            # the slot stays taken until the model really finishes: still busy
            refused(c.post("/v1/predict", json=body), 503, "server busy")
        finally:
            gate.open()
            t.join()
        until(c, lambda m: m["in_flight"] == 0, "the timed-out work to finish")
        ok = c.post("/v1/predict", json=body)
        assert ok.status_code == 200 and np.array_equal(
            np.array(list(ok.json()["probabilities"].values())), model.predict_proba(ecg(1), fs=100)
        )
        m = get_metrics(c)["requests"]["POST /v1/predict"]
        assert m == {"200": 1, "503": 2, "504": 1}


def test_concurrent_requests_share_model_calls(runs):
    model = ecgmae.load(runs["ft"])
    names = records(runs, 7)
    with running(model, batch_size=16, batch_wait_ms=5) as url, client(url) as c:
        gate = Gate(model, "predict_prepared")
        out: dict[str, dict[str, float]] = {}

        def send(name: str) -> None:
            with client(url) as own:
                r = own.post("/v1/predict", files=wfdb(runs["src"], name))
                out[name] = r.json()["probabilities"]

        threads = [threading.Thread(target=send, args=(names[0],))]
        threads[0].start()
        try:
            until(c, lambda m: gate.calls == [1], "the first record inside the model")
            threads += [threading.Thread(target=send, args=(n,)) for n in names[1:]]
            for t in threads[1:]:
                t.start()
            until(c, lambda m: m["queued"]["predict"] == 6, "six records waiting for the model")
        finally:
            gate.open()
            for t in threads:
                t.join()
        assert gate.calls == [1, 6]  # seven requests, two model calls
        assert get_metrics(c)["model_calls"]["predict"] == {"calls": 2, "records": 7, "largest_batch": 6}
    recs = [read_record(runs["src"] / f"{n}.hea") for n in names]
    batch = model.predict_proba(recs)  # in process, as one batch
    for n, row in zip(names, batch, strict=True):
        np.testing.assert_allclose(list(out[n].values()), row, rtol=0, atol=1e-6)


def test_the_server_survives_an_internal_error(runs):
    model = ecgmae.load(runs["mae"])

    def broken(items, **kw):
        raise RuntimeError("boom")

    with running(model) as url, client(url) as c:
        model.embed_prepared = broken
        r = c.post("/v1/embed", json={"signal": ecg(1).tolist(), "fs": 100})
        assert r.status_code == 500 and r.json() == {
            "error": "internal error (RuntimeError); the server log has the details"
        }
        del model.embed_prepared
        assert c.post("/v1/embed", json={"signal": ecg(1).tolist(), "fs": 100}).status_code == 200


def test_include_signal_is_bounded_and_built_off_the_event_loop(clf, monkeypatch):
    """L4: the record sent back for drawing is resampled below max_signal_values (anti-aliased, its rate said),
    and the answer is built in a worker thread, not on the event loop that answers /healthz."""
    from ecgmae.data.signal import resample
    from ecgmae.serve.inputs import Sample

    threads: list[str] = []
    data = Sample.data

    def spy(self, *args, **kw):
        threads.append(threading.current_thread().name)
        return data(self, *args, **kw)

    monkeypatch.setattr(Sample, "data", spy)
    x = ecg(3, n=700)  # 12 x 700 = 8400 values at 100 Hz
    with running(clf, max_signal_values=1000) as url, client(url) as c:
        r = c.post("/v1/predict", files=[npy(x)], data={"fs": "100", "include_signal": "1"})
        assert r.status_code == 200, r.text
        sig = r.json()["signal"]
        assert sig["fs"] == 100 / 9 and sig["resampled_from"] == 100  # 9 x fewer samples: 12 x 78 <= 1000
        np.testing.assert_allclose(np.array(sig["data"]), resample(x, 100, 100 / 9), atol=6e-5)
        small = c.post("/v1/embed", json={"signal": ecg(4, n=80).tolist(), "fs": 100, "include_signal": True})
        assert small.json()["signal"]["fs"] == 100 and "resampled_from" not in small.json()["signal"]
    assert threads and all(t.startswith("ecgmae-prep") for t in threads), threads
