"""Low-precision training: straight-through integer quantisation and FP8 matmuls.

Integer quantisation-aware training as Kumar et al. (2025, "Scaling Laws for Precision", ICLR 2025, arXiv
2411.04330) train: a tensor is rounded to a symmetric integer grid of P bits in the forward pass and the
gradient passes straight through (the straight-through estimator: the rounding's derivative is taken as 1),
so master weights, gradients and optimizer state stay in float32. Three kinds of tensor, each with its own
P (`model.bits_weights`, `model.bits_activations`, `model.bits_kv`; None or 0: not quantised):

- weights of the transformer blocks' linear layers (q/k/v, out, the MLP's matrices), per output channel:
  one absmax scale per column of the (in, out) kernel;
- activations: the inputs of those layers, per tensor (one absmax scale for the whole tensor);
- attention keys (after the rotary embedding) and values, per tensor.

Grid: q = clip(round(x / scale), -Q, Q) * scale with Q = 2^(P-1) - 1 and scale = absmax / Q (absmax over
the channel or the tensor), so |q - x| <= scale / 2 and quantising twice changes nothing. The token
embedding and the output layer stay in the compute dtype (as is usual in quantised training).

FP8 (`model.dtype = "float8"`): the same linear layers multiply float8 tensors. Forward operands (the
layer input and the kernel) are scaled per tensor to the float8_e4m3fn range (max 448) and rounded to its
grid; the gradient flowing back into the layer's output is scaled per tensor and rounded to float8_e5m2
(max 57344, wider range, fewer mantissa bits) before the backward matmuls. Everything else (norms,
attention, softmax, residuals) computes in bfloat16. Current scaling (this step's absmax), not delayed
scaling. The matmul is written as XLA's FP8 pattern (convert from float8, multiply by the scale, dot):
on NVIDIA GPUs of compute capability >= 8.9 (Ada, Hopper and later) XLA rewrites it into an FP8 GEMM
(`fp8_native`); on every other backend (CPU, TPU, older GPUs) the same program runs the matmul in
bfloat16 on operands rounded to the float8 grids, so the loss feels FP8's rounding but the matmul is
not FP8 (`fp8_note` says so in a run's output).
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

FP8_FORWARD = jnp.float8_e4m3fn
FP8_BACKWARD = jnp.float8_e5m2


def int_levels(bits: int) -> int:
    """Q = 2^(P-1) - 1: the symmetric grid's largest integer (levels -Q..Q; 7 at 4 bits, 127 at 8)."""
    return 2 ** (bits - 1) - 1


def absmax_scale(x: jax.Array, top: float, axis: int | tuple[int, ...] | None = None) -> jax.Array:
    """Per-tensor (axis None) or per-channel (reduce over `axis`) scale mapping absmax to `top`; float32."""
    amax = jnp.max(jnp.abs(x.astype(jnp.float32)), axis=axis, keepdims=axis is not None)
    return jnp.where(amax > 0, amax / top, 1.0)


def quantize_int(x: jax.Array, bits: int, axis: int | tuple[int, ...] | None = None) -> jax.Array:
    """x rounded to the symmetric `bits`-bit integer grid of its absmax scale (values, not gradients)."""
    top = int_levels(bits)
    scale = absmax_scale(x, top, axis)
    q = jnp.clip(jnp.round(x.astype(jnp.float32) / scale), -top, top)
    return (q * scale).astype(x.dtype)


@partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def fake_quant(x: jax.Array, bits: int, axis: int | tuple[int, ...] | None = None) -> jax.Array:
    """Straight-through integer quantisation: `quantize_int` forward, the identity's gradient backward."""
    return quantize_int(x, bits, axis)


def _fake_quant_fwd(x: jax.Array, bits: int, axis: Any) -> tuple[jax.Array, None]:
    return quantize_int(x, bits, axis), None


def _fake_quant_bwd(bits: int, axis: Any, _: None, g: jax.Array) -> tuple[jax.Array]:
    return (g,)


fake_quant.defvjp(_fake_quant_fwd, _fake_quant_bwd)


def maybe_quant(x: jax.Array, bits: int | None, axis: int | tuple[int, ...] | None = None) -> jax.Array:
    """`fake_quant` at `bits`, or x unchanged when bits is None or 0."""
    return fake_quant(x, int(bits), axis) if bits else x


