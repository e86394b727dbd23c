"""The IsoFLOP sweep and the cheap paths against more held-out runs (six shapes at 3e11 FLOPs, three seeds each),
with paired bootstrap intervals on each path's difference from the IsoFLOP sweep. Run from the repository root:

    python experiments/scripts/curves_paths.py --iso runs/tuned-v2/isoflop --cool runs/tuned-v2/cooldown \\
        --cool-1e11 runs/tuned-v2/cooldown-1e11 \\
        --held runs/tuned-v2/heldout runs/tuned-v2/heldout-shapes runs/tuned-v2/heldout-seeds \\
        --csv results/cpu/curves/tuned/paths_runs.csv > results/cpu/curves/tuned/paths.txt

A held-out configuration is a run name without its `-seedK` suffix; its target is the mean final eval loss of its
seeds (every run evaluated on the same 1,024 validation sequences). Each bootstrap draw resamples the
configurations and, within each, its seeds, so the intervals carry both the choice of held-out runs and their
seed noise; the paths' errors are compared on the same draws (paired).
"""

import argparse
import csv
import json
import re
from pathlib import Path

import numpy as np
from smallest_loss.experiments.scripts.curves_compare import cost  # noqa: E402  (training FLOPs of run folders)
from smallest_loss.model.runs import RunDir  # noqa: E402
from smallest_loss.scaling.chinchilla import ChinchillaLaw, fit_chinchilla  # noqa: E402
from smallest_loss.scaling.collect import collect_runs, run_folders, to_points  # noqa: E402
from smallest_loss.scaling.curve_law import by_shape, fit_curve_law_of_shape, on_evals, read_curve  # noqa: E402
from smallest_loss.scaling.from_curves import laws_from_curves  # noqa: E402

DRAWS = 4000


def targets(dirs: list[Path]) -> dict[str, tuple[int, int, np.ndarray]]:
    """Held-out configuration -> (N, D, final eval losses of its seeds)."""
    records, _ = collect_runs(dirs)
    groups: dict[str, list] = {}
    for r in records:
        groups.setdefault(re.sub(r"-seed\d+$", "", r.name), []).append(r)
    return {k: (g[0].N, g[0].D, np.array([r.loss for r in g])) for k, g in sorted(groups.items())}


def shape_laws(folder: Path, curve_loss: str) -> tuple[list, list]:
    """The folder's curves and one multi-power law per shape, fitted to train or eval losses."""
    curves = [read_curve(f) for f in run_folders(folder)]
    curves = on_evals(curves) if curve_loss == "eval" else curves
    return curves, [fit_curve_law_of_shape(g, form="multipower")[0] for g in by_shape(curves).values()]


def curve_law_path(folder: Path, curve_loss: str, reach: float) -> ChinchillaLaw:
    """The Chinchilla law fitted to the per-shape multi-power laws' predicted cosine finals (laws from curves)."""
    curves, laws = shape_laws(folder, curve_loss)
    train = RunDir.open(run_folders(folder)[0]).config.train
    return ChinchillaLaw(**laws_from_curves(curves, laws, train, reach=reach)["law"])


