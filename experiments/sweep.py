"""Training sweeps: every run of a design in its own run folder under one output folder.

Rerunning skips finished runs and resumes interrupted ones from their last checkpoint. `--shard i/k`
runs a deterministic 1/k of the design (runs sorted by name, every k-th from i; a cool-down parent and its
branches count as one), so k workers can share one output folder; `sweep.json` lists the whole design for
whoever reads the results.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smallest_loss.configs.designs import Shape, SweepDesign
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.overrides import apply_overrides
from smallest_loss.configs.schema import ModelConfig, RunConfig
from smallest_loss.model.params import count_params
from smallest_loss.model.runs import RunDir, RunExists, RunLocked, make_folder
from smallest_loss.model.train import RunDiverged, train
from tqdm.auto import tqdm


@dataclass(frozen=True)
class PlannedRun:
    name: str
    budget: float
    shape: Shape
    config: RunConfig
    branch: tuple[str, int] | None = None  # a cool-down branch: (parent run's name, step it starts from)
    keep_checkpoints: tuple[int, ...] = ()  # a cool-down parent: its branch points
    variant: str = ""  # the design's variant label (its overrides already in `config`)

    def describe(self) -> dict[str, Any]:
        tokens = self.config.total_steps * self.config.train.batch_size * self.config.model.s
        row = dict(
            name=self.name,
            budget=self.budget,
            d=self.shape[0],
            n=self.shape[1],
            h=self.shape[2],
            params=count_params(self.config.model).total,
            steps=self.config.total_steps,
            tokens=tokens,
            batch_size=self.config.train.batch_size,
            lr=self.config.train.lr,
        )
        if self.branch:
            row.update(parent=self.branch[0], branch_step=self.branch[1])
        if self.variant:
            row.update(variant=self.variant)
        return row


def _budget_steps(design: SweepDesign, model: ModelConfig, budget: float, batch: int, step_seconds: Any) -> int:
    tokens_per_step = batch * model.s
    if design.kind == "isotime":
        return math.floor(budget / step_seconds(model, batch))
    if design.flops == "exact":
        from smallest_loss.timing.counts import counts_for

        return math.floor(budget / counts_for(model, batch)["flops"])
    return math.floor(budget / (6 * count_params(model).total * tokens_per_step))


def _run_name(design: SweepDesign, budget: float, shape: Shape, batch: int, lr: float) -> str:
    unit = "s" if design.kind == "isotime" else ""
    name = f"{design.kind}-{budget:.2g}{unit}-d{shape[0]}-n{shape[1]}-h{shape[2]}".replace("+", "")
    return name + (f"-b{batch}-lr{lr:.3g}" if design.varies_recipe else "")


def plan_runs(design: SweepDesign, step_seconds: Any = None, lr_for: Any = None) -> list[PlannedRun]:
    """All runs of a design, sorted by name. IsoTime designs need `step_seconds(model_cfg, b)`. `lr_for(model_cfg,
    b, tokens)`, when given, sets each run's learning rate (a fitted learning-rate law, `sweep --lr-from`)."""
    if design.kind == "isotime" and step_seconds is None:
        raise UserError(f"design {design.name} is an IsoTime design: pass --profile PROFILE.json for step times")
    runs = []
    for i, (budget, shapes) in enumerate(zip(design.budgets, design.shapes, strict=True)):
        for shape in shapes:
            model = design.model(shape)
            for batch, lr in design.recipes:
                steps = _budget_steps(design, model, budget, batch, step_seconds)
                if steps < design.min_steps:
                    continue  # the budget buys this shape too few steps to train meaningfully
                lr = lr_for(model, batch, steps * batch * model.s) if lr_for else lr
                base = design.base.train  # micro-batches only where they divide this batch
                micro = base.micro_batches if batch % base.micro_batches == 0 else 1
                train_cfg = dataclasses.replace(
                    base,
                    steps=steps,
                    tokens=None,
                    batch_size=batch,
                    lr=lr,
                    micro_batches=micro,
                    noise_every=base.noise_every * (micro > 1),
                )
                config = dataclasses.replace(design.base, model=model, train=train_cfg)
                name = _run_name(design, budget, shape, batch, lr)
                if design.kind == "cooldown":
                    runs += _cooldown_runs(design, PlannedRun(name, budget, shape, config))
                    continue
                warmup = max(1, round(design.warmup_fraction * steps))
                for seed in design.seeds(i):  # a replicate beyond the first: its seed in its name
                    train = dataclasses.replace(train_cfg, warmup_steps=warmup, seed=seed)
                    named = name if seed == base.seed else f"{name}-seed{seed}"
                    run = PlannedRun(named, budget, shape, dataclasses.replace(config, train=train))
                    runs += _variant_runs(design, run)
    return sorted(runs, key=lambda r: r.name)


def _variant_runs(design: SweepDesign, run: PlannedRun) -> list[PlannedRun]:
    """The run once per design variant, its overrides applied and its label in its name (the run itself when the
    design has no variants)."""
    if not design.variants:
        return [run]
    return [dataclasses.replace(run, name=f"{run.name}-{label}", config=apply_overrides(run.config, overrides),
                                variant=label) for label, overrides in design.variants]  # fmt: skip


