#!/usr/bin/env bash
# Batch size and learning rate as levers, end to end on this CPU (results/cpu/recipe/README.md):
#   1. the recipe sweep (cpu-recipe: 3 model sizes x 5 batch sizes x 5 learning rates),
#   2. its learning-rate law, then an IsoFLOP sweep (quick-isoflop) at the law's rates, fitted: the loss law at
#      the fixed batch of 16 and tuned rates,
#   3. the recipe laws added to that loss law, checked on held-out batch sizes 8 and 32,
#   4. a step-time profile calibrated on the day (a time budget needs this machine's speed now),
#   5. a time-budget plan beyond the sweeps, verified by training: the batch-aware plan against the best plans at
#      the fixed batch 16 and the largest batch 64 (same law, same learning-rate law), all trained, and the first
#      two repeated at seeds 1 and 2, every run then evaluated on two common validation samples.
# Every step resumes from what WORK already holds.   Usage: bash experiments/scripts/recipe_study.sh [WORK] [BUDGET]
set -euo pipefail
WORK=${1:-runs/recipe-study}
BUDGET=${2:-120s}
OUT=${OUT:-results/cpu/recipe/bcrit-loss}
mkdir -p "$WORK" "$OUT"
[ -f "$WORK/timing/profile.json" ] || smallest-loss calibrate --grid cpu-quick --out "$WORK/timing" --min-seconds 0.5
PROFILE=${PROFILE:-$WORK/timing/profile.json}
smallest-loss sweep --design cpu-recipe --out "$WORK/recipe" --quiet
smallest-loss fit-recipe "$WORK/recipe" --law results/cpu/scaling/law.json --out "$WORK/lr-law.json" --bootstrap 0 \
  > /dev/null
smallest-loss sweep --design quick-isoflop --lr-from "$WORK/lr-law.json" --out "$WORK/isoflop" --quiet
smallest-loss fit "$WORK/isoflop" --out "$WORK/base.json" | tee "$OUT/fit_base.txt"
smallest-loss fit-recipe "$WORK/recipe" --law "$WORK/base.json" --out "$OUT/law.json" --recipe quick-isoflop \
  --holdout-batches 8,32 | tee "$OUT/fit_recipe.txt"
smallest-loss plan --budget "$BUDGET" --law "$OUT/law.json" --profile "$PROFILE" --out "$OUT/plan" --verify \
  --recipe quick-isoflop --verify-out "$WORK/verify" | tee "$OUT/plan.txt"
smallest-loss plan --budget "$BUDGET" --law "$OUT/law.json" --profile "$PROFILE" --out "$OUT/plan-fixed-batch" \
  --batch 16 --verify --recipe quick-isoflop --verify-out "$WORK/verify" | tee "$OUT/plan_fixed_batch.txt"
smallest-loss plan --budget "$BUDGET" --law "$OUT/law.json" --profile "$PROFILE" --out "$OUT/plan-largest-batch" \
  --batch 64 --verify --recipe quick-isoflop --verify-out "$WORK/verify" | tee "$OUT/plan_largest_batch.txt"
verified() { sed -n 's/^verify: trained [0-9]* steps in \(.*\): loss .*/\1/p' "$1"; }  # the run a plan trained
chosen=$(verified "$OUT/plan.txt")
fixed=$(verified "$OUT/plan_fixed_batch.txt")
python experiments/scripts/repeat_seeds.py "$chosen" "$fixed" --seeds 1,2 --out "$WORK/seeds" | tee "$OUT/seeds.txt"
for seed in 12345 999; do
  python experiments/scripts/evaluate_runs.py "$WORK"/verify/* "$WORK"/seeds/*/ --seed "$seed"
done | tee "$OUT/common_sample.txt"
python - "$WORK" "$OUT" <<'PY'
import csv, json, sys
from pathlib import Path
work, out = Path(sys.argv[1]), Path(sys.argv[2])
rows = []
for folder in sorted((work / "recipe").glob("*/summary.json")):
    s, c = json.loads(folder.read_text()), json.loads((folder.parent / "config.json").read_text())["config"]
    rows.append(dict(run=folder.parent.name, d=c["model"]["d"], n=c["model"]["n"], batch=c["train"]["batch_size"],
                     lr=c["train"]["lr"], steps=s["steps"], tokens=s["tokens"], params=s["params"],
                     final_eval_loss=s["final_eval_loss"], status=s["status"],
                     b_simple_tokens=(s.get("noise_scale") or {}).get("b_simple_tokens")))
with open(out / "recipe_runs.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
print(f"wrote {out / 'recipe_runs.csv'} ({len(rows)} runs)")
PY
