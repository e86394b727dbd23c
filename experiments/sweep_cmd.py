"""`smallest-loss sweep`: train every run of a sweep design (IsoFLOP, IsoTime, cool-down, recipe)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from smallest_loss.configs.designs import get_design
from smallest_loss.configs.errors import UserError
from smallest_loss.experiments.args import check_outputs
from smallest_loss.experiments.sweep import parse_shard, run_sweep
from smallest_loss.model.params import count_params
from smallest_loss.scaling.laws import load_law
from smallest_loss.timing.profile import load_profile


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--design",
        required=True,
        help="a built-in design (configs/designs.py, e.g. cpu-isoflop, cpu-recipe) or a design file "
        "(.toml or .json; see the README)",
    )
    p.add_argument("--out", required=True, help="output folder: one run folder per run, plus sweep.json")
    p.add_argument("--shard", default="0/1", help="i/k: run every k-th run starting at i (default 0/1: all)")
    p.add_argument("--profile", help="device profile JSON (needed by IsoTime designs for step times)")
    p.add_argument(
        "--lr-from",
        metavar="LAW.json",
        help="set each run's learning rate from this law's learning-rate law (smallest-loss fit-recipe)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


INTERRUPTED = (
    "interrupted: finished runs and the interrupted run's checkpoints are saved in {args.out}; rerun the same "
    "sweep command to continue (finished runs are skipped, the interrupted one resumes)"
)


def run(args: argparse.Namespace) -> int:
    check_outputs(folders={"--out": args.out})
    design = get_design(args.design)
    shard = parse_shard(args.shard)
    step_seconds = None
    if args.profile:
        profile = load_profile(args.profile)
        step_seconds = profile.step_seconds_for
    counts = run_sweep(design, args.out, shard, step_seconds, progress=not args.quiet, lr_for=_lr_law(args.lr_from))
    done = ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "no runs in this shard"
    print(f"sweep {design.name} shard {shard[0]}/{shard[1]}: {done}; runs in {args.out}")
    if counts.get("refused"):
        print(f"{counts['refused']} branch run(s) could not start (the warnings above say why): the sweep is not "
              "complete; fix their parents and rerun", file=sys.stderr)  # fmt: skip
        return 1
    print(f"fit them with: smallest-loss fit {args.out}")
    return 0


def _lr_law(path: str | None) -> Callable[..., float] | None:
    """`--lr-from LAW.json`: each run's learning rate from the law's fitted learning-rate law (fit-recipe)."""
    if path is None:
        return None

    recipe = load_law(path).recipe
    if recipe is None:
        raise UserError(f"--lr-from {path}: the law has no recipe section; make one with smallest-loss fit-recipe")
    return lambda model, b, tokens: round(float(recipe.lr_at(count_params(model).total, b * model.s, tokens)), 6)