def _cooldown_runs(design: SweepDesign, full: PlannedRun) -> list[PlannedRun]:
    """A constant-rate parent and its cool-down branches (Hagele et al., 2024). Branch i ends at T_i =
    branch_fractions[i] of the budget's steps, its last cooldown_fraction * T_i steps decaying, so it is a run of
    T_i steps (budget fraction * C at 6ND) and starts from the parent's checkpoint at T_i minus its cool-down.
    Parent and branches share one warmup, `warmup_fraction` of the shortest branch; the parent runs to the
    latest branch point."""
    cfg = full.config.train
    ends = sorted({math.floor(f * cfg.steps + 1e-9) for f in design.branch_fractions})
    ends = [T for T in ends if T >= design.min_steps]
    if not ends:
        return []
    warmup = max(1, round(design.warmup_fraction * ends[0]))
    branches = []
    for T in ends:
        cool = max(round(design.cooldown_fraction * T), 1)
        train_cfg = dataclasses.replace(
            cfg, steps=T, warmup_steps=warmup, schedule="wsd", decay=design.decay, cooldown_fraction=cool / T
        )
        branches.append(
            PlannedRun(
                f"{full.name}-to{T}",
                full.budget * T / cfg.steps,
                full.shape,
                dataclasses.replace(full.config, train=train_cfg),
                (full.name, T - cool),
            )
        )
    points = tuple(sorted({b.branch[1] for b in branches}))
    parent_cfg = dataclasses.replace(cfg, steps=points[-1], warmup_steps=warmup, schedule="constant")
    parent = PlannedRun(
        full.name, full.budget, full.shape, dataclasses.replace(full.config, train=parent_cfg), keep_checkpoints=points
    )
    return [parent, *branches]


def parse_shard(text: str) -> tuple[int, int]:
    """'i/k' -> (i, k) with 0 <= i < k."""
    try:
        i, k = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r}: expected i/k, for example 0/4") from None
    if not 0 <= i < k:
        raise UserError(f"--shard {text!r}: need 0 <= i < k")
    return i, k


def _write_manifest(out: Path, design: SweepDesign, runs: list[PlannedRun]) -> None:
    manifest = dict(design=design.name, kind=design.kind, flops=design.flops, runs=[r.describe() for r in runs])
    path = out / "sweep.json"
    if path.exists() and json.loads(path.read_text()).get("design") != design.name:
        raise UserError(f"{out} holds a sweep of another design; choose another --out")
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # several shard workers may write it at once
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(path)


def _run_one(run: PlannedRun, folder: Path) -> str:
    summary = RunDir.open(folder).read_summary() if (folder / "config.json").exists() else None
    if summary and summary["status"] in ("completed", "diverged"):
        return "skipped"
    try:
        if (folder / "config.json").exists():
            train(None, folder, resume=True, progress=False)
            return "resumed"
        branch = (folder.parent / run.branch[0], run.branch[1]) if run.branch else None
        train(run.config, folder, progress=False, branch=branch, keep_checkpoints=run.keep_checkpoints)
        return "trained"
    except RunDiverged:
        return "diverged"
    except RunLocked:
        return "held by another worker"  # a worker running it now; this one takes the next run
    except RunExists:
        return _run_one(run, folder)  # another worker created it (and finished) since this one looked
    except UserError as err:
        if not run.branch:
            raise
        tqdm.write(f"warning: {err}")  # a parent that diverged or is missing: its branches cannot start
        return "refused"


def shard_runs(runs: list[PlannedRun], shard: tuple[int, int]) -> list[PlannedRun]:
    """Shard i of k: every k-th run from i (runs sorted by name), a cool-down parent and its branches as one
    unit, so that a branch's parent is always trained by the same worker, before it."""
    units: dict[str, list[PlannedRun]] = {}
    for run in runs:
        units.setdefault(run.branch[0] if run.branch else run.name, []).append(run)
    return [run for unit in list(units.values())[shard[0] :: shard[1]] for run in unit]


def run_sweep(
    design: SweepDesign,
    out: str | Path,
    shard: tuple[int, int] = (0, 1),
    step_seconds: Any = None,
    progress: bool = True,
    lr_for: Any = None,
) -> dict[str, int]:
    """Train this shard's runs of `design` under `out`; returns how many runs were trained, skipped, ..."""
    runs = plan_runs(design, step_seconds, lr_for)  # refused (an IsoTime design without a profile) before --out
    out = make_folder(out)
    _write_manifest(out, design, runs)
    mine = shard_runs(runs, shard)
    counts: dict[str, int] = {}
    with tqdm(mine, disable=not progress, unit="run", dynamic_ncols=True) as bar:
        for run in bar:
            bar.set_postfix_str(run.name)
            outcome = _run_one(run, out / run.name)
            counts[outcome] = counts.get(outcome, 0) + 1
    return counts
