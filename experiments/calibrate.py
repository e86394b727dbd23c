"""`smallest-loss measure` (one configuration) and `smallest-loss calibrate` (a grid, then model comparison).

A calibration folder holds `records.jsonl` (one timing record per configuration, appended as measured, so
an interrupted calibration resumes where it stopped), `device.json` (measured peak FLOP/s and bandwidth),
`comparison.md` (held-out errors of every step-time model), `profile.json` (the best analytic model, for
the planner) and one predicted-vs-measured plot per model.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from configs.devices import find_device
from configs.errors import UserError
from configs.grids import get_grid
from configs.schema import ModelConfig
from model.runs import environment
from timing.measure import measure_bandwidth, measure_many, measure_peak_flops
from timing.models import compare_models
from timing.profile import DeviceProfile, save_profile


def record_key(config: dict[str, Any], batch: int, dtype: str, devices: int = 1) -> str:
    return json.dumps(dict(config=config, batch=batch, dtype=dtype, devices=devices), sort_keys=True)


def read_records(path: Path) -> list[dict[str, Any]]:
    """Timing records of a calibration folder; a line cut short by a crash is dropped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _append(path: Path, record: dict[str, Any]) -> None:
    # A line cut short by a kill has no newline: start on a fresh line so this record stays readable.
    fresh = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with path.open("a") as f:
        f.write(("\n" if fresh else "") + json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def device_rates(out: Path) -> dict[str, float]:
    """Measured peak matmul FLOP/s and bandwidth of this device (measured once per calibration folder)."""
    path = out / "device.json"
    kind = environment()["device_kind"]
    if path.exists():
        rates = json.loads(path.read_text())
        if rates.get("device_kind") == kind:
            return rates
    rates = dict(device_kind=kind, peak_flops=measure_peak_flops(), bandwidth=measure_bandwidth())
    path.write_text(json.dumps(rates, indent=2) + "\n")
    return rates


def run_grid(grid: str, out: Path, progress: bool = True, min_seconds: float = 1.0, chunk: int | None = None
             ) -> dict[str, int]:
    """Measure every configuration of `grid` not yet in `out/records.jsonl`; returns counts by status.

    Configurations are timed in chunks (interleaved rounds within a chunk, see `measure_many`); records
    are appended after each chunk, so a killed calibration loses at most one chunk. Chunks are 8 on CPU
    and 1 on accelerators (where 8 large models would not fit in memory at once).
    """
    configs = get_grid(grid)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "records.jsonl"
    done = {record_key(r["config"], r["batch"], r["dtype"], r.get("device_count", 1)) for r in read_records(path)}
    todo = [point for point in configs if measure_key(*point) not in done]
    needed = max(point.devices for point in configs)
    if needed > jax.device_count():
        hint = (f"; on CPU simulate them: XLA_FLAGS=--xla_force_host_platform_device_count={needed}"
                if jax.default_backend() == "cpu" else "")
        raise UserError(f"grid {grid} needs {needed} devices, {jax.device_count()} present{hint}")
    counts = {"skipped": len(configs) - len(todo)}
    chunk = chunk or (8 if jax.default_backend() == "cpu" else 1)
    with tqdm(total=len(todo), disable=not progress, unit="config", dynamic_ncols=True) as bar:
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            bar.set_postfix_str(f"{len(part)} configurations, d={part[0].model.d}..")
            for record in measure_many(part, min_seconds=min_seconds):
                _append(path, record)
                counts[record["status"]] = counts.get(record["status"], 0) + 1
            bar.update(len(part))
    return counts


def measure_key(cfg: ModelConfig, b: int, devices: int = 1) -> str:
    config = dict(v=cfg.v, d=cfg.d, n=cfg.n, h=cfg.h, w=cfg.w, s=cfg.s, norm=cfg.norm, activation=cfg.activation,
                  tied_embeddings=cfg.tied_embeddings, attention=cfg.attention)
    return record_key(config, b, cfg.dtype, devices)


def noise_floor(out: Path, k: int = 8, min_seconds: float = 1.0, seed: int = 0) -> dict[str, Any]:
    """Re-measure k recorded configurations and compare: no model can be checked more finely than this.

    Written once to `noise.json` (a rerun reuses it)."""
    path = out / "noise.json"
    if path.exists():
        return json.loads(path.read_text())
    ok = [r for r in read_records(out / "records.jsonl") if r.get("status") == "ok"]
    picks = np.random.default_rng(seed).choice(len(ok), size=min(k, len(ok)), replace=False)
    points = [(ModelConfig(**{**ok[i]["config"], "dtype": ok[i]["dtype"]}), ok[i]["batch"],
               ok[i].get("device_count", 1)) for i in picks]
    again = measure_many(points, min_seconds=min_seconds)
    diffs = [a["step_seconds"] / ok[i]["step_seconds"] - 1 for a, i in zip(again, picks, strict=True)
             if a.get("status") == "ok"]
    noise = dict(configurations=len(diffs), median_abs=float(np.median(np.abs(diffs))),
                 mean_abs=float(np.mean(np.abs(diffs))), max_abs=float(np.max(np.abs(diffs))), diffs=diffs)
    path.write_text(json.dumps(noise, indent=2) + "\n")
    return noise


def comparison_table(results: list[dict[str, Any]]) -> str:
    lines = ["| model | held-out MAPE | held-out max APE | R^2 | Spearman | planner can use |",
             "|---|---|---|---|---|---|"]
    for r in results:
        if "held_out" not in r:
            lines.append(f"| {r['name']} | - | - | - | - | ({r.get('error')}) |")
            continue
        h = r["held_out"]
        lines.append(f"| {r['name']} | {h['mape']:.1%} | {h['max_ape']:.1%} | {h['r2']:.4f} | {h['spearman']:.4f} "
                     f"| {'yes' if r['analytic'] else 'no (needs XLA counts)'} |")
    return "\n".join(lines)


def _noise_line(out: Path) -> str:
    if not (out / "noise.json").exists():
        return ""
    noise = json.loads((out / "noise.json").read_text())
    return (f"\nNoise floor: {noise['configurations']} configurations measured again after the grid differ by "
            f"{noise['median_abs']:.1%} median, {noise['mean_abs']:.1%} mean and {noise['max_abs']:.1%} max "
            "(absolute); model errors below this cannot be told apart on this machine.\n")


def fit_and_report(out: Path, price_per_hour: float | None = None) -> dict[str, Any]:
    """Compare all step-time models on the folder's records; write the table, plots and the profile."""
    from experiments.plots_timing import plot_predictions
    from timing.models import shape_columns

    records = read_records(out / "records.jsonl")
    if not records:
        raise UserError(f"{out} holds no timing records; run smallest-loss calibrate --grid NAME --out {out}")
    rates = device_rates(out)
    results = compare_models(records, rates)
    ok = [r for r in records if r.get("status") == "ok"]
    best = next(r for r in results if r.get("analytic") and "held_out" in r)
    device = find_device(rates["device_kind"])
    profile = DeviceProfile(
        device_kind=rates["device_kind"], model=best["name"], coefficients=tuple(best["coefficients"]),
        peak_flops=rates["peak_flops"], bandwidth=rates["bandwidth"], held_out=best["held_out"],
        price_per_hour=price_per_hour if price_per_hour is not None else (device.price_per_hour if device else None),
        memory_bytes=device.memory_bytes if device else None, dtype=ok[0]["dtype"], records=len(ok),
        created=datetime.date.today().isoformat(),
        alternatives={r["name"]: r["coefficients"] for r in results if r.get("analytic") and "coefficients" in r},
    )
    save_profile(out / "profile.json", profile)
    table = comparison_table(results)
    failed = [r for r in records if r.get("status") != "ok"]
    (out / "comparison.md").write_text(
        f"# Step-time models on {rates['device_kind']}\n\n{len(ok)} configurations measured "
        f"({len(failed)} failed), {len({json.dumps(r['config']) for r in ok})} architectures; errors are on "
        f"architectures held out of the fit (5 folds).\nMeasured peak {rates['peak_flops']:.3g} FLOP/s, bandwidth "
        f"{rates['bandwidth']:.3g} B/s.\n\n{table}\n\nProfile model: **{best['name']}** (best analytic model).\n"
        + _noise_line(out))
    plots = plot_predictions(results, shape_columns(ok)["time"], out)
    return dict(results=results, profile=profile, table=table, plots=plots, failed=len(failed))
