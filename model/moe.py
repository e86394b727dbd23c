"""A mixture-of-experts MLP (model.experts > 0): a softmax router, top-k routing, dropless dispatch.

Shape letters as in model/transformer.py, plus T tokens (B*L), E routed experts (experts * granularity),
A active experts per token (top_k * granularity), M routed rows (T*A), R rows after padding to blocks,
N blocks, Q rows per block, G expert width (w / granularity).

Router: float32 logits x W_r (d x E), softmax probabilities p; each token goes to its A most probable experts
and their outputs are summed, weighted by p (not renormalised: with top-1, renormalising would leave the router
no gradient from the language-model loss; as in the Switch Transformer, Fedus et al., 2022). Shared experts
(`model.shared_experts`) run on every token, as one dense MLP of width shared_experts * G (the sum of several
MLPs of one activation is that MLP).

Dispatch is dropless: every routed row is computed, whatever the load. The M rows are sorted by expert, and
each expert's rows are padded up to a whole number of blocks of Q rows, so every block belongs to one expert.
The padded length is static: sum_e ceil(c_e / Q) <= floor((M + E(Q - 1)) / Q) = N blocks, whatever the counts
c_e. "blocked" (the default) gathers each block's expert weights ([N, d, G]) and runs one batched matmul; XLA
computes exactly N*Q rows, so the FLOPs are known in advance (timing/counts.py, checked against XLA's cost
analysis). "ragged" runs the sorted rows (unpadded) through `jax.lax.ragged_dot` with the group sizes. Both
give the same outputs and gradients (tests/model/test_moe.py).

Why blocked is the default: in jax 0.10.2 `ragged_dot` works on CPU, its gradient too, but XLA's CPU backend
expands it into a dense, masked matmul over all E experts: E times the FLOPs of the rows it keeps (measured with
the cost analysis: 8.65e6 against 1.05e6 for 256 rows, d=32, G=64, E=8), so counts cannot be exact and time
grows with E. Measured CPU training step (2 shared cores, jax 0.10.2, median (min) of 30 steps; v=256, d=32,
n=2, h=2, w=128, s=32, b=8; experts=4, granularity=2, top_k=1): dense MLP 25 ms (12 ms), blocked 31 ms (17 ms),
ragged 41 ms (29 ms), with `python experiments/scripts/bench_train.py --preset tiny --set model.d=32 --set
model.n=2 --set model.h=2 --set model.w=128 --set model.s=32 --set train.batch_size=8 --set model.experts=4 --set
model.granularity=2 [--set model.moe_dispatch=ragged]`. GPUs may run `ragged_dot` as a grouped matmul (set
model.moe_dispatch=ragged there and time it; its counts are the unpadded rows).

Router statistics of each layer are sown as `nnx.Intermediate` values named ROUTER_STATS (`call_with_router_stats`
collects them over the layers): the load-balancing loss E * sum_i f_i P_i (f_i the fraction of routed rows
sent to expert i, P_i its mean probability; 1 when balanced), the z-loss mean_t logsumexp(logits_t)^2
(ST-MoE, Zoph et al., 2022), the largest and smallest load fractions max f_i, min f_i, and the dropped rows
(always 0: dropless).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from smallest_loss.configs.schema import ModelConfig
from smallest_loss.model.params import padded_blocks

ROUTER_STATS = "router_stats"
STAT_NAMES = ("router_aux_loss", "router_z_loss", "expert_load_max", "expert_load_min", "dropped_tokens")


def _expert_param(cfg: ModelConfig, shape: tuple[int, ...], fan_in: int, rngs: nnx.Rngs, scale: float) -> nnx.Param:
    init = nnx.initializers.normal(stddev=scale / fan_in**0.5)
    return nnx.Param(init(rngs.params(), shape, jnp.dtype(cfg.param_dtype)))


def _activate(cfg: ModelConfig, up: jax.Array, gate: jax.Array | None) -> jax.Array:
    if cfg.activation == "swiglu":
        return jax.nn.silu(gate) * up
    return jax.nn.gelu(up) if cfg.activation == "gelu" else jax.nn.relu(up)


def route(logits_TxE: jax.Array, active: int) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
    """Top-`active` routing of float32 logits: (gate weights [T, A], expert ids [T, A], router statistics)."""
    probs_TxE = jax.nn.softmax(logits_TxE, axis=-1)
    gates_TxA, experts_TxA = jax.lax.top_k(probs_TxE, active)
    E = logits_TxE.shape[-1]
    load_E = jnp.zeros(E, jnp.float32).at[experts_TxA.reshape(-1)].add(1.0) / experts_TxA.size
    stats = dict(
        router_aux_loss=E * jnp.sum(load_E * probs_TxE.mean(axis=0)),
        router_z_loss=jnp.mean(jnp.square(jax.nn.logsumexp(logits_TxE, axis=-1))),
        expert_load_max=jnp.max(load_E),
        expert_load_min=jnp.min(load_E),
        dropped_tokens=jnp.zeros((), jnp.float32),
    )
    return gates_TxA, experts_TxA, stats


def _sort(experts_M: jax.Array, E: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Rows sorted by expert: (order [M], expert of each sorted row [M], rows per expert [E])."""
    order_M = jnp.argsort(experts_M, stable=True)
    counts_E = jnp.zeros(E, jnp.int32).at[experts_M].add(1)
    return order_M, experts_M[order_M], counts_E


