"""`smallest-loss quickstart`: the whole method on the embedded default (experiments/quickstart.py)."""

from __future__ import annotations

import argparse

from smallest_loss.experiments.args import check_outputs
from smallest_loss.experiments.quickstart import law_used_line, quickstart
from smallest_loss.scaling.preflight import DEFAULT_K
from smallest_loss.scaling.verify import Verification, verify_line


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="quickstart", help="report folder (rerunning reuses finished work)")
    p.add_argument(
        "--budget",
        default="1min",
        help="the budget to plan for (default 1min of this device's wall-clock for the whole run)",
    )
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the law's intervals")
    p.add_argument(
        "--budget-covers",
        choices=("run", "steps"),
        default="run",
        help="what the budget pays for: the whole run's wall-clock (run, default) or the training steps alone (steps)",
    )
    p.add_argument(
        "--retime",
        action="store_true",
        help="re-time the calibration's anchor configurations just before the plan and price the machine's speed then "
        "where every anchor moved the same way beyond twice the noise floor (off: on a shared machine seconds of "
        "anchors catch its spells more often than a change of its speed)",
    )
    p.add_argument(
        "--measure",
        type=int,
        default=DEFAULT_K,
        metavar="K",
        help=f"time the plan's K best configurations on this machine before choosing and price them at what they "
        f"measured (default {DEFAULT_K}; 0: every step priced by the calibration's profile alone)",
    )


INTERRUPTED = (
    "interrupted: finished stages and runs are saved in {args.out}; rerun smallest-loss quickstart --out {args.out} "
    "to continue (finished work is reused)"
)


def run(args: argparse.Namespace) -> int:
    check_outputs(folders={"--out": args.out})
    report = quickstart(args.out, args.budget, n_boot=args.bootstrap, budget_covers=args.budget_covers,
                        retime=args.retime, measure=args.measure)  # fmt: skip
    v, best = report["verify"], report["plan"]["best"][0]
    print("\n" + law_used_line(report["law_used"]).replace("**", ""))
    print(
        f"\nplan for {args.budget}: d={best['d']} n={best['n']} h={best['h']} ({best['params']:,.0f} parameters), "
        f"{best['tokens']:,.0f} tokens"
    )
    print(verify_line(Verification.from_dict(v)))
    print(f"report: {args.out}/report.md (with report.json, law.json, calibration/profile.json, plan/)")
    return 0
