"""`make_plan`: from a budget, a law and the planner's inputs to a typed, frozen `Plan`.

The scoring lives in scaling/plan.py; this module assembles what a plan answers: the best rows with their
intervals, the best configuration at each depth, the binding edges of the space (with a warning naming a space that
holds the optimum), the FLOPs-rule comparison for time budgets, the batch comparison, and how width against depth
and the recipe were decided.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from smallest_loss.configs.devices import get_device
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.lazy import LazyModule
from smallest_loss.configs.spaces import FLOPS_SPACES, SPACES, SearchSpace
from smallest_loss.scaling.budget import Budget, parse_budget
from smallest_loss.scaling.intervals import stored_calibration
from smallest_loss.scaling.laws import Law, LawFile, load_law
from smallest_loss.scaling.plan import (
    PlanInputs,
    Scores,
    aspect_bounds,
    batch_choice,
    best_by_depth,
    binding_edges,
    compute_optimal_params,
    flops_rule_choice,
    moe_choice,
    nd_choice,
    param_range,
    score,
    serving_bytes,
    tie_rule,
    top_rows,
)
from smallest_loss.scaling.plan_result import Edge, Plan, PlanRow, RecipeDecision, Serving, ShapeDecision
from smallest_loss.scaling.plan_setup import (
    at_profile_precision,
    build_plan_inputs,
    choose_space,
    holding_space,
    profile_has_moe,
    spaces_for,
)
from smallest_loss.scaling.precision_law import UNQUANTISED_BITS
from smallest_loss.scaling.precision_pricing import law_at_profile, ptq_loss
from smallest_loss.scaling.preflight import preflight
from smallest_loss.scaling.shape_terms import get_term
from smallest_loss.timing.profile import RANGE_NAMES, DeviceProfile, load_profile
from smallest_loss.timing.wallclock import Cadence

# Re-timing the machine (JAX), loaded only when a plan asks for it: planning alone never imports JAX.
timing_retime = LazyModule("smallest_loss.timing.retime")


def make_plan(
    budget: Budget | str,
    law: LawFile | str | Path,
    profile: DeviceProfile | str | Path | None = None,
    *,
    space: str | SearchSpace | None = None,
    top: int = 10,
    device: str | None = None,
    price_per_hour: float | None = None,
    spot_discount: float = 0.0,
    flops: str = "6N",
    inference_tokens: float = 0.0,
    max_latency_ms: float | None = None,
    batch: int | None = None,
    budget_covers: str = "run",
    cadence: Cadence | None = None,
    serve_bits: int | None = None,
    serve_memory: float | None = None,
    retime: bool | str | Path = False,
    measure: int = 0,
    measured_folder: str | Path | None = None,
) -> Plan:
    """The best `top` configurations for a budget ("1e21" FLOPs, "60s" or "4h" of a device, "$20") under a law
    (a LawFile or a law JSON path). Time and money budgets need a device profile (a DeviceProfile or its JSON
    path). The space is the given one (a SearchSpace, a built-in name or a space file's path), else the one made for
    the profile's device, else (FLOPs budgets) the first built-in space that holds the law's compute-optimal N.
    `batch` plans at that batch size only. A time or money budget pays for the whole run's wall-clock
    (`budget_covers` "run", with the run's `cadence` of evaluations and saves; a profile without wall-clock terms
    prices the steps alone) or the training steps alone ("steps"). A law with a `moe` section plans dense and MoE
    shapes together (`Plan.moe_choice`: the best of each side by side); a profile file's records.jsonl beside it
    says whether its MoE step times are measured or extrapolated. A law with a precision section prices the
    profile's precision (its dtype and bits: scaling/precision_pricing.py `law_at_profile`). `serve_bits` plans the
    loss of the model served quantised after training to that many bits (a law with a PTQ penalty; 16: unquantised);
    `serve_memory` (bytes) keeps the candidates whose served weights fit (`Plan.serving`). `retime` times the
    profile's anchor configurations again on this machine and plans at the speed it runs now (timing/retime.py;
    `Plan.retiming`); a folder: the re-timing is kept there and reused by a rerun. `measure` times the `measure` best
    candidates on this machine before choosing and prices them at what they measured, again while a new one comes
    first (scaling/preflight.py; `Plan.preflight`); `measured_folder` keeps the measurements for a rerun."""
    budget = parse_budget(budget) if isinstance(budget, str) else budget
    fitted = law = load_law(law) if isinstance(law, str | Path) else law
    moe_records = law.moe is not None and isinstance(profile, str | Path) and profile_has_moe(profile)
    profile = _profile_now(profile, retime)
    law = law_at_profile(law, profile, serve_bits)  # precision priced by the law's precision section, and serving
    chosen, choice = choose_space(space, budget, law.law, profile)
    chosen, unsearched = calibrated_space(at_profile_precision(chosen, profile), profile)
    inputs = build_plan_inputs(chosen, profile, get_device(device) if device else None, price_per_hour, spot_discount,
                               flops, inference_tokens, max_latency_ms, budget_covers, cadence,
                               moe_records=moe_records)  # fmt: skip
    bits = serve_bits if serve_bits is not None and serve_bits < UNQUANTISED_BITS else None  # None: unquantised
    inputs = dataclasses.replace(inputs, fixed_batch=batch, serve_bits=bits, serve_memory=serve_memory)
    measured = None
    if measure:
        inputs, measured = preflight(budget, law, inputs, profile, measure, measured_folder)
    plan = dataclasses.replace(plan_with_inputs(budget, law, inputs, top, choice), preflight=measured)
    if serve_bits is not None or serve_memory is not None:
        added = ptq_loss(fitted, profile, bits, plan.best.params, plan.best.tokens)
        weights = plan.best.params_total or plan.best.params
        serving = Serving(bits, added, weights * serving_bytes(bits), serve_memory)
        plan = dataclasses.replace(plan, serving=serving)
    return with_profile_notes(plan, profile, unsearched)


def calibrated_space(space: SearchSpace, profile: DeviceProfile | None) -> tuple[SearchSpace, str | None]:
    """The space with its head sizes and MLP ratios kept to those the profile's records span (where any is left),
    and a line naming those left out. A planner picks the shapes whose steps a model under-predicts: a head size the
    calibration never timed is priced by extrapolation (on a CPU head size 64 was priced 11% faster than 32, where it
    ran 2-3% faster) and would be chosen for it. Width, depth, context and batch are scale, planned beyond the
    records as the law is; these two are choices of shape the records either measured or did not."""
    if profile is None or not profile.ranges:
        return space, None
    kept, left = {}, []
    for field, key in (("head_sizes", "head_size"), ("mlp_ratios", "mlp_ratio")):
        lo, hi = profile.ranges.get(key, (0.0, math.inf))
        inside = tuple(x for x in getattr(space, field) if lo <= x <= hi)
        if inside and len(inside) < len(getattr(space, field)):
            kept[field] = inside
            out = ", ".join(f"{x:g}" for x in getattr(space, field) if x not in inside)
            left.append(f"{RANGE_NAMES[key]} {out} (calibrated {lo:g}-{hi:g})")
    if not kept:
        return space, None
    return dataclasses.replace(space, **kept), "not searched, the profile never timed them: " + "; ".join(left)


def with_profile_notes(plan: Plan, profile: DeviceProfile | None, unsearched: str | None = None) -> Plan:
    """The plan with what its profile says of it: the precision's bits, the re-timing, the shapes not searched
    (`calibrated_space`), and a line where the best configuration's shape lies outside the ranges the profile was
    calibrated on (its step time extrapolated)."""
    if profile is None:
        return plan
    best = plan.best
    outside = profile.outside_ranges(
        d=best.d, n=best.n, head_size=best.d / best.h, mlp_ratio=best.w / best.d, s=best.s, b=best.b
    )
    note = (
        "warning: the step time is extrapolated beyond the calibration's records: " + ", ".join(outside)
        if outside and best.step_seconds is not None
        else None
    )
    extrapolation = "\n".join(line for line in (plan.extrapolation, note, unsearched) if line) or None
    bits = dict(profile.bits) or plan.bits
    return dataclasses.replace(plan, bits=bits, retiming=profile.retiming, extrapolation=extrapolation)


def _profile_now(profile: DeviceProfile | str | Path | None, retime: bool | str | Path) -> DeviceProfile | None:
    """The profile (loaded from its path), re-timed to this machine's speed now where `retime` (a folder: kept
    there, or read back from there). A profile file without anchors takes them from the records beside it."""
    path = profile if isinstance(profile, str | Path) else None
    profile = load_profile(profile) if path is not None else profile
    if not retime:
        return profile
    if profile is None:
        raise UserError("--retime re-times a device profile: give one (--profile)")
    profile = timing_retime.with_anchors(profile, path) if path is not None else profile
    if isinstance(retime, str | Path):
        return timing_retime.retime_once(profile, retime)
    return timing_retime.retime_profile(profile)


def plan_with_inputs(
    budget: Budget, law_file: LawFile, inputs: PlanInputs, top: int = 10, space_choice: str | None = None
) -> Plan:
    """The best `top` configurations for `budget` under the law and the planner's inputs (space, step-time and
    memory functions, prices), with everything behind the choice."""
    if top < 1:
        raise UserError(f"--top {top}: show at least one configuration")
    scores = score(budget, law_file, inputs)
    edges = binding_edges(scores, law_file, inputs)
    rows = top_rows(scores, law_file, top)
    return Plan(
        budget=budget,
        space=scores.space,
        space_choice=space_choice or f"space {scores.space.name}",
        candidates=len(scores.candidates),
        dropped=scores.dropped,
        rows=rows,
        by_depth=best_by_depth(scores, law_file),
        tie_rule=tie_rule(scores.space),
        edges=edges,
        recipe=recipe_decision(scores, inputs.fixed_batch),
        shape=shape_decision(scores, law_file, inputs),
        warning=edge_warning(scores, edges, law_file.law),
        extrapolation=extrapolation(rows[0], law_file, inputs),
        seconds=scores.train_seconds,
        budget_covers=None if budget.kind == "flops" else ("run" if inputs.whole_run else "steps"),
        flops_rule=flops_rule_choice(scores, law_file.law),
        batch_choice=batch_choice(scores),
        interval_kind="a new run's loss, calibrated" if stored_calibration(law_file) else "law bootstrap",
        moe_choice=moe_choice(scores, law_file, inputs),
        scores=scores,
    )


def extrapolation(best: PlanRow, law_file: LawFile, inputs: PlanInputs) -> str | None:
    """One line when the best configuration lies outside what the law was fitted on (N, D, C = 6ND, by how many
    decades), or its batch outside the batch range of the law's recipe laws (`plan --batch`)."""
    moe = dict(E=float(best.experts)) if best.experts is not None else {}  # the law's fitted expert counts
    lines = [law_file.outside(N=best.params, D=best.tokens, C=6.0 * best.params * best.tokens, **moe)]
    recipe = law_file.recipe
    if recipe is not None and inputs.fixed_batch is not None:
        lo, hi = recipe.batch.batch_range
        tokens = best.b * best.s
        if not lo <= tokens <= hi:
            lines.append(
                f"warning: batch {best.b} ({tokens:,} tokens a step) lies outside the {lo:,.0f}-{hi:,.0f} tokens the "
                "recipe laws were fitted on: its learning rate and data efficiency are extrapolated"
            )
    return "\n".join(line for line in lines if line) or None


