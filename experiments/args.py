"""Argparse helpers shared by the command modules: a run's configuration from a preset and `--set` overrides."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from smallest_loss.configs.models import PRESETS, get_preset
from smallest_loss.configs.overrides import apply_overrides
from smallest_loss.configs.schema import RunConfig


def resolve_config(preset: str, assignments: Sequence[str]) -> RunConfig:
    """A preset with `--set` overrides applied (validated against field types)."""
    return apply_overrides(get_preset(preset), assignments)


def add_config_args(parser: argparse.ArgumentParser, default_preset: str = "tiny") -> None:
    """Add `--preset` and the repeatable `--set SECTION.FIELD=VALUE` to a command's parser."""
    parser.add_argument("--preset", default=default_preset, help=f"one of: {', '.join(PRESETS)}")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override a config field, e.g. --set model.d=256 --set train.lr=1e-3 (repeatable)",
    )
