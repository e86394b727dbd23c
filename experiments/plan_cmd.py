"""`smallest-loss plan`: the best architectures for a budget, the trade-offs, plots, and `--verify`.

Everything the command needs is built and checked here before anything slow runs: the search space (chosen
for the budget when none is named), the plan inputs (one function, `build_plan_inputs`, for the CLI and the
quickstart), and refusals of a profile or device that does not match the space.
"""

from __future__ import annotations

import json
from pathlib import Path

from smallest_loss.experiments.plots import plot_plan
from smallest_loss.scaling.plan_result import Plan


def write_outputs(plan: Plan, folder: str | Path) -> list[Path]:
    """plan.json, plan.md and the plan's plot in `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plan.json").write_text(json.dumps(plan.to_dict(), indent=2) + "\n")
    (folder / "plan.md").write_text(plan.to_markdown() + "\n")
    return [folder / "plan.json", folder / "plan.md", *plot_plan(plan.scores, folder)]
