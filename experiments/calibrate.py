"""`smallest-loss measure` (one configuration) and `smallest-loss calibrate` (a grid, then model comparison).

The calibration itself (timing a grid, the noise floor, fitting the step-time models, the profile) is
timing/calibration.py's; this module parses the commands' arguments and writes what they show: the printed
lines, `comparison.md` (held-out errors of every step-time model) and one predicted-vs-measured plot per model
in the calibration folder.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any

from smallest_loss.configs.errors import UserError
from smallest_loss.configs.grids import SPECS, at_precision, get_grid
from smallest_loss.experiments.args import check_outputs, require_positive
from smallest_loss.model.quant import fp8_note
from smallest_loss.scaling.report import markdown_table
from smallest_loss.timing.calibration import (
    Calibration,
    calibrate_records,
    export_records,
    fit_folder,
    noise_floor,
    read_records,
    run_grid,
)
from smallest_loss.timing.models import DEFAULT_STATISTIC, STATISTICS, get_model, shape_columns
from smallest_loss.timing.precision import ratio_line, step_ratio
from smallest_loss.timing.probes import PROBES, probe_runs
from smallest_loss.timing.profile import load_profile
from smallest_loss.timing.retime import floor_from_noise, noise_shift_and_spread


def comparison_table(results: list[dict[str, Any]]) -> str:
    """The models side by side (Markdown): held-out errors, in-sample R^2 and Spearman, planner use."""
    columns = ("model", "held-out MAPE", "held-out max APE", "held-out R^2", "held-out Spearman", "planner can use")
    rows = []
    for r in results:
        if "held_out" not in r:
            rows.append((r["id"], "-", "-", "-", "-", f"({r.get('error')})"))
            continue
        h, use = r["held_out"], "yes" if r["analytic"] else "no (needs a compiled step: XLA counts)"
        rows.append((r["id"], f"{h['mape']:.1%}", f"{h['max_ape']:.1%}", f"{h['r2']:.4f}", f"{h['spearman']:.4f}", use))
    return markdown_table(rows, columns)


def model_legend(results: list[dict[str, Any]]) -> list[str]:
    """What each model of the table is (Markdown list): its id, title and description, and the setting its fit chose
    where it tunes one (`exact-grouped-cliff`'s cliff)."""
    lines = []
    for r in results:
        m = get_model(r["id"])
        chosen = "".join(f" Chosen by its fit here: `{k}` = {v:.3g}." for k, v in r.get("tuned", {}).items())
        lines.append(f"- `{m.id}` ({m.label}): {m.description}.{chosen}")
    return lines


def _noise_line(out: Path) -> str:
    if not (out / "noise.json").exists():
        return ""
    noise = json.loads((out / "noise.json").read_text())
    return (
        f"\nNoise floor: {noise['configurations']} configurations measured again after the grid differ by "
        f"{noise['median_abs']:.1%} median, {noise['mean_abs']:.1%} mean and {noise['max_abs']:.1%} max "
        f"(absolute, {noise.get('statistic', 'median')}){_floor_words(noise)}; model errors below the floor cannot "
        "be told apart.\n"
    )


def _floor_words(noise: dict[str, Any]) -> str:
    """How the noise floor splits the differences of the configurations measured again (`floor_from_noise`)."""
    shift, spread = noise_shift_and_spread(noise["diffs"]) if noise.get("diffs") else (None, None)
    if spread is None:
        return f": the floor is their median, {floor_from_noise(noise):.1%}"
    return (
        f": their median, {shift:+.1%} in step time, is the machine's drift since the grid (common to all of them; the "
        f"grid's interleaved rounds give a drift to every configuration alike), and the floor is their spread around "
        f"it, {spread:.1%}"
    )


def _about(calibration: Calibration) -> list[str]:
    """The report's lines on where the times and the device's rates come from."""
    ok, rates = calibration.ok, calibration.rates
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
    failed = [r for r in calibration.records if r.get("status") != "ok"]
    return [
        f"{len(ok)} configurations measured ({len(failed)} failed: "
        f"{', '.join(sorted({r['status'] for r in failed})) or 'none'}), {archs} architectures. Fitted to "
        f"`{STATISTICS[calibration.statistic]}` with non-negative least squares on relative errors. {folds}",
        f"Measured peak {rates['peak_flops']:.3g} FLOP/s ({rates.get('peak_dtype', 'float32')} matmuls), "
        f"bandwidth {rates['bandwidth']:.3g} B/s.",
    ]


def _notes(calibration: Calibration) -> list[str]:
    """What the comparison left out or what the profile means, where the records call for it: models on XLA
    counts skipped where records lack them, and what device counts mean for the planner."""
    ok, notes = calibration.ok, []
    if calibration.missing_xla:
        notes.append(
            f"Models on XLA counts skipped: {calibration.missing_xla} of {len(ok)} records give no xla_flops/xla_bytes."
        )
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


def choice_line(calibration: Calibration) -> str | None:
    """The choice of the profile's model, itself held out (`timing.models.choice_held_out`); None without it."""
    choice = calibration.choice
    if not choice:
        return None
    picks = sorted(set(choice.chosen), key=choice.chosen.index)
    own = calibration.profile.held_out["mape"]
    return (
        f"The choice itself held out: {choice.mape:.1%} mean error (against {own:.1%} for the chosen model), "
        "each fold predicted by the model a cross-validation on the other folds chose "
        f"({', '.join(picks)}): the least of several held-out errors is low by the choice."
    )


def _report_text(out: Path, calibration: Calibration, table: str, notes: list[str]) -> str:
    """`comparison.md`: where the times come from, the table, what each model is, notes, the profile's model."""
    lines = [
        f"# Step-time models on {calibration.rates['device_kind']}",
        "",
        *_about(calibration),
        "",
        table,
        "",
        *model_legend(calibration.results),
        "",
        *notes,
        "" if notes else None,
        f"Profile model: **{calibration.profile.model}** (the best model that predicts from hyperparameters "
        "alone). Models on XLA counts need the step compiled first, so the planner cannot use them.",
        choice_line(calibration),
        _noise_line(out),
        calibration.profile.clock.describe() + "." if calibration.profile.clock else None,
    ]
    return "\n".join(line for line in lines if line is not None)


def write_report(out: Path, calibration: Calibration) -> dict[str, Any]:
    """Write `comparison.md` and one predicted-vs-measured plot per model of a calibration (its profile is
    written by timing/calibration.py); returns what `smallest-loss calibrate` prints."""
    from smallest_loss.experiments.plots_timing import plot_predictions

    notes = _notes(calibration)
    table = comparison_table(calibration.results)
    (out / "comparison.md").write_text(_report_text(out, calibration, table, notes))
    measured = shape_columns(calibration.ok, calibration.statistic)["time"]
    plots = plot_predictions(calibration.results, measured, out)
    return dict(
        results=calibration.results,
        profile=calibration.profile,
        table=table,
        plots=plots,
        failed=calibration.failed,
        notes=notes,
        choice=calibration.choice,
        choice_line=choice_line(calibration),
    )


def fit_and_report(
    out: Path, price_per_hour: float | None = None, statistic: str = DEFAULT_STATISTIC
) -> dict[str, Any]:
    """Compare all step-time models on the folder's records; write the profile, the table and the plots."""
    return write_report(out, fit_folder(out, price_per_hour, statistic))


def records_report(
    path: str | Path,
    out: Path,
    device: str | None = None,
    peak_flops: float | None = None,
    bandwidth: float | None = None,
    price_per_hour: float | None = None,
) -> dict[str, Any]:
    """`calibrate --records`: the calibration of an external records file, with its table and plots (the
    plots of an earlier file in `out` removed)."""
    calibration = calibrate_records(path, out, device, peak_flops, bandwidth, price_per_hour)
    for old in out.glob("pred_vs_measured_*.png"):  # plots_timing.plot_name: none kept from an earlier file
        old.unlink()
    return write_report(out, calibration)


# ----------------------------------------------------------------------------------------------------
# The commands.


def _measure_grid(args: argparse.Namespace, out: Path) -> None:
    """`calibrate --grid`: time the grid's missing configurations, then the noise floor."""
    if not args.grid:
        raise UserError("calibrate needs --grid NAME, --records FILE, or --fit-only to refit the records in --out")
    note = fp8_note(at_precision(get_grid(args.grid), tuple(args.set))[0].model)
    if note:
        print(note)  # float8 where FP8 matmuls do not exist: the times are of the emulation
    counts = run_grid(
        args.grid,
        out,
        progress=not args.quiet,
        min_seconds=args.min_seconds,
        rounds=args.rounds,
        repeats=args.repeats,
        limit=args.limit,
        precision=tuple(args.set),
    )
    print(f"grid {args.grid}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    if args.noise_check:
        noise = noise_floor(out, min_seconds=args.min_seconds, statistic=args.statistic, repeats=args.repeats)
        print(
            f"noise floor: re-measured {noise['configurations']} configurations differ by "
            f"{noise['median_abs']:.1%} median, {noise['max_abs']:.1%} max{_floor_words(noise)}"
        )
    probes = probe_runs(out, read_records(out / "records.jsonl"), args.probes)
    if probes:
        print(f"probe runs: {len(probes)} short training runs timed (start-up, compile, loop, evaluations, saves)")


def _check_modes(args: argparse.Namespace) -> None:
    """Refuse options that do not go together: --records fits a file, --grid and --fit-only measured records."""
    if args.set and not args.grid:
        raise UserError("--set chooses the precision a --grid is measured at; a fit of records has theirs")
    if args.measure_only and (not args.grid or args.fit_only or args.compare or args.export_records):
        raise UserError(
            "--measure-only times a --grid and fits nothing: drop --fit-only, --compare and --export-records"
        )
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


INTERRUPTED = (
    "interrupted: every configuration timed so far is saved in {args.out}/records.jsonl; rerun the same command "
    "to continue"
)


def run(args: argparse.Namespace) -> int:
    """`smallest-loss calibrate`: measure a grid (or read a records file), fit, print the table and the profile."""
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
    check_outputs(files={"--export-records": args.export_records}, folders={"--out": args.out})
    if args.compare:
        load_profile(args.compare)  # a missing or malformed profile is refused before anything is measured
    out = Path(args.out)
    if args.records:
        report = records_report(args.records, out, args.device, args.peak_flops, args.bandwidth, args.price_per_hour)
    else:
        if not args.fit_only:
            _measure_grid(args, out)
        if args.measure_only:
            print(f"records: {out / 'records.jsonl'}; fit them with: smallest-loss calibrate --fit-only --out {out}")
            return 0
        try:
            report = fit_and_report(out, args.price_per_hour, args.statistic)
        except UserError:
            if args.compare:  # the ratio reads the records alone: a grid cut short too soon to fit still gives it
                with contextlib.suppress(UserError):
                    print(_compare_line(out, args))
            raise
    print(report["table"])
    for note in report["notes"]:
        print(note)
    p = report["profile"]
    choice = report["choice"]
    chosen = f"; the choice itself held out: {choice.mape:.1%}" if choice else ""
    print(f"profile: {out / 'profile.json'} (model '{p.model}', held-out MAPE {p.held_out['mape']:.1%}{chosen})")
    print(p.clock.describe() if p.clock else "wall-clock terms: none (no probe runs); the profile prices steps only")
    print(f"table: {out / 'comparison.md'}; plots: {len(report['plots'])} PNGs in {out}")
    if args.compare:
        line = _compare_line(out, args)
        with (out / "comparison.md").open("a") as f:
            f.write(f"\n{line}\n")
        print(line)
    if args.export_records:
        rows = export_records(out, args.export_records, args.statistic)
        print(
            f"records: {rows} rows in {args.export_records} (refit them with the same rates: smallest-loss "
            f"calibrate --records {args.export_records} --out NEW --peak-flops {p.peak_flops!r} "
            f"--bandwidth {p.bandwidth!r})"
        )
    return 0


def _compare_line(out: Path, args: argparse.Namespace) -> str:
    """`--compare`'s line: this folder's step times over the other precision's profile (`step_ratio`)."""
    return ratio_line(step_ratio(read_records(out / "records.jsonl"), args.compare, args.statistic))


def _add_stage_args(p: argparse.ArgumentParser) -> None:
    """Which stages run: measure and fit (default), fit only, measure only; the noise check and the probe runs."""
    p.add_argument("--fit-only", action="store_true", help="refit the records already in --out")
    p.add_argument(
        "--measure-only",
        action="store_true",
        help="time the grid (and the noise check and probe runs asked for) and stop: fit later with --fit-only",
    )
    p.add_argument(
        "--noise-check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="re-measure 8 configurations after the grid to report the machine's noise floor",
    )
    p.add_argument(
        "--probes",
        type=int,
        default=PROBES,
        help=f"short training runs after the grid that price the loop's host cost, compile, evaluations, saves and "
        f"start-up (default {PROBES}; 0: none, the profile then prices the training steps alone)",
    )


def _add_precision_args(p: argparse.ArgumentParser) -> None:
    """`--set` (the precision a grid is measured at) and `--compare` (the step-time ratio to another precision)."""
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="model.FIELD=VALUE",
        help="--grid: measure it at this precision (repeatable): model.dtype (float32, bfloat16, float16, float8), "
        "model.bits_weights, model.bits_activations, model.bits_kv; one precision per --out folder",
    )
    p.add_argument(
        "--compare",
        metavar="PROFILE",
        help="another precision's profile.json on this device: report this calibration's step time over its "
        "(measured on the configurations both folders hold, else against its predictions)",
    )


def add_parser(p: argparse.ArgumentParser) -> None:
    """The `calibrate` command's arguments."""
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
    _add_stage_args(p)
    _add_precision_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
