"""A decoder-only transformer in Flax NNX, and its exact parameter count.

Shape letters in tensor names (nanodo style):
  B batch, L sequence position, D model width (d), H heads (h), K head size (d/h),
  F MLP hidden width (w), V vocabulary (v).

Architecture: token embedding (no positional table: rotary embeddings on q and k), n pre-norm blocks
(norm -> causal self-attention -> residual, norm -> MLP -> residual), final norm, output layer (the
embedding's transpose when tied). Linear layers carry no biases.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from smallest_loss.configs.schema import ModelConfig
from smallest_loss.model.moe import Moe
from smallest_loss.model.params import EXPERT_WEIGHTS, ParamCounts
from smallest_loss.model.quant import compute_dtype, maybe_quant, quant_dot


def _dtype(name: str) -> jnp.dtype:
    return compute_dtype(name)  # "float8": bfloat16 around the FP8 matmuls (model/quant.py)


def _norm(cfg: ModelConfig, rngs: nnx.Rngs) -> nnx.Module:
    kwargs = dict(dtype=_dtype(cfg.dtype), param_dtype=_dtype(cfg.param_dtype), rngs=rngs)
    if cfg.norm == "rmsnorm":
        return nnx.RMSNorm(cfg.d, epsilon=1e-6, **kwargs)
    return nnx.LayerNorm(cfg.d, epsilon=1e-6, **kwargs)


def _linear(
    cfg: ModelConfig, n_in: int, n_out: int, rngs: nnx.Rngs, scale: float = 1.0, quantised: bool = True
) -> nnx.Linear:
    """A bias-free linear layer; `quantised` layers multiply at the model's precision (model/quant.py)."""
    init = nnx.initializers.normal(stddev=scale / n_in**0.5)
    dot = quant_dot(cfg) if quantised else None
    return nnx.Linear(
        n_in,
        n_out,
        use_bias=False,
        kernel_init=init,
        dtype=_dtype(cfg.dtype),
        param_dtype=_dtype(cfg.param_dtype),
        rngs=rngs,
        **({"dot_general": dot} if dot is not None else {}),
    )


