#!/usr/bin/env bash
# One lent-GPU session (about 15 minutes of device time, start-up included): the accelerator-only tests, a
# resumable slice of the `gpu` calibration grid with its noise floor (configurations measured twice) and probe runs
# (short real training runs: the loop's host cost, compile, evaluation, save and start-up seconds, and the loop's
# held-out step-time error), the same grid's first configurations in FP8 with the measured FP8 / bf16 step-time
# ratio, a time budget planned with that profile (its best candidates timed first) and trained, each term of its
# wall-clock predicted against measured, and the MFU of a GPT-2-medium-sized step at two batch sizes with the training loop
# timed with and without prefetch, all under $OUT. TINY=1 runs every stage on the CPU in seconds to minutes
# (JAX_PLATFORMS=cpu, the `tiny` grid and preset), to check the script where no GPU is at hand. Installs nothing (the device machine has JAX, Flax, Optax and Orbax); runs the package from the
# checkout under its import name `smallest_loss` (a temporary folder of links to the top-level folders, as
# pyproject.toml maps them). Every stage has its own time limit and the calibration resumes from what $OUT/timing
# already holds. The device tool returns at most 8 files, so the calibration folder comes back as one tarball.
# DEADLINE (seconds, default 540: one device call runs at most 600 s) bounds the whole script: each stage runs under
# its own limit or what is left of DEADLINE less what the stages after it need, whichever is less, and a stage that
# does not fit is skipped and named in skipped.txt; the FP8 calibration and the MFU bench take only what is left.
#   Usage:  OUT=out/gpu LIMIT=24 bash experiments/scripts/gpu_session.sh
#           TINY=1 OUT=/tmp/gpu-tiny bash experiments/scripts/gpu_session.sh      # the same stages on the CPU
# The whole session (24 configurations at 9-20 s each on an H100, the noise floor, probes of about a minute each,
# the fit, a planned run) takes more than one 600-s call. In 15 minutes of device time, two calls back to back:
#   PLAN=0 DEADLINE=480 OUT=$OUT bash experiments/scripts/gpu_session.sh            # calibration, noise, probes, fit
#   FROM=carry/timing.tar.gz PLAN=60s PLAN_SECONDS=160 DEADLINE=300 OUT=$OUT bash experiments/scripts/gpu_session.sh
# where carry/ (untracked, so it travels) holds the first call's timing.tar.gz: the second goes on where the first
# stopped (the rest of the grid and of the probes, the fit again, then the plan and, with time left, the bench).
set -uo pipefail
cd "$(dirname "$0")/../.."
if [ "${TINY:-0}" = 1 ]; then
  export JAX_PLATFORMS=cpu
  GRID=${GRID:-tiny}; LIMIT=${LIMIT:-10}; PRESET=${PRESET:-tiny}; BATCHES=${BATCHES:-4}; REPEATS=${REPEATS:-5}
  FP8_LIMIT=${FP8_LIMIT:-10}; FP8_MIN_SECONDS=${FP8_MIN_SECONDS:-0.05}  # a fit needs 10 records: the whole tiny grid
  MIN_SECONDS=${MIN_SECONDS:-0.05}
  FP8_SECONDS=${FP8_SECONDS:-300}
  PLAN=${PLAN:-10s}; SPACE=${SPACE:-cpu}
  DEADLINE=${DEADLINE:-1200}
fi
OUT=${OUT:-out/gpu}
GRID=${GRID:-gpu}            # timing grid (configs/grids.py)
LIMIT=${LIMIT:-24}           # configurations to measure in this session (12 architectures x 2 batches)
CAL_SECONDS=${CAL_SECONDS:-300}
MIN_SECONDS=${MIN_SECONDS:-1.0}  # a configuration's timed seconds over its rounds (calibrate --min-seconds): a round of a
#                              step up to 30 ms holds bursts of ten steps, the loop's sync cadence (timing/measure.py)
FP8_LIMIT=${FP8_LIMIT:-12}   # configurations of the FP8 calibration (the first of those above: their ratio is measured; 0: none)
FP8_SECONDS=${FP8_SECONDS:-180}
FP8_MIN_SECONDS=${FP8_MIN_SECONDS:-0.2}
NOISE=${NOISE:-4}            # configurations measured again for the noise floor (0: none)
PROBES=${PROBES:-3}          # probe runs (timing/probes.py) for the wall-clock terms (0: none)
PLAN=${PLAN:-90s}            # the planned and verified run's time budget (0: no plan stage)
PLAN_SECONDS=${PLAN_SECONDS:-240}
MEASURE=${MEASURE:-3}        # the plan's best candidates timed here before choosing (plan --measure)
SPACE=${SPACE:-gpu}          # the plan's search space (configs/spaces.py)
LAW=${LAW:-results/cpu/scaling/law.json}
PRESET=${PRESET:-gpt2-medium}
BATCHES=${BATCHES:-8 32}     # bench_train batch sizes
REPEATS=${REPEATS:-20}
PY=${PY:-python3}
TESTS=${TESTS:-1}            # the accelerator-only tests (0: none)
DEADLINE=${DEADLINE:-540}    # seconds for the whole script (the tarball is made whatever is left)
mkdir -p "$OUT"
T0=$SECONDS
# FROM: the timing.tar.gz an earlier call returned, copied into the checkout (which travels with the next call):
# unpacked into $OUT (its plan aside), so that every stage resumes from it: calibrate times only the configurations
# it lacks, and the noise floor and the probe runs it holds are kept.
if [ -n "${FROM:-}" ]; then
  tar -xzf "$FROM" -C "$OUT" --exclude=plan --exclude='plan/*' || { echo "cannot unpack FROM=$FROM"; exit 1; }
