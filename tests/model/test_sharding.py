"""Training over a device mesh, on simulated CPU devices, and over two processes (hosts) on this machine.

Simulated devices need their own process, because XLA_FLAGS=--xla_force_host_platform_device_count must
be set before JAX is imported: one worker trains every mesh (tests/model/mesh_worker.py), a second
resumes its cut run on half the devices.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.schema import TrainConfig
from smallest_loss.model.sharding import resolve_mesh_shape

from tests.conftest import device_env
from tests.model.conftest import metrics

ROOT = Path(__file__).resolve().parents[2]


def _worker(devices: int, *args: str) -> dict:
    env = device_env(devices)
    done = subprocess.run(
        [sys.executable, "-m", "tests.model.mesh_worker", *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["devices"] == devices
    return result


@pytest.fixture(scope="module")
def meshes(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("meshes")
    return folder, _worker(8, "meshes", folder)


@pytest.mark.slow
def test_data_parallel_and_fsdp_match_one_device(meshes):
    result = meshes[1]
    assert len(result["single"]) == 12
    np.testing.assert_allclose(result["data"], result["single"], atol=1e-4)
    np.testing.assert_allclose(result["fsdp"], result["single"], atol=1e-4)


@pytest.mark.slow
def test_a_run_on_the_clock_moves_its_horizon_over_a_mesh(meshes):
    assert meshes[1]["clocked"] == 4  # tests/model/test_clock.py: a deadline already past ends it after the third sync


@pytest.mark.slow
def test_fsdp_really_shards_parameters(meshes):
    kernel = meshes[1]["kernel"]
    assert "fsdp" in kernel["spec"] and kernel["shards"] == 8


@pytest.mark.slow
def test_checkpoint_from_8_devices_resumes_on_4(meshes):
    folder, result = meshes
    cut = folder / "cut"  # the 8x1 run as if it had crashed at step 9, after its step-6 checkpoint
    shutil.copytree(folder / "data", cut)
    (cut / "summary.json").unlink()
    shutil.rmtree(cut / "checkpoints" / "12")
    (cut / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in metrics(cut)[:9]))
    resumed = _worker(4, "resume", folder)
    assert resumed["first_step"] == 6  # restored from the step-6 checkpoint, not retrained from scratch
    assert len(resumed["resumed"]) == 12
    np.testing.assert_allclose(resumed["resumed"], result["data"], atol=1e-4)  # the cut run was on 8x1


@pytest.mark.parametrize(
    "fields,devices,message",
    [
        (dict(mesh_data=3), 8, "does not divide the 8 devices"),
        (dict(mesh_fsdp=3), 8, "train.mesh_fsdp=3 does not divide"),
        (dict(batch_size=12, mesh_data=8), 8, "train.batch_size=12 is not divisible"),
        (dict(batch_size=16, eval_batch_size=12, mesh_data=8), 8, "train.eval_batch_size=12 is not divisible"),
    ],
)
def test_bad_meshes_are_one_clear_line(fields, devices, message):
    with pytest.raises(UserError, match=message):
        resolve_mesh_shape(TrainConfig(**fields), devices)


# Process 1 reaches the run folder late: its JAX backend is up (which waits for every process) but its
# corpus loads 1 s slower, so process 0 writes config.json first. Process 1 must not take the folder for
# someone else's run and exit, leaving process 0 waiting for it in a collective.
_LATE_PROCESS = """
import sys, time
import jax
import smallest_loss.model.train as train_mod
from smallest_loss.experiments.cli import main
real = train_mod.load_corpus
train_mod.load_corpus = lambda cfg: jax.devices() and time.sleep(1) or real(cfg)
sys.exit(main(sys.argv[1:]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_start_one_run_folder(tmp_path):
    out = tmp_path / "run"
    sets = dict(
        model__d=32,
        model__n=1,
        model__h=2,
        model__s=16,
        train__batch_size=4,
        train__steps=3,
        train__warmup_steps=1,
        train__eval_every=0,
        train__eval_batches=1,
        train__checkpoint_every=0,
    )
    argv = [
        "train",
        *[a for k, v in sets.items() for a in ("--set", f"{k.replace('__', '.')}={v}")],
        "--out",
        str(out),
        "--quiet",
    ]
    port = _free_port()
    procs = []
    for rank, code in enumerate((["-m", "smallest_loss.experiments.cli"], ["-c", _LATE_PROCESS])):
        env = dict(device_env(), JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2")
        env["JAX_PROCESS_ID"] = str(rank)
        procs.append(
            subprocess.Popen(
                [sys.executable, *code, *argv],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        results = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err[-3000:]
    names = ["checkpoints", "config.json", "metrics.jsonl", "summary.json", ".lock"]
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    assert json.loads((out / ".lock").read_text())["pid"] == procs[0].pid  # process 0 held the run's lock
    assert json.loads((out / "config.json").read_text())["device_count"] == 2  # one CPU device per process
    assert [m["step"] for m in metrics(out)] == [1, 2, 3]
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"
