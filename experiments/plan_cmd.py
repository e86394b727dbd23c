"""`smallest-loss plan`: the best architectures for a budget, the trade-offs, plots, and `--verify`.

The plan itself is `scaling.planner.make_plan` (the space, the inputs and their checks in scaling/plan_setup.py);
this module parses the flags, checks the outputs before any work, writes plan.md, plan.json and the plot, and runs
`--verify` (scaling/verify.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from smallest_loss.configs.designs import get_design
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.lazy import LazyModule
from smallest_loss.experiments.args import check_outputs
from smallest_loss.experiments.plots import plot_plan
from smallest_loss.scaling.budget import parse_budget
from smallest_loss.scaling.laws import load_law
from smallest_loss.scaling.plan_result import Plan
from smallest_loss.scaling.planner import make_plan
from smallest_loss.scaling.precision_plan import plan_precisions
from smallest_loss.scaling.preflight import DEFAULT_K, MAX_ROUNDS, measure_count, time_again
from smallest_loss.scaling.serving_plan import plan_serving
from smallest_loss.scaling.verify import corpus_load, run_clock, verify, verify_cadence, verify_line
from smallest_loss.timing.profile import load_profile

timing_retime = LazyModule("smallest_loss.timing.retime")  # JAX: loaded only to ask which device this machine runs


def write_outputs(plan: Plan, folder: str | Path) -> list[Path]:
    """plan.json, plan.md and the plan's plot in `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plan.json").write_text(json.dumps(plan.to_dict(), indent=2) + "\n")
    (folder / "plan.md").write_text(plan.to_markdown() + "\n")
    return [folder / "plan.json", folder / "plan.md", *plot_plan(plan.scores, folder)]


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget", required=True, help="FLOPs (1e19), time (90s, 30min, 4h) or money ($500)")
    p.add_argument("--law", required=True, help="loss-law JSON (from smallest-loss fit, or your own)")
    p.add_argument(
        "--profile",
        action="append",
        default=[],
        help="device profile JSON (from smallest-loss calibrate); needed for time/money. Repeat it with profiles of "
        "other precisions (dtype, bits) to plan with each and compare them",
    )
    p.add_argument(
        "--space",
        help="architecture search space: cpu, gpu, gpu-fp16, chinchilla, or a space file (.toml or .json; "
        "smallest-loss space --show NAME writes one to edit) (default: the profile's space; for a FLOPs budget, the "
        "first of cpu, chinchilla that holds the optimum)",
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
    add_timing_args(p)
    add_serving_args(p)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")


def add_timing_args(p: argparse.ArgumentParser) -> None:
    """What a time budget pays for, and at what speed of the machine."""
    p.add_argument(
        "--budget-covers",
        choices=("run", "steps"),
        default="run",
        help="what a time or money budget pays for: the whole run's wall-clock (run: start-up, compile, steps, "
        "evaluations, checkpoint saves; default, with a profile that has wall-clock terms) or the training steps "
        "alone (steps)",
    )
    p.add_argument(
        "--retime",
        action="store_true",
        help="time the profile's anchor configurations (three of its calibration's) again on this machine, about 1 s "
        "each, and plan at the speed it runs now where every anchor moved the same way beyond twice the calibration's "
        "noise floor: for a profile from another hour, day or machine of its kind (with --verify the re-timing is kept "
        "in the verify folder, so a rerun resumes the same run)",
    )
    p.add_argument(
        "--measure",
        type=int,
        metavar="K",
        help="time the K configurations the profile ranks best on this machine (their compiled step, about 1 s each "
        "after its compile) and plan with their measured steps, again while one not yet measured comes within the K "
        f"best (at most {MAX_ROUNDS} rounds), the best timed twice; default {DEFAULT_K} with --verify where the "
        "profile is this machine's device and the budget is time or money, else 0 (the profile prices every step)",
    )


def add_serving_args(p: argparse.ArgumentParser) -> None:
    """How the trained model is served: quantised after training (scaling/serving_plan.py), within a memory."""
    p.add_argument(
        "--serve-bits",
        type=int,
        nargs="+",
        metavar="P",
        help="serve the trained model quantised after training to P bits (16: unquantised): the plan ranks by the "
        "served loss (the law's post-training quantisation penalty); several widths plan each and choose",
    )
    p.add_argument(
        "--serve-memory",
        type=float,
        metavar="BYTES",
        help="the served weights must fit in this many bytes (P/8 a weight at P bits, 2 unquantised)",
    )


INTERRUPTED = "interrupted: nothing is lost; --verify's run, if it began, resumes when the command is rerun"


def _corpus_load(args: argparse.Namespace, design: Any) -> float:
    """Seconds the priced run spends loading the recipe's corpus, measured here (kept in --verify's folder, so a
    rerun plans the same run) where a time or money budget pays for the whole run; else 0, and 0 where the corpus
    cannot be loaded here and nothing is trained (a plan for a run elsewhere: its loading is not priced)."""
    if not args.profile:
        return 0.0
    try:
        folder = _verify_out(args) if args.verify else None
        return corpus_load(design, folder, parse_budget(args.budget).kind, args.budget_covers)
    except UserError:
        if args.verify:
            raise
        return 0.0


def _options(args: argparse.Namespace, design: Any) -> dict[str, Any]:
    """`make_plan`'s keywords from the flags."""
    return dict(
        space=args.space,
        top=args.top,
        device=args.device,
        price_per_hour=args.price_per_hour,
        spot_discount=args.spot_discount,
        flops=args.flops,
        inference_tokens=args.inference_tokens,
        max_latency_ms=args.max_latency_ms,
        batch=args.batch,
        budget_covers=args.budget_covers,
        cadence=verify_cadence(design, _corpus_load(args, design)),
        serve_memory=args.serve_memory,
        retime=_retime(args),
        measure=_measure(args),
        measured_folder=_verify_out(args) if args.verify else None,
    )


def _retime(args: argparse.Namespace) -> bool | str:
    """Whether to re-time the profile now (timing/retime.py), and with --verify the folder to keep it in, so a rerun
    plans the same run and resumes it."""
    return _verify_out(args) if args.retime and args.verify else args.retime


def _measure(args: argparse.Namespace) -> int:
    """How many of the best candidates to time here before choosing (scaling/preflight.py): `--measure`, else
    `DEFAULT_K` where --verify trains the plan on this machine with a profile of its device and a time budget."""
    if args.measure is not None:
        return measure_count(args.measure)
    if not (args.verify and len(args.profile) == 1) or parse_budget(args.budget).kind == "flops":
        return 0
    return DEFAULT_K if timing_retime.other_device(load_profile(args.profile[0])) is None else 0


def _verify_out(args: argparse.Namespace) -> str:
    """The folder --verify trains in."""
    return args.verify_out or f"{args.out or 'runs'}/verify"


def _report_several(args: argparse.Namespace, plans: list[tuple[str, Plan | None]], comparison: Any,
                    name: str) -> int:  # fmt: skip
    """Plans compared side by side (precisions, serving widths): with `--out` each plan in `OUT/LABEL/` and the
    comparison in `OUT/NAME`; the comparison printed (or everything as JSON)."""
    files = []
    if args.out:
        for label, plan in plans:
            files += write_outputs(plan, Path(args.out) / label) if plan is not None else []
        (Path(args.out) / name).write_text(comparison.to_markdown() + "\n")
        files.append(Path(args.out) / name)
    if args.json:
        print(json.dumps(dict(comparison.to_dict(), plans=[p and p.to_dict() for _, p in plans]), indent=2))
        return 0
    print(comparison.to_markdown())
    for path in files:
        print(f"wrote {path}")
    return 0


def _run_serving(args: argparse.Namespace, design: Any) -> int:
    """Several --serve-bits: a plan per serving width and the width to serve at (scaling/serving_plan.py)."""
    if args.verify or len(args.profile) > 1:
        raise UserError("several --serve-bits plan one profile and train nothing: drop --verify or the extra --profile")
    plans = plan_serving(args.budget, args.law, args.profile[0] if args.profile else None, args.serve_bits,
                         **_options(args, design))  # fmt: skip
    return _report_several(args, [(f"serve{b}", p) for b, p in zip(plans.widths, plans.plans, strict=True)], plans,
                           "serving.md")  # fmt: skip


def _run_precisions(args: argparse.Namespace, design: Any) -> int:
    """Several --profile: a plan per profile and which precision steps faster (scaling/precision_plan.py)."""
    if args.verify:
        raise UserError("--verify trains one plan's best configuration: give one --profile")
    plans = plan_precisions(args.budget, args.law, args.profile, **_options(args, design))
    labelled = [(profile.precision, plan) for profile, plan in zip(plans.profiles, plans.plans, strict=True)]
    return _report_several(args, labelled, plans, "precisions.md")


def run(args: argparse.Namespace) -> int:
    check_outputs(folders={"--out": args.out, "--verify-out": args.verify_out})
    design = get_design(args.recipe)
    if args.serve_bits and len(args.serve_bits) > 1:
        return _run_serving(args, design)
    if len(args.profile) > 1:
        return _run_precisions(args, design)
    recipe = design if args.verify else None
    serve = dict(serve_bits=args.serve_bits[0]) if args.serve_bits else {}
    law = load_law(args.law)  # read once: the plan and the verified run's loss for the steps it trained
    plan = make_plan(args.budget, law, args.profile[0] if args.profile else None, **_options(args, design), **serve)
    report = plan.to_dict()
    files = write_outputs(plan, args.out) if args.out else []
    if files:
        report["files"] = [str(p) for p in files]
    checked = None
    if recipe is not None:
        out = _verify_out(args)
        serve = plan.serving.bits if plan.serving is not None else None
        checked = verify(plan.best, plan.space, recipe, out, plan.bits, serve, plan.retime_factor,  # as priced
                         plan.profile_step_seconds, time_again(plan), run_clock(plan), law,
                         plan.measured_step_seconds)  # fmt: skip
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