def edge_warning(scores: Scores, edges: tuple[Edge, ...], law: Law) -> str | None:
    """One line when the best candidate sits on an edge of the space that binds (`binding_edges`), naming a
    space that holds the optimum where one does."""
    if not edges:
        return None
    best, space = scores.row(scores.best), scores.space
    beyond = min(edges, key=lambda e: e.beyond_loss)
    line = (
        f"warning: the best candidate sits on an edge of space {space.name} "
        f"({', '.join(e.edge for e in edges)}) and a step beyond predicts a lower loss "
        f"({beyond.beyond_loss:.4f} against {best.loss:.4f}): the optimum lies outside this space"
    )
    lo, hi = param_range(space)
    if scores.budget.kind == "flops":
        N_opt = compute_optimal_params(law, scores.budget.value)
        order = list(FLOPS_SPACES) + [name for name in SPACES if name not in FLOPS_SPACES]
        holder = holding_space(N_opt, order) if not lo < N_opt < hi else None
        target = f"the law's compute-optimal N = {N_opt:.3g} (C = 6ND)"
        return line + (
            f"; {target} lies in space {holder} (--space {holder})"
            if holder
            else f"; {target} lies in no built-in space: {wider_space_hint(space)}"
        )
    N = beyond.beyond_params
    others = [name for name in spaces_for(space.backends[0], space.dtype) if name != space.name]
    holder = holding_space(N, others) if not lo < N < hi else None
    return line + (f"; space {holder} reaches further (--space {holder})" if holder else f"; {wider_space_hint(space)}")


