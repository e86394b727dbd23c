"""The `smallest-loss` command: parses arguments and calls library functions, nothing more.

Every mistake a user can make surfaces as one line on stderr and a non-zero exit (UserError).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from smallest_loss.configs.errors import UserError
from smallest_loss.experiments.args import add_config_args, resolve_config
from smallest_loss.experiments.calibrate import add_calibrate_parser, add_measure_parser
from smallest_loss.experiments.recipe_cmd import add_fit_recipe_parser


def cmd_train(args: argparse.Namespace) -> int:
    from smallest_loss.model.train import RunDiverged, train

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


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one model on the embedded corpus or your own")
    add_config_args(p)
    p.add_argument("--out", help="run folder (default runs/PRESET-TIMESTAMP)")
    p.add_argument("--resume", metavar="DIR", help="continue the interrupted run in DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def cmd_corpus(args: argparse.Namespace) -> int:
    from smallest_loss.model.data import python_files, write_code_only

    root, files = python_files(args.source)
    stats = write_code_only(root, files, Path(args.out))
    print(
        f"wrote {stats['files']} files of code without comments or docstrings to {args.out}: "
        f"{stats['bytes_after']:,} bytes of {stats['bytes_before']:,}"
    )
    if stats["left_out"]:
        print(f"left out {len(stats['left_out'])} files that are not valid Python: {', '.join(stats['left_out'])}")
    print(f"train on it with --set data.corpus={args.out}, or evaluate on it with --set data.eval_sets={args.out}")
    return 0


def _corpus_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("corpus", help="write a code-only corpus: Python sources without comments or docstrings")
    p.add_argument("--out", required=True, help="a new folder; files keep their relative paths (and so the split)")
    p.add_argument("--source", default="stdlib", help="'stdlib' (default) or a folder of .py files")
    p.set_defaults(func=cmd_corpus)


def cmd_sweep(args: argparse.Namespace) -> int:
    from smallest_loss.configs.designs import get_design
    from smallest_loss.experiments.sweep import parse_shard, run_sweep

    design = get_design(args.design)
    shard = parse_shard(args.shard)
    step_seconds = None
    if args.profile:
        from smallest_loss.timing.profile import load_profile

        profile = load_profile(args.profile)
        step_seconds = profile.step_seconds_for
    counts = run_sweep(design, args.out, shard, step_seconds, progress=not args.quiet, lr_for=_lr_law(args.lr_from))
    done = ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "no runs in this shard"
    print(f"sweep {design.name} shard {shard[0]}/{shard[1]}: {done}; runs in {args.out}")
    print(f"fit them with: smallest-loss fit {args.out}")
    return 0


def _lr_law(path: str | None) -> Callable[..., float] | None:
    """`--lr-from LAW.json`: each run's learning rate from the law's fitted learning-rate law (fit-recipe)."""
    if path is None:
        return None
    from smallest_loss.model.transformer import count_params
    from smallest_loss.scaling.laws import load_law

    recipe = load_law(path).recipe
    if recipe is None:
        raise UserError(f"--lr-from {path}: the law has no recipe section; make one with smallest-loss fit-recipe")
    return lambda model, b: round(float(recipe.lr.lr(count_params(model).total, b * model.s)), 6)


def _sweep_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="train every run of a sweep design (IsoFLOP or IsoTime)")
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
    p.set_defaults(func=cmd_sweep)


def cmd_fit(args: argparse.Namespace) -> int:
    from smallest_loss.experiments.fit_cmd import print_report, run_fit

    if args.curves:
        from smallest_loss.experiments.curves_cmd import print_curve_report, run_curve_fit

        if args.runs or args.csv:
            raise UserError("--curves takes the run folders itself; give no other run folders and no --csv")
        print_curve_report(
            run_curve_fit(
                args.curves, args.bootstrap, args.out, args.plot, args.curve_form, args.holdout_runs, args.curve_loss
            )
        )
        return 0
    if args.holdout_runs or args.curve_loss != "train":
        flag = "--holdout-runs" if args.holdout_runs else "--curve-loss"
        raise UserError(f"{flag} goes with --curves (fit --curves RUNS {flag} ...)")
    report = run_fit(
        args.runs,
        args.csv,
        args.form,
        args.bootstrap,
        args.out,
        args.plot,
        args.holdout_largest,
        args.json,
        args.delta,
        args.reference,
        args.holdout_shape,
    )
    print_report(report, args.json)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from smallest_loss.experiments import predict_cmd

    if args.run:
        if args.curve_law or not args.curves:
            raise UserError("--run takes --curves RUNS (finished runs of its shape), not --curve-law")
        predict_cmd.print_run_prediction(
            predict_cmd.predict_run(args.run, args.curves, args.curve_form, args.fraction, args.curve_loss)
        )
        return 0
    if (
        not args.curve_law
        or args.steps is None
        or args.curves
        or args.fraction is not None
        or args.curve_loss != "train"
    ):
        raise UserError(
            "predict needs --curve-law FILE --steps T, or --run RUN --curves RUNS [--fraction F] [--curve-loss eval]"
        )
    predict_cmd.print_prediction(
        predict_cmd.predict(
            args.curve_law,
            args.steps,
            args.schedule,
            args.N,
            args.lr,
            args.warmup_fraction,
            args.cooldown_fraction,
            args.decay,
            args.out,
        )
    )
    return 0


def _predict_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="a curve law's predicted loss for a run of any length and schedule, or where a run in progress will end",
    )
    p.add_argument("--curve-law", metavar="CURVE_LAW.json", help="a file from fit --curves --out")
    p.add_argument("--steps", type=int, help="with --curve-law: the run's length in steps")
    p.add_argument(
        "--run",
        metavar="RUN",
        help="a run folder, training or finished: predict its final loss from the steps it has logged",
    )
    p.add_argument(
        "--curves",
        nargs="+",
        metavar="RUNS",
        help="with --run: finished runs (or sweep folders); those of its shape are fitted with its logged steps",
    )
    p.add_argument("--curve-form", choices=("multipower", "tissue"), default="multipower", help="with --run")
    p.add_argument(
        "--curve-loss",
        choices=("train", "eval"),
        default="train",
        help="with --run: fit every step's train loss (default) or the runs' periodic evaluation losses",
    )
    p.add_argument(
        "--fraction",
        type=float,
        help="with --run: use only the first F of its planned steps (a check on a finished run)",
    )
    p.add_argument("--schedule", default="cosine", help="cosine (default), wsd or constant")
    p.add_argument("--N", type=int, help="one fitted shape's parameter count (default: every shape)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: each shape's fitted peak)")
    p.add_argument("--warmup-fraction", type=float, default=0.05, help="warmup, a fraction of the steps (0.05)")
    p.add_argument("--cooldown-fraction", type=float, default=0.2, help="wsd: the cool-down's share of the steps")
    p.add_argument("--decay", choices=("1-sqrt", "linear"), default="1-sqrt", help="wsd: the cool-down's shape")
    p.add_argument("--out", metavar="CURVE.csv", help="write the predicted loss at every step here (and a plot)")
    p.set_defaults(func=cmd_predict)


def _fit_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit", help="fit a loss law (Chinchilla Approach 3 or Kaplan) to runs or a CSV")
    p.add_argument("runs", nargs="*", help="run folders or sweep folders")
    p.add_argument(
        "--curves",
        nargs="+",
        metavar="RUNS",
        help="fit a schedule-aware curve law to these run folders' whole curves, and the Chinchilla law "
        "to the final losses it predicts",
    )
    p.add_argument(
        "--curve-form",
        choices=("multipower", "tissue"),
        default="multipower",
        help="with --curves: the multi-power law (Luo et al. 2025) or Tissue et al. (2024)",
    )
    p.add_argument(
        "--curve-loss",
        choices=("train", "eval"),
        default="train",
        help="with --curves: fit the laws to every step's train loss (default) or to the runs' periodic "
        "evaluation losses (runs trained with --set train.eval_points=32)",
    )
    p.add_argument(
        "--holdout-runs",
        nargs="+",
        metavar="HELD",
        help="with --curves: run folders not fitted, whose final eval losses the curve laws and the law "
        "from curves predict (reported, and drawn in the plot)",
    )
    p.add_argument(
        "--csv",
        help="a CSV with columns N, D, loss; optional C (FLOPs; 6ND when absent), run (points of "
        "one run, resampled together) and group (data or evaluation set: a grouped fit with "
        "shared exponents); other columns ignored",
    )
    p.add_argument(
        "--form",
        choices=("chinchilla", "kaplan", "shape"),
        default="chinchilla",
        help="shape: the Chinchilla form times a factor in the aspect ratio d/n (runs of several d/n at "
        "one N; a CSV needs columns d and n)",
    )
    p.add_argument("--bootstrap", type=int, default=1000, metavar="K", help="bootstrap resamples (0: none)")
    p.add_argument("--delta", type=float, default=1e-3, help="Huber delta (Chinchilla: 1e-3)")
    p.add_argument("--out", help="write the law JSON here (and its plot beside it)")
    p.add_argument("--plot", help="write the fit plot (PNG) here")
    p.add_argument(
        "--holdout-largest",
        action="store_true",
        help="also fit without the largest budget and report the error predicting its points and its "
        "IsoFLOP optimum (N, D, loss)",
    )
    p.add_argument(
        "--holdout-shape",
        action="store_true",
        help="with --form shape: fit without each aspect ratio d/n in turn and report the error predicting "
        "it, the shape-aware law against the law in N and D",
    )
    p.add_argument(
        "--reference",
        metavar="GROUP",
        help="the group the compute multipliers are measured against (default: the CSV's first group)",
    )
    p.add_argument("--json", action="store_true", help="print the law JSON on stdout")
    p.set_defaults(func=cmd_fit)


def cmd_plan(args: argparse.Namespace) -> int:
    import json

    from smallest_loss.configs.designs import get_design
    from smallest_loss.experiments.plan_cmd import write_outputs
    from smallest_loss.scaling.planner import make_plan
    from smallest_loss.scaling.verify import verify, verify_line

    recipe = get_design(args.recipe) if args.verify else None
    plan = make_plan(
        args.budget,
        args.law,
        args.profile,
        space=args.space,
        top=args.top,
        device=args.device,
        price_per_hour=args.price_per_hour,
        spot_discount=args.spot_discount,
        flops=args.flops,
        inference_tokens=args.inference_tokens,
        max_latency_ms=args.max_latency_ms,
        batch=args.batch,
    )
    report = plan.to_dict()
    files = write_outputs(plan, args.out) if args.out else []
    if files:
        report["files"] = [str(p) for p in files]
    checked = None
    if recipe is not None:
        out = args.verify_out or f"{args.out or 'runs'}/verify"
        checked = verify(plan.best, plan.space, recipe, out)
        report["verify"] = checked.to_dict()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(plan.to_markdown())
    if checked is not None:
        print("\n" + verify_line(checked))
    for path in files:
        print(f"wrote {path}")
    return 0


def _plan_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="the architectures with the smallest predicted loss for a budget")
    p.add_argument("--budget", required=True, help="FLOPs (1e19), time (90s, 30min, 4h) or money ($500)")
    p.add_argument("--law", required=True, help="loss-law JSON (from smallest-loss fit, or your own)")
    p.add_argument("--profile", help="device profile JSON (from smallest-loss calibrate); needed for time/money")
    p.add_argument(
        "--space",
        help="architecture search space: cpu, gpu, chinchilla (default: the profile's "
        "space; for a FLOPs budget, the first of cpu, chinchilla that holds the optimum)",
    )
    p.add_argument("--top", type=int, default=10, help="how many configurations to show (at least 1)")
    p.add_argument(
        "--flops",
        choices=("6N", "exact"),
        default="6N",
        help="FLOPs budget accounting: C = 6ND (default) or our exact training-step FLOPs",
    )
    p.add_argument("--device", help="device table entry for price and memory (configs/devices.py), e.g. h100-sxm")
    p.add_argument("--price-per-hour", type=float, help="price per device-hour (overrides the device table)")
    p.add_argument("--spot-discount", type=float, default=0.0, help="fraction off the price, e.g. 0.6")
    p.add_argument("--inference-tokens", type=float, default=0.0, help="lifetime tokens to serve (Sardana et al.)")
    p.add_argument("--max-latency-ms", type=float, help="drop candidates whose per-token forward time exceeds this")
    p.add_argument("--out", help="folder for plan.md, plan.json and plots")
    p.add_argument("--verify", action="store_true", help="train the best configuration and compare")
    p.add_argument("--verify-out", help="run folder for --verify (default OUT/verify)")
    p.add_argument(
        "--batch",
        type=int,
        metavar="B",
        help="plan at this batch size (sequences) only, e.g. the sweep's fixed batch, for comparison; the "
        "learning rate still comes from the law's recipe section when it has one",
    )
    p.add_argument(
        "--recipe",
        default="cpu-isoflop",
        help="sweep design whose training recipe (lr, schedule, batch) the law was fitted under; "
        "--verify trains with it",
    )
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=cmd_plan)


def cmd_quickstart(args: argparse.Namespace) -> int:
    from smallest_loss.experiments.quickstart import law_used_line, quickstart
    from smallest_loss.scaling.verify import verify_line

    report = quickstart(args.out, args.budget, n_boot=args.bootstrap)
    v, best = report["verify"], report["plan"]["best"][0]
    print("\n" + law_used_line(report["law_used"]).replace("**", ""))
    print(
        f"\nplan for {args.budget}: d={best['d']} n={best['n']} h={best['h']} ({best['params']:,.0f} parameters), "
        f"{best['tokens']:,.0f} tokens"
    )
    print(verify_line(v))
    print(f"report: {args.out}/report.md (with report.json, law.json, calibration/profile.json, plan/)")
    return 0


def _quickstart_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quickstart", help="calibrate, sweep, fit, plan and verify on the embedded default")
    p.add_argument("--out", default="quickstart", help="report folder (rerunning reuses finished work)")
    p.add_argument("--budget", default="20s", help="the budget to plan for (default 20s of this device)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the law's intervals")
    p.set_defaults(func=cmd_quickstart)


PARSERS: list[Callable[[argparse._SubParsersAction], None]] = [
    _quickstart_parser,
    _train_parser,
    _corpus_parser,
    _sweep_parser,
    _fit_parser,
    _predict_parser,
    add_fit_recipe_parser,
    add_measure_parser,
    add_calibrate_parser,
    _plan_parser,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smallest-loss", description="What is the smallest loss your budget can buy? Measured answers."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in PARSERS:
        add(sub)
    return parser


def use_compilation_cache() -> str | None:
    """Keep XLA's compiled programs on disk, so a rerun, a resumed sweep or the next `fit` skips compiling
    programs it has compiled before (seconds each on a CPU). The folder is `SMALLEST_LOSS_XLA_CACHE`
    (default ~/.cache/smallest-loss/xla; `off` disables it); a JAX_COMPILATION_CACHE_DIR set by the user wins."""
    import os

    import jax

    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    folder = os.environ.get("SMALLEST_LOSS_XLA_CACHE", str(Path.home() / ".cache" / "smallest-loss" / "xla"))
    if folder.lower() in ("off", "0", "none", ""):
        return None
    jax.config.update("jax_compilation_cache_dir", folder)
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    use_compilation_cache()
    try:
        from smallest_loss.model.sharding import initialize_distributed

        initialize_distributed()  # a no-op unless JAX_COORDINATOR_ADDRESS (or SMALLEST_LOSS_DISTRIBUTED) is set
        return args.func(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
