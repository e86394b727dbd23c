"""`smallest-loss plan`: the best architectures for a budget, the trade-offs, plots, and `--verify`.

Everything the command needs is built and checked here before anything slow runs: the search space (chosen
for the budget when none is named), the plan inputs (one function, `build_plan_inputs`, for the CLI and the
quickstart), and refusals of a profile or device that does not match the space.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from smallest_loss.configs.designs import SweepDesign
from smallest_loss.configs.devices import Device, backend_of
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.schema import RunConfig
from smallest_loss.configs.spaces import FLOPS_SPACES, SPACES, SearchSpace, get_space
from smallest_loss.scaling.budget import Budget, format_seconds
from smallest_loss.scaling.laws import Law, LawFile
from smallest_loss.scaling.plan import (
    Plan,
    PlanInputs,
    batch_choice,
    best_by_depth,
    compute_optimal_params,
    flops_rule_choice,
    param_range,
    tie_rule,
)
from smallest_loss.timing.profile import DeviceProfile

_COLUMNS = ("d", "n", "h", "w", "params", "tokens", "tokens_per_param", "loss")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "\n".join("| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |" for r in rows)


def _spaces_for(backend: str, dtype: str) -> list[str]:
    return [name for name, space in SPACES.items() if backend in space.backends and space.dtype == dtype]


def check_device_fits(space: SearchSpace, profile: DeviceProfile | None, device: Device | None) -> None:
    """Refuse a profile or device table entry made for other hardware or another dtype than the space's: its
    step times (or price and memory) would describe machines the space's models are not meant for."""
    if profile is not None:
        backend = backend_of(profile.device_kind)
        if backend not in space.backends or profile.dtype != space.dtype:
            fits = _spaces_for(backend, profile.dtype)
            hint = f"use --space {' or '.join(fits)}" if fits else "calibrate on the space's device and dtype"
            raise UserError(
                f"the device profile was measured on {profile.device_kind} ({backend}, {profile.dtype}) "
                f"but space {space.name} is for {'/'.join(space.backends)} in {space.dtype}: {hint}"
            )
    if device is not None:
        backend = backend_of(device.kinds[0])
        if profile is not None and backend != backend_of(profile.device_kind):
            raise UserError(
                f"--device {device.name} is a {backend} but the profile was measured on {profile.device_kind}"
            )
        if backend not in space.backends:
            raise UserError(
                f"--device {device.name} is a {backend} but space {space.name} is for {'/'.join(space.backends)}"
            )


def build_plan_inputs(
    space: SearchSpace,
    profile: DeviceProfile | None = None,
    device: Device | None = None,
    price_per_hour: float | None = None,
    spot_discount: float = 0.0,
    flops: str = "6N",
    inference_tokens: float = 0.0,
    max_latency_ms: float | None = None,
) -> PlanInputs:
    """The planner's inputs from a space, an optional device profile and device table entry, and the user's
    quantities. The price comes from `price_per_hour`, else the device table, else the profile; the memory
    from the device table, else the profile. Every quantity is checked (PlanInputs) before any plan runs."""
    check_device_fits(space, profile, device)
    price = next(
        (
            p
            for p in (price_per_hour, device and device.price_per_hour, profile and profile.price_per_hour)
            if p is not None
        ),
        None,
    )
    memory = (device.memory_bytes if device else None) or (profile.memory_bytes if profile else None)
    return PlanInputs(
        space=space,
        step_seconds=profile.predict_step_seconds if profile else None,
        memory_limit=memory,
        flops=flops,
        price_per_hour=price,
        spot_discount=spot_discount,
        inference_tokens=inference_tokens,
        max_latency_ms=max_latency_ms,
    )


def _holding(N: float, names: list[str] | tuple[str, ...]) -> str | None:
    """The first named space whose parameter range holds N."""
    return next((name for name in names if param_range(SPACES[name])[0] < N < param_range(SPACES[name])[1]), None)


