"""Timing over a device mesh: records carry device count and mesh shape, and the data-parallel model
prices the gradient all-reduce (fitted when records with several device counts exist)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from smallest_loss.timing.models import compare_models, design_matrix, fit_coefficients, get_model, shape_columns

ROOT = Path(__file__).resolve().parents[2]
SYNC = "exact: ... + layers + gradient sync (data parallel)"


def test_sync_coefficient_is_recovered_from_synthetic_records():
    truth = np.array([2e-12, 3e-10, 1e-11, 2e-11, 5e-5, 4e-10, 1e-4])
    records = []
    for d in (32, 64, 128, 256):
        for n in (1, 2, 4):
            for s in (32, 128):
                for k in (1, 2, 4):
                    records.append(dict(status="ok", config=dict(d=d, n=n, h=d // 16, w=4 * d, s=s, v=256),
                                        batch=4 * k, device_count=k, step_seconds=1.0, dtype="float32"))
    cols = shape_columns(records)
    X = design_matrix(get_model(SYNC), cols, dict(peak_flops=1.0, bandwidth=1.0))
    t = X @ truth
    np.testing.assert_allclose(fit_coefficients(X, t), truth, rtol=1e-5)


def test_mesh_calibration_on_simulated_devices(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "smallest_loss.experiments.cli", "calibrate", "--grid", "tiny-mesh",
           "--out", str(tmp_path), "--min-seconds", "0.05", "--quiet", "--no-noise-check"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert {r["device_count"] for r in records} == {1, 2}
    assert all(r["mesh"] == [r["device_count"], 1] and r["status"] == "ok" for r in records)
    assert SYNC in done.stdout
    names = [r["name"] for r in compare_models(records, dict(peak_flops=1e11, bandwidth=1e10))]
    assert SYNC in names


def test_mesh_grid_needs_its_devices(tmp_path, capsys):
    from smallest_loss.experiments.cli import main

    assert main(["calibrate", "--grid", "cpu-mesh", "--out", str(tmp_path)]) == 2
    assert "needs 4 devices" in capsys.readouterr().err
