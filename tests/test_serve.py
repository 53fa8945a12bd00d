"""``ecgmae serve`` over real sockets on 127.0.0.1: every endpoint and input form, answers equal to
``ecgmae.load(...)`` in process, and the command. Limits and bad input: ``test_serve_limits.py``."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import ecgmae
from conftest import default_sigint, shared_path
from ecgmae.data.exports import FILE_READERS
from ecgmae.data.io import read_record
from serve_util import (
    client,
    ecg,
    get_metrics,
    need_serve,
    npy,
    records,
    refused,
    running,
    wfdb,
)

need_serve()
import httpx  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"


# ------------------------------------------------------------------------------------------ endpoints
def test_model_card_health_metrics_and_pages(clf, clf_url, runs):
    with client(clf_url) as c:
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
        refused(c.get("/static/../pyproject.toml"), 404, "Not Found")
        refused(c.get("/nope"), 404, "GET /nope: Not Found")
        refused(c.get("/v1/predict"), 405, "Method Not Allowed")
        c.post("/v1/predict", json={"signal": [[1.0]], "fs": "x"})
        m = get_metrics(c)
        assert m["requests"]["GET /healthz"]["200"] >= 1 and m["requests"]["POST /v1/predict"]["400"] >= 1
        lat = m["latency_ms"]["POST /v1/predict"]
        assert lat["count"] >= 1 and 0 <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert m["in_flight"] == 0 and m["queued"] == {"embed": 0, "predict": 0}


def test_predict_wfdb_upload_equals_in_process(clf, clf_url, runs):
    name = records(runs, 1)[0]
    rec = read_record(runs["src"] / f"{name}.hea")
    expect = clf.predict_proba(rec)
    with client(clf_url) as c:
        r = c.post("/v1/predict", files=wfdb(runs["src"], name), data={"include_signal": "1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["record"] == name and list(body["probabilities"]) == clf.label_names
    assert np.array_equal(np.array(list(body["probabilities"].values())), expect)  # exactly, not close
    sig = body["signal"]  # the record as the server read it, for drawing
    assert sig["fs"] == rec.fs and sig["leads"] == list(rec.leads)
    np.testing.assert_allclose(np.array(sig["data"]), rec.signal, atol=6e-5)


def test_predict_json_and_npy_equal_in_process(clf, clf_url):
    x = ecg(1, leads=3, n=900)
    leads = ["ii", "V1", "aVF"]
    expect = clf.predict_proba(x, fs=150, leads=leads)
    with client(clf_url) as c:
        by_json = c.post("/v1/predict", json={"signal": x.tolist(), "fs": 150, "leads": leads})
        by_npy = c.post("/v1/predict", files=[npy(x)], data={"fs": "150", "leads": "ii,V1,aVF"})
        full = c.post("/v1/predict", files=[npy(ecg(2), "twelve.npy")], data={"fs": "100"})  # 12 rows: default leads
    for r in (by_json, by_npy):
        assert r.status_code == 200, r.text
        assert np.array_equal(np.array(list(r.json()["probabilities"].values())), expect)
    assert by_npy.json()["record"] == "rec" and by_json.json()["record"] == "signal"
    assert np.array_equal(np.array(list(full.json()["probabilities"].values())), clf.predict_proba(ecg(2), fs=100))


def test_embed_every_form_equals_in_process(clf, enc, clf_url, enc_url, runs):
    name = records(runs, 1)[0]
    rec = read_record(runs["src"] / f"{name}.hea")
    x = ecg(3)
    with client(enc_url) as c:
        r = c.post("/v1/embed", json={"signal": x.tolist(), "fs": 100})
        z = np.array(r.json()["embedding"], dtype=np.float32)
        assert r.status_code == 200 and np.array_equal(z, enc.embed(x, fs=100))
        z = np.array(c.post("/v1/embed", files=wfdb(runs["src"], name)).json()["embedding"], dtype=np.float32)
        assert np.array_equal(z, enc.embed(rec))
        r = c.post("/v1/embed", files=[npy(x)], data={"fs": "100", "include_signal": "true"})
        assert np.array_equal(np.array(r.json()["embedding"], dtype=np.float32), enc.embed(x, fs=100))
        assert r.json()["signal"]["leads"] == list(enc.leads)
    with client(clf_url) as c:  # a classifier embeds with its fine-tuned encoder
        z = np.array(c.post("/v1/embed", json={"signal": x.tolist(), "fs": 100}).json()["embedding"], np.float32)
        assert z.shape == (clf.embed_dim,) and np.array_equal(z, clf.embed(x, fs=100))


def test_muse_xml_and_dicom_uploads_equal_in_process(clf, enc, clf_url, enc_url):
    pytest.importorskip("pydicom")
    formats = shared_path("hospital-formats")
    paths = [formats / f"guangxi_teaching_sinus_rhythm{suffix}" for suffix in (".xml", ".dcm")]
    with client(clf_url) as c:
        accept = re.search(r'id="files"[^>]*accept="([^"]*)"', c.get("/").text)
        assert accept and set(FILE_READERS) <= set(accept.group(1).split(","))  # the viewer offers every export
        for path in paths:
            rec = read_record(path)
            r = c.post("/v1/predict", files=[("files", (path.name, path.read_bytes()))], data={"include_signal": "1"})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["record"] == "guangxi_teaching_sinus_rhythm" and body["signal"]["leads"] == list(rec.leads)
            assert np.array_equal(np.array(list(body["probabilities"].values())), clf.predict_proba(rec))
    with client(enc_url) as c:
        for path in paths:
            r = c.post("/v1/embed", files=[("files", (path.name, path.read_bytes()))])
            assert r.status_code == 200, r.text
            assert np.array_equal(np.array(r.json()["embedding"], np.float32), enc.embed(read_record(path)))


def _expand(spans: list[list[list[int]]], n: int) -> np.ndarray:
    mask = np.zeros((len(spans), n), bool)
    for i, row in enumerate(spans):
        for a, b in row:
            mask[i, a:b] = True
    return mask


def test_reconstruct_equals_in_process_and_is_seeded(enc, enc_url, runs):
    x = ecg(4, n=800)
    expect = enc.reconstruct(x, fs=100, mask_ratio=0.6, seed=3)
    req = {"signal": x.tolist(), "fs": 100, "mask_ratio": 0.6, "seed": 3}
    with client(enc_url) as c:
        a, b = c.post("/v1/reconstruct", json=req), c.post("/v1/reconstruct", json=req)
        other = c.post("/v1/reconstruct", json={**req, "seed": 4}).json()
        name = records(runs, 1)[0]
        files = c.post("/v1/reconstruct", files=wfdb(runs["src"], name), data={"mask_ratio": "0.5", "seed": "1"})
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
    names = records(runs, 2)
    with client(clf_url) as c:
        listed = c.get("/v1/examples").json()["examples"]
        assert names[0] in listed and len(listed) == len(list(runs["src"].glob("*.hea")))
        r = c.post("/v1/predict", files={"example": (None, names[1])})
        assert np.array_equal(
            np.array(list(r.json()["probabilities"].values())),
            clf.predict_proba(read_record(runs["src"] / f"{names[1]}.hea")),
        )
        refused(c.post("/v1/predict", files={"example": (None, "../synth/" + names[1])}), 404, "no example record")
        refused(c.post("/v1/predict", files={"example": (None, "nope")}), 404, "GET /v1/examples lists them")
        both = [*wfdb(runs["src"], names[0]), ("example", (None, names[1]))]
        refused(c.post("/v1/predict", files=both), 400, "either files or an example")


def test_endpoints_the_checkpoint_cannot_serve(clf_url, enc_url):
    body = {"signal": ecg(5).tolist(), "fs": 100}
    with client(clf_url) as c:
        refused(c.post("/v1/reconstruct", json=body), 409, "/v1/reconstruct needs a pre-training run")
        assert "/v1/reconstruct" not in c.get("/v1/model").json()["endpoints"]
    with client(enc_url) as c:
        refused(c.post("/v1/predict", json=body), 409, "/v1/predict needs a classifier run")
        card = c.get("/v1/model").json()
        assert card["endpoints"] == ["/v1/embed", "/v1/reconstruct"]
        assert card["checkpoint"] == "mae/encoder.safetensors"
        assert card["reconstruct_checkpoint"] == "mae/mae.safetensors"  # what reconstructs


def test_classifier_with_its_pretraining_run_does_both(clf, enc):
    with running(clf, mae=enc) as url, client(url) as c:
        card = c.get("/v1/model").json()
        assert card["endpoints"] == ["/v1/embed", "/v1/predict", "/v1/reconstruct"]
        assert card["reconstruct_checkpoint"] == "mae/mae.safetensors"  # what reconstructs, not the encoder
        x = ecg(6, n=500)
        r = c.post("/v1/reconstruct", json={"signal": x.tolist(), "fs": 100, "seed": 2}).json()
        assert np.array_equal(
            np.array(r["reconstruction"], np.float32), enc.reconstruct(x, fs=100, seed=2).reconstruction
        )


def test_host_header_is_checked(clf):
    """L2: a DNS-rebinding page names its own host; only loopback names, the bound host and added ones pass."""
    with running(clf, hosts=("ecg.lab.example", "*.ward.example")) as url, client(url) as c:
        port = url.rsplit(":", 1)[1]
        for host in (
            "evil.example",
            f"evil.example:{port}",
            "127.0.0.1.evil.example",
            "localhost.",
            "[::1",
            "ward.example",
            "a b",
        ):
            text = refused(
                c.get("/v1/model", headers={"Host": host}),
                400,
                "this server answers localhost, "
                "127.0.0.1, [::1], ecg.lab.example, *.ward.example (ecgmae serve --allowed-hosts adds",
            )
            assert text.startswith(f"Host {host!r}: "), text
        refused(
            c.post("/v1/predict", headers={"Host": "evil.example"}, json={"signal": ecg(1).tolist(), "fs": 100}),
            400,
            "Host 'evil.example'",
        )
        for host in (
            "localhost",
            f"localhost:{port}",
            "LOCALHOST",
            f"127.0.0.1:{port}",
            f"[::1]:{port}",
            "[::1]",
            "ecg.lab.example",
            "bed3.ward.example:80",
        ):
            assert c.get("/healthz", headers={"Host": host}).status_code == 200, host


def test_answers_name_no_server_folder_nor_object(clf_url, runs):
    """L3: the run's card names runs and stores by their last two parts; errors carry no reprs or temp paths."""
    with client(clf_url) as c:
        r = c.get("/v1/model")
        card = r.json()["card"]
        assert card["data"]["store"] == f"{runs['store'].parent.name}/store"
        assert card["metrics"]["encoder"] == f"{runs['mae'].parent.name}/mae"
        assert card["metrics"]["leakage"]["pretrain_store"] == f"{runs['store'].parent.name}/store"
        assert str(runs["store"].parent) not in r.text
        hea = ("files", ("r.hea", b"r 1 500 1000\nr.dat 516 200 16 0 0 0 0 II\n"))  # FLAC-compressed WFDB
        for dat in (b"fLaC" + bytes(100), b"not flac at all" * 10):
            text = refused(c.post("/v1/predict", files=[hea, ("files", ("r.dat", dat))]), 400, "r.hea: unreadable")
            assert " at 0x" not in text and "/" not in text.split("unreadable", 1)[1], text


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
    code = (
        "import sys, ecgmae, ecgmae.api, ecgmae.cli, ecgmae.serve, ecgmae.cli.serve; ecgmae.cli.build_parser(); "
        "print(sorted(m for m in ('starlette', 'uvicorn', 'fastapi', 'python_multipart') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_the_command_serves_on_a_real_socket(runs, clf):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ecgmae",
            "serve",
            "--checkpoint",
            str(runs["ft"]),
            "--port",
            str(port),
            "--quiet",
            "--allowed-hosts",
            "ecg.lab.example",
        ],
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    try:
        with client(f"http://127.0.0.1:{port}") as c:
            for _ in range(1200):
                try:
                    if c.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    assert proc.poll() is None, proc.communicate()
                    time.sleep(0.05)
            x = ecg(3)
            r = c.post("/v1/predict", json={"signal": x.tolist(), "fs": 100})
            assert np.array_equal(np.array(list(r.json()["probabilities"].values())), clf.predict_proba(x, fs=100))
            assert c.get("/healthz", headers={"Host": "ecg.lab.example"}).status_code == 200  # --allowed-hosts
            refused(c.get("/healthz", headers={"Host": "evil.example"}), 400, "Host 'evil.example'")
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
    assert main(["serve", "--checkpoint", str(runs["ft"]), "--mae", str(runs["ft"])]) == 2
    assert "a classifier run; give the pre-training run" in capsys.readouterr().err


def test_a_non_loopback_bind_warns(monkeypatch, capsys, runs):
    """L1: an unauthenticated server reachable from other machines says so, in one line; loopback is quiet."""
    import uvicorn

    from ecgmae.cli import main

    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)  # bind, then return at once
    for host in ("0.0.0.0", "127.0.0.1"):
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        assert main(["serve", "--checkpoint", str(runs["ft"]), "--host", host, "--port", str(port)]) == 0
        err = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
        if host == "0.0.0.0":
            assert err == [
                f"warning: listening on 0.0.0.0:{port}, which other machines can reach, with no "
                "authentication: anyone who can connect can use the model; put it behind your own "
                "proxy (TLS, authentication) or listen on 127.0.0.1"
            ], err
        else:
            assert err == []
