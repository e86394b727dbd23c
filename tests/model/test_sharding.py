"""Training over a device mesh, on simulated CPU devices (each case runs in its own process, because
XLA_FLAGS=--xla_force_host_platform_device_count must be set before JAX is imported)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.schema import TrainConfig
from smallest_loss.model.sharding import resolve_mesh_shape

ROOT = Path(__file__).resolve().parents[2]


def _worker(devices: int, *args: str) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-m", "tests.model.mesh_worker", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["devices"] == devices
    return result


def test_data_parallel_and_fsdp_match_one_device(tmp_path):
    single = _worker(8, "train", tmp_path / "one", 1, 1)["losses"]
    data_parallel = _worker(8, "train", tmp_path / "dp", 8, 1)["losses"]
    fsdp = _worker(8, "train", tmp_path / "fsdp", 2, 4)["losses"]
    assert len(single) == 12
    np.testing.assert_allclose(data_parallel, single, atol=1e-4)
    np.testing.assert_allclose(fsdp, single, atol=1e-4)


def test_fsdp_really_shards_parameters():
    specs = _worker(8, "specs", "-", 1, 8)
    assert "fsdp" in specs["spec"] and specs["shards"] == 8


def test_checkpoint_from_8_devices_resumes_on_4(tmp_path):
    reference = _worker(8, "train", tmp_path / "ref", 0, 1)["losses"]
    _worker(8, "crash", tmp_path / "cut", 0, 1)
    result = _worker(4, "resume", tmp_path / "cut")
    resumed = result["losses"]
    assert result["first_step"] == 6  # restored from the step-6 checkpoint, not retrained from scratch
    assert len(resumed) == 12
    np.testing.assert_allclose(resumed, reference, atol=1e-4)


@pytest.mark.parametrize(
    "fields,devices,message",
    [
        (dict(mesh_data=3), 8, "does not divide the 8 devices"),
        (dict(mesh_fsdp=3), 8, "train.mesh_fsdp=3 does not divide"),
        (dict(batch_size=12, mesh_data=8), 8, "train.batch_size=12 is not divisible"),
    ],
)
def test_bad_meshes_are_one_clear_line(fields, devices, message):
    with pytest.raises(UserError, match=message):
        resolve_mesh_shape(TrainConfig(**fields), devices)
