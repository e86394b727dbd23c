"""The model's sizes by plain arithmetic, without JAX: the exact parameter count of `Transformer(cfg)`
(model/transformer.py) by kind, and the row blocks a mixture of experts' dropless dispatch computes
(model/moe.py). The planner, the step-time models and the run tables count with these; a command that only
counts (`plan`, `fit --csv`) never imports JAX, Flax or Orbax.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from smallest_loss.configs.schema import ModelConfig

MAX_BLOCK_ROWS = 128
EXPERT_WEIGHTS = ("up", "gate", "down")  # the routed experts' weights, [E, ...], attributes of `Moe`


def block_rows(rows: Any, experts: Any) -> Any:
    """Rows per block Q for M routed rows among E experts: the power of two nearest below M / (4E), within
    [8, MAX_BLOCK_ROWS]. Padding adds at most E(Q - 1) rows, a quarter of M or less once M >= 32E. Plain
    arithmetic: integers give an integer, NumPy arrays an array (the step-time models' columns)."""
    target = np.maximum(np.asarray(rows) // (4 * np.asarray(experts)), 1)
    q = np.clip(2 ** np.floor(np.log2(target)).astype(np.int64), 8, MAX_BLOCK_ROWS)
    return int(q) if np.ndim(q) == 0 else q


def padded_blocks(rows: Any, experts: Any) -> tuple[Any, Any]:
    """(N blocks, Q rows per block) that hold M routed rows sorted by expert, each expert padded to blocks."""
    q = block_rows(rows, experts)
    return (rows + experts * (q - 1)) // q, q


def computed_rows(cfg: Any, tokens: Any) -> Any:
    """Rows the routed experts compute for `tokens` tokens: N*Q (blocked) or the M routed rows (ragged)."""
    rows = tokens * cfg.active_experts
    if cfg.moe_dispatch == "ragged":
        return rows
    n_blocks, q = padded_blocks(rows, cfg.routed_experts)
    return n_blocks * q  # a ModelConfig, or any object with its mixture-of-experts fields (timing/counts.py MoeSpec)


@dataclasses.dataclass(frozen=True)
class ParamCounts:
    embedding: int
    non_embedding: int
    inactive: int = 0  # routed experts' parameters a token does not run through (0 for a dense model)

    @property
    def total(self) -> int:
        return self.embedding + self.non_embedding

    @property
    def active(self) -> int:
        """Parameters one token runs through: the total less the routed experts it is not sent to."""
        return self.total - self.inactive


def count_params(cfg: ModelConfig) -> ParamCounts:
    """Exact parameter count of `Transformer(cfg)`, by kind.

    Embedding: the v*d table, plus a separate d*v output layer when embeddings are untied.
    Per layer: qkv 3d^2 + out d^2, MLP (2 or, for SwiGLU, 3) * d*w, two norms (d each for RMSNorm,
    2d for LayerNorm's scale and bias); plus one final norm. No biases in linear layers.

    Differences from the paper's PARAMS = v*d + n*d*(8 + 2w + 4d) + n*w (Inbar and Sernau, 2024):
    the paper counts biases (n*w for the MLP hidden layer and, with its norms, 8d per layer) and no
    final norm; it assumes tied embeddings and a two-matrix MLP. `timing.counts` holds the paper's form.

    A mixture of experts (model/moe.py) has, per layer in place of the MLP, a router d*E and (E + shared) expert
    MLPs of width w/granularity (E = experts * granularity routed experts); `inactive` counts the routed
    experts a token skips, n * (E - top_k * granularity) * (2 or 3) * d * w/granularity.
    """
    moe = dict(experts=cfg.experts, top_k=cfg.top_k, granularity=cfg.granularity, shared=cfg.shared_experts)
    opts = dict(norm=cfg.norm, activation=cfg.activation, tied=cfg.tied_embeddings)
    embedding, non_embedding = param_counts(cfg.v, cfg.d, cfg.n, cfg.w, **opts, **moe)
    inactive = inactive_params(cfg.d, cfg.n, cfg.w, activation=cfg.activation, **moe)
    return ParamCounts(embedding=embedding, non_embedding=non_embedding, inactive=inactive)


def mlp_params(
    d: Any, w: Any, activation: str = "gelu", experts: Any = 0, top_k: Any = 1, granularity: Any = 1, shared: Any = 0
) -> Any:
    """Parameters of one block's MLP: (2 or 3) * d * w dense; a mixture of experts' router d*E and its routed
    and shared experts, (E + shared) * (2 or 3) * d * w/granularity (E = experts * granularity)."""
    mats = 3 if activation == "swiglu" else 2
    if not experts:
        return mats * d * w
    routed = experts * granularity
    return d * routed + (routed + shared) * mats * d * (w // granularity)


def inactive_params(
    d: Any, n: Any, w: Any, activation: str = "gelu", experts: Any = 0, top_k: Any = 1, granularity: Any = 1, shared=0
) -> Any:
    """The routed experts' parameters a token does not run through (0 for a dense MLP)."""
    if not experts:
        return 0
    mats = 3 if activation == "swiglu" else 2
    return n * (experts - top_k) * granularity * mats * d * (w // granularity)


def param_counts(
    v: Any,
    d: Any,
    n: Any,
    w: Any,
    norm: str = "rmsnorm",
    activation: str = "gelu",
    tied: bool = True,
    experts: Any = 0,
    top_k: Any = 1,
    granularity: Any = 1,
    shared: Any = 0,
) -> tuple[Any, Any]:
    """(embedding, non-embedding) parameter counts of our architecture; plain arithmetic, so it takes
    integers or NumPy arrays alike (the planner counts a million candidates at once). `experts` > 0: a mixture
    of experts (`mlp_params`)."""
    norm_params = d if norm == "rmsnorm" else 2 * d
    per_layer = 4 * d * d + mlp_params(d, w, activation, experts, top_k, granularity, shared) + 2 * norm_params
    embedding = v * d * (1 if tied else 2)
    return embedding, n * per_layer + norm_params
