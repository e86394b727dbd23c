"""Run in a subprocess by test_sharding.py, with XLA_FLAGS simulating N CPU devices (set before JAX loads).

Usage: python -m tests.model.mesh_worker MODE FOLDER; prints one JSON line.
  meshes: in FOLDER, train on one device, on all devices (data) and a 2x4 (data x fsdp) mesh; report each
          run's losses, how a 1x8 mesh shards an MLP kernel and the steps a run on the clock trains on the 2x4 mesh.
          One process for all of it: JAX starts once.
  resume: resume FOLDER/cut on whatever devices there are; report its losses and the first batch trained.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import jax
import smallest_loss.model.train as train_mod
from smallest_loss.model.runs import RunDir
from smallest_loss.model.sharding import make_mesh, resolve_mesh_shape
from smallest_loss.model.train import init_sharded_state, make_optimizer, train
from smallest_loss.model.transformer import variable_value

from tests.conftest import tiny_run

STEPS = 12


def _config(mesh_data: int, mesh_fsdp: int):
    cfg = tiny_run(steps=STEPS, batch_size=8, checkpoint_every=6, eval_every=6)
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, mesh_data=mesh_data, mesh_fsdp=mesh_fsdp))


def _losses(folder: Path) -> list[float]:
    return [line["train_loss"] for line in RunDir.open(folder).read_metrics()]


def _fsdp_kernel(mesh_fsdp: int) -> dict:
    cfg = _config(1, mesh_fsdp)
    mesh = make_mesh(resolve_mesh_shape(cfg.train))
    _, state, _ = init_sharded_state(cfg.model, make_optimizer(cfg.train, STEPS), 0, mesh)
    kernel = variable_value(state["params"]["blocks"][0]["mlp"]["up"]["kernel"])
    return dict(spec=str(kernel.sharding.spec), shards=len({s.device for s in kernel.addressable_shards}))


def main() -> None:
    mode, folder = sys.argv[1], Path(sys.argv[2])
    out: dict = dict(devices=jax.device_count())
    if mode == "meshes":
        for name, mesh in (("single", (1, 1)), ("data", (0, 1)), ("fsdp", (2, 4))):  # (0, 1): all devices
            train(_config(*mesh), folder / name, progress=False)
            out[name] = _losses(folder / name)
        out["kernel"] = _fsdp_kernel(8)
        # A run that ends on the clock, on the 2x4 mesh: its horizon (a scalar in the sharded state) moved, placed and
        # read back (a deadline already past: it ends at the step after the third sync, log_every 1)
        cfg = _config(2, 4)
        clocked = dataclasses.replace(cfg.train, end_within=1e-6, log_every=1, checkpoint_every=0, eval_every=0)
        out["clocked"] = train(dataclasses.replace(cfg, train=clocked), folder / "clocked", progress=False)["steps"]
    elif mode == "resume":
        real, seen = train_mod.batch, []
        train_mod.batch = lambda tokens, seed, k, *a: seen.append((seed, k)) or real(tokens, seed, k, *a)
        train(None, folder / "cut", resume=True, progress=False)
        out["first_step"] = min(k for seed, k in seen if seed == 0)  # training batches, not eval ones
        out["resumed"] = _losses(folder / "cut")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
