"""The same question three ways: predict held-out final eval losses at 3e11 FLOPs (6ND) from an IsoFLOP sweep,
cool-down branches, or curve laws fitted to a few short cosine runs. Run from the repository root."""

import json
from pathlib import Path

import numpy as np
from smallest_loss.experiments.curves_cmd import laws_from_curves
from smallest_loss.experiments.fit_cmd import curve_extrapolation
from smallest_loss.model.runs import RunDir
from smallest_loss.scaling.collect import collect_runs, run_folders, to_points
from smallest_loss.scaling.curve_law import by_shape, fit_shape, read_curve
from smallest_loss.scaling.fit import fit_chinchilla
from smallest_loss.scaling.laws import ChinchillaLaw

ISO, COOL, HELD = Path("runs/data_lever/sweep-full"), Path("runs/curves/cooldown"), Path("runs/curves/heldout")


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


held, _ = collect_runs([HELD])
rows = []
iso_records, _ = collect_runs([ISO])
rows.append(("IsoFLOP sweep (data-isoflop: 3 budgets x 3 shapes, cosine)", run_folders(ISO),
             fit_chinchilla(to_points(iso_records)).law))
cool_records, _ = collect_runs([COOL])
rows.append(("cool-down branches (cpu-cooldown: 3 constant runs + 9 branches, 1-sqrt)", run_folders(COOL),
             fit_chinchilla(to_points(cool_records)).law))
few = [f for f in run_folders(ISO) if "-1e11-" not in f.name]  # the 1e10 and 3e10 cosine runs
curves = [read_curve(f) for f in few]
laws = [fit_shape(g)[0] for g in by_shape(curves).values()]
fc = laws_from_curves(curves, laws, RunDir.open(few[0]).config.train, reach=2255 / 676)
rows.append(("curve law from the 1e10 and 3e10 cosine runs (6 runs), Chinchilla on its predictions", few,
             ChinchillaLaw(**fc["law"])))
base = cost(run_folders(ISO))[0]
print("| path | runs | training FLOPs (6ND) | share of IsoFLOP | wall s (compile incl.) | held-out mean abs error "
      "| max | law E, A, B, alpha, beta |")
print("|---|---|---|---|---|---|---|---|")
for name, folders, law in rows:
    flops, wall = cost(folders)
    e = np.abs(errors(law, held))
    print(f"| {name} | {len(folders)} | {flops:.3g} | {flops / base:.0%} | {wall:.0f} | {e.mean():.2%} | "
          f"{e.max():.2%} | {law.E:.3g}, {law.A:.3g}, {law.B:.3g}, {law.alpha:.3g}, {law.beta:.3g} |")
print("\nheld-out runs (3e11 FLOPs): " + ", ".join(f"{r.name} N={r.N} D={r.D} loss={r.loss:.4f}" for r in held))
print(f"held-out training FLOPs {cost(run_folders(HELD))[0]:.3g}, wall {cost(run_folders(HELD))[1]:.0f} s")
for frac in (0.25, 0.5):
    k = curve_extrapolation(iso_records + held, frac)
    print(f"today's extrapolation (Kaplan power law) from {frac:.0%} on the 12 cosine runs: mean |error| "
          f"{k['mean_abs_rel_error']:.2%}, max {k['max_abs_rel_error']:.2%}")
