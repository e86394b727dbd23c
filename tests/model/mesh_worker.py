"""Run in a subprocess by test_sharding.py, with XLA_FLAGS simulating N CPU devices (set before JAX loads).

Usage: python -m tests.model.mesh_worker MODE FOLDER [mesh_data mesh_fsdp]; prints one JSON line.
"""

from __future__ import annotations

import dataclasses
import json
import sys

import jax
import smallest_loss.model.train as train_mod
from smallest_loss.model.runs import RunDir
from smallest_loss.model.train import train

from tests.conftest import tiny_run


def _config(mesh_data: int, mesh_fsdp: int, steps: int = 12):
    cfg = tiny_run(steps=steps, batch_size=8, checkpoint_every=6, eval_every=6)
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, mesh_data=mesh_data, mesh_fsdp=mesh_fsdp))


def _losses(folder: str) -> list[float]:
    return [line["train_loss"] for line in RunDir.open(folder).read_metrics()]


def main() -> None:
    mode, folder, *mesh = sys.argv[1:]
    out = dict(devices=jax.device_count())
    if mode == "train":
        train(_config(*map(int, mesh)), folder, progress=False)
    elif mode == "crash":  # stop at step 9, after the step-6 checkpoint, without saving
        real = train_mod.batch
        train_mod.batch = lambda tokens, seed, k, *a: (_ for _ in ()).throw(RuntimeError()) if k == 9 else real(
            tokens, seed, k, *a)
        try:
            train(_config(*map(int, mesh)), folder, progress=False)
        except RuntimeError:
            pass
    elif mode == "resume":
        real, seen = train_mod.batch, []
        train_mod.batch = lambda tokens, seed, k, *a: seen.append((seed, k)) or real(tokens, seed, k, *a)
        train(None, folder, resume=True, progress=False)
        out["first_step"] = min(k for seed, k in seen if seed == 0)  # training batches, not eval ones
    elif mode == "specs":
        from smallest_loss.model.sharding import make_mesh, resolve_mesh_shape
        from smallest_loss.model.train import init_sharded_state, make_optimizer

        cfg = _config(*map(int, mesh))
        mesh_obj = make_mesh(resolve_mesh_shape(cfg.train))
        _, state, _ = init_sharded_state(cfg.model, make_optimizer(cfg.train, 12), 0, mesh_obj)
        kernel = state["params"]["blocks"][0]["mlp"]["up"]["kernel"]
        from smallest_loss.model.transformer import variable_value

        out["spec"] = str(variable_value(kernel).sharding.spec)
        out["shards"] = len({s.device for s in variable_value(kernel).addressable_shards})
    out["losses"] = _losses(folder) if mode != "specs" else []
    print(json.dumps(out))


if __name__ == "__main__":
    main()
