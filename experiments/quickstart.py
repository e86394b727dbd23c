"""`smallest-loss quickstart`: the whole method on the embedded default, end to end, on this device.

1. calibrate: time the `cpu-quick` grid and fit the step-time models (timing/);
2. sweep: train the `quick-isoflop` design on the Python standard library's source (model/);
3. fit: Chinchilla Approach 3 with bootstrap intervals, and Approach 2 (scaling/);
4. plan: the smallest predicted loss for a time budget on this device;
5. verify: train the recommended configuration and compare predicted with actual loss and time;
6. report: a folder with report.md, the JSON files and the plots.
Every stage skips work already done in the folder, so rerunning (or resuming after Ctrl-C) is cheap.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from smallest_loss.configs.designs import get_design
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.grids import get_grid
from smallest_loss.configs.spaces import SearchSpace, get_space
from smallest_loss.experiments.calibrate import fit_and_report
from smallest_loss.experiments.cli import prepare_process
from smallest_loss.experiments.fit_cmd import holdout_lines, run_fit
from smallest_loss.experiments.plan_cmd import write_outputs
from smallest_loss.experiments.plots_timing import plot_name
from smallest_loss.experiments.sweep import run_sweep
from smallest_loss.model.fresh import fresh_code, run_fresh
from smallest_loss.model.runs import make_folder
from smallest_loss.scaling.budget import Budget, parse_budget
from smallest_loss.scaling.chinchilla import identification_margin
from smallest_loss.scaling.laws import load_law
from smallest_loss.scaling.plan import param_range
from smallest_loss.scaling.plan_result import Plan
from smallest_loss.scaling.plan_setup import build_plan_inputs
from smallest_loss.scaling.planner import calibrated_space, plan_with_inputs, with_profile_notes
from smallest_loss.scaling.preflight import DEFAULT_K, measure_count, preflight, time_again
from smallest_loss.scaling.report import answer_line
from smallest_loss.scaling.verify import (
    Verification,
    corpus_load,
    run_clock,
    verify,
    verify_cadence,
    verify_line,
)
from smallest_loss.timing.calibration import noise_floor, read_records, run_grid
from smallest_loss.timing.probes import PROBES, probe_runs
from smallest_loss.timing.profile import load_profile
from smallest_loss.timing.retime import retime_once


def _stage(title: str) -> float:
    print(f"\n=== {title}", flush=True)
    return time.perf_counter()


def _done(start: float) -> None:
    print(f"    ({time.perf_counter() - start:.0f}s)", flush=True)


def _check_arguments(parsed: Any, plan_space: Any, out: str | Path, grid: str, n_boot: int, measure: int) -> None:
    """Every argument checked before the out folder exists."""
    check_quickstart_budget(parsed, plan_space, out)
    measure_count(measure)
    get_grid(grid)  # an unknown grid name fails here, not after the out folder exists
    if n_boot < 2:
        raise UserError(f"--bootstrap {n_boot}: the law's intervals need at least 2 resamples")


def quickstart(
    out: str | Path = "quickstart",
    budget: str = "1min",
    grid: str = "cpu-quick",
    design: str = "quick-isoflop",
    space: str = "cpu",
    n_boot: int = 1000,
    min_seconds: float = 0.5,
    repeats: int = 20,
    budget_covers: str = "run",
    probes: int = PROBES,
    noise: int = 8,
    retime: bool = False,
    measure: int = DEFAULT_K,
) -> dict[str, Any]:
    """Run every stage into `out`; returns the report's data (also report.json). Every argument is checked before the
    first stage. `probes`: short real runs timed at calibration for the wall-clock terms (0: steps priced alone);
    `noise`: the configurations timed twice for the machine's repeatability (the noise floor); `retime`: the profile's
    anchor configurations timed again before the plan, which prices the machine's speed then where they agree
    (timing/retime.py; kept in plan/, so a rerun plans and verifies the same run); `measure`: the plan's best
    candidates timed here before choosing (scaling/preflight.py; kept in plan/; 0: the profile prices all)."""
    parsed, sweep_design, plan_space = parse_budget(budget), get_design(design), get_space(space)
    _check_arguments(parsed, plan_space, out, grid, n_boot, measure)
    out = make_folder(out)
    t = _stage(f"1/5 calibrate: time the {grid} grid's training steps on this device")
    run_grid(grid, out / "calibration", min_seconds=min_seconds, repeats=repeats)
    noise_floor(out / "calibration", k=noise, min_seconds=min_seconds, repeats=repeats)  # the machine's repeatability
    probe_runs(  # short real runs: the loop's host cost and a run's other wall-clock terms (timing/probes.py)
        out / "calibration", read_records(out / "calibration" / "records.jsonl"), probes
    )
    calibration = fit_and_report(out / "calibration")
    print("\n".join(line for line in (calibration["table"], calibration["choice_line"]) if line))
    _done(t)
    t = _stage(f"2/5 sweep: train the {design} design")
    run_sweep(get_design(design), out / "sweep")
    _done(t)
    t = _stage("3/5 fit: Chinchilla Approach 3 with bootstrap, Approach 2, the hold-outs by scale")
    fit = run_fit([str(out / "sweep")], None, "chinchilla", n_boot, str(out / "law.json"), None, False, False)
    print("\n".join(fit["text"] + holdout_lines(fit["holdout"])))
    _done(t)
    t = _stage(f"4/5 plan: the smallest predicted loss for {budget} on this device")
    plan, law = _plan(out, parsed, plan_space, budget_covers, sweep_design, retime, measure)
    print(plan.to_markdown())
    _done(t)
    t = _stage("5/5 verify: train the recommended configuration for the budget (in a fresh process)")
    checked = _verify_fresh(out, budget, space, budget_covers, design, retime, measure)
    _done(t)
    report = dict(
        budget=budget,
        calibration=calibration["table"],
        profile=str(out / "calibration" / "profile.json"),
        fit={k: fit[k] for k in ("law", "isoflop", "curve_extrapolation", "holdout") if k in fit},
        law_used=law.fit_form,
        plan=plan.to_dict(),
        verify=checked.to_dict(),
    )
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "report.md").write_text(report_markdown(report, calibration, fit, plan, checked))
    return report


VERIFIED = "verification.json"  # in verify/: the verify stage's result, written by the process that trained the run


def _verify_fresh(out: Path, budget: str, space: str, covers: str, design: str, retime: bool,
                  measure: int) -> Verification:  # fmt: skip
    """The verify stage in a fresh process (`verify_stage`), as a user trains a planned run, so that the verified step
    carries none of this process's history (after its calibration and sweep the same step once cost up to a quarter
    more CPU here than in a fresh process: the C allocator, now set by `prepare_process`; results/cpu/quickstart/
    README.md, stops 43 and 44). Its output goes to this console; returns what it wrote to verify/`VERIFIED`."""
    args = [str(out), budget, space, covers, design, str(int(retime)), str(measure)]
    returncode = run_fresh(fresh_code("smallest_loss.experiments.quickstart", "verify_stage"), args)
    if returncode != 0:
        raise UserError(
            f"the verify stage's process failed (exit {returncode}, above); rerun smallest-loss quickstart --out "
            f"{out} to resume it"
        )
    return Verification.from_dict(json.loads((out / "verify" / VERIFIED).read_text()))


def verify_stage(out: str, budget: str, space: str, covers: str, design: str, retime: str, measure: str) -> None:
    """The verify stage, run by `_verify_fresh` in a process of its own: the plan read back from out/plan (its
    re-timing and preflight measurements are kept there, so it is the plan the quickstart printed), its best row
    trained and timed again after, and the verification written to verify/`VERIFIED`."""
    prepare_process()
    folder, sweep_design = Path(out), get_design(design)
    plan, law = _plan(folder, parse_budget(budget), get_space(space), covers, sweep_design, retime == "1", int(measure))
    checked = verify(plan.best, plan.space, sweep_design, folder / "verify", retime_factor=plan.retime_factor,
                     profile_step_seconds=plan.profile_step_seconds, remeasure=time_again(plan),
                     end_within=run_clock(plan), law=law, measured_step_seconds=plan.measured_step_seconds)  # fmt: skip
    (folder / "verify" / VERIFIED).write_text(json.dumps(checked.to_dict(), indent=2) + "\n")


def _plan(out: Path, budget: Budget, space: SearchSpace, covers: str, design: Any,
          retime: bool, measure: int) -> tuple[Plan, Any]:  # fmt: skip
    """The plan stage: the calibration's profile (with `retime`, re-timed to the machine's speed now and kept in plan/
    so a rerun plans the same run), over the shapes it timed, under the law, the `measure` best timed here before
    choosing (kept in plan/ too); the plan written to plan/; returns the plan and the law."""
    profile = load_profile(out / "calibration" / "profile.json")
    if retime:
        profile = retime_once(profile, out / "plan")
    space, unsearched = calibrated_space(space, profile)
    load = corpus_load(design, out / "plan", budget.kind, covers)
    inputs = build_plan_inputs(space, profile, covers=covers, cadence=verify_cadence(design, load))
    law = load_law(out / "law.json")
    measured = None
    if measure and budget.kind != "flops":
        inputs, measured = preflight(budget, law, inputs, profile, measure, out / "plan")
    plan = dataclasses.replace(plan_with_inputs(budget, law, inputs, top=10), preflight=measured)
    plan = with_profile_notes(plan, profile, unsearched)
    write_outputs(plan, out / "plan")
    return plan, law


def check_quickstart_budget(budget: Budget, space: SearchSpace, out: str | Path) -> None:
    """Refuse, before the calibration, a budget the quickstart cannot plan: money (it takes no price) and FLOPs too
    few for one step of the space's smallest model."""
    if budget.kind == "dollars":
        raise UserError(
            f"the quickstart plans a time budget on this device (say 20s or 5min), not {budget.text}; after it, plan "
            f"money with: smallest-loss plan --budget '{budget.text}' --price-per-hour P --law {out}/law.json "
            f"--profile {out}/calibration/profile.json"
        )
    smallest = param_range(space)[0] * 6.0 * min(space.b) * min(space.s)
    if budget.kind == "flops" and budget.value < smallest:
        raise UserError(
            f"budget {budget.text} is too small to train one step of any model of space {space.name} (the smallest "
            f"needs {smallest:.3g} FLOPs); raise it"
        )


