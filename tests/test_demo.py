"""The demo pipeline end to end at a micro scale (the real sizes run in `make demo`)."""

from __future__ import annotations

import json

import pytest

from conftest import sklearn_macro_auroc
from ecgmae.demo import DemoConfig, results_table, run_demo
from ecgmae.errors import DataError


@pytest.mark.slow
def test_demo_runs_end_to_end_and_resumes(tmp_path):
    cfg = DemoConfig(
        n_records=90,
        synth_fs=100,
        seconds=5,
        pretrain_epochs=1,
        finetune_epochs=1,
        fractions=(0.1, 1.0),
        batch_size=16,
        n_boot=10,
    )
    rows = run_demo(tmp_path / "d", cfg, quiet=True)
    assert {(r["mode"], r["label_fraction"]) for r in rows} == {
        (m, f) for m in ("finetune", "linprobe", "scratch") for f in (0.1, 1.0)
    }
    for r in rows:  # each row is its run re-scored from scratch (public API + scikit-learn) on the test split
        run = tmp_path / "d" / f"{r['mode']}_{r['label_fraction']:g}"
        macro, _ = sklearn_macro_auroc(run, tmp_path / "d" / "store")
        assert r["macro_auroc"] == pytest.approx(macro, abs=1e-6), r
    for name in ("results.md", "results.json", "curves.png", "pretrain/encoder.safetensors"):
        assert (tmp_path / "d" / name).exists(), name
    table = (tmp_path / "d" / "results.md").read_text()
    assert "| 10% |" in table and "linprobe" in table
    # a second run reuses every finished step and gives the same table
    mtime = (tmp_path / "d" / "pretrain" / "encoder.safetensors").stat().st_mtime
    assert results_table(run_demo(tmp_path / "d", cfg, quiet=True)) == results_table(rows)
    assert (tmp_path / "d" / "pretrain" / "encoder.safetensors").stat().st_mtime == mtime
    # other settings in the same folder are refused rather than mixed in
    with pytest.raises(DataError, match="other settings"):
        run_demo(tmp_path / "d", DemoConfig(n_records=91), quiet=True)
    assert json.loads((tmp_path / "d" / "results.json").read_text())["rows"] == rows
