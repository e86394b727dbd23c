"""Reports in markdown, rendered from typed results in one place: one table helper and the plan's report.

A plan's report opens with the answer (what to train, on how many tokens, the predicted loss and its interval);
the tables and the comparisons behind the choice follow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from smallest_loss.scaling.budget import format_seconds

if TYPE_CHECKING:
    from smallest_loss.scaling.plan_result import Plan, PlanRow

PLAN_COLUMNS = ("d", "n", "h", "w", "b", "params", "tokens", "tokens_per_param", "loss")


def cell(value: Any) -> str:
    """A table cell: floats to four significant digits, anything else as text."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any] | Sequence[Any]], columns: Sequence[str]) -> str:
    """A markdown table of `rows` (mappings read by column name, or sequences of cells in column order)."""
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns)
    body = [
        [row.get(c, "") for c in columns] if isinstance(row, Mapping) else list(row)
        for row in rows  # a mapping by name, else cells in column order
    ]
    return "\n".join([head, *("| " + " | ".join(cell(v) for v in cells) + " |" for cells in body)])


def answer_line(row: PlanRow) -> str:
    """The plan's answer in one line: what to train, on how many tokens, and the loss it predicts."""
    steps = f", {row.steps:,} steps of {row.step_seconds * 1e3:.3g} ms" if row.step_seconds is not None else ""
    span = f", 95% interval [{row.loss_interval[0]:.4f}, {row.loss_interval[1]:.4f}]" if row.loss_interval else ""
    lr = f", learning rate {row.lr:.3g}" if row.lr is not None else ""
    moe = f", {row.experts} experts, top-{row.top_k}" if row.is_moe else ""
    moe += f", granularity {row.granularity}" if row.is_moe and row.granularity != 1 else ""
    params = f"{row.params:,.0f} parameters"
    params = f"{row.params:,.0f} active parameters ({row.params_total:,.0f} in all)" if row.is_moe else params
    return (
        f"**Train** d={row.d}, n={row.n} (h={row.h}, w={row.w}{moe}, context {row.s}, batch {row.b}{lr}): "
        f"{params} on {row.tokens:,.0f} tokens ({row.tokens_per_param:.3g} per parameter"
        f"{steps}). **Predicted loss {row.loss:.4f}**{span}."
    )


def _columns(plan: Plan) -> tuple[str, ...]:
    best = plan.best
    moe = ("experts", "top_k", "params_total") if best.experts is not None else ()  # a MoE law's plan
    return (
        PLAN_COLUMNS + (("lr",) if best.lr is not None else ()) + (("step_seconds",) if best.step_seconds else ()) + moe
    )


def wall_clock_line(row: PlanRow) -> str:
    """The run's predicted wall-clock, term by term, in one line."""
    t = row.wall_clock
    load = f" (loading the corpus {t['corpus_load']:.3g} s)" if t.get("corpus_load") else ""
    return (
        f"wall-clock of the run: start-up {t['startup']:.3g} s{load} + compile {t['compile']:.3g} s "
        f"+ steps {t['steps']:.3g} s ({row.steps:,} x {row.step_seconds * 1e3:.3g} ms) "
        f"+ evaluations {t['evals']:.3g} s + saves {t['saves']:.3g} s = {t['total']:.3g} s"
    )


def _header(plan: Plan) -> list[str]:
    line = f"budget {plan.budget.text}: {plan.space_choice}: {plan.candidates:,} feasible candidates"
    line += f" (dropped: {plan.dropped})" if plan.dropped else ""
    line += f", {format_seconds(plan.seconds)} of device time" if plan.seconds is not None else ""
    if plan.budget_covers == "run":
        line += " for the whole run (start-up, compile, steps, evaluations, checkpoint saves)"
    elif plan.budget_covers == "steps":
        line += " for the training steps alone (start-up, compile, evaluations and saves not priced)"
    clock = [wall_clock_line(plan.best)] if plan.best.wall_clock else []
    clock += [plan.retiming.line()] if plan.retiming is not None else []
    clock += [plan.preflight.line()] if plan.preflight is not None else []
    return [answer_line(plan.best), "", line, *clock] + [w for w in (plan.warning, plan.extrapolation) if w]


# The most depths the report's width-vs-depth table lists (a space of 160 depths would print 160 rows): beyond, it
# lists depths spread evenly in log depth, the first and last and the best's among them; plan.json keeps them all.
DEPTHS_SHOWN = 16


