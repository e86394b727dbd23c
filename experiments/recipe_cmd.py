"""`smallest-loss fit-recipe`: the learning-rate and batch laws from a recipe sweep, added to a loss-law file.

The loss law (from `fit`) was fitted at one batch size and learning rate; `fit-recipe` reads a sweep that varied
both (configs/designs.py: cpu-recipe, or a design file with `batch_sizes` and `lrs`), fits the laws of
scaling/recipe.py, checks the batch law on held-out batch sizes, and writes the loss law with a `recipe` section
that `plan` then uses to choose the batch and the learning rate.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from smallest_loss.configs.designs import get_design
from smallest_loss.configs.errors import UserError
from smallest_loss.experiments.args import check_outputs
from smallest_loss.scaling.collect import collect_recipe_runs
from smallest_loss.scaling.laws import load_law, save_law
from smallest_loss.scaling.recipe import BCRIT_SPAN, Cell, fit_recipe, recipe_to_dict
from smallest_loss.scaling.report import markdown_table


def _holdout(text: str | None, seq_len: int) -> tuple[float, ...]:
    """--holdout-batches '8,32' (sequences) as tokens per step."""
    if not text:
        return ()
    try:
        batches = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--holdout-batches {text!r}: expected batch sizes in sequences, e.g. 8,32") from None
    if not batches or min(batches) <= 0:
        raise UserError(f"--holdout-batches {text!r}: batch sizes must be positive")
    return tuple(float(b * seq_len) for b in batches)


def cell_rows(cells: list[Cell], names: list[str]) -> list[dict[str, Any]]:
    return [
        dict(
            group=names[c.group],
            batch_tokens=c.batch_tokens,
            lr_star=c.lr_star,
            loss_star=c.loss_star,
            bracketed=c.bracketed,
        )
        for c in cells
    ]


def run_fit_recipe(
    sweeps: list[str], law_path: str, out: str, recipe: str, holdout: str | None, n_boot: int
) -> dict[str, Any]:
    """Fit, check and write; returns the report (JSON-ready)."""
    if n_boot < 0:
        raise UserError(f"--bootstrap {n_boot}: use 0 or more resamples")
    base = load_law(law_path)
    design = get_design(recipe)
    reference = design.base.train.batch_size * design.base.model.s
    runs, left_out = collect_recipe_runs(sweeps)
    held = _holdout(holdout, runs[0].seq_len)
    law, cells, names = fit_recipe(runs, reference, held, n_boot)
    path = save_law(out, base.law, base.intervals, base.samples, base.diagnostics, law)
    plot = Path(out).with_suffix(".recipe.png")
    from smallest_loss.experiments.plots_recipe import plot_recipe

    plot_recipe(cells, names, law, plot)
    return dict(
        law=str(path),
        plot=str(plot),
        runs=len(runs),
        left_out=left_out,
        cells=cell_rows(cells, names),
        recipe=recipe_to_dict(law),
    )


def format_recipe(report: dict[str, Any]) -> str:
    r = report["recipe"]
    lr, batch, ev = r["lr"], r["batch"], r["evidence"]
    ci = lr["intervals"]
    lines = [
        f"recipe sweep: {report['runs']} runs, {ev['cells']} (shape, batch) cells, "
        f"{ev['unbracketed_cells']} without a bracketed learning-rate optimum"
    ]
    lines += [f"left out: {x}" for x in report["left_out"]]
    rows = [
        (
            c["group"],
            f"{c['batch_tokens']:.0f}",
            f"{c['lr_star']:.3g}",
            f"{c['loss_star']:.4f}",
            "yes" if c["bracketed"] else "no",
        )
        for c in report["cells"]
    ]
    lines += ["", markdown_table(rows, ("group", "batch (tokens)", "best lr", "best loss", "bracketed"))]
    lines += [
        "",
        f"learning rate: log lr* = {lr['c0']:.3f} {lr['n_exponent']:+.3f} log N {lr['batch_exponent']:+.3f} "
        f"log B   (95%: N exponent [{ci['n_exponent'][0]:.3f}, {ci['n_exponent'][1]:.3f}], batch exponent "
        f"[{ci['batch_exponent'][0]:.3f}, {ci['batch_exponent'][1]:.3f}]; rms residual "
        f"{lr['residual_rms']:.3f} in log lr)",
    ]
    bc = batch["intervals"].get("b_crit")
    lines.append(
        f"batch: tokens needed grow as D_min (1 + B/B_crit), B_crit = {batch['b_crit']:,.0f} tokens"
        + (f" (95% {bc[0]:,.0f}-{bc[1]:,.0f})" if bc else "")
        + f", beta = {batch['beta']:.3f}, "
        + f"F-test against no batch cost p = {batch['p_value']:.2g}"
        + _batch_note(batch)
    )
    lines += _evidence_lines(batch, ev)
    lines += ["", f"wrote {report['law']} (the loss law plus its recipe section) and {report['plot']}"]
    return "\n".join(lines)


def _evidence_lines(batch: dict[str, Any], ev: dict[str, Any]) -> list[str]:
    """Where B_crit came from and what checks it: the noise scale, its trend along the runs, held-out batches."""
    lines: list[str] = []
    if batch.get("source") == "noise scale":
        raw = ev["b_crit_from_losses"]
        lo, hi = raw["intervals"].get("b_crit", (raw["b_crit"], raw["b_crit"]))
        lines.append(
            f"B_crit comes from the noise scale B_simple: the losses alone gave {raw['b_crit']:,.0f} "
            f"tokens with a 95% interval of {lo:,.0f}-{hi:,.0f}, too wide to plan with"
        )
    if "noise_scale" in ev:
        ns = ev["noise_scale"]
        lines.append(
            f"gradient noise scale B_simple over {ns['runs']} runs: median {ns['median_tokens']:,.0f} tokens "
            f"(range {ns['range_tokens'][0]:,.0f}-{ns['range_tokens'][1]:,.0f}); McCandlish et al. expect "
            "B_crit ~ B_simple"
        )
    if "noise_along_runs" in ev:
        a = ev["noise_along_runs"]
        lo, hi = a["exponent_interval"]
        used = batch.get("loss_exponent", 0.0) != 0.0
        lines.append(
            f"B_simple along the runs ({a['windows']} stretches of {a['runs']} runs, losses "
            f"{a['loss_range'][0]:.2f}-{a['loss_range'][1]:.2f}): B_simple ~ L^-{a['exponent']:.2f} "
            f"(95% [{lo:.2f}, {hi:.2f}], r = {a['r']:.2f}); "
            + (
                f"B_crit follows the loss: B_crit(L) = {batch['b_crit']:,.0f} (L/{batch['loss_ref']:.3f})"
                f"^-{batch['loss_exponent']:.2f} tokens"
                if used
                else "not used: the interval includes 0, so B_crit is held constant"
            )
        )
    if "holdout" in ev:
        h = ev["holdout"]
        lines.append(
            f"held-out batches {', '.join(f'{b:.0f}' for b in h['held_batch_tokens'])} tokens: batch law "
            f"{h['mape']:.2%} mean error ({h['max_ape']:.2%} max); a law with no batch cost "
            f"{h['no_cost_mape']:.2%}"
            + (
                f"; with a constant B_crit {ev['holdout_constant_b_crit']['mape']:.2%}"
                if "holdout_constant_b_crit" in ev
                else ""
            )
        )
    return lines


def _batch_note(batch: dict[str, Any]) -> str:
    """What a B_crit at an end of its search range means."""
    if not batch["identified"]:
        return (
            "; the sweep measured no batch cost (B_crit at the top of its range, or no better than per-group "
            "constants), so the planner treats batches as free"
        )
    if batch["b_crit"] <= batch["batch_range"][0] / BCRIT_SPAN * 1.01:
        return (
            "; B_crit is at the bottom of its search range: every batch swept is past it, so the loss follows "
            "the number of steps more than the tokens"
        )
    return ""


def run(args: argparse.Namespace) -> int:
    check_outputs(files={"--out": args.out})
    report = run_fit_recipe(args.sweeps, args.law, args.out, args.recipe, args.holdout_batches, args.bootstrap)
    print(json.dumps(report, indent=2) if args.json else format_recipe(report))
    return 0


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweeps", nargs="+", help="sweep folders (or run folders) of a recipe sweep, e.g. cpu-recipe")
    p.add_argument("--law", required=True, help="the loss-law JSON (from smallest-loss fit) to add the recipe to")
    p.add_argument("--out", required=True, help="where to write the law JSON with its recipe section")
    p.add_argument(
        "--recipe",
        default="cpu-isoflop",
        help="the sweep design the loss law was fitted under (its batch is the law's reference batch)",
    )
    p.add_argument(
        "--holdout-batches",
        metavar="B1,B2",
        help="batch sizes (sequences) to hold out of the batch law and predict, e.g. 8,32",
    )
    p.add_argument("--bootstrap", type=int, default=1000, help="residual-bootstrap resamples for the intervals")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