def report_markdown(
    report: dict[str, Any], calibration: dict[str, Any], fit: dict[str, Any], plan: Plan, checked: Verification
) -> str:
    """The quickstart's report: the answer and what training gave first, then the plan, the law and the timing."""
    iso = fit.get("isoflop") or {}
    lines = [
        "# smallest-loss quickstart report",
        "",
        f"Device: {calibration['profile'].device_kind}. Budget: {report['budget']}.",
        "",
        answer_line(plan.best),
        "",
        f"**Trained it:** {verify_line(checked).removeprefix('verify: ')}.",
        "",
        law_used_line(report["law_used"]),
        "",
        "## Plan",
        "",
        plan.to_markdown(),
        "",
        "![plan](plan/plan.png)",
        "",
        "## Loss law from the sweep",
        "",
        *fit["text"],
        "",
        *holdout_lines(fit["holdout"]),
        "",
        (f"Approach 2 (IsoFLOP parabolas): N_opt ~ C^{iso['a']:.3f}, D_opt ~ C^{iso['b']:.3f}" if "a" in iso else ""),
        "",
        "![law](law.png)",
        "",
        "![isoflop](law_isoflop.png)",
        "",
        "## Step-time models (held-out architectures)",
        "",
        calibration["table"],
        "",
        *([calibration["choice_line"], ""] if calibration["choice_line"] else []),
        f"![predicted vs measured](calibration/{plot_name(calibration['profile'].model)})",
        "",
    ]
    return "\n".join(lines)


def law_used_line(form: dict[str, Any]) -> str:
    """Which law the plan rests on and why: the full Chinchilla law when the sweep identifies it, else the
    reduced form the fit fell back to, with the reasons the fuller forms were not identified."""
    if form["form"] == "full":
        how = {True: "identified by the sweep", False: "NOT identified: use it with care", None: "not recorded"}
        margin = identification_margin(form.get("standard_errors") or {}, form["form"])
        state = how[form["identified"]] + (f"; {margin}" if margin else "")
        return f"**Law used:** {form['form_description'] or 'the full Chinchilla law'} ({state})."
    reasons = "; ".join(f"{name}: {', '.join(why)}" for name, why in form["not_identified"].items() if why)
    state = "identified" if form["identified"] else "NOT identified either, used with care"
    return (
        f"**Law used:** {form['form_description']} ({state}). The sweep does not pin down the full law"
        + (f" ({reasons})" if reasons else "")
        + ", so the plan's predictions rest on this reduced form."
    )
