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
from smallest_loss.scaling.recipe import BCRIT_SPAN, EXPLODE_FACTOR, Cell, recipe_to_dict
from smallest_loss.scaling.recipe_fit import fit_recipe, recipe_runs
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


def _inputs(args: argparse.Namespace) -> None:
    """One input (sweep folders or --csv) and its outputs, refused in one line before any work."""
    if bool(args.sweeps) == bool(args.csv):
        raise UserError("give either sweep folders or --csv FILE (a recipe table), not both or neither")
    if args.columns and not args.csv:
        raise UserError("--columns maps a table's columns: use it with --csv")
    if not args.csv and not (args.law and args.out):
        raise UserError("fitting run folders needs --law (the loss law) and --out (where to write it)")
    if bool(args.law) != bool(args.out):
        raise UserError("--law and --out go together: the law is written with its recipe section to --out")
    if args.csv and args.law and args.reference_batch is None:
        raise UserError("--csv with --law needs --reference-batch TOKENS: the batch the loss law was fitted at")
    if args.bootstrap < 0:
        raise UserError(f"--bootstrap {args.bootstrap}: use 0 or more resamples")
    check_outputs(files={"--out": args.out})


def run_fit_recipe(args: argparse.Namespace) -> dict[str, Any]:
    """Fit, check and (with --law and --out) write; returns the report (JSON-ready)."""
    _inputs(args)
    base = load_law(args.law) if args.law else None
    if args.csv:
        runs, left_out = recipe_runs(args.csv, args.columns), []
        reference = args.reference_batch
    else:
        runs, left_out = collect_recipe_runs(args.sweeps)
        design = get_design(args.recipe)
        reference = args.reference_batch or design.base.train.batch_size * design.base.model.s
    held = _holdout(args.holdout_batches, runs[0].seq_len) or None
    law, cells, names = fit_recipe(runs, reference, holdout_batches=held, n_boot=args.bootstrap)
    report = dict(runs=len(runs), left_out=left_out, cells=cell_rows(cells, names), recipe=recipe_to_dict(law))
    if base is not None:
        path = save_law(args.out, base.law, base.intervals, base.samples, base.diagnostics, law)
        plot = Path(args.out).with_suffix(".recipe.png")
        from smallest_loss.experiments.plots_recipe import plot_recipe

        plot_recipe(cells, names, law, plot)
        report.update(law=str(path), plot=str(plot))
    return report


def format_recipe(report: dict[str, Any]) -> str:
    r = report["recipe"]
    lr, batch, ev = r["lr"], r["batch"], r["evidence"]
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
    lines += ["", _lr_line(lr)]
    bc = batch["intervals"].get("b_crit")
    lines.append(
        f"batch: tokens needed grow as D_min (1 + B/B_crit), B_crit = {batch['b_crit']:,.0f} tokens"
        + (f" (95% {bc[0]:,.0f}-{bc[1]:,.0f})" if bc else "")
        + f", beta = {batch['beta']:.3f}, "
        + f"F-test against no batch cost p = {batch['p_value']:.2g}"
        + _batch_note(batch)
    )
    lines += _evidence_lines(batch, ev)
    lines += format_comparison(r)
    if "law" in report:
        lines += ["", f"wrote {report['law']} (the loss law plus its recipe section) and {report['plot']}"]
    else:
        lines += ["", "nothing written (give --law and --out to add these laws to a loss law for plan)"]
    return "\n".join(lines)


