"""Calibration: time a grid of configurations, measure the noise floor, compare the step-time models, pick a profile.

A calibration folder holds `records.jsonl` (one timing record per configuration, appended as each is
finished), `partial.jsonl` (the rounds timed so far of unfinished configurations, so a killed calibration
resumes without re-timing them; removed when the grid is done), `device.json` (measured peak FLOP/s and
bandwidth), `noise.json` (the noise floor), `probes.jsonl` (short training runs: the wall-clock terms) and
`profile.json` (the best analytic model, for the planner); `smallest-loss calibrate` (experiments/calibrate.py)
adds the comparison table and plots. `calibrate_records` fills the same folder from external step timings
(timing/records.py) instead of measuring: its `records.jsonl` holds the file's rows and `device.json` the device's
rates from the device table or the user.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
from smallest_loss.configs.devices import find_device
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.grids import GridPoint, at_precision, get_grid
from smallest_loss.configs.schema import ModelConfig
from smallest_loss.model.runs import environment
from smallest_loss.timing.counts import Precision
from smallest_loss.timing.measure import (
    cache_bytes,
    chunk_size,
    finish,
    measure_bandwidth,
    measure_many,
    measure_peak_flops,
    prepare,
    read_records,
    record_config,
    time_round,
)
from smallest_loss.timing.models import (
    DEFAULT_STATISTIC,
    STATISTICS,
    ModelChoice,
    choice_held_out,
    compare_models,
    get_model,
    record_precision,
    shape_columns,
    with_working_set_ratio,
)
from smallest_loss.timing.probes import PROBES as PROBE_RUNS
from smallest_loss.timing.probes import fit_wall_clock, probe_runs
from smallest_loss.timing.profile import DeviceProfile, calibrated_ranges, profile_bits, save_profile
from smallest_loss.timing.records import external_row, read_timing_records, records_rates, write_rows
from smallest_loss.timing.retime import (
    floor_from_noise,
    machine_drift,
    noise_floor_of,
    noise_shift_and_spread,
    pick_anchors,
)
from tqdm.auto import tqdm

# ----------------------------------------------------------------------------------------------------
# Records on disk.

PROBES = "probes.jsonl"  # the probe runs' measurements (timing/probes.py)


def record_key(config: dict[str, Any], batch: int, dtype: str, devices: int = 1) -> str:
    """The identity of a measurement: resuming skips configurations whose key is already recorded."""
    return json.dumps(dict(config=config, batch=batch, dtype=dtype, devices=devices), sort_keys=True)


def measure_key(cfg: ModelConfig, b: int, devices: int = 1) -> str:
    """`record_key` of a configuration about to be measured."""
    return record_key(record_config(cfg), b, cfg.dtype, devices)


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and sync it to disk (after a line cut short by a kill, on a fresh line)."""
    fresh = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with path.open("a") as f:
        f.write(("\n" if fresh else "") + json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


@functools.cache
def measured_rates(device_kind: str, dtype: str) -> tuple[float, str, float]:
    """This device's peak matmul FLOP/s, the dtype it was measured in, and its bandwidth: measured once per process
    (a process that calibrates several folders of one device measures it once; about 3 s on 2 CPU cores)."""
    peak, measured_in = measure_peak_flops(dtype)
    return peak, measured_in, measure_bandwidth()


def device_rates(out: Path, dtype: str = "float32") -> dict[str, Any]:
    """This device's measured peak matmul FLOP/s (in the records' compute dtype) and bandwidth, and its cache
    size (CPU), measured once per calibration folder and dtype and kept in `device.json` (a folder of external
    records keeps the rates `calibrate_records` stored there)."""
    path = out / "device.json"
    kind = environment()["device_kind"]
    rates = json.loads(path.read_text()) if path.exists() else {}
    if rates.get("source") == "records":  # a device never measured here (calibrate --records): keep its rates
        return rates
    dtype = "bfloat16" if dtype == "float8" else dtype  # float8 steps: the peak of bfloat16 matmuls (the fit scales it)
    if rates.get("device_kind") != kind or rates.get("peak_dtype", "float32") != dtype:
        peak, measured_in, bandwidth = measured_rates(kind, dtype)  # measured_in: float32 where the backend lacks dtype
        rates = dict(device_kind=kind, peak_flops=peak, peak_dtype=measured_in, bandwidth=bandwidth)
    if "cache_bytes" not in rates:
        rates["cache_bytes"] = cache_bytes()
    if "llc_bytes" not in rates:
        rates["llc_bytes"] = cache_bytes(3)
    path.write_text(json.dumps(rates, indent=2) + "\n")
    return rates


# ----------------------------------------------------------------------------------------------------
# Timing a grid.


def check_devices(grid: str, points: tuple[GridPoint, ...]) -> None:
    """Refuse a grid that needs more devices than JAX sees (on CPU, say how to simulate them)."""
    needed = max(point.devices for point in points)
    if needed > jax.device_count():
        hint = (
            f"; on CPU simulate them: XLA_FLAGS=--xla_force_host_platform_device_count={needed}"
            if jax.default_backend() == "cpu"
            else ""
        )
        raise UserError(f"grid {grid} needs {needed} devices, {jax.device_count()} present{hint}")


def time_chunk(
    part: list[GridPoint], out: Path, rounds: int, per_round: tuple[float, int], bar: Any, counts: dict[str, int]
) -> None:
    """Compile a chunk, time it in interleaved rounds (each round saved to partial.jsonl), record it."""
    partial: dict[str, list[list[float]]] = {}
    for line in read_records(out / "partial.jsonl"):
        partial.setdefault(line["key"], []).append(line["times"])
    items = []
    for point in part:
        item = prepare(*point)
        item.rounds = partial.get(measure_key(*point), [])[:rounds] if item.live else []
        items.append((measure_key(*point), item))
        bar.update(1)
    for r in range(rounds):
        for key, item in items:
            if len(item.rounds) <= r and time_round(item, per_round[0], per_round[1]):
                append_record(out / "partial.jsonl", dict(key=key, times=item.rounds[-1]))
        bar.update(len(items))
    for _, item in items:
        record = finish(item)
        append_record(out / "records.jsonl", record)
        counts[record["status"]] = counts.get(record["status"], 0) + 1


def round_share(min_seconds: float, repeats: int, rounds: int) -> tuple[float, int]:
    """A configuration's seconds and least repeats in each of `rounds` rounds (`min_seconds`, `repeats` in all)."""
    return min_seconds / rounds, math.ceil(repeats / rounds)


def default_rounds() -> int:
    """Interleaved rounds per configuration: 10 on CPU (a shared machine's slow spells then touch a few
    rounds of every configuration), 3 on accelerators (one configuration at a time: `chunk_size`)."""
    return 3 if jax.default_backend() != "cpu" else 10


def run_grid(
    grid: str,
    out: Path,
    progress: bool = True,
    min_seconds: float = 1.0,
    rounds: int | None = None,
    repeats: int = 20,
    chunk: int | None = None,
    limit: int | None = None,
    precision: tuple[str, ...] = (),
) -> dict[str, int]:
    """Measure every configuration of `grid` not yet in `out/records.jsonl`; returns counts by status.

    `precision`: `--set model.dtype=...` / `model.bits_*=...` assignments that every configuration runs at
    (`configs.grids.at_precision`; none: the grid's own dtype).

    Each configuration is timed for about `min_seconds` and at least `repeats` repeats, spread over
    `rounds` rounds (default `default_rounds`) that cycle through a chunk of configurations (default
    `timing.measure.chunk_size`: the whole grid on CPU, one configuration on accelerators). Finished
    records are appended at once and each timed round is saved, so a killed calibration loses at most one
    round of one configuration. `limit` measures at most that many new configurations (a long
    calibration split over sessions).
    """
    points = at_precision(get_grid(grid), precision)
    check_devices(grid, points)
    out.mkdir(parents=True, exist_ok=True)
    done = {
        record_key(r["config"], r["batch"], r["dtype"], r.get("device_count", 1))
        for r in read_records(out / "records.jsonl")
    }
    todo = [point for point in points if measure_key(*point) not in done]
    counts = {"skipped": len(points) - len(todo)}
    todo = todo[:limit]
    rounds = rounds or default_rounds()
    chunk = chunk or chunk_size(len(todo))
    per_round = round_share(min_seconds, repeats, rounds)
    with tqdm(
        total=len(todo) * (rounds + 1),
        disable=not progress,
        unit="round",
        dynamic_ncols=True,
        desc=f"{grid}: compile, then {rounds} rounds",
    ) as bar:
        for start in range(0, len(todo), chunk):
            time_chunk(todo[start : start + chunk], out, rounds, per_round, bar, counts)
    (out / "partial.jsonl").unlink(missing_ok=True)
    return counts


# ----------------------------------------------------------------------------------------------------
# The noise floor.


def _noise_summary(diffs: list[float], statistic: str) -> dict[str, Any]:
    """`noise.json`'s fields: the relative differences of the configurations measured again, summarised; `shift`
    and `spread` split them into the machine's drift, common to all, and the noise (`noise_shift_and_spread`), and
    `floor` is the noise floor (`floor_from_noise`)."""
    shift, spread = noise_shift_and_spread(diffs)
    noise = dict(
        configurations=len(diffs),
        statistic=statistic,
        median_abs=float(np.median(np.abs(diffs))),
        mean_abs=float(np.mean(np.abs(diffs))),
        max_abs=float(np.max(np.abs(diffs))),
        shift=shift,
        spread=spread,
        diffs=diffs,
    )
    return dict(noise, floor=floor_from_noise(noise))


def noise_floor(
    out: Path,
    k: int = 8,
    min_seconds: float = 1.0,
    seed: int = 0,
    statistic: str = DEFAULT_STATISTIC,
    repeats: int = 20,
) -> dict[str, Any]:
    """Re-measure k recorded configurations and compare: no model can be checked more finely than this.

    They are timed as the grid was (its rounds, `min_seconds`, `repeats`), together on CPU and one at a
    time on accelerators (compiled, timed, freed: `timing.measure.chunk_size`). Written once to
    `noise.json` (a rerun reuses it).
    """
    path = out / "noise.json"
    if path.exists():
        return json.loads(path.read_text())
    ok = [r for r in read_records(out / "records.jsonl") if r.get("status") == "ok"]
    if not ok:
        raise UserError(f"{out} holds no successful timing records to measure again")
    picks = np.random.default_rng(seed).choice(len(ok), size=min(k, len(ok)), replace=False)
    points = [
        (ModelConfig(**{**ok[i]["config"], "dtype": ok[i]["dtype"]}), ok[i]["batch"], ok[i].get("device_count", 1))
        for i in picks
    ]
    rounds = int(np.median([ok[i].get("rounds", default_rounds()) for i in picks]))
    again = measure_many(points, min_seconds=min_seconds, rounds=rounds, min_repeats=repeats)
    key = STATISTICS[statistic]
    diffs = [
        a.get(key, a.get("step_seconds")) / ok[i].get(key, ok[i]["step_seconds"]) - 1
        for a, i in zip(again, picks, strict=True)
        if a.get("status") == "ok"
    ]
    if not diffs:
        raise UserError(
            f"none of the {len(picks)} configurations measured again succeeded: "
            + "; ".join(sorted({a.get("message", a["status"]) for a in again}))
        )
    noise = _noise_summary(diffs, statistic)
    path.write_text(json.dumps(noise, indent=2) + "\n")
    return noise


# ----------------------------------------------------------------------------------------------------
# Fitting and comparing the step-time models.


@dataclass(frozen=True)
class Calibration:
    """The step-time models compared on a calibration's records, and the profile of the best analytic one."""

    records: list[dict[str, Any]]  # every record, failed ones included
    rates: dict[str, Any]  # the device's peak FLOP/s, bandwidth and cache size (device.json)
    results: list[dict[str, Any]]  # timing.models.compare_models's, best held-out mean error first
    profile: DeviceProfile  # the best model that predicts from hyperparameters alone
    statistic: str  # the measured step time the models were fitted to (timing.models.STATISTICS)
    # The choice of the profile's model among the analytic ones, itself held out (timing.models.choice_held_out):
    # the profile's own held-out error is lower by the choice. None where the records are too few for it.
    choice: ModelChoice | None = None

    @property
    def ok(self) -> list[dict[str, Any]]:
        """The records of configurations that were timed."""
        return [r for r in self.records if r.get("status") == "ok"]

    @property
    def failed(self) -> int:
        """How many records are of configurations that failed (out of memory, compile errors)."""
        return len(self.records) - len(self.ok)

    @property
    def missing_xla(self) -> int:
        """How many `ok` records give no XLA counts (external timings): the models on them were skipped."""
        return sum("xla" not in r for r in self.ok)


def best_profile(
    records: list[dict[str, Any]],
    rates: dict[str, Any],
    results: list[dict[str, Any]],
    price_per_hour: float | None = None,
    statistic: str = DEFAULT_STATISTIC,
) -> DeviceProfile:
    """The profile of the best analytic model of `compare_models` results, with every analytic model's
    coefficients as alternatives; the price and memory default to the device table's."""
    ok = [r for r in records if r.get("status") == "ok"]
    best = next(r for r in results if r.get("analytic") and "held_out" in r)
    device = find_device(rates["device_kind"])
    return DeviceProfile(
        device_kind=rates["device_kind"],
        model=best["id"],
        coefficients=tuple(best["coefficients"]),
        peak_flops=rates["peak_flops"],
        bandwidth=rates["bandwidth"],
        cache_bytes=rates.get("cache_bytes"),
        llc_bytes=rates.get("llc_bytes"),
        working_set_ratio=rates.get("working_set_ratio"),
        llc_cliff=next((r["tuned"]["llc_cliff"] for r in results if "llc_cliff" in r.get("tuned", {})), None),
        held_out=best["held_out"],
        price_per_hour=price_per_hour if price_per_hour is not None else (device.price_per_hour if device else None),
        memory_bytes=device.memory_bytes if device else None,
        dtype=ok[0].get("dtype", "float32"),
        bits=profile_bits(record_precision(ok[0])),
        records=len(ok),
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        statistic=statistic,
        alternatives={r["id"]: r["coefficients"] for r in results if r.get("analytic") and "coefficients" in r},
        anchors=pick_anchors(records, statistic),
        ranges=calibrated_ranges(records),
        drift=machine_drift(ok),
    )


def fit_records(
    records: list[dict[str, Any]],
    rates: dict[str, Any],
    price_per_hour: float | None = None,
    statistic: str = DEFAULT_STATISTIC,
) -> Calibration:
    """Cross-validate every step-time model on the records and choose the profile's. Models on XLA counts
    that records lack are skipped (never fed zeros) and say so in their `error`."""
    ok = [r for r in records if r.get("status") == "ok"]
    # The working set's measured ratio, read once: the models are compared and the profile kept with it.
    cols = shape_columns(ok, statistic) if ok else None
    rates = with_working_set_ratio(rates, cols) if cols is not None else rates
    results = compare_models(records, rates, statistic=statistic)
    if any("xla" not in r for r in ok):
        for r in results:
            if "held_out" not in r and not get_model(r["id"]).analytic:
                r["error"] = "skipped: no xla_flops/xla_bytes"
    profile = best_profile(records, rates, results, price_per_hour, statistic)
    analytic = [get_model(r["id"]) for r in results if r.get("analytic") and "held_out" in r]
    choice = choice_held_out(analytic, cols, rates) if cols is not None else None
    return Calibration(records, rates, results, profile, statistic, choice)


def fit_folder(out: Path, price_per_hour: float | None = None, statistic: str = DEFAULT_STATISTIC) -> Calibration:
    """Fit the records of a calibration folder (in one dtype) at its device's rates; writes `profile.json`."""
    records = read_records(out / "records.jsonl")
    if not records:
        raise UserError(f"{out} holds no timing records; run smallest-loss calibrate --grid NAME --out {out}")
    precisions = sorted({record_precision(r) for r in records if r.get("status") == "ok"})
    if len(precisions) > 1:
        raise UserError(
            f"{out} holds records in several dtypes ({', '.join(precisions)}); a profile is for one dtype and its "
            "bits: calibrate each in its own folder"
        )
    rates = device_rates(out, Precision.parse(precisions[0]).dtype if precisions else "float32")
    calibration = with_wall_clock(fit_records(records, rates, price_per_hour, statistic), read_records(out / PROBES))
    floor = noise_floor_of(out)  # the machine's noise floor: re-timing tells drift from noise by it
    # Calibrated when the grid's last record was written (a refit of the same records keeps it: the profile prices the
    # machine's speed of that hour, `scaling.preflight.profile_weight`).
    measured = datetime.datetime.fromtimestamp((out / "records.jsonl").stat().st_mtime, datetime.UTC)
    changes: dict[str, Any] = dict(created=measured.isoformat(timespec="seconds"))
    changes |= dict(noise_floor=floor) if floor is not None else {}
    calibration = dataclasses.replace(calibration, profile=dataclasses.replace(calibration.profile, **changes))
    save_profile(out / "profile.json", calibration.profile)
    return calibration


def with_wall_clock(calibration: Calibration, probes: list[dict[str, Any]]) -> Calibration:
    """The calibration with its profile's wall-clock terms fitted to the probe runs (timing/probes.py); each probe's
    loop step is predicted from the profile model's held-out prediction of its compiled step. Unchanged without
    probes."""
    best = next((r for r in calibration.results if r["id"] == calibration.profile.model and "predicted" in r), None)
    if not probes or best is None:
        return calibration
    ok = calibration.ok
    keys = [record_key(r["config"], r["batch"], r["dtype"], r.get("device_count", 1)) for r in ok]
    held_out = [
        float(best["predicted"][keys.index(record_key(p["config"], p["batch"], p["dtype"]))])
        if record_key(p["config"], p["batch"], p["dtype"]) in keys
        else p["step_seconds"]
        for p in probes
    ]
    clock = fit_wall_clock(probes, calibration.records, held_out)
    if clock is None:
        return calibration
    profile = dataclasses.replace(calibration.profile, wall_clock=clock.to_dict())
    return dataclasses.replace(calibration, profile=profile)


def calibrate_records(
    path: str | Path,
    out: Path,
    device: str | None = None,
    peak_flops: float | None = None,
    bandwidth: float | None = None,
    price_per_hour: float | None = None,
) -> Calibration:
    """A calibration from external step timings (timing/records.py), in `out` with the records
    (`records.jsonl`), the device's rates (`device.json`) and the profile. The file is checked whole and the
    models compared before anything is written: a refused file leaves `out` as it was."""
    if any(r.get("source") != "records" for r in read_records(out / "records.jsonl")):
        raise UserError(f"{out} holds measured timing records; give the external records their own --out folder")
    records = read_timing_records(path, device)
    rates = dict(
        records_rates(records[0]["device_kind"], records[0]["dtype"], peak_flops, bandwidth), records_file=str(path)
    )
    calibration = fit_records(records, rates, price_per_hour)
    out.mkdir(parents=True, exist_ok=True)
    (out / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (out / "device.json").write_text(json.dumps(rates, indent=2) + "\n")
    save_profile(out / "profile.json", calibration.profile)
    return calibration


def export_records(out: Path, path: str | Path, statistic: str = DEFAULT_STATISTIC) -> int:
    """Write the `ok` records of a calibration folder as an external records file (timing/records.py); returns
    how many rows were written."""
    ok = [r for r in read_records(out / "records.jsonl") if r.get("status") == "ok"]
    write_rows(path, [external_row(r, STATISTICS[statistic]) for r in ok])
    return len(ok)


def calibrate(
    grid: str,
    out: str | Path,
    min_seconds: float = 1.0,
    repeats: int = 20,
    noise_check: bool = True,
    price_per_hour: float | None = None,
    progress: bool = True,
    probes: int = PROBE_RUNS,
    fit: bool = True,
) -> Calibration | None:
    """Time `grid` on this device into `out` (resuming what is there), measure the noise floor, make `probes` short
    training runs (timing/probes.py: the loop's host cost and a run's other wall-clock terms), and fit and compare
    the step-time models: what `smallest-loss calibrate --grid` does; the profile is `out/profile.json`. With
    `fit=False` it measures and stops, returning None (`calibrate --measure-only`); called again with `fit=True`,
    it reuses what was measured and fits."""
    out = Path(out)
    run_grid(grid, out, progress=progress, min_seconds=min_seconds, repeats=repeats)
    if noise_check:
        noise_floor(out, min_seconds=min_seconds, repeats=repeats)
    probe_runs(out, read_records(out / "records.jsonl"), probes)
    return fit_folder(out, price_per_hour) if fit else None
