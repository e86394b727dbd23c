"""Timing over a device mesh: records carry device count and mesh shape, and the data-parallel model
prices the gradient all-reduce (fitted when records with several device counts exist)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from smallest_loss.configs.grids import get_grid
from smallest_loss.configs.schema import ModelConfig
from smallest_loss.model.params import count_params
from smallest_loss.timing.counts import (
    train_attention_flops,
    train_step_bytes,
    train_step_flops,
    train_step_terms,
    weight_bytes,
)
from smallest_loss.timing.models import compare_models, design_matrix, fit_coefficients, get_model, shape_columns

from tests.conftest import device_env

ROOT = Path(__file__).resolve().parents[2]
SYNC = "data-parallel"


def step_seconds(cfg: ModelConfig, b: int, k: int, rates: np.ndarray) -> float:
    """A data-parallel step priced by hand: each of k devices does the work of b/k sequences, reads and
    writes every weight, and sends 2 (k-1)/k of the float32 gradients in a ring all-reduce."""
    shape = (cfg.d, cfg.n, cfg.h, cfg.w, cfg.s, cfg.v, b / k)
    attention = train_attention_flops(cfg.d, cfg.n, cfg.s, b / k)
    weights = weight_bytes(cfg.d, cfg.n, cfg.w, cfg.v)
    sync = 2 * (k - 1) / k * 4 * count_params(cfg).total
    work = (train_step_flops(*shape) - attention, attention, weights, train_step_bytes(*shape) - weights, cfg.n, sync)
    return float(np.dot(rates[:-1], work) + rates[-1])


def synthetic_mesh_records(rates: np.ndarray) -> list[dict]:
    records = []
    for d in (32, 64, 128, 256):
        for n in (1, 2, 4):
            for s in (32, 128):
                for k in (1, 2, 4):
                    cfg = ModelConfig(v=256, d=d, n=n, h=d // 16, w=4 * d, s=s)
                    records.append(
                        dict(
                            status="ok",
                            config=dict(d=d, n=n, h=d // 16, w=4 * d, s=s, v=256),
                            batch=4 * k,
                            device_count=k,
                            dtype="float32",
                            step_seconds=step_seconds(cfg, 4 * k, k, rates),
                        )
                    )
    return records


TRUTH = np.array([2e-12, 3e-10, 1e-11, 2e-11, 5e-5, 4e-10, 1e-4])


def test_sync_coefficient_is_recovered_from_synthetic_records():
    cols = shape_columns(synthetic_mesh_records(TRUTH))
    X = design_matrix(get_model(SYNC), cols, dict(peak_flops=1.0, bandwidth=1.0))
    np.testing.assert_allclose(fit_coefficients(X, cols["time"]), TRUTH, rtol=1e-5)


def test_the_data_parallel_model_is_compared_only_with_several_device_counts():
    records = synthetic_mesh_records(TRUTH)
    device = dict(peak_flops=1e11, bandwidth=1e10)
    results = compare_models(records, device)
    assert results[0]["id"] == SYNC and results[0]["held_out"]["mape"] < 1e-4
    single = [r for r in records if r["device_count"] == 1]
    assert SYNC not in [r["id"] for r in compare_models(single, device)]


def test_mesh_grids_measure_each_shape_on_every_device_count():
    points = get_grid("tiny-mesh")
    assert [p.devices for p in points] == [1, 2] * (len(points) // 2)
    pairs = zip(points[::2], points[1::2], strict=True)
    assert all(two.model == one.model and two.batch == 2 * one.batch for one, two in pairs)


@pytest.mark.slow
def test_a_record_over_simulated_devices():
    """The data-parallel step on 2 simulated CPU devices (a fresh process: the device count is fixed when JAX
    starts): the record carries the device count and mesh shape, and XLA's flops are one device's: half the
    batch's work, all of the (replicated) optimizer's."""
    env = device_env(2)
    code = (
        "import json; from smallest_loss.configs.grids import get_grid; from smallest_loss.timing.measure "
        "import measure; p = get_grid('tiny-mesh')[1]; "
        "print(json.dumps(measure(p.model, p.batch, devices=p.devices, min_seconds=0.02, rounds=2)))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(done.stdout.strip().splitlines()[-1])
    point = get_grid("tiny-mesh")[1]
    assert record["status"] == "ok" and record["device_count"] == 2 and record["mesh"] == [2, 1]
    assert record["batch"] == point.batch and record["rounds"] == 2
    m = point.model
    terms = train_step_terms(m.d, m.n, m.h, m.w, m.s, m.v, point.batch)
    per_device = (sum(terms.values()) - terms["optimizer"]) / 2 + terms["optimizer"]
    assert record["xla"]["flops"] == pytest.approx(per_device, rel=0.003)


def test_mesh_grid_needs_its_devices(tmp_path, capsys):
    from smallest_loss.experiments.cli import main

    assert main(["calibrate", "--grid", "cpu-mesh", "--out", str(tmp_path)]) == 2
    assert "needs 4 devices" in capsys.readouterr().err
