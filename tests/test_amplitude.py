"""Amplitudes no ECG has (a wrong gain or unit): one rule, in the preprocessing every path shares, so the
API, ``embed``/``predict``, ``prepare`` and ``serve`` all refuse the record with the same reason instead of
answering NaN (or a blank row)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ecgmae.cli import main
from ecgmae.data.io import read_record
from ecgmae.data.signal import MAX_AMPLITUDE_MV, PreprocessConfig
from ecgmae.data.store import prepare_store
from ecgmae.errors import DataError
from serve_util import client, need_serve, refused


def _sine(scale: float, leads: int = 12, n: int = 700) -> np.ndarray:
    return (np.sin(np.linspace(0, 60, n))[None].repeat(leads, 0) * scale).astype(np.float32)


def _tiny_gain(runs: dict[str, Path], tmp_path: Path) -> tuple[Path, str]:
    """A copy of the runs' raw corpus in which one record's header says 1e-30 digital units per mV."""
    src = tmp_path / "src"
    shutil.copytree(runs["src"], src)
    hea = sorted(src.glob("*.hea"))[2]
    lines = hea.read_text().splitlines()
    lines[1:] = [" ".join([t[0], t[1], "1e-30(0)/mV", *t[3:]]) for t in (ln.split(" ") for ln in lines[1:])]
    hea.write_text("\n".join(lines) + "\n")
    return src, hea.stem


@pytest.mark.parametrize("scale", [1e20, 1e6, 2 * MAX_AMPLITUDE_MV])
def test_the_api_refuses_amplitudes_beyond_any_ecg(clf, enc, scale: float) -> None:
    for call in (
        lambda: clf.predict_proba(_sine(scale), fs=100),
        lambda: enc.embed(_sine(scale), fs=100),
        lambda: enc.reconstruct(_sine(scale), fs=100),
    ):
        with pytest.raises(DataError, match=r"signal: peak amplitude .* mV is more than any ECG"):
            call()


def test_amplitudes_of_a_record_in_microvolts_are_still_read(clf) -> None:
    """A record in uV labelled mV (a few thousand) is within the rule, and scored finitely."""
    p = clf.predict_proba(_sine(3000.0), fs=100)
    assert np.isfinite(p).all()


def test_predict_and_embed_skip_the_record_with_the_reason(runs, tmp_path: Path) -> None:
    import pandas as pd

    src, bad = _tiny_gain(runs, tmp_path)
    out = tmp_path / "p.csv"
    assert main(["predict", "--checkpoint", str(runs["ft"]), "--src", str(src), "--out", str(out), "--quiet"]) == 0
    table = pd.read_csv(out, keep_default_na=False).set_index("record")
    assert "peak amplitude" in table.loc[bad, "skipped"], table.loc[bad].to_dict()
    kept = table.drop(index=bad)
    assert (kept["skipped"] == "").all() and np.isfinite(kept.drop(columns="skipped").astype(float).to_numpy()).all()
    emb = tmp_path / "e.npz"
    assert main(["embed", "--checkpoint", str(runs["mae"]), "--src", str(src), "--out", str(emb), "--quiet"]) == 0
    data = np.load(emb)
    assert data["skipped"].tolist() == [bad] and "peak amplitude" in str(data["skipped_reason"][0])
    assert np.isfinite(data["embedding"]).all() and bad not in data["record"].tolist()


def test_prepare_and_the_api_give_the_same_reason(clf, runs, tmp_path: Path) -> None:
    src, bad = _tiny_gain(runs, tmp_path)
    with pytest.raises(DataError) as err:
        clf.predict_proba(read_record(src / f"{bad}.hea"))
    reason = str(err.value).split(": ", 1)[1]
    assert reason.startswith("peak amplitude"), reason
    for dtype in ("float16", "float32"):  # the store's encoding does not change the rule
        store = prepare_store(
            "folder", src, tmp_path / f"s-{dtype}", PreprocessConfig(fs=100, seconds=5, dtype=dtype), quiet=True
        )
        skipped = (store / "skipped.csv").read_text()
        assert bad in skipped and reason in skipped, skipped


def test_serve_answers_a_json_signal_of_1e30_with_a_400(clf_url) -> None:
    need_serve()
    with client(clf_url) as c:
        r = c.post(
            "/v1/predict",
            content=json.dumps({"signal": _sine(1e30).tolist(), "fs": 100}),
            headers={"content-type": "application/json"},
        )
    refused(r, 400, "peak amplitude")
