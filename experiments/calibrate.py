"""`smallest-loss measure` (one configuration) and `smallest-loss calibrate` (a grid, then model comparison).

A calibration folder holds `records.jsonl` (one timing record per configuration, appended as each is
finished), `partial.jsonl` (the rounds timed so far of unfinished configurations, so a killed calibration
resumes without re-timing them; removed when the grid is done), `device.json` (measured peak FLOP/s and
bandwidth), `comparison.md` (held-out errors of every step-time model), `profile.json` (the best analytic
model, for the planner) and one predicted-vs-measured plot per model. `calibrate --records FILE` fills the
same folder from external step timings (timing/records.py) instead of measuring: its `records.jsonl` holds
the file's rows and `device.json` the device's rates from the device table or the user.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np
from smallest_loss.configs.devices import find_device
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.grids import SPECS, GridPoint, get_grid
from smallest_loss.configs.schema import ModelConfig
from smallest_loss.experiments.args import add_config_args, resolve_config
from smallest_loss.model.runs import environment
from smallest_loss.timing.measure import (
    cache_bytes,
    chunk_size,
    finish,
    measure_bandwidth,
    measure_many,
    measure_peak_flops,
    prepare,
    record_config,
    time_round,
)
from smallest_loss.timing.models import DEFAULT_STATISTIC, STATISTICS, compare_models, get_model, shape_columns
from smallest_loss.timing.profile import DeviceProfile, save_profile
from smallest_loss.timing.records import external_row, read_timing_records, records_rates, write_rows
from tqdm.auto import tqdm


def record_key(config: dict[str, Any], batch: int, dtype: str, devices: int = 1) -> str:
    """The identity of a measurement: resuming skips configurations whose key is already recorded."""
    return json.dumps(dict(config=config, batch=batch, dtype=dtype, devices=devices), sort_keys=True)


def measure_key(cfg: ModelConfig, b: int, devices: int = 1) -> str:
    """`record_key` of a configuration about to be measured."""
    return record_key(record_config(cfg), b, cfg.dtype, devices)


def read_records(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a file; a line cut short by a kill is dropped."""
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


def device_rates(out: Path, dtype: str = "float32") -> dict[str, Any]:
    """This device's measured peak matmul FLOP/s (in the records' compute dtype) and bandwidth, and its cache
    size (CPU), measured once per calibration folder and dtype and kept in `device.json` (a folder of external
    records keeps the rates `calibrate --records` stored there)."""
    path = out / "device.json"
    kind = environment()["device_kind"]
    rates = json.loads(path.read_text()) if path.exists() else {}
    if rates.get("source") == "records":  # a device never measured here (calibrate --records): keep its rates
        return rates
    if rates.get("device_kind") != kind or rates.get("peak_dtype", "float32") != dtype:
        peak, measured_in = measure_peak_flops(dtype)  # measured_in: float32 where the backend lacks dtype
        rates = dict(device_kind=kind, peak_flops=peak, peak_dtype=measured_in, bandwidth=measure_bandwidth())
    if "cache_bytes" not in rates:
        rates["cache_bytes"] = cache_bytes()
    path.write_text(json.dumps(rates, indent=2) + "\n")
    return rates


def _check_devices(grid: str, points: tuple[GridPoint, ...]) -> None:
    needed = max(point.devices for point in points)
    if needed > jax.device_count():
        hint = (
            f"; on CPU simulate them: XLA_FLAGS=--xla_force_host_platform_device_count={needed}"
            if jax.default_backend() == "cpu"
            else ""
        )
        raise UserError(f"grid {grid} needs {needed} devices, {jax.device_count()} present{hint}")


