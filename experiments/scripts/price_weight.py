"""How a verified run's step is best priced from the measurement made just before it and the profile's price: the
verify lines of results/cpu/quickstart/README.md, and the weight `scaling.preflight.profile_weight` gives the
profile where the clone's calibration is kept.

    python experiments/scripts/price_weight.py [--readme README] [--calibrations TAR_OR_FOLDER ...]

Every table of the README with a "step vs measured" and a "step vs the profile" column gives, for each fresh clone's
row (not the plans on a committed profile, nor a run trained again), the run's step against the measurement and
against the profile's price. A price weighing the two, measured^(1 - w) x priced^w, errs by
(1 + e_measured)^(1 - w) (1 + e_profile)^w - 1: the script prints, for fixed weights, how often that comes within
10% and its mean error, over every row and over those since stop 45 (the clock), with the weight that minimises the
squared log error. With `--calibrations` (results/cpu/calibrations/*.tar.gz: folders named after their clone, `fc42a`
...), each stop's calibrations are matched to its rows in order where it has no more calibrations than rows, and the
weight from each calibration's drift (`timing.retime.machine_drift` of its records) and its row's held-out error is
tried too. Results: results/cpu/quickstart/README.md (stop 51).
"""

from __future__ import annotations

import argparse
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from smallest_loss.experiments.scripts.refit_calibrations import calibration_folders
from smallest_loss.scaling.preflight import drift_weight
from smallest_loss.timing.calibration import read_records
from smallest_loss.timing.retime import machine_drift

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "results/cpu/quickstart/README.md"
WEIGHTS = (0.0, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5)
MISS = 0.10
NOT_FRESH = ("committed profile", "plan --budget", "the same folder")  # rows that are not a fresh clone's quickstart
SINCE = 45  # the run on its clock (stop 45): the verify lines since compare alike


@dataclass(frozen=True)
class Row:
    stop: int
    when: str
    measured: float  # the run's step over the measurement before it, minus one
    profile: float  # the run's step over the profile's price, minus one
    held_out: float | None  # the calibration's best model's held-out error, where the row gives it


def _percent(cell: str) -> float | None:
    found = re.search(r"([+-]?\d+(?:\.\d+)?)%", cell.replace("\u2212", "-"))
    return float(found.group(1)) / 100 if found else None


def read_rows(readme: Path) -> list[Row]:
    """The fresh clones' rows of every table with both step columns, in the README's order."""
    rows, columns, stop = [], None, 0
    for line in readme.read_text().splitlines():
        if line.startswith("## "):
            found = re.search(r"stop (\d+)", line)
            stop = int(found.group(1)) if found else stop
        if not line.startswith("|"):
            columns = None if line.strip() else columns
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if any(c.startswith("step vs measured") for c in cells) and any("vs the profile" in c for c in cells):
            columns = cells
            continue
        if columns is None or line.startswith("|---") or any(text in line for text in NOT_FRESH):
            continue
        cell = dict(zip(columns, cells, strict=False))
        measured = _percent(next(v for k, v in cell.items() if k.startswith("step vs measured")))
        profile = _percent(next(v for k, v in cell.items() if "vs the profile" in k))
        held = next((v for k, v in cell.items() if k.startswith("best model held out")), "")
        held_out = _percent(held.split("(")[0]) if held else None
        if measured is not None and profile is not None:
            rows.append(Row(stop, cells[0], measured, profile, held_out))
    return rows


def weighed(rows: list[Row], weights: np.ndarray) -> np.ndarray:
    """Each row's error priced at the measurement and the profile's price weighed by `weights` (one per row)."""
    m = np.log1p([r.measured for r in rows])
    p = np.log1p([r.profile for r in rows])
    return np.expm1((1 - weights) * m + weights * p)


def _summary(errors: np.ndarray) -> str:
    if not len(errors):
        return "none"
    return f"{int(np.sum(np.abs(errors) <= MISS))}/{len(errors)} within 10%, mean |error| {np.mean(np.abs(errors)):.1%}"


def fixed_weights(rows: list[Row]) -> None:
    later = [r for r in rows if r.stop >= SINCE]
    print(f"{len(rows)} fresh clones' verify lines ({len(later)} since stop {SINCE})")
    print("| profile's weight | all | since stop 45 |\n|---|---|---|")
    for w in WEIGHTS:
        both = [_summary(weighed(rs, np.full(len(rs), w))) for rs in (rows, later)]
        print(f"| {w:.2f} | {both[0]} | {both[1]} |")
    for label, rs in (("all", rows), (f"since stop {SINCE}", later)):
        if len(rs) < 2:
            continue
        m, p = np.log1p([r.measured for r in rs]), np.log1p([r.profile for r in rs])
        c = np.mean(m * p)
        best = (np.mean(m**2) - c) / (np.mean(m**2) + np.mean(p**2) - 2 * c)
        corr = c / np.sqrt(np.mean(m**2) * np.mean(p**2))
        print(f"{label}: rms log error measured {np.sqrt(np.mean(m**2)):.3f}, profile {np.sqrt(np.mean(p**2)):.3f}, "
              f"correlation {corr:.2f}, best fixed weight {best:.2f}")  # fmt: skip


def drift_weights(rows: list[Row], paths: list[str]) -> None:
    """Each kept calibration's drift weight against its row."""
    with tempfile.TemporaryDirectory() as scratch:
        folders = calibration_folders(paths, Path(scratch))
        by_stop: dict[int, list[Path]] = {}
        for folder in folders:
            if found := re.fullmatch(r"fc(\d+)[a-z]", folder.name):
                by_stop.setdefault(int(found.group(1)), []).append(folder)
        matched: list[tuple[Row, str, float]] = []
        for stop, kept in sorted(by_stop.items()):
            rows_of = [r for r in rows if r.stop == stop and r.held_out]  # a quickstart's row gives its calibration's
            if len(kept) > len(rows_of):
                print(f"stop {stop}: {len(kept)} calibrations, {len(rows_of)} rows: not matched")
                continue
            for folder, row in zip(kept, rows_of, strict=False):
                drift = machine_drift(read_records(folder / "records.jsonl"))
                if drift is not None and row.held_out:
                    matched.append((row, folder.name, drift))
    if not matched:
        return
    drift = np.array([d for _, _, d in matched])
    held = np.array([r.held_out for r, _, _ in matched])
    w = np.array([drift_weight(d, h) for d, h in zip(drift, held, strict=True)])
    used = [r for r, _, _ in matched]
    print(f"\n{len(used)} rows with their calibration: drift {drift.min():.1%}-{drift.max():.1%}, held out "
          f"{held.min():.1%}-{held.max():.1%}, weights {w.min():.2f}-{w.max():.2f}")  # fmt: skip
    print("| clone | when | drift | held out | weight | measured | profile | weighed |")
    print("|---|---|---|---|---|---|---|---|")
    errors = weighed(used, w)
    for (row, name, d), wi, e in zip(matched, w, errors, strict=True):
        print(f"| {name} | {row.when} | {d:.1%} | {row.held_out:.1%} | {wi:.2f} | {row.measured:+.1%} | "
              f"{row.profile:+.1%} | {e:+.1%} |")  # fmt: skip
    print(f"measurement alone: {_summary(weighed(used, np.zeros(len(used))))}; weighed: {_summary(errors)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--calibrations", nargs="*", default=[], help="calibration folders or .tar.gz packs")
    args = parser.parse_args(argv)
    rows = read_rows(args.readme)
    fixed_weights(rows)
    if args.calibrations:
        drift_weights(rows, args.calibrations)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
