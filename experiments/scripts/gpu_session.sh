#!/usr/bin/env bash
# One lent-GPU session (about 15 minutes of device time, start-up included): the accelerator-only tests, a
# resumable slice of the `gpu` calibration grid, and the MFU of a GPT-2-medium-sized step at two batch sizes,
# all under $OUT. Installs nothing (the device machine has JAX, Flax, Optax and Orbax); runs the package from the
# checkout under its import name `smallest_loss` (a temporary folder of links to the top-level folders, as
# pyproject.toml maps them). Every stage has its own time limit and the calibration resumes from what $OUT/timing
# already holds. The device tool returns at most 8 files, so the calibration folder comes back as one tarball.
#   Usage:  OUT=out/gpu LIMIT=24 bash experiments/scripts/gpu_session.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu}
GRID=${GRID:-gpu}            # timing grid (configs/grids.py)
LIMIT=${LIMIT:-24}           # configurations to measure in this session (12 architectures x 2 batches)
CAL_SECONDS=${CAL_SECONDS:-300}
PRESET=${PRESET:-gpt2-medium}
PY=${PY:-python3}
mkdir -p "$OUT"
PKG=$(mktemp -d)
trap 'rm -rf "$PKG"' EXIT
mkdir "$PKG/smallest_loss"
for part in configs model timing scaling experiments; do ln -s "$PWD/$part" "$PKG/smallest_loss/$part"; done
export PYTHONPATH=$PKG PYTHONUNBUFFERED=1
CLI=("$PY" -m smallest_loss.experiments.cli)  # an array, not a function: `timeout` runs commands only
{
  date -u; nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv 2>&1
  "$PY" -c "import sys, jax, flax, optax, orbax.checkpoint as o; print(sys.version.split()[0], 'jax', jax.__version__, \
'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
} > "$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt"
# 1. The checks that need an accelerator (cuDNN attention against XLA's, the bf16 peak probe).
timeout 120 "$PY" -m pytest tests/model/test_gpu.py -m gpu -n 0 -p no:cacheprovider -q 2>&1 | tee "$OUT/tests.txt"
# 2. Step-time models on held-out architectures: a slice of the `gpu` grid (bf16, GPT-2 vocabulary).
timeout "$CAL_SECONDS" "${CLI[@]}" calibrate --grid "$GRID" --out "$OUT/timing" --min-seconds 0.2 --limit "$LIMIT" \
  --no-noise-check --quiet 2>&1 | tee "$OUT/calibrate.txt"
timeout 120 "${CLI[@]}" calibrate --fit-only --out "$OUT/timing" 2>&1 | tee -a "$OUT/calibrate.txt"
tar -czf "$OUT/timing.tar.gz" -C "$OUT" timing && rm -rf "$OUT/timing"
# 3. MFU of the real training step (bf16 compute, fp32 master weights, cuDNN attention) at two batch sizes.
for b in 8 32; do
  timeout 90 "$PY" experiments/scripts/bench_train.py --preset "$PRESET" --set train.batch_size=$b --repeats 20 \
    2>&1 | tee -a "$OUT/bench_train.txt"
done
ls -la "$OUT"