def choose_space(
    name: str | None, budget: Budget, law: Law, profile: DeviceProfile | None = None
) -> tuple[SearchSpace, str]:
    """The space to search and why: the named one; else the one made for the profile's device and dtype;
    else, for a FLOPs budget, the first of FLOPS_SPACES whose parameter range holds the law's compute-optimal
    N (C = 6ND); else `cpu`."""
    if name is not None:
        return get_space(name), f"space {name}"
    if profile is not None:
        backend = backend_of(profile.device_kind)
        fits = _spaces_for(backend, profile.dtype)
        if not fits:
            raise UserError(f"no built-in space is made for a {backend} profile in {profile.dtype}: pass --space")
        return get_space(fits[0]), f"space {fits[0]} (the space for this profile's {backend} in {profile.dtype})"
    if budget.kind != "flops":
        return get_space("cpu"), "space cpu (the default)"
    N_opt = compute_optimal_params(law, budget.value)
    chosen = _holding(N_opt, FLOPS_SPACES) or FLOPS_SPACES[-1]
    why = f"the law's compute-optimal N = {N_opt:.3g} (C = 6ND)"
    if chosen == FLOPS_SPACES[0]:
        return get_space(chosen), f"space {chosen} (the default; it holds {why})"
    reach = param_range(SPACES[FLOPS_SPACES[0]])[1]
    return get_space(chosen), (
        f"space {chosen}, chosen because space {FLOPS_SPACES[0]} reaches only N = "
        f"{reach:.3g} parameters and {why} lies in space {chosen}"
    )


def edge_warning(plan: Plan, law: Law) -> str | None:
    """One line when the best candidate sits on an edge of the space that binds (`binding_edges`), naming a
    space that holds the optimum where one does."""
    if not plan.edges:
        return None
    best, space = plan.row(int(plan.order[0])), plan.space
    beyond = min(plan.edges, key=lambda e: e["beyond_loss"])
    line = (
        f"warning: the best candidate sits on an edge of space {space.name} "
        f"({', '.join(e['edge'] for e in plan.edges)}) and a step beyond predicts a lower loss "
        f"({beyond['beyond_loss']:.4f} against {best['loss']:.4f}): the optimum lies outside this space"
    )
    lo, hi = param_range(space)
    if plan.budget.kind == "flops":
        N_opt = compute_optimal_params(law, plan.budget.value)
        order = list(FLOPS_SPACES) + [name for name in SPACES if name not in FLOPS_SPACES]
        holder = _holding(N_opt, order) if not lo < N_opt < hi else None
        target = f"the law's compute-optimal N = {N_opt:.3g} (C = 6ND)"
        return line + (
            f"; {target} lies in space {holder} (--space {holder})"
            if holder
            else f"; {target} lies in no built-in space: define a wider one in configs/spaces.py"
        )
    N = beyond["beyond_params"]
    others = [n for n in _spaces_for(space.backends[0], space.dtype) if n != space.name]
    holder = _holding(N, others) if not lo < N < hi else None
    return line + (
        f"; space {holder} reaches further (--space {holder})" if holder else "; widen the space in configs/spaces.py"
    )


def shape_summary(plan: Plan, law_file: LawFile) -> dict[str, Any]:
    """How width against depth was decided: by the law's aspect-ratio factor (scaling/shape.py), with what the law
    without it would pick; or, for a law in N and D, by the space's aspect-ratio bounds and tie rule."""
    shape = law_file.shape
    if shape is None:
        lo, hi = plan.space.aspect_ratio
        return dict(
            from_law=False,
            note=f"the law has no shape term (a law in N and D), so width against depth is "
            f"decided by space {plan.space.name}'s aspect-ratio bounds d/n in [{lo:g}, {hi:g}] and the tie "
            "rule, not by data; fit a shape-aware law (smallest-loss fit --form shape) to decide it from runs",
        )
    return dict(
        from_law=True,
        aspect_opt=shape.aspect_opt,
        gamma=shape.gamma,
        aspect_range=list(shape.aspect_range),
        aspect_opt_interval=(shape.intervals or {}).get("aspect_opt"),
        nd_choice=plan.nd_choice,
    )


def _shape_lines(report: dict[str, Any]) -> list[str]:
    s = report["shape"]
    if not s["from_law"]:
        return ["", f"Shape: {s['note']}."]
    span = s["aspect_opt_interval"]
    nd, best = s["nd_choice"], report["best"][0]["loss"]
    return [
        "",
        "## Shape: from the law's aspect-ratio factor",
        f"At equal N and D the law's loss is lowest at d/n = {s['aspect_opt']:.3g}"
        + (f" (95% interval {span[0]:.3g}-{span[1]:.3g})" if span else "")
        + f" and rises as exp({s['gamma']:.3g} ln(d/n / {s['aspect_opt']:.3g})^2); candidates stay within "
        f"d/n {s['aspect_range'][0]:.3g}-{s['aspect_range'][1]:.3g}, where the law was fitted.",
        f"Without its shape term the law would pick d={nd['d']}, n={nd['n']} (d/n {nd['aspect_ratio']:.3g}, "
        f"N={nd['params']:.3g}): {nd['loss']:.4f} under the shape-aware law, {nd['loss_cost']:+.4f} "
        f"({nd['loss_cost'] / best:+.2%}) against the chosen {best:.4f}.",
    ]