def wider_space_hint(space: SearchSpace) -> str:
    """How to search past the space's edges: a space file, started from the built-in space (or from the user's own
    file), with the binding edge widened."""
    start = (
        f"smallest-loss space --show {space.name} > wide.toml"
        if SPACES.get(space.name) == space
        else "copy your space file to wide.toml"
    )
    return (
        f"pass a wider space file, --space wide.toml ({start}, widen the edge it sits on; docs/formats.md, Space file)"
    )


def shape_decision(scores: Scores, law_file: LawFile, inputs: PlanInputs) -> ShapeDecision:
    """How width against depth was decided: by the law's aspect-ratio factor, with what the law without it would
    pick; or, for a law in N and D, by the space's aspect-ratio bounds and tie rule."""
    shape = law_file.shape
    if shape is None:
        lo, hi = scores.space.aspect_ratio
        held = aspect_bounds(scores.space, None, law_file.fitted_range)
        runs = (law_file.fitted_range or {}).get("aspect")
        if runs and held != (lo, hi):
            name = scores.space.name
            within = (f"held to d/n in [{held[0]:.3g}, {held[1]:.3g}], the widths against depths of the law's "
                      f"runs ({runs[0]:.3g} to {runs[1]:.3g}) within space {name}'s [{lo:g}, {hi:g}]")  # fmt: skip
        else:
            outside = f"; the law's runs spanned d/n {runs[0]:.3g} to {runs[1]:.3g}, outside it" if runs else ""
            within = f"decided by space {scores.space.name}'s aspect-ratio bounds d/n in [{lo:g}, {hi:g}]{outside}"
        return ShapeDecision(
            from_law=False,
            note=f"the law has no shape term (a law in N and D), so width against depth is {within} and the tie "
            "rule, not by data; fit a shape-aware law (smallest-loss fit --form shape) to decide it from runs",
        )
    params = ", ".join(f"{k} {v:.3g}" for k, v in (shape.params or {}).items())
    params += "; r_opt is the optimum at N = n_ref" if shape.term == "drift" else ""
    return ShapeDecision(
        from_law=True,
        note="" if shape.term == "symmetric" else f"{get_term(shape.term).formula} ({shape.term} term; {params})",
        aspect_opt=shape.aspect_opt,
        gamma=shape.gamma,
        aspect_range=tuple(shape.aspect_range),
        aspect_opt_interval=(shape.intervals or {}).get("aspect_opt"),
        nd_choice=nd_choice(scores, law_file, inputs),
    )


