"""Device mesh and shardings for training: data parallelism and fully sharded (FSDP-style) parameters.

The mesh has two axes, `data` and `fsdp`. Batches are split over both (every device sees its own
sequences); parameters and optimizer state are replicated over `data` and, when `fsdp` > 1, split over
`fsdp` along their largest dimension that it divides. All of this is JAX's own machinery
(`jax.make_mesh`, `NamedSharding`, `jax.distributed`); XLA inserts the collectives.

Expert parallelism: a mixture of experts' routed expert weights ([E, ...], model/moe.py EXPERT_WEIGHTS) and their
Adam moments are split over `data` along the expert dimension when `data` divides E (each data-parallel device
holds E/data experts' weights; the rest of the leaf follows the FSDP rule), so XLA moves the experts' weights or
rows between devices where the step needs them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.schema import TrainConfig
from smallest_loss.model.params import EXPERT_WEIGHTS

BATCH_AXES = ("data", "fsdp")


@dataclass(frozen=True)
class MeshShape:
    data: int
    fsdp: int

    @property
    def size(self) -> int:
        return self.data * self.fsdp


def resolve_mesh_shape(cfg: TrainConfig, device_count: int | None = None) -> MeshShape:
    """The mesh that `train.mesh_data` x `train.mesh_fsdp` asks for (mesh_data=0: all remaining devices)."""
    count = jax.device_count() if device_count is None else device_count
    if count % cfg.mesh_fsdp:
        raise UserError(f"train.mesh_fsdp={cfg.mesh_fsdp} does not divide the {count} devices")
    data = cfg.mesh_data or count // cfg.mesh_fsdp
    shape = MeshShape(data, cfg.mesh_fsdp)
    if count % shape.size:
        raise UserError(
            f"mesh {shape.data}x{shape.fsdp} (train.mesh_data x train.mesh_fsdp) has {shape.size} "
            f"devices, which does not divide the {count} devices present"
        )
    for name in ("batch_size", "eval_batch_size"):
        if getattr(cfg, name) % shape.size:
            raise UserError(
                f"train.{name}={getattr(cfg, name)} is not divisible by the mesh's {shape.size} devices "
                f"({shape.data}x{shape.fsdp}); choose a batch size that is"
            )
    return shape


def make_mesh(shape: MeshShape) -> Mesh:
    """A (data, fsdp) mesh over the first `shape.size` devices."""
    devices = jax.devices()[: shape.size]
    return jax.make_mesh((shape.data, shape.fsdp), ("data", "fsdp"), (AxisType.Auto, AxisType.Auto), devices=devices)


def _leaf_spec(shape: tuple[int, ...], fsdp: int) -> P:
    """Split the largest dimension that `fsdp` divides; replicate small or indivisible arrays."""
    if fsdp == 1 or not shape:
        return P()
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
        if shape[axis] % fsdp == 0:
            spec = [None] * len(shape)
            spec[axis] = "fsdp"
            return P(*spec)
    return P()


def _is_expert_weight(path: tuple, shape: tuple[int, ...]) -> bool:
    """A routed experts' weight [E, ...] (or its Adam moment): rank 3, named as model/moe.py names them."""
    names = {str(getattr(key, "key", getattr(key, "name", key))) for key in path}
    return len(shape) == 3 and bool(names & set(EXPERT_WEIGHTS))


def state_shardings(abstract_state: Any, mesh: Mesh) -> Any:
    """Shardings for the training state, chosen by each leaf's shape (so Adam moments follow parameters); routed
    expert weights split over `data` along the expert dimension where it divides (expert parallelism)."""
    fsdp, data = mesh.shape["fsdp"], mesh.shape["data"]

    def spec(path: tuple, leaf: Any) -> NamedSharding:
        shape = tuple(leaf.shape)
        if data > 1 and _is_expert_weight(path, shape) and shape[0] % data == 0:
            return NamedSharding(mesh, P("data", *_leaf_spec(shape[1:], fsdp)))
        return NamedSharding(mesh, _leaf_spec(shape, fsdp))

    return jax.tree_util.tree_map_with_path(spec, abstract_state)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def put_batch(tokens_BxL: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """Place a global batch on the mesh; each process contributes only its own rows (multi-host safe)."""
    if jax.process_count() == 1:
        return jax.device_put(tokens_BxL, sharding)
    per_process = tokens_BxL.shape[0] // jax.process_count()
    start = jax.process_index() * per_process
    local = tokens_BxL[start : start + per_process]
    return jax.make_array_from_process_local_data(sharding, local, tokens_BxL.shape)


_TEXT_BYTES = 2048  # longest message that process 0 sends the others (longer ones are cut)


def from_main(text: str | None) -> str | None:
    """Process 0's `text` (a decision, such as an error message, or None) on every process.

    A collective: every process must call it, and none returns before process 0 has called it, so it
    also orders the others after whatever process 0 did before (writing a file, say).
    """
    if jax.process_count() == 1:
        return text
    encoded = (text or "").encode()[:_TEXT_BYTES]
    data = np.zeros(1 + _TEXT_BYTES, np.uint8)  # a flag (is there a text?), then the text, zero-padded
    data[0] = text is not None
    data[1 : 1 + len(encoded)] = np.frombuffer(encoded, np.uint8)
    data = np.asarray(multihost_utils.broadcast_one_to_all(data))
    return bytes(data[1:]).rstrip(b"\0").decode(errors="ignore") if data[0] else None


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier called `name` (nothing to wait for with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def initialize_distributed() -> bool:
    """Start JAX's multi-host runtime when the standard environment settings are present.

    `JAX_COORDINATOR_ADDRESS` (host:port of process 0), `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID` are passed
    to `jax.distributed.initialize`; on clusters it detects itself (SLURM, TPU pods) set
    `SMALLEST_LOSS_DISTRIBUTED=1` instead. Returns whether the runtime was started.
    """
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if address:
        jax.distributed.initialize(
            coordinator_address=address,
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]),
        )
        return True
    if os.environ.get("SMALLEST_LOSS_DISTRIBUTED") == "1":
        jax.distributed.initialize()
        return True
    return False
