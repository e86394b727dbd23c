"""Does a sweep's design identify the full law whatever the seed? Fit the law of one sweep's runs trained again at
other seeds (`repeat_seeds.py`), seed by seed: the form each seed's fit used and the standard error of log E of its
full law (identified up to log 2), with the design's runs all in and with runs left out.

    python experiments/scripts/repeat_seeds.py SWEEP/isoflop-* --seeds 1,2,3 --out SEEDS
    python experiments/scripts/seed_laws.py SWEEP --seeds-dir SEEDS [--without RUN ...] [--leave-one-out]

SWEEP is the sweep folder (its runs are seed 0, or whatever seed its design trained); SEEDS holds RUN-seed<k> for each
of its runs. A seed with a run missing is skipped. `--leave-one-out` also judges each design one run smaller (on the
seeds at hand, so the run it names is a choice made on them: judge it again on seeds trained after it).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.chinchilla import SE_LIMITS
from smallest_loss.scaling.fitting import fit_law, read_runs
from smallest_loss.scaling.points import FitPoints


def seed_sweeps(sweep: Path, seeds_dir: Path | None) -> dict[int, dict[str, Path]]:
    """{seed: {run name: run folder}}: the sweep's own runs as seed 0, and every seed of SEEDS that has them all."""
    runs = {p.name: p for p in sorted(sweep.iterdir()) if (p / "summary.json").is_file()}
    sweeps = {0: runs}
    if seeds_dir is not None:
        found: dict[int, dict[str, Path]] = {}
        for p in sorted(seeds_dir.iterdir()):
            m = re.fullmatch(r"(.+)-seed(\d+)", p.name)
            if m and m[1] in runs and (p / "summary.json").is_file():
                found.setdefault(int(m[2]), {})[m[1]] = p
        sweeps |= {k: v for k, v in sorted(found.items()) if len(v) == len(runs)}
    return sweeps


def full_law_error(points: FitPoints) -> tuple[str, float]:
    """The form the fit used and the standard error of log E of its full law (inf where its Jacobian is singular)."""
    d = fit_law(points, bootstrap=0).diagnostics
    return d["form"], (d.get("standard_errors", {}).get("full") or {}).get("log E", math.inf)


def judge(
    points_of: dict[int, FitPoints], names: dict[int, list[str]], without: tuple[str, ...]
) -> list[tuple[str, float]]:
    """Each seed's form used and standard error of log E, with the runs `without` left out."""
    return [
        full_law_error(points.take(np.array([n not in without for n in names[k]]))) for k, points in points_of.items()
    ]


def row(label: str, fits: list[tuple[str, float]]) -> str:
    """A table row: each seed's standard error of log E (starred where the fit fell back) and the seeds whose fit
    used the full law."""
    cells = [f"{se:.2f}" + ("" if form == "full" else "*") for form, se in fits]
    held = sum(form == "full" for form, _ in fits)
    return f"| {label} | " + " | ".join(cells) + f" | {held} of {len(fits)} |"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep", type=Path, help="the sweep folder (seed 0)")
    p.add_argument("--seeds-dir", type=Path, help="repeat_seeds.py's --out folder: RUN-seed<k> for each run")
    p.add_argument("--without", action="append", default=[], help="a run left out of every seed's fit")
    p.add_argument("--leave-one-out", action="store_true", help="also each design one run smaller")
    args = p.parse_args(argv)
    for folder in (args.sweep, args.seeds_dir):
        if folder is not None and not folder.is_dir():
            print(f"error: {folder} is not a folder", file=sys.stderr)
            return 2
    sweeps = seed_sweeps(args.sweep, args.seeds_dir)
    names = {k: sorted(runs) for k, runs in sweeps.items()}
    without = tuple(args.without)
    unknown = sorted(set(without) - set(names[0]))
    if unknown:
        print(f"error: --without {', '.join(unknown)}: no such run in {args.sweep}", file=sys.stderr)
        return 2
    try:
        points_of = {k: read_runs([str(runs[n]) for n in names[k]]) for k, runs in sweeps.items()}
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    limit = f"limit log 2 = {SE_LIMITS['e']:.2f}"
    print(f"standard error of log E by seed ({limit}; * where the fit fell back from the full law)")
    print(f"| design | {' | '.join(f'seed {k}' for k in sweeps)} | full law used |")
    print("|---|" + "---|" * len(sweeps) + "---|")
    label = f"without {', '.join(without)}" if without else "every run"
    print(row(label, judge(points_of, names, without)))
    if args.leave_one_out:
        for name in names[0]:
            if name not in without:
                print(row(f"also without {name}", judge(points_of, names, (*without, name))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