def paired(pred: np.ndarray, base: np.ndarray, seeds: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Bootstrap draws of (mean abs error of `pred`) - (that of `base`): configurations resampled, and within each
    its seeds (the target is the mean of the drawn seeds)."""
    picks = rng.integers(0, len(seeds), (DRAWS, len(seeds)))
    drawn = np.array([[rng.choice(seeds[i], len(seeds[i])).mean() for i in row] for row in picks])
    return (np.abs(pred[picks] / drawn - 1) - np.abs(base[picks] / drawn - 1)).mean(axis=1)


def per_shape(
    folder: Path,
    held_dirs: list[Path],
    names: list[str],
    seeds: list[np.ndarray],
    iso: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """The per-shape curve laws alone (no law across shapes) on the held-out configurations of their shapes, each
    predicted on its own schedule, against the IsoFLOP sweep's predictions `iso` on the same configurations."""
    schedules = {f.name: read_curve(f) for d in held_dirs for f in run_folders(d) if "-seed" not in f.name}
    for curve_loss in ("train", "eval"):
        laws = {law.N: law for law in shape_laws(folder, curve_loss)[1]}
        mine = [i for i, k in enumerate(names) if schedules[k].N in laws]
        pred = np.array([laws[schedules[names[i]].N].final_eval(schedules[names[i]].lr) for i in mine])
        target = np.array([seeds[i].mean() for i in mine])
        err, base = pred / target - 1, np.abs(iso[mine] / target - 1)
        lo, hi = np.percentile(paired(pred, iso[mine], [seeds[i] for i in mine], rng), [2.5, 97.5])
        print(
            f"per-shape curve laws from {folder.name} ({curve_loss} losses), their {len(mine)} held-out shapes: "
            + ", ".join(f"{e:+.2%}" for e in err)
            + f"; mean |error| {np.abs(err).mean():.2%}, IsoFLOP sweep on "
            f"the same {base.mean():.2%}: {np.abs(err).mean() - base.mean():+.2%} [{lo:+.2%}, {hi:+.2%}]"
        )


def write_runs(path: Path, dirs: list[Path]) -> None:
    """Every run of the comparison: sweep, recipe, length, seed, branch point, final eval loss, wall time."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "sweep",
                "run",
                "d",
                "n",
                "params",
                "batch",
                "lr",
                "schedule",
                "seed",
                "steps",
                "tokens",
                "parent",
                "branch_step",
                "final_eval_loss",
                "wall_seconds",
            ]
        )
        for d in dirs:
            for folder in run_folders(d):
                run, summary = RunDir.open(folder), json.loads((folder / "summary.json").read_text())
                cfg, branch = run.config, run.branch
                w.writerow(
                    [
                        d.name,
                        folder.name,
                        cfg.model.d,
                        cfg.model.n,
                        summary["params"],
                        cfg.train.batch_size,
                        f"{cfg.train.lr:.6g}",
                        cfg.train.schedule,
                        cfg.train.seed,
                        summary["steps"],
                        summary["tokens"],
                        branch[0].name if branch else "",
                        branch[1] if branch else "",
                        f"{summary['final_eval_loss']:.5f}",
                        f"{summary['wall_seconds']:.1f}",
                    ]
                )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--iso", type=Path, required=True, help="the IsoFLOP sweep's folder")
    p.add_argument("--cool", type=Path, required=True, help="the cool-down sweep at a quarter of the FLOPs")
    p.add_argument("--cool-1e11", type=Path, help="the cool-down sweep at the IsoFLOP sweep's range")
    p.add_argument("--held", type=Path, nargs="+", required=True, help="held-out run folders (any seeds)")
    p.add_argument("--csv", type=Path, help="also list every run used here in this CSV")
    args = p.parse_args()
    if args.csv:
        write_runs(args.csv, [args.iso, args.cool, *([args.cool_1e11] if args.cool_1e11 else []), *args.held])
    held = targets(args.held)
    rows = [("IsoFLOP sweep (cosine)", args.iso, fit_chinchilla(to_points(collect_runs([args.iso])[0])).law)]
    cools = [("", args.cool)] + ([(" (1e11)", args.cool_1e11)] if args.cool_1e11 else [])
    for tag, folder in cools:
        rows.append((f"cool-down branches{tag}", folder, fit_chinchilla(to_points(collect_runs([folder])[0])).law))
        curve = f"curve law{tag} -> Chinchilla"
        rows.append((f"{curve}, train losses, reach 1", folder, curve_law_path(folder, "train", 1)))
        if not tag:
            rows.append((f"{curve}, train losses, reach 10", folder, curve_law_path(folder, "train", 10)))
            rows.append((f"{curve}, eval losses, reach 1", folder, curve_law_path(folder, "eval", 1)))
    names = list(held)
    N = np.array([held[k][0] for k in names], float)
    D = np.array([held[k][1] for k in names], float)
    seeds = [held[k][2] for k in names]
    print("held-out configurations (final eval loss of each seed; spread = (max - min) / mean):")
    for k, (n, d, losses) in held.items():
        print(
            f"  {k}: N={n}, D={d:.3g}, "
            + ", ".join(f"{x:.4f}" for x in losses)
            + f"; spread {np.ptp(losses) / losses.mean():.2%}"
        )
    rng = np.random.default_rng(0)
    target = np.array([s.mean() for s in seeds])
    base_flops = cost(run_folders(args.iso))[0]
    per_config = []
    print("\n| path | training FLOPs | share | mean abs error | max | minus IsoFLOP's [95% interval] |")
    print("|---|---|---|---|---|---|")
    for label, folder, law in rows:
        pred = np.array([float(law.loss(n, d)) for n, d in zip(N, D, strict=True)])
        err = np.abs(pred / target - 1)
        if not per_config:
            iso, gap = pred, "-"
        else:
            lo, hi = np.percentile(paired(pred, iso, seeds, rng), [2.5, 97.5])
            gap = f"{err.mean() - np.abs(iso / target - 1).mean():+.2%} [{lo:+.2%}, {hi:+.2%}]"
        flops = cost(run_folders(folder))[0]
        print(f"| {label} | {flops:.3g} | {flops / base_flops:.0%} | {err.mean():.2%} | {err.max():.2%} | {gap} |")
        per_config.append((label, pred / target - 1))
    print()
    per_shape(args.cool, args.held, names, seeds, iso, rng)
    print(
        "\nsigned errors per held-out configuration ("
        + ", ".join(k.removeprefix("isoflop-3e11-") for k in names)
        + "):"
    )
    for label, e in per_config:
        print(f"  {label}: " + ", ".join(f"{x:+.2%}" for x in e))


if __name__ == "__main__":
    main()