def _time_chunk(
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
                _append(out / "partial.jsonl", dict(key=key, times=item.rounds[-1]))
        bar.update(len(items))
    for _, item in items:
        record = finish(item)
        _append(out / "records.jsonl", record)
        counts[record["status"]] = counts.get(record["status"], 0) + 1


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
) -> dict[str, int]:
    """Measure every configuration of `grid` not yet in `out/records.jsonl`; returns counts by status.

    Each configuration is timed for about `min_seconds` and at least `repeats` repeats, spread over
    `rounds` rounds (default `default_rounds`) that cycle through a chunk of configurations (default
    `timing.measure.chunk_size`: the whole grid on CPU, one configuration on accelerators). Finished
    records are appended at once and each timed round is saved, so a killed calibration loses at most one
    round of one configuration. `limit` measures at most that many new configurations (a long
    calibration split over sessions).
    """
    points = get_grid(grid)
    _check_devices(grid, points)
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
    per_round = (min_seconds / rounds, math.ceil(repeats / rounds))
    with tqdm(
        total=len(todo) * (rounds + 1),
        disable=not progress,
        unit="round",
        dynamic_ncols=True,
        desc=f"{grid}: compile, then {rounds} rounds",
    ) as bar:
        for start in range(0, len(todo), chunk):
            _time_chunk(todo[start : start + chunk], out, rounds, per_round, bar, counts)
    (out / "partial.jsonl").unlink(missing_ok=True)
    return counts


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
    noise = dict(
        configurations=len(diffs),
        statistic=statistic,
        median_abs=float(np.median(np.abs(diffs))),
        mean_abs=float(np.mean(np.abs(diffs))),
        max_abs=float(np.max(np.abs(diffs))),
        diffs=diffs,
    )
    path.write_text(json.dumps(noise, indent=2) + "\n")
    return noise


