"""smallest-loss: what is the smallest loss my budget can buy? The Python API.

    import smallest_loss as sl

    law = sl.fit_law(sl.read_table("runs.csv"), bootstrap=200)   # a LawFile: .law, .intervals, .predict(N, D)
    plan = sl.make_plan("1e21", law)                              # a Plan: .best, .rows, .by_depth, .to_markdown()
    profile = sl.load_profile("profile.json")                     # time budgets need a device profile
    plan = sl.make_plan("4h", law, profile)

Reading points: `read_table` (a fit CSV), `read_runs` (run or sweep folders). Fitting: `fit_law` (Chinchilla, Kaplan,
shape-aware), `fit_groups` (several data or evaluation sets with shared exponents), `fit_recipe` (learning-rate and
batch laws), `fit_curve_laws` (schedule-aware learning curves). Devices: `calibrate`, `calibrate_records`,
`load_profile`. Planning: `parse_budget`, `make_plan` (`plan_with_inputs` for your own step-time or memory
functions), `verify`. Every mistake a user can make raises `UserError` with a one-line message.
"""

from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.aspect import AspectLaw, AspectPoints
from smallest_loss.scaling.budget import Budget, parse_budget
from smallest_loss.scaling.chinchilla import ChinchillaLaw
from smallest_loss.scaling.curve_law import fit_curve_laws, read_curve
from smallest_loss.scaling.fitting import fit_law, read_runs, read_table
from smallest_loss.scaling.groups import GroupedFit, fit_groups
from smallest_loss.scaling.kaplan import KaplanLaw
from smallest_loss.scaling.laws import LawFile, load_law
from smallest_loss.scaling.plan import PlanInputs
from smallest_loss.scaling.plan_result import Plan, PlanRow
from smallest_loss.scaling.planner import make_plan, plan_with_inputs
from smallest_loss.scaling.points import FitPoints
from smallest_loss.scaling.recipe import RecipeLaw, fit_recipe
from smallest_loss.scaling.verify import Verification, verify
from smallest_loss.timing.calibration import Calibration, calibrate, calibrate_records
from smallest_loss.timing.profile import DeviceProfile, load_profile

__all__ = [
    "AspectLaw",
    "AspectPoints",
    "Budget",
    "Calibration",
    "ChinchillaLaw",
    "DeviceProfile",
    "FitPoints",
    "GroupedFit",
    "KaplanLaw",
    "LawFile",
    "Plan",
    "PlanInputs",
    "PlanRow",
    "RecipeLaw",
    "UserError",
    "Verification",
    "calibrate",
    "calibrate_records",
    "fit_curve_laws",
    "fit_groups",
    "fit_law",
    "fit_recipe",
    "load_law",
    "load_profile",
    "make_plan",
    "parse_budget",
    "plan_with_inputs",
    "read_curve",
    "read_runs",
    "read_table",
    "verify",
]
