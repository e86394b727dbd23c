"""Run in a subprocess by test_moe_sharding.py, with XLA_FLAGS simulating N CPU devices (set before JAX loads).

Usage: python -m tests.model.moe_mesh_worker MODE FOLDER; prints one JSON line.
  train:   train a tiny mixture of experts in FOLDER/one on one device and in FOLDER/all on all devices (experts
           split over the data axis); report both runs' losses, the expert weights' sharding and a digest of the
           last checkpoint as restored here.
  restore: restore FOLDER/all's last checkpoint on whatever devices there are; report its digest.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from smallest_loss.model.runs import RunDir
from smallest_loss.model.sharding import make_mesh, resolve_mesh_shape
from smallest_loss.model.train import make_optimizer, state_layout, train

from tests.conftest import tiny_run

STEPS = 4


def _config(mesh_data: int):
    cfg = tiny_run(steps=STEPS, batch_size=8, checkpoint_every=STEPS, eval_every=0, eval_batch_size=8)
    model = dataclasses.replace(cfg.model, experts=4, top_k=2, granularity=2, shared_experts=1)
    return dataclasses.replace(cfg, model=model, train=dataclasses.replace(cfg.train, mesh_data=mesh_data))


def _restored(folder: Path) -> tuple[dict, str]:
    """The run's last checkpoint restored onto this process's devices: a digest (sum of |x| per leaf, in order)
    and the sharding of the first expert weight."""
    cfg = _config(0)
    mesh = make_mesh(resolve_mesh_shape(cfg.train))
    _, abstract, _ = state_layout(cfg.model, make_optimizer(cfg.train, STEPS), 0, mesh)
    manager = RunDir.open(folder).checkpoint_manager()
    try:
        state = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(abstract))
    finally:
        manager.close()
    digest = [float(np.abs(np.asarray(x, np.float64)).sum()) for x in jax.tree.leaves(state["params"])]
    up = state["params"]["blocks"][0]["mlp"]["up"]
    return digest, str(getattr(up, "value", up).sharding.spec)


def main(mode: str, folder: Path) -> dict:
    result: dict = {"devices": jax.device_count()}
    if mode == "train":
        for name, mesh_data in (("one", 1), ("all", 0)):
            train(_config(mesh_data), folder / name, progress=False)
            result[name] = [line["train_loss"] for line in RunDir.open(folder / name).read_metrics()]
            result[f"{name}_aux"] = [line["router_aux_loss"] for line in RunDir.open(folder / name).read_metrics()]
    result["digest"], result["expert_spec"] = _restored(folder / "all")
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], Path(sys.argv[2]))))