def plan_report(plan: Plan, law_file: LawFile, top: int, space_choice: str | None = None) -> dict[str, Any]:
    """Everything `plan` prints or writes, as JSON-ready data."""
    rows = []
    for rank, i in enumerate(plan.order[:top]):
        row = plan.row(int(i))
        if plan.intervals is not None:
            row["loss_interval"] = [float(x) for x in plan.intervals[rank]]
        rows.append(row)
    report = dict(
        budget=plan.budget.text,
        budget_kind=plan.budget.kind,
        space=plan.space.name,
        space_choice=space_choice or f"space {plan.space.name}",
        candidates=len(plan.candidates),
        dropped=plan.dropped,
        best=rows,
        by_depth=best_by_depth(plan, law_file),
        tie_rule=tie_rule(plan.space),
        edges=plan.edges,
    )
    warning = edge_warning(plan, law_file.law)
    if warning:
        report["warning"] = warning
    if plan.train_seconds is not None:
        report["seconds"] = plan.train_seconds
    flops_rule = flops_rule_choice(plan, law_file.law)
    if flops_rule is not None:
        report["flops_rule"] = flops_rule
    report["recipe"] = recipe_summary(plan)
    report["shape"] = shape_summary(plan, law_file)
    choice = batch_choice(plan)
    if choice:
        report["batch_choice"] = choice
    return report


def recipe_summary(plan: Plan) -> dict[str, Any]:
    """How the batch and learning rate were set: from the law's recipe laws, or fixed (the law has none)."""
    recipe = plan.recipe
    if recipe is None:
        return dict(
            chosen=False,
            note=f"the law has no recipe laws: batch {'/'.join(map(str, plan.space.b))} and the "
            "learning rate of the recipe the law was fitted under (--recipe), not chosen; "
            "fit them with smallest-loss fit-recipe",
        )
    lr, batch = recipe.lr, recipe.batch
    return dict(
        chosen=True,
        b_crit_tokens=batch.b_crit,
        b_crit_interval=batch.intervals.get("b_crit"),
        b_crit_loss_exponent=batch.loss_exponent,
        b_crit_loss_ref=batch.loss_ref,
        batch_identified=batch.identified,
        reference_batch_tokens=recipe.reference_batch_tokens,
        lr_law=dict(c0=lr.c0, n_exponent=lr.n_exponent, batch_exponent=lr.batch_exponent),
        batch_range_tokens=list(batch.batch_range),
        schedule=recipe.schedule,
    )


def _recipe_lines(report: dict[str, Any]) -> list[str]:
    recipe = report.get("recipe")
    if not recipe:
        return []
    if not recipe["chosen"]:
        return ["", f"Recipe: {recipe['note']}."]
    best, lr = report["best"][0], recipe["lr_law"]
    schedule = recipe["schedule"]
    interval = recipe["b_crit_interval"]
    lines = [
        "",
        "## Recipe (batch size and learning rate from the law's recipe laws)",
        f"batch {best['b']} sequences ({best['b'] * best['s']:,} tokens a step)"
        + (f" as {best['micro_batches']} accumulated micro-batches" if best["micro_batches"] > 1 else "")
        + f", learning rate {best['lr']:.3g} (log lr = {lr['c0']:.3f} {lr['n_exponent']:+.3f} log N "
        f"{lr['batch_exponent']:+.3f} log B), warmup {schedule.get('warmup_fraction', 0):.0%} of the steps, "
        f"{schedule.get('schedule', 'cosine')} schedule to {schedule.get('min_lr_ratio', 0.1):g} x lr.",
        f"Critical batch B_crit = {recipe['b_crit_tokens']:,.0f} tokens"
        + (f" (95% interval {interval[0]:,.0f}-{interval[1]:,.0f})" if interval else "")
        + (
            f" at loss {recipe['b_crit_loss_ref']:.3f}, growing as L^-{recipe['b_crit_loss_exponent']:.2f}: "
            f"{best['b_crit']:,.0f} tokens at this plan's loss {best['loss']:.3f}"
            if recipe.get("b_crit_loss_exponent")
            else ""
        )
        + f"; batches searched within the fitted range {recipe['batch_range_tokens'][0]:,.0f}-"
        f"{recipe['batch_range_tokens'][1]:,.0f} tokens a step.",
    ]
    if "batch_choice" in report:
        lines += [
            "",
            "### The chosen batch beside the largest feasible batch and the law's fixed batch",
            markdown_table(
                report["batch_choice"], ("choice", "b", "d", "n", "params", "tokens", "effective_tokens", "lr", "loss")
            ),
        ]
    return lines