def fp8_dequantized(x: jax.Array, f8: Any) -> jax.Array:
    """x scaled per tensor into float8 type `f8`'s range, stored in it, and converted back (XLA's FP8 pattern)."""
    top = float(jnp.finfo(f8).max)
    scale = jax.lax.stop_gradient(absmax_scale(x, top)).astype(x.dtype)
    stored = jnp.clip(x / scale, -top, top).astype(f8)
    return stored.astype(x.dtype) * scale


@jax.custom_vjp
def fp8_forward(x: jax.Array) -> jax.Array:
    """An operand of a forward matmul on the float8_e4m3fn grid; its gradient passes straight through."""
    return fp8_dequantized(x, FP8_FORWARD)


fp8_forward.defvjp(lambda x: (fp8_dequantized(x, FP8_FORWARD), None), lambda _, g: (g,))


@jax.custom_vjp
def fp8_gradient(y: jax.Array) -> jax.Array:
    """The identity forward; backward, the gradient arriving at y rounded to the float8_e5m2 grid."""
    return y


fp8_gradient.defvjp(lambda y: (y, None), lambda _, g: (fp8_dequantized(g, FP8_BACKWARD),))


@dataclasses.dataclass(frozen=True)
class QuantDot:
    """A `dot_general` for `nnx.Linear` (lhs: the layer's input, rhs: its (in, out) kernel) that quantises
    its operands: integer straight-through at `bits_activations` / `bits_weights`, or FP8 when `fp8`.
    Frozen and hashable: NNX keeps it as the layer's static metadata."""

    bits_weights: int | None = None
    bits_activations: int | None = None
    fp8: bool = False

    def __call__(self, lhs: jax.Array, rhs: jax.Array, dimension_numbers: Any, **kwargs: Any) -> jax.Array:
        if self.fp8:
            y = jax.lax.dot_general(fp8_forward(lhs), fp8_forward(rhs), dimension_numbers, **kwargs)
            return fp8_gradient(y)
        lhs = maybe_quant(lhs, self.bits_activations)
        rhs = maybe_quant(rhs, self.bits_weights, axis=0)  # per output channel: absmax over the input axis
        return jax.lax.dot_general(lhs, rhs, dimension_numbers, **kwargs)


def quant_dot(cfg: Any) -> QuantDot | None:
    """The linear layers' quantised matmul for a ModelConfig, or None when it quantises nothing there."""
    fp8 = cfg.dtype == "float8"
    if not (fp8 or cfg.bits_weights or cfg.bits_activations):
        return None
    return QuantDot(bits_weights=cfg.bits_weights or None, bits_activations=cfg.bits_activations or None, fp8=fp8)


def compute_dtype(name: str) -> jnp.dtype:
    """The array dtype a model computes in: float8 models compute in bfloat16 around their FP8 matmuls."""
    return jnp.dtype("bfloat16" if name == "float8" else name)


def fp8_native() -> bool:
    """Whether XLA can run FP8 matmuls here: NVIDIA GPUs of compute capability 8.9 or newer (all devices)."""
    if jax.default_backend() != "gpu":
        return False
    try:
        return all(float(getattr(dev, "compute_capability", "0")) >= 8.9 for dev in jax.devices())
    except (TypeError, ValueError):
        return False


def fp8_note(cfg: Any) -> str | None:
    """One line for a run's output where an FP8 model's matmuls are emulated; None otherwise."""
    if cfg.dtype != "float8" or fp8_native():
        return None
    return (
        f"note: model.dtype=float8 on {jax.default_backend()}: the matmul itself is not FP8 here (FP8 GEMMs "
        "need an NVIDIA GPU of compute capability >= 8.9); its operands are rounded to the float8 grids "
        "(e4m3 forward, e5m2 gradients) and multiplied in bfloat16"
    )


def describe(cfg: Any) -> str:
    """The precision of a ModelConfig in words: `float32`, `bfloat16 W4 A8 KV8`, `float8`."""
    parts = [cfg.dtype]
    for label, bits in (("W", cfg.bits_weights), ("A", cfg.bits_activations), ("KV", cfg.bits_kv)):
        if bits:
            parts.append(f"{label}{bits}")
    return " ".join(parts)
