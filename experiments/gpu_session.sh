#!/usr/bin/env bash
# Issue 7 on a lent GPU: MFU of the training step, the `gpu` calibration grid, and a GPU IsoFLOP sweep,
# all written under $OUT. Installs nothing (the device machine has JAX, Flax, Optax and Orbax); runs the
# package from the checkout, under its import name `smallest_loss` (a temporary folder of links to the
# top-level folders, as pyproject.toml maps them). Every stage resumes from what $OUT already holds, so a
# second device call with the same $OUT (copied back) continues. Usage:  bash experiments/gpu_session.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
PKG=$(mktemp -d)
trap 'rm -rf "$PKG"' EXIT
mkdir "$PKG/smallest_loss"
for part in configs model timing scaling experiments; do ln -s "$PWD/$part" "$PKG/smallest_loss/$part"; done
export PYTHONPATH=$PKG
CLI=(python -m smallest_loss.experiments.cli)  # an array, not a function: `timeout` runs commands only
{
  date -u; nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv
  python -c "import jax, flax, optax, orbax.checkpoint as o; print(jax.__version__, flax.__version__, optax.__version__, jax.devices())"
} > "$OUT/environment.txt" 2>&1
# 1. MFU of a GPT-2-medium-sized step (bf16 compute, fp32 master weights, cuDNN attention).
timeout 240 python experiments/bench_train.py --preset gpt2-medium --set train.batch_size=32 --repeats 20 \
  2>&1 | tee "$OUT/bench_train.txt"
# 2. The paper's claims on this GPU: 64 configurations, models compared on held-out architectures.
timeout 300 "${CLI[@]}" calibrate --grid gpu --out "$OUT/timing" --min-seconds 0.3 --quiet 2>&1 | tee "$OUT/calibrate.txt"
# 3. A GPU IsoFLOP sweep for what time is left (resumable), then the law.
timeout 600 "${CLI[@]}" sweep --design gpu-isoflop --out "$OUT/sweep" --quiet 2>&1 | tee "$OUT/sweep.txt"
"${CLI[@]}" fit "$OUT/sweep" --holdout-largest --out "$OUT/law.json" 2>&1 | tee "$OUT/fit.txt"
