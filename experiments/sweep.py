"""Training sweeps: every run of a design in its own run folder under one output folder.

Rerunning skips finished runs and resumes interrupted ones from their last checkpoint. `--shard i/k`
runs a deterministic 1/k of the design (runs sorted by name, every k-th from i), so k workers can share
one output folder; `sweep.json` lists the whole design for whoever reads the results.
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
from smallest_loss.configs.schema import ModelConfig, RunConfig
from smallest_loss.model.runs import RunDir, make_folder
from smallest_loss.model.train import RunDiverged, train
from smallest_loss.model.transformer import count_params
from tqdm.auto import tqdm


@dataclass(frozen=True)
class PlannedRun:
    name: str
    budget: float
    shape: Shape
    config: RunConfig

    def describe(self) -> dict[str, Any]:
        tokens = self.config.total_steps * self.config.train.batch_size * self.config.model.s
        return dict(name=self.name, budget=self.budget, d=self.shape[0], n=self.shape[1], h=self.shape[2],
                    params=count_params(self.config.model).total, steps=self.config.total_steps, tokens=tokens,
                    batch_size=self.config.train.batch_size, lr=self.config.train.lr)


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


def plan_runs(design: SweepDesign, step_seconds: Any = None) -> list[PlannedRun]:
    """All runs of a design, sorted by name. IsoTime designs need `step_seconds(model_cfg, b)`."""
    if design.kind == "isotime" and step_seconds is None:
        raise UserError(f"design {design.name} is an IsoTime design: pass --profile PROFILE.json for step times")
    runs = []
    for budget, shapes in zip(design.budgets, design.shapes, strict=True):
        for shape in shapes:
            model = design.model(shape)
            for batch, lr in design.recipes:
                steps = _budget_steps(design, model, budget, batch, step_seconds)
                if steps < design.min_steps:
                    continue  # the budget buys this shape too few steps to train meaningfully
                warmup = max(1, round(design.warmup_fraction * steps))
                base = design.base.train  # micro-batches only where they divide this batch
                micro = base.micro_batches if batch % base.micro_batches == 0 else 1
                train_cfg = dataclasses.replace(base, steps=steps, tokens=None, warmup_steps=warmup, batch_size=batch,
                                                lr=lr, micro_batches=micro, noise_every=base.noise_every * (micro > 1))
                config = dataclasses.replace(design.base, model=model, train=train_cfg)
                runs.append(PlannedRun(_run_name(design, budget, shape, batch, lr), budget, shape, config))
    return sorted(runs, key=lambda r: r.name)


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
        train(run.config, folder, progress=False)
        return "trained"
    except RunDiverged:
        return "diverged"


def run_sweep(design: SweepDesign, out: str | Path, shard: tuple[int, int] = (0, 1), step_seconds: Any = None,
              progress: bool = True) -> dict[str, int]:
    """Train this shard's runs of `design` under `out`; returns how many runs were trained, skipped, ..."""
    out = make_folder(out)
    runs = plan_runs(design, step_seconds)
    _write_manifest(out, design, runs)
    mine = runs[shard[0]::shard[1]]
    counts: dict[str, int] = {}
    with tqdm(mine, disable=not progress, unit="run", dynamic_ncols=True) as bar:
        for run in bar:
            bar.set_postfix_str(run.name)
            outcome = _run_one(run, out / run.name)
            counts[outcome] = counts.get(outcome, 0) + 1
    return counts
