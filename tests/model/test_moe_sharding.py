"""Expert parallelism on simulated CPU devices (in subprocesses, as tests/model/test_sharding.py does: XLA_FLAGS
must be set before JAX loads): a mixture of experts trains over 4 devices with its expert weights split over the
data axis, with the losses of one device, and its checkpoint restores on 2 devices."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import device_env

ROOT = Path(__file__).resolve().parents[2]


def run_worker(devices: int, *args: str) -> dict:
    env = device_env(devices)
    done = subprocess.run(
        [sys.executable, "-m", "tests.model.moe_mesh_worker", *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["devices"] == devices
    return result


@pytest.mark.slow
def test_expert_parallel_run_matches_one_device_and_restores_on_two(tmp_path):
    four = run_worker(4, "train", tmp_path)
    assert len(four["one"]) == 4
    np.testing.assert_allclose(four["all"], four["one"], atol=1e-4)
    np.testing.assert_allclose(four["all_aux"], four["one_aux"], atol=1e-4)
    assert four["expert_spec"].startswith("P('data'")
    two = run_worker(2, "restore", tmp_path)
    np.testing.assert_allclose(two["digest"], four["digest"], rtol=1e-6)
    assert two["expert_spec"].startswith("P('data'")