fi
# stage NAME LIMIT RESERVE LEAST [NEEDS]: sets T, the seconds stage NAME may take (its LIMIT, at most what is left of
# DEADLINE less RESERVE, the seconds the stages after it need), or skips it (returns 1) where that is under LEAST or
# the file NEEDS (what an earlier stage writes) is missing.
stage() {
  if [ -n "${5:-}" ] && [ ! -f "$5" ]; then
    echo "skipped $1: no $5 (an earlier stage did not write it)" | tee -a "$OUT/skipped.txt"
    return 1
  fi
  local left=$(( DEADLINE - (SECONDS - T0) - $3 ))
  T=$(( left < $2 ? left : $2 ))
  if [ "$T" -lt "$4" ]; then
    echo "skipped $1: ${T} s of DEADLINE=${DEADLINE} s left for it, it needs ${4} s" | tee -a "$OUT/skipped.txt"
    return 1
  fi
}
# The seconds the earlier stages leave for each later one (NOISE_KEEP for the noise floor and the probe runs: on a GPU
# about 40 s for four configurations timed again, about a minute a probe, the largest last; the plan runs whole or
# not at all), and the least a stage runs on.
CAL_NEED=30; NOISE_NEED=60; NOISE_KEEP=${NOISE_KEEP:-150}; FIT_NEED=${FIT_NEED:-25}
PLAN_NEED=$([ "$PLAN" != 0 ] && echo "$PLAN_SECONDS" || echo 0)
PKG=$(mktemp -d)
trap 'rm -rf "$PKG"' EXIT
mkdir "$PKG/smallest_loss"
for part in configs model timing scaling experiments; do ln -s "$PWD/$part" "$PKG/smallest_loss/$part"; done
for f in smallest_loss/*.py; do ln -s "$PWD/$f" "$PKG/$f"; done
export PYTHONPATH=$PKG PYTHONUNBUFFERED=1
# -P: the working folder first on sys.path would import the checkout's own smallest_loss/ (the API alone, without
# the subpackages the links above add) where nothing is installed
PY=("$PY" -P)
CLI=("${PY[@]}" -m smallest_loss.experiments.cli)  # an array, not a function: `timeout` runs commands only
{
  date -u; nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv 2>&1
  "${PY[@]}" -c "import sys, jax, flax, optax, orbax.checkpoint as o; print(sys.version.split()[0], 'jax', jax.__version__, \
'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
} > "$OUT/environment.txt" 2>&1
# the package as every stage imports it (from the links above, not the checkout's own smallest_loss/): stop at once
# where it does not import rather than spend the device time on stages that would all fail
"${PY[@]}" -c "import smallest_loss.experiments.cli as c; print('smallest_loss:', c.__file__)" \
  >> "$OUT/environment.txt" 2>&1 || { cat "$OUT/environment.txt"; echo "the package does not import: stopping"; exit 1; }
cat "$OUT/environment.txt"
# 1. The checks that need an accelerator (cuDNN attention against XLA's, the bf16 peak probe).
if [ "${TINY:-0}" != 1 ] && [ "$TESTS" != 0 ] && stage tests 120 $((CAL_NEED + NOISE_KEEP + FIT_NEED + PLAN_NEED)) 30
then  # on the CPU all are skipped
  timeout "$T" "${PY[@]}" -m pytest tests/model/test_gpu.py -m gpu -n 0 -p no:cacheprovider -q 2>&1 | tee "$OUT/tests.txt"
fi
# 2. Step-time models on held-out architectures: a slice of the `gpu` grid (bf16, GPT-2 vocabulary).
# (Killed at its limit, it keeps every configuration and round timed so far.)
stage calibrate "$CAL_SECONDS" $((NOISE_KEEP + FIT_NEED + PLAN_NEED)) "$CAL_NEED" &&
  timeout "$T" "${CLI[@]}" calibrate --grid "$GRID" --out "$OUT/timing" --min-seconds "$MIN_SECONDS" --limit "$LIMIT" \
  --no-noise-check --probes 0 --measure-only --quiet 2>&1 | tee "$OUT/calibrate.txt"
# 2b. The noise floor (NOISE configurations timed again) and the probe runs, then the fit: the profile's held-out
# step-time error beside the floor, and the loop's held-out error with the wall-clock terms.
RECORDS=$OUT/timing/records.jsonl PROFILE=$OUT/timing/profile.json
stage noise-and-probes 240 $((FIT_NEED + PLAN_NEED)) "$NOISE_NEED" "$RECORDS" && timeout "$T" "${PY[@]}" -c "
import sys; from pathlib import Path
from smallest_loss.timing.calibration import noise_floor, read_records
from smallest_loss.timing.probes import probe_runs
out = Path(sys.argv[1]); noise, probes, min_seconds = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
if noise:
    n = noise_floor(out, k=noise, min_seconds=min_seconds)
    print(f'noise floor: {n[\"configurations\"]} configurations differ by {n[\"median_abs\"]:.1%} median, {n[\"max_abs\"]:.1%} max')
print(f'probe runs: {len(probe_runs(out, read_records(out / \"records.jsonl\"), probes))}')
" "$OUT/timing" "$NOISE" "$PROBES" "$MIN_SECONDS" 2>&1 | tee -a "$OUT/calibrate.txt"
stage fit 120 "$PLAN_NEED" "$FIT_NEED" "$RECORDS" && timeout "$T" "${CLI[@]}" calibrate --fit-only --out "$OUT/timing" 2>&1 | tee -a "$OUT/calibrate.txt"
# 2c. A time budget planned with the profile just fitted and trained on this device: the planner's MEASURE best
# candidates compiled and timed here first, the best trained for the whole budget (wall-clock, start-up to the last
# save), and each wall-clock term and the step predicted against measured (plan.txt's `verify` lines). The law is the
# committed CPU sweep's (LAW): its loss at these sizes is an extrapolation, the time checks are the point.
if [ "$PLAN" != 0 ] && stage plan "$PLAN_SECONDS" 0 "$PLAN_SECONDS" "$PROFILE"; then
  timeout "$T" "${CLI[@]}" plan --budget "$PLAN" --law "$LAW" --profile "$PROFILE" \
    --space "$SPACE" --verify --measure "$MEASURE" --out "$OUT/plan" 2>&1 | tee "$OUT/plan.txt"
fi
# 2d. The same grid with FP8 matmuls (model.dtype=float8: e4m3 forward, e5m2 gradients, bf16 around them; emulated on
# the CPU, which says so), its first FP8_LIMIT configurations, and the measured ratio of its step times to those of
# the grid's own dtype (bf16 on the `gpu` grid) above, on the configurations both measured (calibrate --compare).
# Timed under the stage's limit less FP8_FIT_NEED, then fitted and compared: a grid cut short at its limit keeps
# what it timed, and the ratio reads the records alone (it comes even where they are too few to fit a profile).
FP8_FIT_NEED=${FP8_FIT_NEED:-20}
if [ "$FP8_LIMIT" -gt 0 ] && stage fp8 "$FP8_SECONDS" 0 60 "$PROFILE"; then  # FP8_LIMIT=0: no FP8 stage
  timeout $((T - FP8_FIT_NEED)) "${CLI[@]}" calibrate --grid "$GRID" --set model.dtype=float8 --out "$OUT/timing-fp8" \
    --min-seconds "$FP8_MIN_SECONDS" --limit "$FP8_LIMIT" --no-noise-check --probes 0 --measure-only --quiet \
    2>&1 | tee "$OUT/calibrate_fp8.txt"
  timeout "$FP8_FIT_NEED" "${CLI[@]}" calibrate --fit-only --out "$OUT/timing-fp8" --compare "$PROFILE" 2>&1 |
    tee -a "$OUT/calibrate_fp8.txt"
fi
FOLDERS=$(for f in timing timing-fp8 plan; do test -d "$OUT/$f" && echo "$f"; done)
if [ -n "$FOLDERS" ]; then
  tar -czf "$OUT/timing.tar.gz" -C "$OUT" --exclude=checkpoints $FOLDERS && (cd "$OUT" && rm -rf $FOLDERS)
fi
# 3. MFU of the real training step (bf16 compute, fp32 master weights, cuDNN attention) at two batch sizes, and the
# training loop's steady step with and without prefetch against it.
for b in $BATCHES; do
  stage "bench (batch $b)" 90 0 45 || continue
  timeout "$T" "${PY[@]}" experiments/scripts/bench_train.py --preset "$PRESET" --set train.batch_size="$b" \
    --repeats "$REPEATS" 2>&1 | tee -a "$OUT/bench_train.txt"
done
ls -la "$OUT"
