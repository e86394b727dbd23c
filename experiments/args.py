"""Argparse helpers shared by the command modules: a run's configuration from a preset and `--set` overrides."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from smallest_loss.configs.errors import UserError
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


def require_positive(**values: float | None) -> None:
    """Refuse a non-positive option (None: not given) with one line naming it, before anything is compiled."""
    for name, value in values.items():
        if value is not None and not value > 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {value}")


def _writable_parent(path: str, flag: str, start: Path, what: str) -> None:
    """The nearest existing folder at or above `start` must be a writable folder."""
    parent = start
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{flag} {path}: {parent} is a file, not a folder, so {what}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: folder {parent} is not writable")


def check_output_path(path: str, flag: str) -> None:
    """Refuse, before any work, an output file that cannot be written: the path must not be a folder, its nearest
    existing folder must be a writable folder."""
    target = Path(path)
    if target.is_dir():
        raise UserError(f"{flag} {path} is a directory (a folder); give a file name")
    _writable_parent(path, flag, target.parent, f"{target.name} cannot be written there")


def check_output_folder(path: str, flag: str) -> None:
    """Refuse, before any work, a folder that cannot be made or written: the path must not be a file, its nearest
    existing parent must be a writable folder."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise UserError(f"{flag} {path} is a file, not a folder; give a folder")
    _writable_parent(path, flag, target, f"{path} cannot be made")


def check_outputs(files: dict[str, str | None] = {}, folders: dict[str, str | None] = {}) -> None:  # noqa: B006
    """Check every output a command will write ({flag: path}; None: not given), before any work."""
    for flag, path in files.items():
        if path:
            check_output_path(path, flag)
    for flag, path in folders.items():
        if path:
            check_output_folder(path, flag)


def check_fit_args(n_boot: int, out: str | None, plot: str | None) -> None:
    """Flag values the fit cannot use, refused up front with one line."""
    if n_boot < 0 or n_boot == 1:
        raise UserError(f"--bootstrap {n_boot}: give 0 (no intervals) or at least 2 resamples (default 1000)")
    check_outputs(files={"--out": out, "--plot": plot})