def shown_depths(depths: list[int], best: int, most: int = DEPTHS_SHOWN) -> list[int]:
    """The depths the width-vs-depth table lists: all of them up to `most`, else about `most` spread evenly in log
    depth (the first and the last included) and `best`, in order."""
    if len(depths) <= most:
        return list(depths)
    logs = np.log(depths)
    picks = {int(np.argmin(np.abs(logs - x))) for x in np.linspace(logs[0], logs[-1], most - 1)}
    return sorted({depths[i] for i in picks} | {best})


def _by_depth_lines(plan: Plan, columns: tuple[str, ...]) -> list[str]:
    depths = [r.n for r in plan.by_depth]
    shown = set(shown_depths(depths, plan.best.n))
    rows = [
        dict(r.to_dict(), interval=f"[{r.loss_interval[0]:.4f}, {r.loss_interval[1]:.4f}]")
        if r.loss_interval
        else r.to_dict()
        for r in plan.by_depth
        if r.n in shown
    ]
    keep = columns[:8] + ("aspect_ratio", "loss") + (("interval",) if "interval" in rows[0] else ()) + columns[9:]
    title = "## Width vs depth: the best configuration at each depth"
    if len(shown) < len(depths):
        title += f" ({len(shown)} of its {len(depths)} depths, evenly in log depth; all in plan.json's `by_depth`)"
    return ["", title, markdown_table(rows, keep)]


MOE_COLUMNS = ("plan", "experts", "top_k", "d", "n", "params", "params_total", "tokens", "flops_per_step")


def _moe_lines(plan: Plan) -> list[str]:
    """Under a MoE law: the best dense and the best MoE plan side by side, which wins and by how much."""
    m = plan.moe_choice
    if m is None:
        return []
    marked = " (step time extrapolated)" if m.step_times == "extrapolated" else ""
    sides = (("dense", m.dense), (f"MoE{marked}", m.moe))
    rows = [
        dict(r.to_dict(), plan=name, interval=f"[{r.loss_interval[0]:.4f}, {r.loss_interval[1]:.4f}]")
        if r.loss_interval
        else dict(r.to_dict(), plan=name)
        for name, r in sides
        if r is not None
    ]
    timed = ("step_seconds", "steps") if any("step_seconds" in r for r in rows) else ()
    columns = (
        MOE_COLUMNS + timed + ("memory_bytes", "loss") + (("interval",) if any("interval" in r for r in rows) else ())
    )
    lines = ["", "## Dense vs mixture of experts", markdown_table(rows, columns)]
    if m.difference is not None:
        who = "the mixture of experts" if m.difference < 0 else "dense"
        line = f"**{who} wins** by {abs(m.difference):.4f} in predicted loss (MoE minus dense: {m.difference:+.4f}"
        if m.difference_interval is not None:
            lo, hi = m.difference_interval
            tell = "it excludes 0" if m.significant else "it includes 0: the law cannot tell them apart"
            line += f", 95% interval [{lo:+.4f}, {hi:+.4f}] over the moe section's bootstrap samples; {tell}"
        lines.append("\n" + line + ").")
    lines += ["\n" + text for text in (m.note, m.step_times_line) if text]
    return lines


def _flops_rule_lines(plan: Plan) -> list[str]:
    f = plan.flops_rule
    if f is None:
        return []
    return [
        "",
        "## Time-optimal vs FLOPs-optimal",
        f"The FLOPs rule (C = 6ND with C = {f.flops:.3g}, the FLOPs the time-optimal choice uses) picks "
        f"d={f.row.d}, n={f.row.n}, N={f.row.params:.3g}. On this device it gets {f.row.tokens:.3g} tokens in "
        f"the budget, for a predicted loss of {f.row.loss:.4f}: {f.loss_cost:+.4f} against the "
        f"time-optimal {plan.best.loss:.4f}.",
    ]


def _shape_lines(plan: Plan) -> list[str]:
    s = plan.shape
    if not s.from_law:
        return ["", f"Shape: {s.note}."]
    span, nd, best = s.aspect_opt_interval, s.nd_choice, plan.best.loss
    lines = [
        "",
        "## Shape: from the law's aspect-ratio factor",
        f"At equal N and D the law's loss is lowest at d/n = {s.aspect_opt:.3g}"
        + (f" (95% interval {span[0]:.3g}-{span[1]:.3g})" if span else "")
        + (
            f" and rises as {s.note}, gamma {s.gamma:.3g}"
            if s.note
            else f" and rises as exp({s.gamma:.3g} ln(d/n / {s.aspect_opt:.3g})^2)"
        )
        + "; candidates stay within "
        f"d/n {s.aspect_range[0]:.3g}-{s.aspect_range[1]:.3g}, where the law was fitted.",
    ]
    if nd is not None:
        lines.append(
            f"Without its shape term the law would pick d={nd.row.d}, n={nd.row.n} (d/n {nd.row.aspect_ratio:.3g}, "
            f"N={nd.row.params:.3g}): {nd.row.loss:.4f} under the shape-aware law, {nd.loss_cost:+.4f} "
            f"({nd.loss_cost / best:+.2%}) against the chosen {best:.4f}."
        )
    return lines


