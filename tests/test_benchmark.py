"""``ecgmae benchmark`` end to end at micro scale: every method x 2 fractions x 1 seed, 1-2 steps each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import sklearn_macro_auroc, synth_store
from ecgmae.benchmark import BenchmarkConfig, summarise
from ecgmae.cli import main
from ecgmae.config import ConfigError


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return synth_store(tmp_path_factory.mktemp("bench"), 40, seed=6)


def test_summary_is_mean_and_std_over_seeds():
    rows = [
        {
            "method": "mae",
            "protocol": "finetune",
            "label_fraction": 0.1,
            "seed": s,
            "train_records": 9,
            "macro_auroc": a,
            "ci95": [a - 0.1, a + 0.1],
        }
        for s, a in enumerate((0.7, 0.8, 0.9))
    ]
    (s,) = summarise(rows)
    assert s["mean"] == pytest.approx(0.8) and s["std"] == pytest.approx(0.1) and s["seeds"] == 3
    assert s["ci95"] == pytest.approx([0.7, 0.9])


def test_one_plan_orders_the_runs_and_weights_the_stage_lines(tmp_path):
    from ecgmae.benchmark import _plan, _stage_weights
    from ecgmae.jobs import stage_cost

    cfg = BenchmarkConfig(
        methods=("mae", "scratch", "features"), fractions=(0.1, 1.0), seeds=1, pretrain_epochs=4, finetune_epochs=2
    )
    plan = [(st.method, st.protocol, st.fraction if st.protocol != "pretrain" else None) for st in _plan(cfg)]
    assert plan == [
        ("mae", "pretrain", None),
        ("mae", "linprobe", 0.1),
        ("mae", "finetune", 0.1),
        ("mae", "linprobe", 1.0),
        ("mae", "finetune", 1.0),
        ("scratch", "scratch", 0.1),
        ("scratch", "scratch", 1.0),
        ("features", "linprobe", 0.1),
        ("features", "linprobe", 1.0),
    ]
    out = tmp_path / "bench"
    finished = _plan(cfg)[2].path(out)  # mae finetune at 10 %: done, so it costs nothing
    finished.mkdir(parents=True)
    (finished / "metrics.json").write_text("{}")
    weights = _stage_weights(tmp_path / "no-store", out, cfg)  # no store: one train record, no val / test
    assert weights == [
        stage_cost(4, 1, 0, 0),
        stage_cost(6, 1, 0, 0),
        0.0,
        stage_cost(2, 1, 0, 0),
        stage_cost(2, 1, 0, 0),
        stage_cost(6, 1, 0, 0),
        stage_cost(2, 1, 0, 0),
        0.0,
        0.0,
    ]
    # a forward-only pass is a third of a training one; a capped run trains at most max_steps batches
    assert stage_cost(3, 100, 30, 60) == 3 * (100 + 10) + 20
    assert stage_cost(3, 100, 30, 60, max_steps=2, batch_size=8) == 16 + 30


def test_unknown_method_is_refused():
    with pytest.raises(ConfigError, match="byol"):
        BenchmarkConfig(methods=("mae", "byol"))
    with pytest.raises(ConfigError, match="scratch:MODEL"):
        BenchmarkConfig(methods=("mae", "scratch:"))
    with pytest.raises(ConfigError, match="listed twice"):
        BenchmarkConfig(methods=("mae", "scratch", "mae"))
    with pytest.raises(ConfigError, match="unknown model 'resnet9000'"):
        BenchmarkConfig(methods=("mae", "scratch:resnet9000"))
    with pytest.raises(ConfigError, match="scratch_model: unknown model"):
        BenchmarkConfig(scratch_model="xresnet1d18")
    with pytest.raises(ConfigError, match="supervised CNN"):
        BenchmarkConfig(model="xresnet1d50")


@pytest.mark.slow
def test_micro_benchmark_runs_every_combination_and_reuses_runs(store, tmp_path, capsys):
    torch.set_num_threads(1)
    out = tmp_path / "bench"
    args = [
        "benchmark",
        "--data",
        str(store),
        "--out",
        str(out),
        "--methods",
        "mae,simclr,cmsc,scratch,scratch:ecgmae_tiny",
        "--label-fractions",
        "0.5,1",
        "--seeds",
        "1",
        "--max-steps",
        "1",
        "--batch-size",
        "8",
        "--n-boot",
        "5",
        "--accelerator",
        "cpu",
        "--devices",
        "1",
        "--precision",
        "32",
        "--quiet",
        "--set",
        "model=ecgmae_tiny",
    ]
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    combos = {(r["method"], r["protocol"], r["label_fraction"]) for r in res["runs"]}
    want = {(m, p, f) for m in ("mae", "simclr", "cmsc") for p in ("linprobe", "finetune") for f in (0.5, 1.0)}
    scratch = {(m, "scratch", f) for m in ("scratch", "scratch:ecgmae_tiny") for f in (0.5, 1.0)}
    assert combos == want | scratch
    assert len(res["summary"]) == 16
    by_key = {(r["method"], r["protocol"], r["label_fraction"]): r for r in res["runs"]}
    for s in res["summary"]:  # one seed: the summary is its run, and the run's score is the run re-scored
        run = by_key[(s["method"], s["protocol"], s["label_fraction"])]
        assert s["mean"] == run["macro_auroc"] and s["std"] == 0.0
    for name in ("mae_finetune_0.5_s0", "cmsc_linprobe_1_s0", "scratch_scratch_1_s0"):
        r = next(r for r in res["runs"] if f"{r['method']}_{r['protocol']}_{r['label_fraction']:g}_s0" == name)
        assert r["macro_auroc"] == pytest.approx(sklearn_macro_auroc(out / "runs" / name, store)[0], abs=1e-6)
    table = (out / "results.md").read_text()
    assert "| cmsc | linprobe |" in table and "| scratch | scratch |" in table
    assert table.index("| scratch | scratch |") < table.index("| scratch:ecgmae_tiny | scratch |")
    card = json.loads((out / "runs" / "scratch-ecgmae_tiny_scratch_1_s0" / "model_card.json").read_text())
    assert card["model"]["name"] == "ecgmae_tiny"
    assert (out / "auroc_vs_labels.png").stat().st_size > 1000
    assert json.loads((out / "pretrain" / "cmsc_s0" / "config.json").read_text())["train"]["method"] == "cmsc"
    # a second call reuses every finished run
    stamp = (out / "runs" / "mae_finetune_0.5_s0" / "metrics.json").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "runs" / "mae_finetune_0.5_s0" / "metrics.json").stat().st_mtime_ns == stamp
    assert "| mae | finetune |" in capsys.readouterr().out


def test_a_rerun_may_add_seeds_and_methods_but_not_change_training(store, tmp_path, capsys):
    torch.set_num_threads(1)
    out = tmp_path / "grow"
    base = [
        "benchmark",
        "--data",
        str(store),
        "--out",
        str(out),
        "--label-fractions",
        "1",
        "--max-steps",
        "1",
        "--batch-size",
        "8",
        "--n-boot",
        "5",
        "--accelerator",
        "cpu",
        "--devices",
        "1",
        "--precision",
        "32",
        "--quiet",
        "--set",
        "model=ecgmae_tiny",
    ]
    assert main([*base, "--methods", "mae", "--seeds", "1"]) == 0
    first = out / "runs" / "mae_linprobe_1_s0" / "metrics.json"
    stamp = first.stat().st_mtime_ns
    assert main([*base, "--methods", "mae,scratch:ecgmae_tiny", "--seeds", "2"]) == 0
    assert first.stat().st_mtime_ns == stamp  # seed 0 reused
    res = json.loads((out / "results.json").read_text())
    assert {(r["method"], r["seed"]) for r in res["runs"]} == {
        (m, s) for m in ("mae", "scratch:ecgmae_tiny") for s in (0, 1)
    }
    assert all(s["seeds"] == 2 for s in res["summary"])
    capsys.readouterr()
    assert main([*base, "--methods", "mae", "--seeds", "2", "--pretrain-epochs", "3"]) == 2
    assert "holds a run with other settings" in capsys.readouterr().err
