"""`smallest-loss plan`: the best architectures for a budget, the trade-offs, plots, and `--verify`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.schema import DataConfig, ModelConfig, RunConfig
from smallest_loss.configs.spaces import SearchSpace
from smallest_loss.scaling.budget import Budget, format_seconds
from smallest_loss.scaling.laws import LawFile
from smallest_loss.scaling.plan import Plan, PlanInputs, best_by_depth, flops_rule_choice

_COLUMNS = ("d", "n", "h", "w", "params", "tokens", "tokens_per_param", "loss")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "\n".join("| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |" for r in rows)


def plan_report(plan: Plan, law_file: LawFile, top: int) -> dict[str, Any]:
    """Everything `plan` prints or writes, as JSON-ready data."""
    rows = []
    for rank, i in enumerate(plan.order[:top]):
        row = plan.row(int(i))
        if plan.intervals is not None:
            row["loss_interval"] = [float(x) for x in plan.intervals[rank]]
        rows.append(row)
    report = dict(budget=plan.budget.text, budget_kind=plan.budget.kind, candidates=len(plan.candidates),
                  dropped=plan.dropped, best=rows, by_depth=best_by_depth(plan))
    if plan.train_seconds is not None:
        report["seconds"] = plan.train_seconds
    flops_rule = flops_rule_choice(plan, law_file.law)
    if flops_rule is not None:
        report["flops_rule"] = flops_rule
    return report


def format_report(report: dict[str, Any]) -> str:
    columns = _COLUMNS + (("step_seconds",) if "step_seconds" in report["best"][0] else ())
    lines = [f"budget {report['budget']}: {report['candidates']:,} feasible candidates"
             + (f" (dropped: {report['dropped']})" if report["dropped"] else "")]
    if "seconds" in report:
        lines[0] += f", {format_seconds(report['seconds'])} of device time"
    best = report["best"]
    lines += ["", "## Best configurations", markdown_table(best, columns)]
    if "loss_interval" in best[0]:
        lo, hi = best[0]["loss_interval"]
        lines.append(f"\nbest predicted loss {best[0]['loss']:.4f}, 95% interval [{lo:.4f}, {hi:.4f}] (law bootstrap)")
    lines += ["", "## Width vs depth: the best configuration at each depth"]
    lines.append(markdown_table(report["by_depth"], columns))
    if "flops_rule" in report:
        f = report["flops_rule"]
        lines += ["", "## Time-optimal vs FLOPs-optimal",
                  f"The FLOPs rule (C = 6ND with C = {f['flops']:.3g}, the FLOPs the time-optimal choice uses) picks "
                  f"d={f['d']}, n={f['n']}, N={f['params']:.3g}. On this device it gets {f['tokens']:.3g} tokens in "
                  f"the budget, for a predicted loss of {f['loss']:.4f}: {f['loss_cost']:+.4f} against the "
                  f"time-optimal {best[0]['loss']:.4f}."]
    return "\n".join(lines)


def verify_config(row: dict[str, Any], space: SearchSpace, base: RunConfig) -> RunConfig:
    """The run that trains a planned row: its shape and steps, the rest from the law's training recipe."""
    model = ModelConfig(**{**dataclasses.asdict(base.model), "v": space.v, "d": row["d"], "n": row["n"],
                           "h": row["h"], "w": row["w"], "s": row["s"], "dtype": space.dtype})
    steps = int(row["tokens"] // (row["b"] * row["s"]))
    if steps < 1:
        raise UserError("the recommended configuration gets less than one step; raise the budget")
    train = dataclasses.replace(base.train, batch_size=row["b"], steps=steps, tokens=None,
                                warmup_steps=max(1, round(0.05 * steps)), eval_every=0)
    return RunConfig(model=model, train=train, data=DataConfig())


def verify(row: dict[str, Any], space: SearchSpace, base: RunConfig, out: str | Path) -> dict[str, Any]:
    """Train the recommended configuration and compare its loss and time with the prediction."""
    from smallest_loss.model.runs import RunDir
    from smallest_loss.model.train import train

    config = verify_config(row, space, base)
    m = config.model
    # One folder per configuration, so a rerun resumes this run and a new plan never reuses another's.
    out = Path(out) / f"d{m.d}-n{m.n}-h{m.h}-w{m.w}-s{m.s}-b{config.train.batch_size}-steps{config.total_steps}"
    summary = train(config, out, resume=(out / "config.json").exists(), progress=True)
    lines = RunDir(Path(out), config, {}).read_metrics()
    walls = np.array([m["wall_seconds"] for m in lines])
    steps = np.array([m["step"] for m in lines])
    # Steady-state step time: from the first host sync after compilation to the last step.
    first = min(len(steps) - 1, max(1, len(steps) // 10))
    per_step = (walls[-1] - walls[first]) / max(steps[-1] - steps[first], 1)
    result = dict(run=str(out), predicted_loss=row["loss"], actual_loss=summary["final_eval_loss"],
                  predicted_step_seconds=row.get("step_seconds"), actual_step_seconds=float(per_step),
                  steps=int(summary["steps"]), wall_seconds=summary["wall_seconds"])
    result["loss_error"] = result["actual_loss"] / result["predicted_loss"] - 1
    if result["predicted_step_seconds"]:
        result["time_error"] = per_step / result["predicted_step_seconds"] - 1
    return result


def run_plan(budget: Budget, law_file: LawFile, inputs: PlanInputs, top: int) -> tuple[Plan, dict[str, Any]]:
    from smallest_loss.scaling.plan import make_plan

    plan = make_plan(budget, law_file, inputs, top)
    return plan, plan_report(plan, law_file, top)


def write_outputs(plan: Plan, report: dict[str, Any], folder: str | Path) -> list[Path]:
    from smallest_loss.experiments.plots import plot_plan

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plan.json").write_text(json.dumps(report, indent=2) + "\n")
    (folder / "plan.md").write_text(format_report(report) + "\n")
    return [folder / "plan.json", folder / "plan.md", *plot_plan(plan, folder)]