def _lr_line(lr: dict[str, Any]) -> str:
    """The learning-rate law in use, N,B or N,D, with its intervals where it has them."""
    if lr.get("form", "N,B") == "N,D":
        return (
            f"learning rate: log lr* = {lr['c0']:.3f} {lr['n_exponent']:+.3f} log N {lr['d_exponent']:+.3f} log D "
            f"(Li et al. 2025's form; rms residual {lr['residual_rms']:.3f} in log lr)"
        )
    ci = lr["intervals"]
    return (
        f"learning rate: log lr* = {lr['c0']:.3f} {lr['n_exponent']:+.3f} log N {lr['batch_exponent']:+.3f} "
        f"log B   (95%: N exponent [{ci['n_exponent'][0]:.3f}, {ci['n_exponent'][1]:.3f}], batch exponent "
        f"[{ci['batch_exponent'][0]:.3f}, {ci['batch_exponent'][1]:.3f}]; rms residual "
        f"{lr['residual_rms']:.3f} in log lr)"
    )


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
    report = run_fit_recipe(args)
    print(json.dumps(report, indent=2) if args.json else format_recipe(report))
    return 0


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweeps", nargs="*", help="sweep folders (or run folders) of a recipe sweep, e.g. cpu-recipe")
    p.add_argument("--csv", metavar="FILE", help="a recipe table instead (CSV or JSON lines; docs/formats.md)")
    p.add_argument("--columns", metavar="MAP", help="the table's names for them: loss=eval/loss,lr=optim/lr")
    p.add_argument("--law", help="the loss-law JSON (from smallest-loss fit) to add the recipe to")
    p.add_argument("--out", help="where to write the law JSON with its recipe section (with --law)")
    p.add_argument(
        "--reference-batch",
        type=float,
        metavar="TOKENS",
        help="the batch (tokens per step) the loss law was fitted at (default for run folders: --recipe's)",
    )
    p.add_argument(
        "--recipe",
        default="cpu-isoflop",
        help="the sweep design the loss law was fitted under (its batch is the law's reference batch)",
    )
    p.add_argument(
        "--holdout-batches",
        metavar="B1,B2",
        help="batch sizes to hold out and predict, in sequences (in the table's batch unit with --csv), e.g. 8,32; "
        "default: the second smallest and second largest",
    )
    p.add_argument("--bootstrap", type=int, default=1000, help="residual-bootstrap resamples for the intervals")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _form_rows(scores: dict[str, Any], unit: str) -> list[tuple[str, ...]]:
    def show(value: float | None) -> str:
        return "-" if value is None else (f"{value:.2%}" if unit == "%" else f"{value:.3f}")

    return [
        (form + (" (winner)" if form == scores["winner"] else ""), show(row.get("batches")), show(row.get("points")),
         show(row["mean"]), row.get("failed", ""))
        for form, row in scores.items()
        if form != "winner"
    ]  # fmt: skip


def format_comparison(r: dict[str, Any]) -> list[str]:
    """The forms' held-out errors, the winners, and what their choice costs on the held-out points."""
    ev = r["evidence"]
    lines = [
        "",
        f"diverged runs left out of the best rates: {ev.get('diverged_runs', 0)} (status, a non-finite loss, or a "
        f"loss above {EXPLODE_FACTOR:g}x its cell's best at a higher rate)",
    ]
    comparison = ev.get("comparison")
    if not comparison:
        return lines
    held = ", ".join(f"{b:,.0f}" for b in comparison["held_batch_tokens"]) or "none"
    points = ", ".join(ev["groups"][g] for g in comparison["held_points"]) or "none"
    lines += ["", f"held out: batches {held} tokens; (N, D) points {points}"]
    header = ("form", "held-out batches", "held-out points", "mean", "note")
    lines += ["", "batch forms, mean relative error of the held-out cells' best losses (each point's level fitted):"]
    lines += [markdown_table(_form_rows(comparison["batch"], "%"), header)]
    lines += ["", "learning-rate forms, rms error of log lr* on the held-out bracketed cells:"]
    lines += [markdown_table(_form_rows(comparison["lr"], "log"), header)]
    lines.append(f"planning with: batch {r['batch_form']}, learning rate {r['lr']['form']}")
    for key, label in (("choice", "the winners"), ("choice_mccandlish_nb", "McCandlish with lr(N, B)")):
        if key in ev:
            lines += _choice_lines(ev[key], label)
    return lines


def _choice_lines(choice: dict[str, Any], label: str) -> list[str]:
    rows = [
        (f"{c['N']:.3g}", f"{c['D']:.3g}", f"{c['batch_tokens']:,.0f}", f"{c['lr']:.3g}", c["run"],
         f"{c['loss']:.4f}", f"{c['best_loss']:.4f}", f"{c['regret']:+.2%}")
        for c in choice["rows"]
    ]  # fmt: skip
    header = ("N", "D", "law batch", "law lr", "nearest run", "its loss", "best run", "above best")
    return [
        "",
        f"{label} at the held-out points (fitted without them): the run nearest their (batch, lr) is "
        f"{choice['mean']:+.2%} above the point's best trained run on average, {choice['max']:+.2%} at worst",
        markdown_table(rows, header),
    ]