def format_report(report: dict[str, Any]) -> str:
    columns = _COLUMNS[:4] + ("b",) + _COLUMNS[4:]
    columns += ("lr",) if "lr" in report["best"][0] else ()
    columns += ("step_seconds",) if "step_seconds" in report["best"][0] else ()
    lines = [
        f"budget {report['budget']}: {report['space_choice']}: {report['candidates']:,} feasible candidates"
        + (f" (dropped: {report['dropped']})" if report["dropped"] else "")
    ]
    if "seconds" in report:
        lines[0] += f", {format_seconds(report['seconds'])} of device time"
    if "warning" in report:
        lines.append(report["warning"])
    best = report["best"]
    lines += ["", "## Best configurations", markdown_table(best, columns), "", f"Ties: {report['tie_rule']}."]
    if "loss_interval" in best[0]:
        lo, hi = best[0]["loss_interval"]
        lines.append(f"\nbest predicted loss {best[0]['loss']:.4f}, 95% interval [{lo:.4f}, {hi:.4f}] (law bootstrap)")
    lines += ["", "## Width vs depth: the best configuration at each depth"]
    by_depth = [
        dict(r, interval=f"[{r['loss_interval'][0]:.4f}, {r['loss_interval'][1]:.4f}]") if "loss_interval" in r else r
        for r in report["by_depth"]
    ]
    lines.append(
        markdown_table(
            by_depth,
            columns[:8] + ("aspect_ratio", "loss") + (("interval",) if "interval" in by_depth[0] else ()) + columns[9:],
        )
    )
    if "flops_rule" in report:
        f = report["flops_rule"]
        lines += [
            "",
            "## Time-optimal vs FLOPs-optimal",
            f"The FLOPs rule (C = 6ND with C = {f['flops']:.3g}, the FLOPs the time-optimal choice uses) picks "
            f"d={f['d']}, n={f['n']}, N={f['params']:.3g}. On this device it gets {f['tokens']:.3g} tokens in "
            f"the budget, for a predicted loss of {f['loss']:.4f}: {f['loss_cost']:+.4f} against the "
            f"time-optimal {best[0]['loss']:.4f}.",
        ]
    return "\n".join(lines + _shape_lines(report) + _recipe_lines(report))


