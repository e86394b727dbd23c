"""experiments/scripts/gpu_session.sh, checked without a GPU: the script parses, the flags it passes are accepted,
and its new Python paths run on the CPU (the loop timed with and without prefetch). The whole script in its CPU
mode (TINY=1) is the slow test."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import jax
import pytest
from smallest_loss.configs.models import get_preset
from smallest_loss.configs.overrides import apply_overrides
from smallest_loss.experiments.cli import build_parser
from smallest_loss.experiments.scripts.bench_train import bench_loops
from smallest_loss.model.sharding import make_mesh, resolve_mesh_shape
from smallest_loss.model.train import init_sharded_state, jit_sharded_step, make_optimizer

SCRIPT = Path(__file__).resolve().parents[2] / "experiments/scripts/gpu_session.sh"


def test_the_script_parses_and_its_calibrate_flags_are_accepted():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    text = SCRIPT.read_text()
    assert "--probes 0" in text and "probe_runs" in text and "noise_floor" in text and "model.dtype=float8" in text
    flags = ["calibrate", "--grid", "tiny", "--out", "x", "--min-seconds", "0.2", "--limit", "2"]
    more = ["--no-noise-check", "--probes", "0", "--quiet", "--set", "model.dtype=float8", "--compare", "p.json"]
    args = build_parser(flags).parse_args([*flags, *more, "--measure-only"])
    assert args.probes == 0 and not args.noise_check and args.set == ["model.dtype=float8"] and args.measure_only
    assert "--measure-only" in text and '--verify --measure "$MEASURE"' in text and "MEASURE=${MEASURE:-3}" in text


@pytest.mark.slow
def test_bench_train_times_the_loop_with_and_without_prefetch():
    config = apply_overrides(
        get_preset("tiny"), ["model.d=32", "model.n=1", "model.h=2", "model.s=16", "train.batch_size=2"]
    )
    t = config.train
    optimizer = make_optimizer(t, 100)
    mesh = make_mesh(resolve_mesh_shape(t, jax.device_count()))
    graphdef, state, shardings = init_sharded_state(config.model, optimizer, t.seed, mesh)
    step = jit_sharded_step(graphdef, optimizer, shardings, mesh)
    loops, _ = bench_loops(step, state, config, mesh, repeats=3, rounds=1)
    assert set(loops) == {"loop_seconds", "loop_plain_seconds"} and all(v > 0 for v in loops.values())


@pytest.mark.slow
def test_the_whole_session_runs_on_the_cpu(tmp_path):
    # FP8_LIMIT=0: no FP8 calibration (on 2 CPU cores it would double this test's time; its commands are the
    # calibrate --set / --compare of tests/timing/test_precision.py); one probe run (timing/probes.py's own tests
    # fit several); LIMIT=10: the fewest records the model comparison takes; the plan's best candidate alone timed
    # before choosing (tests/scaling/test_preflight.py measures several)
    env = dict(os.environ, TINY="1", OUT=str(tmp_path), LIMIT="10", NOISE="1", PROBES="1", REPEATS="2", BATCHES="2",
               FP8_LIMIT="0", MEASURE="1", PY=sys.executable)  # fmt: skip
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-2000:]
    calibrate = (tmp_path / "calibrate.txt").read_text()
    assert "noise floor:" in calibrate and "probe runs: 1" in calibrate and "training loop: host cost" in calibrate
    assert "with prefetch" in (tmp_path / "bench_train.txt").read_text()
    assert not (tmp_path / "calibrate_fp8.txt").exists() and (tmp_path / "timing.tar.gz").exists()
    # the plan stage: candidates timed before choosing, the best trained, every wall-clock term predicted vs measured
    plan = (tmp_path / "plan.txt").read_text()
    assert "measured here before choosing" in plan and "verify wall-clock, measured vs predicted" in plan
    with tarfile.open(tmp_path / "timing.tar.gz") as tar:
        names = tar.getnames()
    assert "plan/plan.json" in names and not any("checkpoints" in n for n in names)


def test_a_deadline_skips_the_stages_that_do_not_fit_and_names_them(tmp_path):
    """DEADLINE bounds the whole script (a device call runs at most 600 s): with 5 s every stage is skipped, each
    named with why (no time, or an earlier stage's file missing), and the script still ends cleanly."""
    out = tmp_path / "out"
    env = dict(os.environ, TINY="1", OUT=str(out), DEADLINE="5", BATCHES="2", PY=sys.executable)
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    skipped = (out / "skipped.txt").read_text()
    for stage in ("calibrate", "noise-and-probes", "fit", "plan", "fp8", "bench (batch 2)"):
        assert f"skipped {stage}:" in skipped
    assert "DEADLINE=5 s" in skipped and "timing/profile.json" in skipped
    assert (out / "environment.txt").exists() and not (out / "timing.tar.gz").exists()
    # the package every stage runs is the script's links, never the checkout's own smallest_loss/ (the API alone):
    # where nothing is installed that folder, first on sys.path, hid the subpackages (an H100 call, 2026-12-06)
    imported = (out / "environment.txt").read_text().split("smallest_loss: ")[1].split()[0]
    assert not imported.startswith(str(SCRIPT.parents[2]))


def test_a_second_call_resumes_from_the_first_calls_tarball(tmp_path):
    """FROM=timing.tar.gz (what a call returns) is unpacked into $OUT, its plan aside, and comes back with what the
    call added: the calibration resumes there."""
    first = tmp_path / "first"
    (first / "timing").mkdir(parents=True)
    (first / "plan").mkdir()
    (first / "timing" / "records.jsonl").write_text('{"status": "ok"}\n')
    (first / "plan" / "plan.json").write_text("{}")
    with tarfile.open(tmp_path / "timing.tar.gz", "w:gz") as tar:
        tar.add(first / "timing", "timing")
        tar.add(first / "plan", "plan")
    out = tmp_path / "out"
    env = dict(os.environ, TINY="1", OUT=str(out), DEADLINE="5", BATCHES="2", PY=sys.executable,
               FROM=str(tmp_path / "timing.tar.gz"))  # fmt: skip
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    with tarfile.open(out / "timing.tar.gz") as tar:
        names = tar.getnames()
    assert "timing/records.jsonl" in names and not any(n.startswith("plan") for n in names)
    assert "no " + str(out / "timing/records.jsonl") not in (out / "skipped.txt").read_text()