def recipe_decision(scores: Scores, fixed_batch: int | None = None) -> RecipeDecision:
    """How the batch and learning rate were set: from the law's recipe laws, or fixed (the law has none)."""
    recipe = scores.recipe
    if recipe is None:
        return RecipeDecision(
            chosen=False,
            note=f"the law has no recipe laws: batch {'/'.join(map(str, scores.space.b))} and the "
            "learning rate of the recipe the law was fitted under (--recipe), not chosen; "
            "fit them with smallest-loss fit-recipe",
        )
    lr, batch = recipe.lr, recipe.batch
    return RecipeDecision(
        chosen=True,
        b_crit_tokens=batch.b_crit,
        b_crit_interval=batch.intervals.get("b_crit"),
        b_crit_loss_exponent=batch.loss_exponent,
        b_crit_loss_ref=batch.loss_ref,
        batch_identified=batch.identified,
        reference_batch_tokens=recipe.reference_batch_tokens,
        lr_law=dict(c0=lr.c0, n_exponent=lr.n_exponent, batch_exponent=lr.batch_exponent)
        | (dict(d_exponent=lr.d_exponent) if lr.form == "N,D" else {}),
        batch_form=recipe.batch_form,
        optimal_batch=dataclasses.asdict(recipe.optimal_batch) if recipe.batch_form == "optimal" else None,
        batch_range_tokens=tuple(batch.batch_range),
        schedule=recipe.schedule,
        fixed_batch=fixed_batch,
    )
