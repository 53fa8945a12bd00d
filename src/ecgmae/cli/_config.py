"""YAML ``--config`` + flag overrides + ``--set key=value`` -> a typed, validated run config."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ecgmae.cli._common import nonneg_int, positive_float, positive_int
from ecgmae.config import ConfigError, from_dict, load_yaml, to_dict

# Flags of add_loop_args, by their config keys.
LOOP_FLAGS = ("epochs", "max_steps", "batch_size", "seed", "optim.lr", "window_seconds")


def add_loop_args(parser: argparse.ArgumentParser, defaults: Any, *, max_steps_help: str, seed_help: str) -> None:
    """Flags every training command shares: run length, batch, learning rate, seed, resume/overwrite.

    ``defaults`` is the command's config with its defaults (``PretrainConfig()``...): help shows its values.
    """
    p, d = parser, defaults
    p.add_argument("--epochs", type=positive_int, help=f"passes over the training records (default {d.epochs})")
    p.add_argument(
        "--max-steps",
        dest="max_steps",
        type=nonneg_int,
        help=max_steps_help + " (>= 0; leave it out to train for --epochs)",
    )
    p.add_argument("--batch-size", dest="batch_size", type=positive_int, help=f"per device (default {d.batch_size})")
    p.add_argument(
        "--lr", dest="optim.lr", metavar="LR", type=positive_float, help=f"peak learning rate (default {d.optim.lr:g})"
    )
    p.add_argument(
        "--window-seconds", dest="window_seconds", type=positive_float, help="crop length (default: store's)"
    )
    p.add_argument("--seed", type=int, help=f"{seed_help} (default {d.seed})")
    p.add_argument("--resume", action="store_true", help="continue from RUN/last.ckpt")
    p.add_argument("--overwrite", action="store_true", help="replace an existing finished run")


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """Flags every training command shares: --config, --set, --print-config and hardware options."""
    g = parser.add_argument_group("configuration")
    g.add_argument("--config", metavar="YAML", help="YAML file with config keys (unknown keys are rejected)")
    g.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override any config key, dotted for nested ones, e.g. --set optim.warmup=0.1 "
        "--set model_overrides.depth=4 (values parsed as YAML)",
    )
    g.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    h = parser.add_argument_group("hardware")
    h.add_argument("--accelerator", dest="trainer.accelerator", metavar="NAME", help="auto | cpu | gpu (default auto)")
    h.add_argument(
        "--devices", dest="trainer.devices", metavar="N", help="auto, a count, or ids like 0,1 (default auto)"
    )
    h.add_argument(
        "--num-nodes", dest="trainer.num_nodes", metavar="N", type=positive_int, help="nodes for multi-node DDP"
    )
    h.add_argument(
        "--strategy", dest="trainer.strategy", metavar="NAME", help="auto (ddp when several devices) | ddp | ..."
    )
    h.add_argument(
        "--precision",
        dest="trainer.precision",
        metavar="P",
        help="auto (bf16-mixed where supported) | 32 | bf16-mixed | 16-mixed",
    )
    h.add_argument(
        "--workers", dest="trainer.num_workers", metavar="N", type=nonneg_int, help="data-loader worker processes"
    )
    h.add_argument(
        "--accumulate", dest="trainer.accumulate", metavar="N", type=positive_int, help="gradient accumulation steps"
    )
    h.add_argument(
        "--compile",
        dest="trainer.compile",
        action="store_const",
        const=True,
        help="torch.compile the model (slow first step, faster long runs)",
    )
    h.add_argument(
        "--deterministic",
        dest="trainer.deterministic",
        action="store_const",
        const=True,
        help="deterministic algorithms on GPUs too (on CPU they are the default: the same seed, "
        "thread count and precision repeat a run bit for bit; --set trainer.deterministic=false "
        "turns them off)",
    )


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        nxt = node.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {dotted}: {k} is not a section")
        node = nxt
    node[keys[-1]] = value


def build_config(cls: type, args: argparse.Namespace, flag_keys: tuple[str, ...]) -> Any:
    """Build ``cls`` from ``--config``, then the given flags (dest names are config keys), then ``--set``."""
    import yaml

    data: dict[str, Any] = load_yaml(args.config) if args.config else {}
    names = flag_keys + tuple(k for k in vars(args) if k.startswith("trainer."))
    for key in names:
        value = getattr(args, key, None)
        if value is not None:
            _set(data, key, value)
    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        key, raw = item.split("=", 1)
        _set(data, key.strip(), yaml.safe_load(raw))
    return from_dict(cls, data, where=args.config or "command line")


def print_config(cfg: Any) -> None:
    """Print a resolved config as YAML (what --print-config shows)."""
    import yaml

    print(yaml.safe_dump(json.loads(json.dumps(to_dict(cfg))), sort_keys=False), end="")
