"""Refit the step-time models of many calibrations from their records, beside each one's noise floor: which model
holds out best on each, by how much, and how often the best is within twice the floor (issue 25, item 4). A way to
judge a new step-time model on every calibration already measured, without timing anything again.

    python -m smallest_loss.experiments.scripts.refit_calibrations results/cpu/calibrations/quickstart.tar.gz
    python -m smallest_loss.experiments.scripts.refit_calibrations FOLDER ... --without exact-grouped-thrash

Each calibration is a folder (or a folder inside a .tar.gz) holding `records.jsonl`, `device.json` and `noise.json`,
as `calibrate` writes them. `--llc-bytes` fills a device that did not record its last-level cache (calibrations made
before `llc_bytes` was read); `--without` leaves models out, to see what they add. The last column is the choice
itself held out (`timing.models.choice_held_out`: each fold predicted by the model a cross-validation on the other
folds chose, among all the analytic models): the best model's own held-out error is low by the choice.
"""

from __future__ import annotations

import argparse
import json
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from smallest_loss.timing.measure import read_records
from smallest_loss.timing.models import (
    choice_held_out,
    compare_models,
    get_model,
    shape_columns,
    with_working_set_ratio,
)
from smallest_loss.timing.retime import noise_floor_of

# Members kept inside the folder they are unpacked to, where this Python has tarfile's filters (3.11.4 on).
SAFE = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


def calibration_folders(paths: list[str], scratch: Path) -> list[Path]:
    """The calibration folders under `paths` (folders, or .tar.gz files unpacked into `scratch`), sorted by name."""
    folders = []
    for i, path in enumerate(map(Path, paths)):
        if path.name.endswith((".tar.gz", ".tgz")):
            with tarfile.open(path) as tar:
                tar.extractall(scratch / str(i), **SAFE)
            path = scratch / str(i)
        folders += [records.parent for records in path.rglob("records.jsonl")]
    return sorted(folders, key=lambda f: f.name)


def refit(folder: Path, without: set[str], llc_bytes: float | None) -> dict[str, Any]:
    """One calibration refitted: its noise floor and the best analytic model held out, with all models and without."""
    device = json.loads((folder / "device.json").read_text())
    if llc_bytes and not device.get("llc_bytes"):
        device["llc_bytes"] = llc_bytes
    floor = noise_floor_of(folder)
    records = read_records(folder / "records.jsonl")
    results = [r for r in compare_models(records, device) if r.get("analytic")]
    best = results[0]
    rest = next(r for r in results if r["id"] not in without)
    cols = shape_columns([r for r in records if r.get("status") == "ok"])
    choice = choice_held_out([get_model(r["id"]) for r in results if "held_out" in r], cols,
                             with_working_set_ratio(device, cols))  # fmt: skip
    return dict(
        name=folder.name, floor=floor, records=len(records),
        best=best["id"], best_error=best["held_out"]["mape"], rest=rest["id"], rest_error=rest["held_out"]["mape"],
        choice_error=choice.mape if choice else float("nan"),
    )  # fmt: skip


def table(rows: list[dict[str, Any]], without: set[str]) -> str:
    """The rows as markdown, and a summary line: mean best error, and how many within twice their floor."""
    left_out = ", ".join(sorted(without))
    out = [
        f"| calibration | records | noise floor | best model | held out | without {left_out} | held out | the choice "
        "held out |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['name']} | {r['records']} | {r['floor']:.1%} | {r['best']} | {r['best_error']:.1%} | {r['rest']} | "
            f"{r['rest_error']:.1%} | {r['choice_error']:.1%} |"
        )
    best, rest, choice, floor = (np.array([r[k] for r in rows]) for k in ("best_error", "rest_error", "choice_error",
                                                                           "floor"))  # fmt: skip
    out.append("")
    out.append(
        f"{len(rows)} calibrations: the best model held out at {best.mean():.1%} on average, median "
        f"{np.median(best):.1%} ({rest.mean():.1%} without); within twice the noise floor in "
        f"{(best <= 2 * floor).sum()} ({(rest <= 2 * floor).sum()} without). The choice itself held out: "
        f"{np.nanmean(choice):.1%} on average, median {np.nanmedian(choice):.1%}; within twice the floor in "
        f"{(choice <= 2 * floor).sum()}."
    )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="+", help="calibration folders, or .tar.gz files of them")
    p.add_argument("--without", default="", help="models to leave out, comma-separated")
    p.add_argument("--llc-bytes", type=float, help="last-level cache for devices that did not record one")
    args = p.parse_args(argv)
    without = {m for m in args.without.split(",") if m}
    with tempfile.TemporaryDirectory() as scratch:
        rows = [refit(f, without, args.llc_bytes) for f in calibration_folders(args.paths, Path(scratch))]
    print(table(rows, without))


if __name__ == "__main__":
    main()
