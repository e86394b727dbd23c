"""The same question three ways: predict held-out final eval losses at a budget above every fitted one from an
IsoFLOP sweep, from cool-down branches, or from curve laws fitted to a few runs' whole curves. Run from the
repository root; the defaults are the first study's folders (lr 3e-3, batch 16), see README.md:

    python experiments/scripts/curves_compare.py > results/cpu/curves/compare.txt
    python experiments/scripts/curves_compare.py --iso /work/sweeps/tuned/isoflop --cool /work/sweeps/tuned/cooldown \\
        --held /work/sweeps/tuned/heldout --curve-runs cool --form multipower --reach 3.33
"""

import argparse
import json
from pathlib import Path

import numpy as np
from smallest_loss.model.runs import RunDir
from smallest_loss.scaling.chinchilla import ChinchillaLaw, fit_chinchilla
from smallest_loss.scaling.collect import collect_runs, run_folders, to_points
from smallest_loss.scaling.curve_law import by_shape, fit_curve_law_of_shape, read_curve
from smallest_loss.scaling.from_curves import laws_from_curves
from smallest_loss.scaling.learning_curve import curve_extrapolation


def cost(folders):
    """Training FLOPs (6 N D over the steps each run trained itself) and wall seconds (compile included)."""
    flops = wall = 0.0
    for f in folders:
        run, s = RunDir.open(f), json.loads((f / "summary.json").read_text())
        own = s["steps"] - (run.branch[1] if run.branch else 0)
        lines = run.read_metrics()
        start_wall = lines[run.branch[1] - 1]["wall_seconds"] if run.branch else 0.0
        flops += 6 * s["params"] * own * run.config.train.batch_size * run.config.model.s
        wall += s["wall_seconds"] - start_wall
    return flops, wall


def errors(law: ChinchillaLaw, held):
    return [float(law.loss(r.N, r.D) / r.loss - 1) for r in held]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--iso", default="runs/data_lever/sweep-full", help="the IsoFLOP sweep's folder")
    p.add_argument("--cool", default="runs/curves/cooldown", help="the cool-down sweep's folder")
    p.add_argument("--held", default="runs/curves/heldout", help="the held-out runs' folder")
    p.add_argument(
        "--curve-runs",
        choices=("few-cosine", "cool"),
        default="few-cosine",
        help="the curve law's runs: the IsoFLOP sweep's two smaller budgets, or the cool-down sweep",
    )
    p.add_argument("--form", choices=("tissue", "multipower"), default="tissue", help="the curve law's form")
    p.add_argument(
        "--reach",
        type=float,
        default=2255 / 676,
        help="cosine lengths the curve laws predict, up to this many times each shape's longest run",
    )
    args = p.parse_args()
    iso, cool, held_dir = Path(args.iso), Path(args.cool), Path(args.held)
    held, _ = collect_runs([held_dir])
    iso_records, _ = collect_runs([iso])
    rows = [(f"IsoFLOP sweep ({iso.name}: cosine)", run_folders(iso), fit_chinchilla(to_points(iso_records)).law)]
    cool_records, _ = collect_runs([cool])
    rows.append(
        (
            f"cool-down branches ({cool.name}: constant runs + 1-sqrt branches)",
            run_folders(cool),
            fit_chinchilla(to_points(cool_records)).law,
        )
    )
    if args.curve_runs == "cool":
        few, label = run_folders(cool), f"curve law from {cool.name}'s curves"
    else:
        budgets = sorted({r.budget for r in iso_records})
        few = [f for f in run_folders(iso) if f"-{budgets[-1]:.0e}-".replace("e+", "e") not in f.name]
        label = "curve law from the IsoFLOP sweep's smaller budgets"
    curves = [read_curve(f) for f in few]
    laws = [fit_curve_law_of_shape(g, form=args.form)[0] for g in by_shape(curves).values()]
    laws_by_N = {law.N: law for law in laws}
    fc = laws_from_curves(curves, laws, RunDir.open(few[0]).config.train, reach=args.reach)
    rows.append((f"{label} ({args.form}), Chinchilla on its predictions", few, ChinchillaLaw(**fc["law"])))
    base = cost(run_folders(iso))[0]
    print(
        "| path | runs | training FLOPs (6ND) | share of IsoFLOP | wall s (compile incl.) | held-out mean abs error "
        "| max | law E, A, B, alpha, beta |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, folders, law in rows:
        flops, wall = cost(folders)
        e = np.abs(errors(law, held))
        print(
            f"| {name} | {len(folders)} | {flops:.3g} | {flops / base:.0%} | {wall:.0f} | {e.mean():.2%} | "
            f"{e.max():.2%} | {law.E:.3g}, {law.A:.3g}, {law.B:.3g}, {law.alpha:.3g}, {law.beta:.3g} |"
        )
    direct = [
        (c.name, laws_by_N[c.N].final_eval(c.lr) / c.final_eval - 1)
        for c in (read_curve(f) for f in run_folders(held_dir))
        if c.N in laws_by_N
    ]
    if direct:  # the curve laws alone, before the Chinchilla fit across shapes: each held-out run by its own shape's
        mean = np.mean(np.abs([e for _, e in direct]))
        print(
            "\nper-shape curve laws predicting the held-out runs of their shapes directly: "
            + ", ".join(f"{n} {e:+.2%}" for n, e in direct)
            + f"; mean |error| {mean:.2%}"
        )
    print("\nheld-out runs: " + ", ".join(f"{r.name} N={r.N} D={r.D} loss={r.loss:.4f}" for r in held))
    print(f"held-out training FLOPs {cost(run_folders(held_dir))[0]:.3g}, wall {cost(run_folders(held_dir))[1]:.0f} s")
    for frac in (0.25, 0.5):
        k = curve_extrapolation(iso_records + held, frac)
        print(
            f"today's extrapolation (Kaplan power law) from {frac:.0%} on the {len(iso_records) + len(held)} cosine "
            f"runs: mean |error| {k['mean_abs_rel_error']:.2%}, max {k['max_abs_rel_error']:.2%}"
        )


if __name__ == "__main__":
    main()
