"""`smallest-loss suggest`: the runs to train next, given the runs so far, a target budget and the compute left.

The science is scaling/design.py's (`suggest_runs`: a Bayesian L-optimal design on the linearised law) and
scaling/design_shapes.py's (each proposed N as the nearest shape of a search space, and the sweep design file); this
module reads the inputs, prints the table and writes the design file that `smallest-loss sweep --design FILE` trains.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.spaces import SPACES, SearchSpace, get_space
from smallest_loss.experiments.args import check_output_path
from smallest_loss.scaling.design import RunDesign, suggest_runs
from smallest_loss.scaling.design_shapes import ShapedRun, design_toml, shaped_runs, write_design
from smallest_loss.scaling.fitting import read_runs, read_table
from smallest_loss.scaling.plan import param_range
from smallest_loss.scaling.points import FitPoints
from smallest_loss.scaling.report import markdown_table


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="*", help="run folders or sweep folders (the runs so far)")
    p.add_argument("--csv", metavar="TABLE", help="a fit table of the runs so far (columns N, D, loss), as fit reads")
    p.add_argument("--columns", help="the table's own column names, as fit takes them: N=params,D=tokens,loss=...")
    p.add_argument("--target", required=True, metavar="FLOPS",
                   help="the compute budget to predict at (FLOPs, e.g. 1e21): the run the law is for")  # fmt: skip
    p.add_argument("--spend", required=True, metavar="FLOPS",
                   help="the compute you can still spend on new runs (FLOPs, 6ND per run, summed)")  # fmt: skip
    p.add_argument("--runs", dest="n_runs", type=int, default=8, metavar="K", help="propose at most K runs (8)")
    p.add_argument(
        "--space",
        help="the search space whose shapes build the proposed N (a built-in name or a space file; default: the "
        "built-in space whose sizes cover them); given, N stays within its sizes",
    )
    p.add_argument("--out", metavar="DESIGN.toml", help="write the proposed runs as a sweep design file here")


def _flops(text: str, flag: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{flag} {text!r} is not a number of FLOPs (say 1e21)") from None
    if not (math.isfinite(value) and value > 0):
        raise UserError(f"{flag} {text!r} must be a positive number of FLOPs (say 1e21)")
    return value


def _points(args: argparse.Namespace) -> FitPoints:
    if bool(args.runs) == bool(args.csv):
        raise UserError("give either run folders or --csv TABLE (columns N, D, loss), not both and not neither")
    if args.columns and not args.csv:
        raise UserError("--columns names a table's columns: suggest --csv TABLE --columns N=params,...")
    points = read_table(args.csv, columns=args.columns) if args.csv else read_runs(args.runs)
    if not isinstance(points, FitPoints):  # pragma: no cover - read_table/read_runs without shapes give FitPoints
        raise UserError("suggest reads points N, D, loss")
    return points


def default_space(N: np.ndarray) -> SearchSpace:
    """The built-in space whose parameter range holds the most of these N (the first such, on a tie)."""
    counts = {name: int(np.sum((N >= param_range(s)[0]) & (N <= param_range(s)[1]))) for name, s in SPACES.items()}
    return SPACES[max(counts, key=lambda k: counts[k])]


def design_table(design: RunDesign, shaped: list[ShapedRun], space: SearchSpace) -> list[str]:
    """The proposed runs, their costs and the target's half-widths after each, as markdown lines."""
    rows = [
        (i + 1, f"{r.N:.3g}", f"{r.D:.3g}", f"{r.D / r.N:.3g}", f"{r.C:.3g}", f"{r.C / design.spend:.0%}",
         f"d={s.shape[0]} n={s.shape[1]} h={s.shape[2]} ({s.N:.3g})", f"+-{r.loss_width:.2%}",
         f"+-{r.nopt_width:.1%}")
        for i, (r, s) in enumerate(zip(design.runs, shaped, strict=True))
    ]  # fmt: skip
    columns = ("run", "N", "D", "D/N", "C (FLOPs)", "of spend", f"shape in space {space.name} (its N)",
               "loss at target, 95%", "N_opt at target, 95%")  # fmt: skip
    return markdown_table(rows, columns).split("\n")


def summary_lines(design: RunDesign) -> list[str]:
    ident = "the full law is identified; the design shrinks the target's interval"
    if design.identify:
        names = ", ".join(design.identify)
        ident = f"the fit did not identify {names} (law used: {design.form}); the runs pin them down"
    laws = f", averaged over {design.laws} laws the points cannot tell apart" if design.laws > 1 else ""
    return [
        f"target {design.target:.3g} FLOPs, spend {design.spend:.3g} FLOPs: {len(design.runs)} runs costing "
        f"{design.cost:.3g} FLOPs ({design.rule} first{laws}; run scatter {design.sigma:.2%} in log loss)",
        ident,
        f"predicted loss at the target, 95% (linearised): +-{design.loss_width_before:.2%} now, "
        f"+-{design.loss_width_after:.2%} after these runs",
        f"N_opt at the target, 95% (linearised): +-{design.nopt_width_before:.1%} now, "
        f"+-{design.nopt_width_after:.1%} after these runs",
    ]


def run(args: argparse.Namespace) -> int:
    target, spend = _flops(args.target, "--target"), _flops(args.spend, "--spend")
    if args.out:
        check_output_path(args.out, "--out")
        if not args.out.endswith(".toml"):
            raise UserError(f"--out {args.out}: a sweep design file ends in .toml")
    space = get_space(args.space) if args.space else None
    points = _points(args)
    n_range = param_range(space) if space is not None else None
    design = suggest_runs(points, target, spend, runs=args.n_runs, n_range=n_range)
    space = space or default_space(np.array([r.N for r in design.runs]))
    shaped = shaped_runs(design, space)
    lines = summary_lines(design) + [""] + design_table(design, shaped, space)
    off = [s for s in shaped if abs(math.log(s.N / s.N_wanted)) > math.log(1.25)]
    if off:
        lines.append(f"warning: {len(off)} proposed N lie more than 25% from any shape of space {space.name}: "
                     "pass --space with a space that builds them (smallest-loss space --show NAME)")  # fmt: skip
    if args.out:
        base = "cpu-isoflop" if "cpu" in space.backends else "gpu-isoflop"
        text = design_toml(shaped, "suggested", base, summary_lines(design), space)
        lines.append(f"wrote {write_design(text, args.out)}: train it with smallest-loss sweep --design {args.out}")
    print("\n".join(lines))
    sys.stdout.flush()
    return 0
