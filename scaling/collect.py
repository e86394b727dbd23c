"""Fit points from run folders: exact parameter count N, tokens seen D, final evaluation loss.

A path may be one run folder or a sweep folder (whose sub-folders are runs, with a `sweep.json` that
gives each run's FLOP budget). Runs that diverged or did not finish are left out and reported. Replicates, runs
whose configurations differ in their seed alone (a design's `replicates`), are one record: their geometric mean loss
(the fit is in log loss), named after the first, with the count in `replicates`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.model.noise import loss_windows
from smallest_loss.model.params import count_params
from smallest_loss.model.runs import RunDir
from smallest_loss.scaling.points import FitPoints
from smallest_loss.scaling.recipe import RecipeRun


@dataclass(frozen=True)
class RunRecord:
    """One finished run of a sweep: its size, tokens, final loss, budget, shape and train-loss curve."""

    name: str
    N: int  # exact parameter count (all parameters, embeddings included)
    D: int  # tokens seen
    loss: float  # final evaluation loss
    budget: float  # the design's budget (FLOPs or seconds); 6ND when the run is not from a sweep
    d: int
    n: int
    curve: tuple[tuple[int, float], ...]  # (tokens, train loss) along the run, for learning-curve fits
    replicates: int = 1  # runs of this configuration with other seeds whose mean `loss` is (`merge_replicates`)
    configuration: str = ""  # the run's configuration less its seed (JSON): what replicates share


def run_folders(path: Path) -> list[Path]:
    """The run folders at `path`: itself when it is one, else the runs inside it."""
    if (path / "config.json").is_file():
        return [path]
    if path.is_dir():
        found = sorted(p.parent for p in path.glob("*/config.json"))
        if found:
            return found
    raise UserError(f"{path} is neither a run folder nor a folder of runs (no config.json found)")


def sweep_budgets(folder: Path) -> dict[str, float]:
    """Each run's budget from the sweep manifest next to its folder (sweep.json); empty without one."""
    manifest = folder.parent / "sweep.json"
    if not manifest.is_file():
        return {}
    return {r["name"]: float(r["budget"]) for r in json.loads(manifest.read_text())["runs"]}


def _record(folder: Path) -> RunRecord | str:
    """The run's record, or why it is left out."""
    run = RunDir.open(folder)
    summary = run.read_summary()
    if not summary or summary["status"] != "completed" or summary.get("final_eval_loss") is None:
        return f"{folder.name}: {run.status()}"
    if run.keep_checkpoints:  # its final loss is a constant rate's, not a cooled-down run's: its branches count
        return f"{folder.name}: a cool-down parent (constant learning rate); its branches are the points"
    cfg = run.config
    N, D = count_params(cfg.model).total, int(summary["tokens"])
    curve = tuple((line["tokens"], line["train_loss"]) for line in run.read_metrics())
    budget = sweep_budgets(folder).get(folder.name, 6.0 * N * D)
    unseeded = dataclasses.asdict(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=0)))
    loss = float(summary["final_eval_loss"])
    return RunRecord(folder.name, N, D, loss, budget, cfg.model.d, cfg.model.n, curve,
                     configuration=json.dumps(unseeded, sort_keys=True, default=str))  # fmt: skip


def collect_runs(paths: list[str | Path]) -> tuple[list[RunRecord], list[str]]:
    """Records of the finished runs under `paths`, and a line for each run left out."""
    records, left_out = [], []
    for path in paths:
        for folder in run_folders(Path(path)):
            result = _record(folder)
            (records if isinstance(result, RunRecord) else left_out).append(result)
    if not records:
        raise UserError(f"no finished runs under {', '.join(map(str, paths))}; left out: {'; '.join(left_out)}")
    return merge_replicates(records), left_out


def merge_replicates(records: list[RunRecord]) -> list[RunRecord]:
    """One record per configuration: replicates (the same configuration but the seed) as their geometric mean loss,
    named after the first by name (the base seed's: its name has no seed suffix), in the order they first appear."""
    groups: dict[str, list[RunRecord]] = {}
    for r in records:
        groups.setdefault(r.configuration or r.name, []).append(r)
    merged = []
    for group in groups.values():
        first = min(group, key=lambda r: r.name)
        loss = float(np.exp(np.mean(np.log([r.loss for r in group]))))
        merged.append(first if len(group) == 1 else dataclasses.replace(first, loss=loss, replicates=len(group)))
    return merged


def to_points(records: list[RunRecord]) -> FitPoints:
    """One point per run, each its own bootstrap group."""
    return FitPoints(
        N=np.array([r.N for r in records], float),
        D=np.array([r.D for r in records], float),
        loss=np.array([r.loss for r in records], float),
        group=np.arange(len(records)),
    )


def collect_recipe_runs(paths: list[str | Path]) -> tuple[list[RecipeRun], list[str]]:
    """The finished runs under `paths` (sweep folders or run folders), and a line for each one left out."""
    runs, left_out = [], []
    for path in paths:
        for folder in run_folders(Path(path)):
            run = RunDir.open(folder)
            summary = run.read_summary()
            if not summary or summary["status"] != "completed" or summary.get("final_eval_loss") is None:
                left_out.append(f"{folder.name}: {run.status()}")
                continue
            cfg, N = run.config, count_params(run.config.model).total
            noise = summary.get("noise_scale") or {}
            t = cfg.train
            schedule = dict(
                schedule=t.schedule,
                warmup_fraction=t.warmup_steps / max(cfg.total_steps, 1),
                min_lr_ratio=t.min_lr_ratio,
                weight_decay=t.weight_decay,
                beta1=t.beta1,
                beta2=t.beta2,
            )
            windows = ()
            if t.micro_batches > 1:
                windows = tuple(
                    loss_windows(run.read_metrics(), t.batch_size // t.micro_batches, t.batch_size, cfg.model.s)
                )
            runs.append(
                RecipeRun(
                    folder.name,
                    N,
                    int(summary["tokens"]),
                    sweep_budgets(folder).get(folder.name, 0.0),
                    t.batch_size,
                    cfg.model.s,
                    t.lr,
                    float(summary["final_eval_loss"]),
                    noise.get("b_simple_tokens"),
                    schedule,
                    windows,
                )
            )
    if not runs:
        raise UserError(f"no finished runs under {', '.join(map(str, paths))}")
    return runs, left_out
