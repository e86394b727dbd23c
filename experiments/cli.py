"""The `smallest-loss` command: parses arguments and calls library functions, nothing more.

Every mistake a user can make surfaces as one line on stderr and a non-zero exit (UserError).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

from configs.errors import UserError
from configs.models import PRESETS, get_preset
from configs.overrides import apply_overrides
from configs.schema import RunConfig


def resolve_config(preset: str, assignments: Sequence[str]) -> RunConfig:
    """A preset with `--set` overrides applied (validated against field types)."""
    return apply_overrides(get_preset(preset), assignments)


def _add_config_args(parser: argparse.ArgumentParser, default_preset: str = "tiny") -> None:
    parser.add_argument("--preset", default=default_preset, help=f"one of: {', '.join(PRESETS)}")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
        help="override a config field, e.g. --set model.d=256 --set train.lr=1e-3 (repeatable)",
    )


def cmd_train(args: argparse.Namespace) -> int:
    from model.train import RunDiverged, train

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
        print(f"run diverged: {err}\nmetrics kept in {out}/metrics.jsonl (summary.json says 'diverged')",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted; every finished step is saved. Continue with: smallest-loss train --resume {out}",
              file=sys.stderr)
        return 130
    print(f"run folder: {out}")
    print(f"status: {summary['status']}  steps: {summary['steps']}  tokens: {summary['tokens']:,}  "
          f"params: {summary['params']:,}  wall: {summary['wall_seconds']:.1f}s")
    print(f"final eval loss: {summary['final_eval_loss']:.4f} nats/token  "
          f"(unigram entropy of the validation split: {summary['val_unigram_entropy']:.4f})")
    return 0


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one model on the embedded corpus or your own")
    _add_config_args(p)
    p.add_argument("--out", help="run folder (default runs/PRESET-TIMESTAMP)")
    p.add_argument("--resume", metavar="DIR", help="continue the interrupted run in DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def cmd_sweep(args: argparse.Namespace) -> int:
    from configs.designs import get_design
    from experiments.sweep import parse_shard, run_sweep

    design = get_design(args.design)
    shard = parse_shard(args.shard)
    step_seconds = None
    if args.profile:
        from timing.profile import load_profile

        profile = load_profile(args.profile)
        step_seconds = profile.step_seconds_for
    counts = run_sweep(design, args.out, shard, step_seconds, progress=not args.quiet)
    done = ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "no runs in this shard"
    print(f"sweep {design.name} shard {shard[0]}/{shard[1]}: {done}; runs in {args.out}")
    print(f"fit them with: smallest-loss fit {args.out}")
    return 0


def _sweep_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="train every run of a sweep design (IsoFLOP or IsoTime)")
    p.add_argument("--design", required=True, help="a design from configs/designs.py, e.g. cpu-isoflop")
    p.add_argument("--out", required=True, help="output folder: one run folder per run, plus sweep.json")
    p.add_argument("--shard", default="0/1", help="i/k: run every k-th run starting at i (default 0/1: all)")
    p.add_argument("--profile", help="device profile JSON (needed by IsoTime designs for step times)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sweep)


def cmd_fit(args: argparse.Namespace) -> int:
    from experiments.fit_cmd import print_report, run_fit

    report = run_fit(args.runs, args.csv, args.form, args.bootstrap, args.out, args.plot, args.holdout_largest,
                     args.json, args.delta)
    print_report(report, args.json)
    return 0


def _fit_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit", help="fit a loss law (Chinchilla Approach 3 or Kaplan) to runs or a CSV")
    p.add_argument("runs", nargs="*", help="run folders or sweep folders")
    p.add_argument("--csv", help="a CSV with columns N, D, loss (extra columns ignored; a 'run' column groups points)")
    p.add_argument("--form", choices=("chinchilla", "kaplan"), default="chinchilla")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="K", help="bootstrap resamples (0: none)")
    p.add_argument("--delta", type=float, default=1e-3, help="Huber delta (Chinchilla: 1e-3)")
    p.add_argument("--out", help="write the law JSON here (and its plot beside it)")
    p.add_argument("--plot", help="write the fit plot (PNG) here")
    p.add_argument("--holdout-largest", action="store_true",
                   help="also fit without the largest budget and report the error predicting it")
    p.add_argument("--json", action="store_true", help="print the law JSON on stdout")
    p.set_defaults(func=cmd_fit)


PARSERS: list[Callable[[argparse._SubParsersAction], None]] = [_train_parser, _sweep_parser, _fit_parser]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smallest-loss", description="What is the smallest loss your budget can buy? Measured answers."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in PARSERS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from model.sharding import initialize_distributed

        initialize_distributed()  # a no-op unless JAX_COORDINATOR_ADDRESS (or SMALLEST_LOSS_DISTRIBUTED) is set
        return args.func(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
