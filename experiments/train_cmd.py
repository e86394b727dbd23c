"""`smallest-loss train`: train one model on the embedded corpus or your own, or continue a run."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from smallest_loss.configs.errors import UserError
from smallest_loss.experiments.args import add_config_args, resolve_config
from smallest_loss.model.train import RunDiverged, train
from smallest_loss.scaling.budget import parse_budget


def add_parser(p: argparse.ArgumentParser) -> None:
    add_config_args(p)
    p.add_argument("--out", help="run folder (default runs/PRESET-TIMESTAMP)")
    p.add_argument("--resume", metavar="DIR", help="continue the interrupted run in DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--end-within",
        metavar="TIME",
        help="end the run on the clock: its whole wall-clock (start-up, compile, steps, evaluations, saves) within "
        "TIME (90s, 5min, 2h); the steps are the plan, and the end of the learning-rate schedule moves to the steps "
        "the time left buys (train.end_within)",
    )


def run(args: argparse.Namespace) -> int:
    if args.resume:
        if args.overrides or args.out or args.end_within:
            raise UserError("--resume continues a run as it was configured; drop --set, --out and --end-within")
        out, config = args.resume, None
    else:
        config = resolve_config(args.preset, args.overrides)
        if args.end_within:
            config = dataclasses.replace(config, train=dataclasses.replace(config.train, end_within=_seconds(args)))
        out = args.out or f"runs/{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        summary = train(config, out, resume=bool(args.resume), progress=not args.quiet)
    except RunDiverged as err:
        print(
            f"run diverged: {err}\nmetrics kept in {out}/metrics.jsonl (summary.json says 'diverged')", file=sys.stderr
        )
        return 1
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; every finished step is saved. Continue with: smallest-loss train --resume {out}",
            file=sys.stderr,
        )
        return 130
    print(f"run folder: {out}")
    if summary.get("planned_steps"):
        print(
            f"ended on the clock ({summary['end_within']:g} s): {summary['steps']} steps of {summary['planned_steps']} "
            f"planned, wall-clock {summary['wall_clock']['total']:.1f} s"
            if summary.get("wall_clock")
            else f"ended on the clock: {summary['steps']} steps of {summary['planned_steps']} planned"
        )
    print(
        f"status: {summary['status']}  steps: {summary['steps']}  tokens: {summary['tokens']:,}  "
        f"params: {summary['params']:,}  wall: {summary['wall_seconds']:.1f}s"
    )
    if summary["final_eval_loss"] is not None:
        print(
            f"final eval loss: {summary['final_eval_loss']:.4f} nats/token  "
            f"(unigram entropy of the validation split: {summary['val_unigram_entropy']:.4f})"
        )
    if summary.get("final_eval_losses"):
        print(
            "on the other validation sets: "
            + ", ".join(f"{name} {loss:.4f}" for name, loss in summary["final_eval_losses"].items())
        )
    return 0


def _seconds(args: argparse.Namespace) -> float:
    """--end-within as seconds: a duration, not FLOPs or money."""
    budget = parse_budget(args.end_within)
    if budget.kind != "seconds":
        raise UserError(f"--end-within {args.end_within}: give a duration (90s, 5min, 2h)")
    return budget.value