def verify_config(row: dict[str, Any], space: SearchSpace, recipe: SweepDesign) -> RunConfig:
    """The run that trains a planned row: its shape and steps in the space's architecture, everything else
    (optimizer, schedule and its warm-up fraction, data) from the recipe the law was fitted under."""
    base = recipe.base
    model = dataclasses.replace(
        base.model,
        v=space.v,
        d=row["d"],
        n=row["n"],
        h=row["h"],
        w=row["w"],
        s=row["s"],
        dtype=space.dtype,
        activation=space.activation,
        norm=space.norm,
        tied_embeddings=space.tied,
    )
    steps = int(row["tokens"] // (row["b"] * row["s"]))
    if steps < 1:
        raise UserError("the recommended configuration gets less than one step; raise the budget")
    # Host syncs about ten times a run, so the step time can be read between them (`steady_step_seconds`). The
    # learning rate and micro-batches are the plan's where its law chose them; the noise scale is not measured.
    train = dataclasses.replace(
        base.train,
        batch_size=row["b"],
        steps=steps,
        tokens=None,
        eval_every=0,
        warmup_steps=max(1, round(recipe.warmup_fraction * steps)),
        log_every=max(1, min(base.train.log_every, steps // 10)),
        lr=row.get("lr", base.train.lr),
        micro_batches=row.get("micro_batches", 1),
        noise_every=0,
    )
    return dataclasses.replace(base, model=model, train=train)


def steady_step_seconds(lines: list[dict[str, Any]], checkpoint_every: int) -> float | None:
    """Seconds per training step from a run's metrics, counting only the time between host syncs that holds
    nothing but steps: not the first interval (compilation), not one that ends in an evaluation, not one that
    follows a checkpoint save. Lines of one sync share its wall time, so intervals run between syncs. None
    when no interval is clean (too few syncs)."""
    syncs = [a for a, b in zip(lines, lines[1:], strict=False) if b["wall_seconds"] != a["wall_seconds"]]
    syncs += lines[-1:]
    clean = [
        (b["wall_seconds"] - a["wall_seconds"], b["step"] - a["step"])
        for a, b in zip(syncs, syncs[1:], strict=False)
        if "eval_loss" not in b and not (checkpoint_every and a["step"] % checkpoint_every == 0)
    ]
    if not clean:
        return None
    return sum(s for s, _ in clean) / sum(k for _, k in clean)


def verify(row: dict[str, Any], space: SearchSpace, recipe: SweepDesign, out: str | Path) -> dict[str, Any]:
    """Train the recommended configuration with the law's recipe and compare its loss and step time with the
    prediction. Beside the run's own final evaluation (its batch size and seed choose its validation tokens) the
    loss on one common sample (`evaluate_runs.COMMON_SAMPLE`), so plans at different batch sizes compare on the
    same tokens."""
    from smallest_loss.experiments.evaluate_runs import COMMON_SAMPLE, evaluate_run
    from smallest_loss.model.runs import RunDir
    from smallest_loss.model.train import train

    config = verify_config(row, space, recipe)
    m = config.model
    # One folder per configuration, so a rerun resumes this run and a new plan never reuses another's.
    lr = f"-lr{config.train.lr:.3g}" if "lr" in row else ""
    out = Path(out) / f"d{m.d}-n{m.n}-h{m.h}-w{m.w}-s{m.s}-b{config.train.batch_size}{lr}-steps{config.total_steps}"
    summary = train(config, out, resume=(out / "config.json").exists(), progress=True)
    per_step = steady_step_seconds(RunDir(out, config, {}).read_metrics(), config.train.checkpoint_every)
    result = dict(
        run=str(out),
        predicted_loss=row["loss"],
        actual_loss=summary["final_eval_loss"],
        predicted_step_seconds=row.get("step_seconds"),
        actual_step_seconds=per_step,
        steps=int(summary["steps"]),
        wall_seconds=summary["wall_seconds"],
        common_loss=evaluate_run(str(out), *COMMON_SAMPLE)[1],
        common_sequences=COMMON_SAMPLE[0] * COMMON_SAMPLE[1],
    )
    result["loss_error"] = result["actual_loss"] / result["predicted_loss"] - 1
    if result["predicted_step_seconds"] and per_step is not None:
        result["time_error"] = per_step / result["predicted_step_seconds"] - 1
    return result


def verify_line(v: dict[str, Any]) -> str:
    """The verification result in one line."""
    line = (
        f"verify: trained {v['steps']} steps in {v['run']}: loss {v['actual_loss']:.4f} vs predicted "
        f"{v['predicted_loss']:.4f} ({v['loss_error']:+.1%})"
    )
    if v["actual_step_seconds"] is not None:
        line += f"; step {v['actual_step_seconds'] * 1e3:.2f} ms"
    if "time_error" in v:
        line += f" vs predicted {v['predicted_step_seconds'] * 1e3:.2f} ms ({v['time_error']:+.1%})"
    if v.get("common_loss") is not None:
        line += f"; loss on the common validation sample ({v['common_sequences']:,} sequences) {v['common_loss']:.4f}"
    return line


def run_plan(
    budget: Budget, law_file: LawFile, inputs: PlanInputs, top: int, space_choice: str | None = None
) -> tuple[Plan, dict[str, Any]]:
    from smallest_loss.scaling.plan import make_plan

    plan = make_plan(budget, law_file, inputs, top)
    return plan, plan_report(plan, law_file, top, space_choice)


def write_outputs(plan: Plan, report: dict[str, Any], folder: str | Path) -> list[Path]:
    from smallest_loss.experiments.plots import plot_plan

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plan.json").write_text(json.dumps(report, indent=2) + "\n")
    (folder / "plan.md").write_text(format_report(report) + "\n")
    return [folder / "plan.json", folder / "plan.md", *plot_plan(plan, folder)]
