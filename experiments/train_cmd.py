"""`smallest-loss train`: train one model on the embedded corpus or your own, or continue a run."""

from __future__ import annotations

import argparse
import sys
import time

from smallest_loss.configs.errors import UserError
from smallest_loss.experiments.args import add_config_args, resolve_config
from smallest_loss.model.train import RunDiverged, train


def add_parser(p: argparse.ArgumentParser) -> None:
    add_config_args(p)
    p.add_argument("--out", help="run folder (default runs/PRESET-TIMESTAMP)")
    p.add_argument("--resume", metavar="DIR", help="continue the interrupted run in DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if args.resume:
        if args.overrides or args.out:
            raise UserError("--resume continues a run as it was configured; drop --set and --out")
        out, config = args.resume, None
    else:
        config = resolve_config(args.preset, args.overrides)
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
