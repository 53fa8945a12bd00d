"""Every YAML preset in configs/ resolves to a valid run config (unknown keys would be errors)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecgmae.cli import main

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_preset_resolves(path, capsys):
    command = next((c for c in ("finetune", "benchmark") if c in path.name), "pretrain")
    assert main([command, "--data", "x", "--out", "y", "--config", str(path), "--print-config"]) == 0
    assert "trainer:" in capsys.readouterr().out
    # model overrides are checked when a model is built; build the config here
    from ecgmae.config import load_yaml
    from ecgmae.models import get_config

    data = load_yaml(path)
    get_config(data.get("model", "ecgmae_small"), **data.get("model_overrides", {}))


def test_presets_exist():
    assert {"tiny.yaml", "pretrain_small.yaml", "finetune_small.yaml"} <= {p.name for p in CONFIGS}