def _batch_law_text(r: Any) -> str:
    """The batch law the plan used: the optimal batch B_opt(D), or McCandlish's critical batch."""
    if r.batch_form == "optimal":
        o = r.optimal_batch
        return (
            f"Best batch B_opt = {math.exp(o['log_b0']):.3g} D^{o['d_exponent']:.3f}"
            + (f" N^{o['n_exponent']:.3f}" if o["n_exponent"] else "")
            + f" tokens, the loss rising as exp({o['gamma']:.3g} log(B/B_opt)^2) on both sides"
        )
    interval = r.b_crit_interval
    return f"Critical batch B_crit = {r.b_crit_tokens:,.0f} tokens" + (
        f" (95% interval {interval[0]:,.0f}-{interval[1]:,.0f})" if interval else ""
    )


def _recipe_lines(plan: Plan) -> list[str]:
    r, best = plan.recipe, plan.best
    if not r.chosen:
        return ["", f"Recipe: {r.note}."]
    lr, schedule = r.lr_law, r.schedule
    lines = [
        "",
        "## Recipe (batch size and learning rate from the law's recipe laws)",
        f"batch {best.b} sequences ({best.b * best.s:,} tokens a step)"
        + (f" as {best.micro_batches} accumulated micro-batches" if best.micro_batches > 1 else "")
        + f", learning rate {best.lr:.3g} (log lr = {lr['c0']:.3f} {lr['n_exponent']:+.3f} log N "
        + (f"{lr['d_exponent']:+.3f} log D" if "d_exponent" in lr else f"{lr['batch_exponent']:+.3f} log B")
        + (
            f"), warmup {schedule['warmup_fraction']:.0%} of the steps, "
            if "warmup_fraction" in schedule
            else "), warmup as in the sweep's runs (its table gave none), "
        )
        + f"{schedule.get('schedule', 'cosine')} schedule to {schedule.get('min_lr_ratio', 0.1):g} x lr.",
        _batch_law_text(r)
        + (
            f" at loss {r.b_crit_loss_ref:.3f}, growing as L^-{r.b_crit_loss_exponent:.2f}: "
            f"{best.b_crit:,.0f} tokens at this plan's loss {best.loss:.3f}"
            if r.b_crit_loss_exponent and r.batch_form == "mccandlish"
            else ""
        )
        + (
            f"; batch fixed at {r.fixed_batch} sequences by --batch (the fitted range is "
            if r.fixed_batch is not None
            else "; batches searched within the fitted range "
        )
        + f"{r.batch_range_tokens[0]:,.0f}-{r.batch_range_tokens[1]:,.0f} tokens a step"
        + (")." if r.fixed_batch is not None else "."),
    ]
    if plan.batch_choice:
        columns = ("choice", "b", "d", "n", "params", "tokens", "effective_tokens", "lr", "loss")
        rows = [option.to_dict() for option in plan.batch_choice]
        lines += ["", "### The chosen batch beside the largest feasible batch and the law's fixed batch"]
        lines.append(markdown_table(rows, columns))
    return lines


def plan_markdown(plan: Plan) -> str:
    """The plan's report: the answer, the best configurations, width against depth, and how the rest was decided."""
    columns = _columns(plan)
    lines = _header(plan)
    lines += ["", "## Best configurations", markdown_table([r.to_dict() for r in plan.rows], columns)]
    lines += ["", f"Ties: {plan.tie_rule}."]
    if plan.serving is not None:
        lines += ["", plan.serving.line()]
    if plan.best.loss_interval:
        lo, hi = plan.best.loss_interval
        kind = plan.interval_kind
        lines.append(f"\nbest predicted loss {plan.best.loss:.4f}, 95% interval [{lo:.4f}, {hi:.4f}] ({kind})")
    lines += _by_depth_lines(plan, columns)
    return "\n".join(lines + _moe_lines(plan) + _flops_rule_lines(plan) + _shape_lines(plan) + _recipe_lines(plan))