class Moe(nnx.Module):
    """Routed experts (and shared ones) in place of a block's MLP: [B, L, D] -> [B, L, D]."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs, mlp: Any):
        self.cfg = cfg
        E, G, d = cfg.routed_experts, cfg.expert_width, cfg.d
        self.router = nnx.Linear(d, E, use_bias=False, param_dtype=jnp.dtype(cfg.param_dtype), rngs=rngs)
        self.up = _expert_param(cfg, (E, d, G), d, rngs, 1.0)
        if cfg.activation == "swiglu":
            self.gate = _expert_param(cfg, (E, d, G), d, rngs, 1.0)
        self.down = _expert_param(cfg, (E, G, d), G, rngs, (2 * cfg.n) ** -0.5)
        if cfg.shared_experts:
            self.shared = mlp(cfg, rngs, width=cfg.shared_experts * G)

    def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
        cfg = self.cfg
        B, L, D = x_BxLxD.shape
        x_TxD = x_BxLxD.reshape(B * L, D)
        logits_TxE = x_TxD.astype(jnp.float32) @ self.router.kernel[...].astype(jnp.float32)
        gates_TxA, experts_TxA, stats = route(logits_TxE, cfg.active_experts)
        self.sow(nnx.Intermediate, ROUTER_STATS, stats)
        T, A = experts_TxA.shape
        tokens_M = jnp.arange(T * A) // A
        order_M, sorted_M, counts_E = _sort(experts_TxA.reshape(-1), cfg.routed_experts)
        x_MxD = x_TxD[tokens_M[order_M]].astype(jnp.dtype(cfg.dtype))
        if cfg.moe_dispatch == "ragged":
            y_MxD = self._ragged(x_MxD, counts_E)
        else:
            y_MxD = self._blocked(x_MxD, sorted_M, counts_E)
        y_MxD = jnp.zeros_like(y_MxD).at[order_M].set(y_MxD)  # back to (token, choice) order
        y_TxD = jnp.einsum("tad,ta->td", y_MxD.reshape(T, A, D), gates_TxA.astype(y_MxD.dtype))
        y_BxLxD = y_TxD.reshape(B, L, D)
        if cfg.shared_experts:
            y_BxLxD = y_BxLxD + self.shared(x_BxLxD)
        return y_BxLxD

    def _weights(self) -> tuple[jax.Array, jax.Array | None, jax.Array]:
        dtype = jnp.dtype(self.cfg.dtype)
        gate = self.gate[...].astype(dtype) if self.cfg.activation == "swiglu" else None
        return self.up[...].astype(dtype), gate, self.down[...].astype(dtype)

    def _ragged(self, x_MxD: jax.Array, counts_E: jax.Array) -> jax.Array:
        up, gate, down = self._weights()
        g = None if gate is None else jax.lax.ragged_dot(x_MxD, gate, counts_E)
        h_MxG = _activate(self.cfg, jax.lax.ragged_dot(x_MxD, up, counts_E), g)
        return jax.lax.ragged_dot(h_MxG, down, counts_E)

    def _blocked(self, x_MxD: jax.Array, sorted_M: jax.Array, counts_E: jax.Array) -> jax.Array:
        """Each expert's sorted rows padded to whole blocks of Q rows; one batched matmul over the N blocks, each
        with its expert's gathered weights."""
        M, D = x_MxD.shape
        E = self.cfg.routed_experts
        N, Q = padded_blocks(M, E)
        blocks_E = (counts_E + Q - 1) // Q
        first_block_E = jnp.cumsum(blocks_E) - blocks_E
        first_row_E = jnp.cumsum(counts_E) - counts_E
        rank_M = jnp.arange(M) - first_row_E[sorted_M]
        slot_M = first_block_E[sorted_M] * Q + rank_M  # padded position of each sorted row
        x_NxQxD = jnp.zeros((N * Q, D), x_MxD.dtype).at[slot_M].set(x_MxD).reshape(N, Q, D)
        # The expert of each block; blocks past the last expert's hold zeros and take the last expert.
        expert_N = jnp.minimum(jnp.searchsorted(jnp.cumsum(blocks_E), jnp.arange(N), side="right"), E - 1)
        up, gate, down = (None if p is None else p[expert_N] for p in self._weights())
        g = None if gate is None else jnp.einsum("nqd,ndg->nqg", x_NxQxD, gate)
        h_NxQxG = _activate(self.cfg, jnp.einsum("nqd,ndg->nqg", x_NxQxD, up), g)
        y_NxQxD = jnp.einsum("nqg,ngd->nqd", h_NxQxG, down)
        return y_NxQxD.reshape(N * Q, D)[slot_M]


def call_with_router_stats(model: nnx.Module, *args: Any) -> tuple[Any, dict[str, jax.Array]]:
    """Call `model` and collect the router statistics its MoE layers sow, each averaged over the layers ({} for
    a dense model). `nnx.capture` where Flax has it (0.12: sowing outside it is deprecated), else `nnx.pop`."""
    if hasattr(nnx, "capture"):
        out, sown = nnx.capture(model, nnx.Intermediate)(*args)
    else:
        out = model(*args)
        sown = nnx.pop(model, nnx.Intermediate)
    layers = [
        value
        for path, variable in nnx.to_flat_state(sown)
        if path[-1] == ROUTER_STATS
        for value in (variable.get_value() if hasattr(variable, "get_value") else variable.value)
    ]
    if not layers:
        return out, {}
    return out, {name: sum(layer[name] for layer in layers) / len(layers) for name in STAT_NAMES}
