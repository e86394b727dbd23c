"""smallest-loss: what is the smallest loss my budget can buy? The Python API.

    import smallest_loss as sl

    law = sl.fit_law(sl.read_table("runs.csv"), bootstrap=200)   # a LawFile: .law, .intervals, .predict(N, D)
    plan = sl.make_plan("1e21", law)                              # a Plan: .best, .rows, .by_depth, .to_markdown()
    profile = sl.load_profile("profile.json")                     # time budgets need a device profile
    plan = sl.make_plan("4h", law, profile)

Reading points: `read_table` (a fit CSV), `read_runs` (run or sweep folders). Fitting: `fit_law` (Chinchilla, Kaplan,
shape-aware), `fit_groups` (several data or evaluation sets with shared exponents), `fit_moe_law` (the joint
mixture-of-experts law of a `read_moe_table` table), `fit_precision_law` (training precision: a
`read_precision_table` table, a `PrecisionLaw`), `holdout_by_scale` (the error
predicting the largest budget and the largest model size from the rest), `fit_recipe` (learning-rate and
batch laws), `fit_curve_laws` (schedule-aware learning curves: run folders' `read_curve`, or `read_curves` of a
curve table logged by any stack). Designing runs: `suggest_runs` (the runs that most shrink the interval
predicted at a target budget, a `RunDesign`). Devices: `calibrate`, `calibrate_records`, `load_profile`,
`retime_profile` (a profile rescaled to the machine's speed now). Planning: `parse_budget`, `make_plan`
(`plan_with_inputs` for your own step-time or memory functions; `preflight`: the best candidates timed on this
machine before choosing, a `Preflight`, weighed with the profile's price by `profile_weight`), `verify` (with
`time_again(plan)`: the step timed again after the run).
Intervals:
`prediction_interval` (a new run's loss), `constant_intervals` (the constants and N_opt), calibrated. Every
mistake a user can make raises `UserError` with a one-line message.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and editors; at run time each name is imported when first used
    from smallest_loss.configs.errors import UserError
    from smallest_loss.model.evaluate import PostTraining, post_training_losses
    from smallest_loss.scaling.aspect import AspectLaw, AspectPoints
    from smallest_loss.scaling.budget import Budget, parse_budget
    from smallest_loss.scaling.chinchilla import ChinchillaLaw
    from smallest_loss.scaling.curve_law import fit_curve_laws, read_curve
    from smallest_loss.scaling.curve_table import read_curves
    from smallest_loss.scaling.design import RunDesign, suggest_runs
    from smallest_loss.scaling.fitting import fit_law, read_runs, read_table
    from smallest_loss.scaling.groups import GroupedFit, fit_groups
    from smallest_loss.scaling.holdout_scale import HoldoutReport, holdout_by_scale
    from smallest_loss.scaling.intervals import (
        ConstantIntervals,
        PredictionInterval,
        constant_intervals,
        prediction_interval,
    )
    from smallest_loss.scaling.kaplan import KaplanLaw
    from smallest_loss.scaling.laws import LawFile, load_law
    from smallest_loss.scaling.moe_fit import fit_moe_law
    from smallest_loss.scaling.moe_law import MoeLaw, MoePoints, read_moe_table
    from smallest_loss.scaling.plan import PlanInputs
    from smallest_loss.scaling.plan_result import MoeChoice, Plan, PlanRow, Preflight, Serving
    from smallest_loss.scaling.planner import make_plan, plan_with_inputs
    from smallest_loss.scaling.points import FitPoints
    from smallest_loss.scaling.precision_fit import fit_precision_law
    from smallest_loss.scaling.precision_law import PrecisionLaw, precision_penalty
    from smallest_loss.scaling.precision_plan import PrecisionPlans, plan_precisions
    from smallest_loss.scaling.precision_table import read_precision_table
    from smallest_loss.scaling.preflight import preflight, profile_weight, time_again
    from smallest_loss.scaling.recipe import RecipeLaw
    from smallest_loss.scaling.recipe_fit import fit_recipe
    from smallest_loss.scaling.run_table import run_rows, write_run_table
    from smallest_loss.scaling.serving_plan import ServingPlans, plan_serving
    from smallest_loss.scaling.verify import Verification, run_clock, verify
    from smallest_loss.timing.calibration import Calibration, calibrate, calibrate_records
    from smallest_loss.timing.models import ModelChoice
    from smallest_loss.timing.profile import DeviceProfile, Retiming, load_profile
    from smallest_loss.timing.retime import retime_profile

# Each public name and the module that defines it. Imported on first use (PEP 562), so that `import smallest_loss`
# and every `smallest-loss` command stay fast: a command loads only what it runs.
_HOMES = {
    "AspectLaw": "smallest_loss.scaling.aspect",
    "AspectPoints": "smallest_loss.scaling.aspect",
    "Budget": "smallest_loss.scaling.budget",
    "Calibration": "smallest_loss.timing.calibration",
    "ChinchillaLaw": "smallest_loss.scaling.chinchilla",
    "ConstantIntervals": "smallest_loss.scaling.intervals",
    "DeviceProfile": "smallest_loss.timing.profile",
    "FitPoints": "smallest_loss.scaling.points",
    "GroupedFit": "smallest_loss.scaling.groups",
    "HoldoutReport": "smallest_loss.scaling.holdout_scale",
    "KaplanLaw": "smallest_loss.scaling.kaplan",
    "LawFile": "smallest_loss.scaling.laws",
    "MoeChoice": "smallest_loss.scaling.plan_result",
    "ModelChoice": "smallest_loss.timing.models",
    "MoeLaw": "smallest_loss.scaling.moe_law",
    "MoePoints": "smallest_loss.scaling.moe_law",
    "Plan": "smallest_loss.scaling.plan_result",
    "PlanInputs": "smallest_loss.scaling.plan",
    "PlanRow": "smallest_loss.scaling.plan_result",
    "Preflight": "smallest_loss.scaling.plan_result",
    "preflight": "smallest_loss.scaling.preflight",
    "time_again": "smallest_loss.scaling.preflight",
    "profile_weight": "smallest_loss.scaling.preflight",
    "PredictionInterval": "smallest_loss.scaling.intervals",
    "PrecisionLaw": "smallest_loss.scaling.precision_law",
    "PrecisionPlans": "smallest_loss.scaling.precision_plan",
    "plan_precisions": "smallest_loss.scaling.precision_plan",
    "plan_serving": "smallest_loss.scaling.serving_plan",
    "post_training_losses": "smallest_loss.model.evaluate",
    "PostTraining": "smallest_loss.model.evaluate",
    "Retiming": "smallest_loss.timing.profile",
    "Serving": "smallest_loss.scaling.plan_result",
    "ServingPlans": "smallest_loss.scaling.serving_plan",
    "run_rows": "smallest_loss.scaling.run_table",
    "write_run_table": "smallest_loss.scaling.run_table",
    "RecipeLaw": "smallest_loss.scaling.recipe",
    "RunDesign": "smallest_loss.scaling.design",
    "UserError": "smallest_loss.configs.errors",
    "Verification": "smallest_loss.scaling.verify",
    "calibrate": "smallest_loss.timing.calibration",
    "calibrate_records": "smallest_loss.timing.calibration",
    "constant_intervals": "smallest_loss.scaling.intervals",
    "fit_curve_laws": "smallest_loss.scaling.curve_law",
    "fit_groups": "smallest_loss.scaling.groups",
    "fit_precision_law": "smallest_loss.scaling.precision_fit",
    "fit_law": "smallest_loss.scaling.fitting",
    "fit_moe_law": "smallest_loss.scaling.moe_fit",
    "fit_recipe": "smallest_loss.scaling.recipe_fit",
    "holdout_by_scale": "smallest_loss.scaling.holdout_scale",
    "load_law": "smallest_loss.scaling.laws",
    "load_profile": "smallest_loss.timing.profile",
    "retime_profile": "smallest_loss.timing.retime",
    "make_plan": "smallest_loss.scaling.planner",
    "parse_budget": "smallest_loss.scaling.budget",
    "plan_with_inputs": "smallest_loss.scaling.planner",
    "prediction_interval": "smallest_loss.scaling.intervals",
    "read_curve": "smallest_loss.scaling.curve_law",
    "read_curves": "smallest_loss.scaling.curve_table",
    "read_moe_table": "smallest_loss.scaling.moe_law",
    "read_runs": "smallest_loss.scaling.fitting",
    "read_precision_table": "smallest_loss.scaling.precision_table",
    "precision_penalty": "smallest_loss.scaling.precision_law",
    "read_table": "smallest_loss.scaling.fitting",
    "run_clock": "smallest_loss.scaling.verify",
    "suggest_runs": "smallest_loss.scaling.design",
    "verify": "smallest_loss.scaling.verify",
}

__all__ = [
    "AspectLaw",
    "AspectPoints",
    "Budget",
    "Calibration",
    "ChinchillaLaw",
    "ConstantIntervals",
    "DeviceProfile",
    "FitPoints",
    "GroupedFit",
    "HoldoutReport",
    "KaplanLaw",
    "LawFile",
    "ModelChoice",
    "MoeChoice",
    "MoeLaw",
    "MoePoints",
    "Plan",
    "PlanInputs",
    "PlanRow",
    "Preflight",
    "PostTraining",
    "PredictionInterval",
    "PrecisionLaw",
    "PrecisionPlans",
    "RecipeLaw",
    "RunDesign",
    "Retiming",
    "Serving",
    "ServingPlans",
    "UserError",
    "Verification",
    "calibrate",
    "calibrate_records",
    "constant_intervals",
    "fit_curve_laws",
    "fit_groups",
    "fit_law",
    "fit_moe_law",
    "fit_precision_law",
    "fit_recipe",
    "holdout_by_scale",
    "load_law",
    "load_profile",
    "retime_profile",
    "make_plan",
    "parse_budget",
    "plan_precisions",
    "plan_serving",
    "plan_with_inputs",
    "post_training_losses",
    "precision_penalty",
    "preflight",
    "prediction_interval",
    "profile_weight",
    "read_curve",
    "read_curves",
    "read_moe_table",
    "read_precision_table",
    "read_runs",
    "read_table",
    "run_clock",
    "run_rows",
    "suggest_runs",
    "time_again",
    "verify",
    "write_run_table",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'smallest_loss' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