def rotary(x_BxLxHxK: jax.Array, base: float = 10000.0) -> jax.Array:
    """Rotary position embedding (Su et al., 2021): rotate pairs of features by position-dependent angles."""
    _, L, _, K = x_BxLxHxK.shape
    freq_K2 = base ** (-jnp.arange(0, K, 2, dtype=jnp.float32) / K)
    angle_LxK2 = jnp.arange(L, dtype=jnp.float32)[:, None] * freq_K2[None, :]
    sin, cos = jnp.sin(angle_LxK2)[None, :, None, :], jnp.cos(angle_LxK2)[None, :, None, :]
    x1, x2 = jnp.split(x_BxLxHxK.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
    return out.astype(x_BxLxHxK.dtype)


def attention_implementation(cfg: ModelConfig) -> str:
    """The attention kernel to use: cuDNN's fused kernel where it exists, XLA's everywhere else.

    cuDNN flash attention needs a GPU, half precision and a head size that is a multiple of 8 up to 128;
    everything else (TPU, CPU, odd heads) gets XLA's own attention.
    """
    supported = (
        jax.default_backend() == "gpu"
        and cfg.dtype in ("bfloat16", "float16", "float8")
        and cfg.head_dim % 8 == 0
        and cfg.head_dim <= 128
    )
    return "cudnn" if cfg.attention in ("auto", "cudnn") and supported else "xla"


def _module_list(modules: list[nnx.Module]) -> Any:
    """nnx.List where Flax has it (0.12+); older NNX takes a plain list of modules as an attribute."""
    return nnx.List(modules) if hasattr(nnx, "List") else modules


def variable_value(variable: Any) -> Any:
    """A variable's array across Flax versions (`get_value()` in 0.12+, `.value` before)."""
    return variable.get_value() if hasattr(variable, "get_value") else variable.value


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        self.qkv = _linear(cfg, cfg.d, 3 * cfg.d, rngs)
        self.out = _linear(cfg, cfg.d, cfg.d, rngs, scale=(2 * cfg.n) ** -0.5)

    def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
        cfg = self.cfg
        B, L, _ = x_BxLxD.shape
        qkv_BxLx3xHxK = self.qkv(x_BxLxD).reshape(B, L, 3, cfg.h, cfg.head_dim)
        q_BxLxHxK, k_BxLxHxK, v_BxLxHxK = (qkv_BxLx3xHxK[:, :, i] for i in range(3))
        q_BxLxHxK, k_BxLxHxK = rotary(q_BxLxHxK), rotary(k_BxLxHxK)
        k_BxLxHxK, v_BxLxHxK = maybe_quant(k_BxLxHxK, cfg.bits_kv), maybe_quant(v_BxLxHxK, cfg.bits_kv)
        y_BxLxHxK = jax.nn.dot_product_attention(
            q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, is_causal=True, implementation=attention_implementation(cfg)
        )
        return self.out(y_BxLxHxK.reshape(B, L, cfg.d))


class Mlp(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs, width: int | None = None):
        self.cfg = cfg
        w = cfg.w if width is None else width
        self.up = _linear(cfg, cfg.d, w, rngs)
        if cfg.activation == "swiglu":
            self.gate = _linear(cfg, cfg.d, w, rngs)
        self.down = _linear(cfg, w, cfg.d, rngs, scale=(2 * cfg.n) ** -0.5)

    def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
        act = self.cfg.activation
        up_BxLxF = self.up(x_BxLxD)
        if act == "swiglu":
            h_BxLxF = jax.nn.silu(self.gate(x_BxLxD)) * up_BxLxF
        else:
            h_BxLxF = jax.nn.gelu(up_BxLxF) if act == "gelu" else jax.nn.relu(up_BxLxF)
        return self.down(h_BxLxF)


class Block(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.attn_norm = _norm(cfg, rngs)
        self.attn = Attention(cfg, rngs)
        self.mlp_norm = _norm(cfg, rngs)
        self.mlp = Moe(cfg, rngs, Mlp) if cfg.experts else Mlp(cfg, rngs)

    def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
        x_BxLxD = x_BxLxD + self.attn(self.attn_norm(x_BxLxD))
        return x_BxLxD + self.mlp(self.mlp_norm(x_BxLxD))


class Transformer(nnx.Module):
    """Decoder-only language model: tokens [B, L] -> logits [B, L, V] (float32)."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embed = nnx.Embed(
            cfg.v,
            cfg.d,
            embedding_init=nnx.initializers.normal(stddev=1.0),
            dtype=_dtype(cfg.dtype),
            param_dtype=_dtype(cfg.param_dtype),
            rngs=rngs,
        )
        # A plain Python list of blocks: XLA sees every layer (no scan), so its cost analysis counts
        # all n layers; compile time grows with n, which is acceptable at the depths we time.
        self.blocks = _module_list([Block(cfg, rngs) for _ in range(cfg.n)])
        self.final_norm = _norm(cfg, rngs)
        if not cfg.tied_embeddings:
            self.unembed = _linear(cfg, cfg.d, cfg.v, rngs, quantised=False)  # the output layer: compute dtype

    def __call__(self, tokens_BxL: jax.Array) -> jax.Array:
        x_BxLxD = self.embed(tokens_BxL)
        for block in self.blocks:
            x_BxLxD = block(x_BxLxD)
        x_BxLxD = self.final_norm(x_BxLxD)
        if self.cfg.tied_embeddings:
            # Scale so tied logits start near unit variance (the embedding has unit-variance rows).
            logits_BxLxV = self.embed.attend(x_BxLxD) / self.cfg.d**0.5
        else:
            logits_BxLxV = self.unembed(x_BxLxD)
        return logits_BxLxV.astype(jnp.float32)


def count_params_in_tree(cfg: ModelConfig) -> ParamCounts:
    """Count the real parameter tree's leaves by kind, without allocating (nnx.eval_shape). Of the routed
    experts' weights ([E, ...] under a block's `mlp`), the share 1 - top_k/experts is inactive."""
    abstract = nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0)))
    params = nnx.state(abstract, nnx.Param)
    embedding = 0
    total = 0
    routed = 0
    for path, leaf in nnx.to_flat_state(params):
        size = math.prod(variable_value(leaf).shape)
        total += size
        if path[0] in ("embed", "unembed"):
            embedding += size
        if cfg.experts and path[-1] in EXPERT_WEIGHTS:
            routed += size
    inactive = routed * (cfg.experts - cfg.top_k) // cfg.experts if cfg.experts else 0
    return ParamCounts(embedding=embedding, non_embedding=total - embedding, inactive=inactive)