def comparison_table(results: list[dict[str, Any]]) -> str:
    """The models side by side (Markdown): held-out errors, in-sample R^2 and Spearman, planner use."""
    lines = [
        "| model | held-out MAPE | held-out max APE | held-out R^2 | held-out Spearman | planner can use |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        if "held_out" not in r:
            lines.append(f"| {r['name']} | - | - | - | - | ({r.get('error')}) |")
            continue
        h = r["held_out"]
        lines.append(
            f"| {r['name']} | {h['mape']:.1%} | {h['max_ape']:.1%} | {h['r2']:.4f} | {h['spearman']:.4f} "
            f"| {'yes' if r['analytic'] else 'no (needs a compiled step: XLA counts)'} |"
        )
    return "\n".join(lines)


def _noise_line(out: Path) -> str:
    if not (out / "noise.json").exists():
        return ""
    noise = json.loads((out / "noise.json").read_text())
    return (
        f"\nNoise floor: {noise['configurations']} configurations measured again after the grid differ by "
        f"{noise['median_abs']:.1%} median, {noise['mean_abs']:.1%} mean and {noise['max_abs']:.1%} max "
        f"(absolute, {noise.get('statistic', 'median')}); model errors below this cannot be told apart.\n"
    )


def _about(records: list[dict[str, Any]], rates: dict[str, Any], statistic: str) -> list[str]:
    """The report's lines on where the times and the device's rates come from."""
    ok = [r for r in records if r.get("status") == "ok"]
    archs = len({json.dumps(r["config"], sort_keys=True) for r in ok})
    folds = (
        "Every error is on architectures held out of the fit (5 folds by architecture: all batch sizes "
        "and device counts of a shape are in the same fold)."
    )
    if rates.get("source") == "records":
        counts = sorted({r.get("device_count", 1) for r in ok})
        return [
            f"{len(ok)} rows of `{rates.get('records_file', 'a records file')}` (external timings, not measured "
            f"here), {archs} architectures, {', '.join(map(str, counts))} devices. Fitted to the step seconds "
            f"they give with non-negative least squares on relative errors. {folds}",
            f"Peak {rates['peak_flops']:.3g} FLOP/s, bandwidth {rates['bandwidth']:.3g} B/s ({rates['origin']}).",
        ]
    failed = [r for r in records if r.get("status") != "ok"]
    return [
        f"{len(ok)} configurations measured ({len(failed)} failed: "
        f"{', '.join(sorted({r['status'] for r in failed})) or 'none'}), {archs} architectures. Fitted to "
        f"`{STATISTICS[statistic]}` with non-negative least squares on relative errors. {folds}",
        f"Measured peak {rates['peak_flops']:.3g} FLOP/s ({rates.get('peak_dtype', 'float32')} matmuls), "
        f"bandwidth {rates['bandwidth']:.3g} B/s.",
    ]


def _notes(ok: list[dict[str, Any]], results: list[dict[str, Any]]) -> list[str]:
    """What the comparison left out or what the profile means, where the records call for it: models on XLA
    counts skipped where records lack them (never fed zeros), and what device counts mean for the planner."""
    notes = []
    lacking = sum("xla" not in r for r in ok)
    if lacking:
        for r in results:
            if "held_out" not in r and not get_model(r["name"]).analytic:
                r["error"] = "skipped: no xla_flops/xla_bytes"
        notes.append(f"Models on XLA counts skipped: {lacking} of {len(ok)} records give no xla_flops/xla_bytes.")
    counts = sorted({r.get("device_count", 1) for r in ok})
    if len(counts) > 1:
        notes.append(
            f"Records span {len(counts)} device counts: the data-parallel model (per-device batch b/devices, "
            "gradient all-reduce) is compared; the planner predicts steps on one device."
        )
    elif counts[0] > 1:
        notes.append(
            f"Every record ran on {counts[0]} devices: the profile predicts a step of global batch b on "
            f"{counts[0]} devices, and the planner's dollar budget prices one device-hour (pass "
            f"--price-per-hour {counts[0]} x the price)."
        )
    if any(r.get("parallel", {}).get("tp", 1) * r.get("parallel", {}).get("pp", 1) > 1 for r in ok):
        notes.append(
            "Records give tensor- or pipeline-parallel layouts: the model-parallel models are compared. The "
            "planner gives no layout, so a profile of theirs predicts its steps with tp = pp = 1, one "
            "micro-batch and no recomputation, at the rates fitted here."
        )
    return notes


def _report_text(
    out: Path,
    rates: dict[str, Any],
    records: list[dict[str, Any]],
    table: str,
    best: str,
    statistic: str,
    notes: list[str],
) -> str:
    lines = [
        f"# Step-time models on {rates['device_kind']}",
        "",
        *_about(records, rates, statistic),
        "",
        table,
        "",
        *notes,
        "" if notes else None,
        f"Profile model: **{best}** (the best model that predicts from hyperparameters alone). Models on "
        "XLA counts need the step compiled first, so the planner cannot use them.",
        _noise_line(out),
    ]
    return "\n".join(line for line in lines if line is not None)


def fit_and_report(
    out: Path, price_per_hour: float | None = None, statistic: str = DEFAULT_STATISTIC
) -> dict[str, Any]:
    """Compare all step-time models on the folder's records; write the table, plots and the profile."""
    records = read_records(out / "records.jsonl")
    if not records:
        raise UserError(f"{out} holds no timing records; run smallest-loss calibrate --grid NAME --out {out}")
    dtypes = sorted({r.get("dtype", "float32") for r in records if r.get("status") == "ok"})
    if len(dtypes) > 1:
        raise UserError(
            f"{out} holds records in several dtypes ({', '.join(dtypes)}); a profile is for one: "
            "calibrate each dtype in its own folder"
        )
    rates = device_rates(out, dtypes[0] if dtypes else "float32")
    results = compare_models(records, rates, statistic=statistic)
    return write_report(out, records, rates, results, price_per_hour, statistic)


def write_report(
    out: Path,
    records: list[dict[str, Any]],
    rates: dict[str, Any],
    results: list[dict[str, Any]],
    price_per_hour: float | None = None,
    statistic: str = DEFAULT_STATISTIC,
) -> dict[str, Any]:
    """Write the comparison (`compare_models` results), its plots and the profile of the best analytic model."""
    from smallest_loss.experiments.plots_timing import plot_predictions

    ok = [r for r in records if r.get("status") == "ok"]
    notes = _notes(ok, results)
    best = next(r for r in results if r.get("analytic") and "held_out" in r)
    device = find_device(rates["device_kind"])
    profile = DeviceProfile(
        device_kind=rates["device_kind"],
        model=best["name"],
        coefficients=tuple(best["coefficients"]),
        peak_flops=rates["peak_flops"],
        bandwidth=rates["bandwidth"],
        cache_bytes=rates.get("cache_bytes"),
        held_out=best["held_out"],
        price_per_hour=price_per_hour if price_per_hour is not None else (device.price_per_hour if device else None),
        memory_bytes=device.memory_bytes if device else None,
        dtype=ok[0].get("dtype", "float32"),
        records=len(ok),
        created=datetime.date.today().isoformat(),
        statistic=statistic,
        alternatives={r["name"]: r["coefficients"] for r in results if r.get("analytic") and "coefficients" in r},
    )
    save_profile(out / "profile.json", profile)
    table = comparison_table(results)
    (out / "comparison.md").write_text(_report_text(out, rates, records, table, best["name"], statistic, notes))
    plots = plot_predictions(results, shape_columns(ok, statistic)["time"], out)
    return dict(results=results, profile=profile, table=table, plots=plots, failed=len(records) - len(ok), notes=notes)


def calibrate_records(
    path: str | Path,
    out: Path,
    device: str | None = None,
    peak_flops: float | None = None,
    bandwidth: float | None = None,
    price_per_hour: float | None = None,
) -> dict[str, Any]:
    """A calibration from external step timings (timing/records.py): the same table, plots and profile as a
    measured one, in `out` with the records (`records.jsonl`) and the device's rates (`device.json`). The file
    is checked whole and the models compared before anything is written: a refused file leaves `out` as it was."""
    if any(r.get("source") != "records" for r in read_records(out / "records.jsonl")):
        raise UserError(f"{out} holds measured timing records; give the external records their own --out folder")
    records = read_timing_records(path, device)
    rates = dict(
        records_rates(records[0]["device_kind"], records[0]["dtype"], peak_flops, bandwidth), records_file=str(path)
    )
    results = compare_models(records, rates)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("pred_vs_measured_*.png"):  # plots_timing.plot_name: none kept from an earlier file
        old.unlink()
    (out / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (out / "device.json").write_text(json.dumps(rates, indent=2) + "\n")
    return write_report(out, records, rates, results, price_per_hour)


# ----------------------------------------------------------------------------------------------------
# The commands.


def format_measurement(record: dict[str, Any]) -> str:
    """A timing record as a few readable lines: measured time, XLA's numbers, our and the paper's counts."""
    c, counts = record["config"], record["counts"]
    lines = [
        f"d={c['d']} n={c['n']} h={c['h']} w={c['w']} s={c['s']} v={c['v']} b={record['batch']} "
        f"{record['dtype']} on {record['device_kind']}: status {record['status']}"
    ]
    if record["status"] == "ok":
        lines.append(
            f"step: median {record['step_seconds'] * 1e3:.3f} ms (IQR {record['iqr_seconds'] * 1e3:.3f} ms, "
            f"min {record['min_seconds'] * 1e3:.3f} ms, fastest round {record['best_round_seconds'] * 1e3:.3f}"
            f" ms; {record['repeats']} repeats in {record['rounds']} rounds); "
            f"compile {record['compile_seconds']:.2f} s"
        )
    xla = record.get("xla", {})
    if xla:
        lines.append(
            f"XLA: {xla.get('flops', 0):.4g} flops, {xla.get('bytes_accessed', 0):.4g} bytes accessed, "
            f"peak memory {xla.get('peak_bytes', 0) / 2**20:.1f} MiB"
        )
    lines.append(
        f"ours: {counts['flops']:.4g} flops, {counts['bytes']:.4g} bytes, memory estimate "
        f"{counts['memory'] / 2**20:.1f} MiB, {counts['params']:,.0f} parameters"
    )
    lines.append(
        f"paper (per sequence): FLOPS {counts['paper_flops']:.4g}, MEMCPYS {counts['paper_memcpys']:.4g}, "
        f"PARAMS {counts['paper_params']:,.0f}"
    )
    if record["status"] == "ok" and xla.get("flops"):
        lines.append(f"achieved {xla['flops'] / record['step_seconds']:.3g} FLOP/s (XLA flops / median step time)")
    return "\n".join(lines)


def require_positive(**values: float | None) -> None:
    """Refuse a non-positive option (None: not given) with one line naming it, before anything is compiled."""
    for name, value in values.items():
        if value is not None and not value > 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {value}")


def cmd_measure(args: argparse.Namespace) -> int:
    from smallest_loss.timing.measure import measure

    require_positive(min_seconds=args.min_seconds, rounds=args.rounds)
    config = resolve_config(args.preset, args.overrides)
    record = measure(config.model, config.train.batch_size, min_seconds=args.min_seconds, rounds=args.rounds)
    print(json.dumps(record, indent=2) if args.json else format_measurement(record))
    if record["status"] != "ok":
        what = "does not fit in memory" if record["status"] == "oom" else "could not be measured"
        print(f"error: this configuration {what} ({record['status']}): {record['message']}", file=sys.stderr)
        return 1
    return 0


def add_measure_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("measure", help="time one configuration's training step and show XLA's and our counts")
    add_config_args(p)
    p.add_argument("--min-seconds", type=float, default=1.0, help="time repeats for at least this long")
    p.add_argument("--rounds", type=int, default=5, help="rounds the repeats are split into")
    p.add_argument("--json", action="store_true", help="print the timing record as JSON")
    p.set_defaults(func=cmd_measure)


def _measure_grid(args: argparse.Namespace, out: Path) -> None:
    """`calibrate --grid`: time the grid's missing configurations, then the noise floor."""
    if not args.grid:
        raise UserError("calibrate needs --grid NAME, --records FILE, or --fit-only to refit the records in --out")
    counts = run_grid(
        args.grid,
        out,
        progress=not args.quiet,
        min_seconds=args.min_seconds,
        rounds=args.rounds,
        repeats=args.repeats,
        limit=args.limit,
    )
    print(f"grid {args.grid}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    if args.noise_check:
        noise = noise_floor(out, min_seconds=args.min_seconds, statistic=args.statistic, repeats=args.repeats)
        print(
            f"noise floor: re-measured {noise['configurations']} configurations differ by "
            f"{noise['median_abs']:.1%} median, {noise['max_abs']:.1%} max"
        )


def _check_modes(args: argparse.Namespace) -> None:
    """Refuse options that do not go together: --records fits a file, --grid and --fit-only measured records."""
    if args.records:
        clash = [
            flag
            for flag, on in (
                ("--grid", args.grid),
                ("--fit-only", args.fit_only),
                ("--statistic", args.statistic != DEFAULT_STATISTIC),
            )
            if on
        ]
        if clash:
            raise UserError(f"--records fits the step seconds the file gives; drop {', '.join(clash)}")
    else:
        given = [
            flag
            for flag, on in (
                ("--device", args.device),
                ("--peak-flops", args.peak_flops),
                ("--bandwidth", args.bandwidth),
            )
            if on
        ]
        if given:
            raise UserError(
                f"{', '.join(given)} describe the device of --records FILE; a measured calibration measures its own"
            )


def export_records(out: Path, path: str | Path, statistic: str = DEFAULT_STATISTIC) -> int:
    """Write the `ok` records of a calibration folder as an external records file (timing/records.py); returns
    how many rows were written."""
    ok = [r for r in read_records(out / "records.jsonl") if r.get("status") == "ok"]
    write_rows(path, [external_row(r, STATISTICS[statistic]) for r in ok])
    return len(ok)


def cmd_calibrate(args: argparse.Namespace) -> int:
    require_positive(
        min_seconds=args.min_seconds,
        repeats=args.repeats,
        rounds=args.rounds,
        limit=args.limit,
        price_per_hour=args.price_per_hour,
        peak_flops=args.peak_flops,
        bandwidth=args.bandwidth,
    )
    _check_modes(args)
    out = Path(args.out)
    if args.records:
        report = calibrate_records(args.records, out, args.device, args.peak_flops, args.bandwidth, args.price_per_hour)
    else:
        if not args.fit_only:
            _measure_grid(args, out)
        report = fit_and_report(out, args.price_per_hour, args.statistic)
    print(report["table"])
    for note in report["notes"]:
        print(note)
    p = report["profile"]
    print(f"profile: {out / 'profile.json'} (model '{p.model}', held-out MAPE {p.held_out['mape']:.1%})")
    print(f"table: {out / 'comparison.md'}; plots: {len(report['plots'])} PNGs in {out}")
    if args.export_records:
        rows = export_records(out, args.export_records, args.statistic)
        print(
            f"records: {rows} rows in {args.export_records} (refit them with the same rates: smallest-loss "
            f"calibrate --records {args.export_records} --out NEW --peak-flops {p.peak_flops!r} "
            f"--bandwidth {p.bandwidth!r})"
        )
    return 0


def add_calibrate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate", help="time a grid of configurations (or read external timings), fit and compare step-time models"
    )
    p.add_argument("--grid", help=f"a timing grid from configs/grids.py: {', '.join(SPECS)}")
    p.add_argument(
        "--records",
        metavar="FILE",
        help="fit external step timings instead of measuring: a CSV or JSON lines with columns d, n, h, "
        "w, s, v, b (global batch), devices, seconds (one step), dtype; optional activation, mlp, "
        "norm, tied, xla_flops, xla_bytes, device, and the parallel layout tp, pp, microbatch, "
        "recompute",
    )
    p.add_argument("--device", help="--records: the device of rows that name none (a configs/devices.py name)")
    p.add_argument(
        "--peak-flops",
        type=float,
        help="--records: the device's peak FLOP/s in the records' dtype (default: the device table's)",
    )
    p.add_argument(
        "--bandwidth",
        type=float,
        help="--records: the device's memory bandwidth in bytes/s (default: the device table's)",
    )
    p.add_argument(
        "--export-records",
        metavar="FILE",
        help="also write --out's records as an external records file (CSV, or JSON lines for .jsonl)",
    )
    p.add_argument("--out", required=True, help="calibration folder (records.jsonl, profile.json, table, plots)")
    p.add_argument("--fit-only", action="store_true", help="refit the records already in --out")
    p.add_argument("--min-seconds", type=float, default=1.0, help="time each configuration for at least this long")
    p.add_argument("--repeats", type=int, default=20, help="at least this many timed steps per configuration")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 10 on CPU, 3 on accelerators)")
    p.add_argument("--limit", type=int, help="measure at most this many new configurations in this session")
    p.add_argument(
        "--statistic",
        choices=tuple(STATISTICS),
        default=DEFAULT_STATISTIC,
        help="the step time models are fitted to: the median of all repeats (default), the fastest "
        "round's median, or the fastest repeat",
    )
    p.add_argument("--price-per-hour", type=float, help="price per device-hour to store in the profile")
    p.add_argument(
        "--noise-check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="re-measure 8 configurations after the grid to report the machine's noise floor",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_calibrate)
