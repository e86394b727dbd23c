"""Analytic counts of a training step: the paper's formulas exactly as written, and our model's own.

Symbols: d width, n layers, h heads, w MLP hidden width, v vocabulary, s sequence length,
b batch (sequences per step). Every function is plain arithmetic, so it takes Python numbers or NumPy
arrays alike and broadcasts them (the planner scores a million candidates in one call).

1. "Time Matters" (Inbar and Sernau, 2024, arXiv 2406.18922), per sequence, no batch size:
       PARAMS  = v*d + n*d*(8 + 2w + 4d) + n*w
       MEMCPYS = 2vd + 2sv + n*s*(w + 2hs) + 2nd*(w + 4s + 2d)
       FLOPS   = 2svd + 2dns*(w + 2d + s) + n*h*s^2
   A training step of b sequences is b times MEMCPYS and FLOPS in the paper's accounting (the step-time
   models in timing/models.py multiply by b).

2. Our model (model/transformer.py) and its real training step of b sequences (model/train.py: forward,
   backward, AdamW with global-norm clipping), exact where XLA's count can check it:
   - matmul FLOPs of one sequence's forward pass, at 2 FLOPs per multiply-add: per layer q, k, v 6sd^2
     and out 2sd^2, MLP 2*m*s*d*w (m = 2 matrices, 3 for SwiGLU), attention scores QK^T 2s^2d and the
     weighted sum PV 2s^2d; the output layer 2svd (tied or not: the same matmul). XLA's attention on
     CPU, and on GPU without a fused kernel, computes the full s x s scores and then masks them, so the
     causal half is *not* saved; we count the full square. The embedding lookup is a gather (0 FLOPs).
   - training FLOPs = 3 x forward matmul FLOPs (the backward pass computes the gradient of each matmul's
     input and of its weight, two matmuls of the forward one's size) + element-wise work, forward and
     backward: norms, residual adds and rotary (ELEMENTWISE_PER_D per token, layer and unit of d), the
     activation (ELEMENTWISE_PER_W per unit of w), mask and softmax (ELEMENTWISE_PER_SCORE per score
     and head), cross-entropy (ELEMENTWISE_PER_LOGIT per logit); + the optimizer, once per step whatever
     b is (OPTIMIZER_PER_PARAM per parameter: AdamW's moments, bias correction, update, weight decay,
     and the squares of global-norm clipping). The element-wise costs per element were read off XLA's
     compiled cost analysis of this step on CPU (a least-squares fit over ten tiny configurations,
     rounded); they are 3-13% of the total at small sizes and vanish at large ones. `train_step_terms`
     gives every kind of work apart; `train_step_flops` is their sum: within 0.3% of XLA's flops on the
     float32 tiny configurations of tests/timing at batch 4 (GELU; RMSNorm or LayerNorm; tied or not),
     within 1% with SwiGLU. FLOPs do not depend on the compute dtype here (XLA on CPU adds 5% in bf16 for
     the dtype conversions, which it counts as flops).
   - memory traffic (bytes), batch-aware: parameters, gradients and both Adam moments (float32, the
     master weights, whatever the compute dtype) are read and written WEIGHT_PASSES times per parameter
     per step whatever b is; activations are written in the forward pass and read back in the backward
     pass, and their gradients likewise, per sequence, so that term is b x 4 x the activations one
     sequence saves. Activations take the compute dtype's size (`bytes_per_element`: 2 bytes in bf16),
     except the softmaxes' inputs and outputs (attention scores, logits), which stay float32. This is a
     model of main-memory traffic, well below XLA's "bytes accessed" (0.33-0.51 of it on tiny
     configurations), which counts every operand and result of every fused op, including those that
     stay in cache.
   - precision (`Precision`: compute dtype and integer bits, model/quant.py): matmul FLOPs do not change with it;
     quantising adds element-wise work (`quantise_flops`, within 0.3% of XLA's extra flops on tiny quantised
     configurations) and the quantised copy of the blocks' kernels adds weight traffic (`quantised_weight_bytes`:
     the compute dtype's size for straight-through integer copies, which are quantise-dequantised and so stored
     no smaller; 1 byte for FP8). Activations are stored in the compute dtype (float8: bfloat16 around the FP8
     matmuls), so their bytes do not change with bits.
   - peak memory (`train_memory_bytes`): parameters, gradients and two Adam moments (16 bytes per
     parameter) plus the activations saved for the backward pass and the logits' gradient, times b; with
     gradient accumulation, times the micro-batch's b / micro_batches, plus the gradients' running sum.

Differences from the paper, term by term:
   - PARAMS counts biases and norm parameters, 8d per layer, and the MLP's hidden bias, n*w; ours has no
     biases, two RMSNorm scales per layer (2d; 4d for LayerNorm) and a final norm (d). Untied embeddings
     add v*d and SwiGLU d*w per layer, which the paper's tied, two-matrix form does not have.
   - FLOPS is one forward pass, per sequence. It counts the layers' matmuls at one FLOP per multiply-add
     (2dsw for a two-matrix MLP, 4sd^2 for q, k, v and out, 2s^2d for attention) but the output layer
     at two (2svd), and the softmax as n*h*s^2. Ours counts every matmul at two FLOPs per multiply-add,
     the backward pass and the optimizer: 6x the paper's layer terms, 3x its output layer. So b*FLOPS is
     close to, but not exactly, proportional to our (and XLA's) training FLOPs: the ratio moves with the
     share of the output layer and of element-wise work (4.9x to 6.3x on the cpu-small grid).
   - MEMCPYS counts each tensor once per sequence; it has no optimizer state, no gradients and no batch,
     so weight traffic is multiplied by b in a training step, where ours counts it once.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, NamedTuple

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.model.params import computed_rows, count_params, padded_blocks, param_counts

# ----------------------------------------------------------------------------------------------------
# The paper's formulas, exactly as written (names as the paper's).


def PARAMS(d: Any, n: Any, v: Any, w: Any) -> Any:
    """Parameter count of "Time Matters" (Inbar and Sernau, 2024): v*d + n*d*(8 + 2w + 4d) + n*w."""
    return v * d + n * d * (8 + 2 * w + 4 * d) + n * w


def MEMCPYS(d: Any, n: Any, s: Any, v: Any, w: Any, h: Any) -> Any:
    """Memory copies per sequence (Inbar and Sernau, 2024): 2vd + 2sv + n*s*(w + 2hs) + 2nd*(w + 4s + 2d)."""
    return 2 * v * d + 2 * s * v + n * s * (w + 2 * h * s) + 2 * n * d * (w + 4 * s + 2 * d)


def FLOPS(d: Any, n: Any, s: Any, v: Any, w: Any, h: Any) -> Any:
    """FLOPs per sequence (Inbar and Sernau, 2024): 2svd + 2dns*(w + 2d + s) + n*h*s^2."""
    return 2 * s * v * d + 2 * d * n * s * (w + 2 * d + s) + n * h * s**2


# ----------------------------------------------------------------------------------------------------
# Our model's training step.

# float8: activations stay bfloat16 around the FP8 matmuls (model/quant.py); only the matmuls' operand copies are 1 byte
BYTES_PER_ELEMENT = {"float32": 4, "bfloat16": 2, "float16": 2, "float8": 2}


class Precision(NamedTuple):
    """A training step's precision: the compute dtype and the integer bits of each quantised kind of tensor (None:
    not quantised; model/quant.py). Its `label` is what timing records' variants and profiles carry."""

    dtype: str = "float32"
    bits_weights: int | None = None
    bits_activations: int | None = None
    bits_kv: int | None = None

    @property
    def label(self) -> str:
        """`float32`, `float8`, `bfloat16+w4a8kv4` (only the quantised kinds named)."""
        bits = "".join(f"{k}{b}" for k, b in zip(("w", "a", "kv"), self[1:], strict=True) if b)
        return f"{self.dtype}+{bits}" if bits else self.dtype

    @classmethod
    def parse(cls, label: str) -> Precision:
        """The precision a `label` names; a plain dtype is unquantised."""
        dtype, _, bits = label.partition("+")
        found = dict(re.findall(r"(kv|w|a)(\d+)", bits))
        if bits and "".join(f"{k}{v}" for k, v in re.findall(r"(kv|w|a)(\d+)", bits)) != bits:
            raise UserError(f"precision {label!r}: expected DTYPE or DTYPE+w<bits>a<bits>kv<bits>")
        return cls(dtype, *(int(found[k]) if k in found else None for k in ("w", "a", "kv")))

    @classmethod
    def of(cls, cfg: Any) -> Precision:
        """A ModelConfig's precision."""
        return cls(cfg.dtype, cfg.bits_weights or None, cfg.bits_activations or None, cfg.bits_kv or None)


def bytes_per_element(dtype: str) -> int:
    """Bytes of one element of the compute dtype (activations; a precision label: its dtype's). Parameters,
    gradients and Adam moments stay float32 (the master weights) whatever the compute dtype, so weight traffic does
    not take this."""
    try:
        return BYTES_PER_ELEMENT[Precision.parse(dtype).dtype]
    except KeyError:
        raise UserError(f"unknown dtype {dtype!r}; known: {', '.join(BYTES_PER_ELEMENT)}") from None


ELEMENTWISE_PER_D = 60  # per layer, token and unit of width: norms, residuals, rotary (fwd + bwd)
ELEMENTWISE_PER_W = 40  # per layer, token and MLP unit: the activation (fwd + bwd)
ELEMENTWISE_PER_SCORE = 20  # per attention score: mask, softmax (fwd + bwd)
ELEMENTWISE_PER_LOGIT = 10  # per logit: log-softmax cross-entropy (fwd + bwd)
OPTIMIZER_PER_PARAM = 21  # AdamW update, global-norm clipping
QUANT_PER_ELEMENT = 6  # per element quantised: abs, absmax, divide, round, clip, multiply (XLA on CPU: 6.0-6.1)
QUANT_KV_PER_ELEMENT = 7  # keys and values (XLA on CPU: 7.0-7.3)
QUANT_COPY_PASSES = 3  # a quantised kernel copy is written once, read forward and backward
WEIGHT_PASSES = 10  # per step: params read fwd + bwd + update, written once; grads written + read; 2 moments r/w


def _mlp_mats(activation: str) -> int:
    return 3 if activation == "swiglu" else 2


ELEMENTWISE_PER_ROUTE = 60  # per layer, token and routed expert: router softmax, top-k, sorts, loads (fwd + bwd)
ELEMENTWISE_PER_ROW = 6  # per layer, routed row and unit of d: the gate-weighted combine (fwd + bwd)


@dataclasses.dataclass(frozen=True)
class MoeSpec:
    """A mixture of experts' fields (those of ModelConfig, model/moe.py), without the model's numbers."""

    experts: int
    top_k: int = 1
    granularity: int = 1
    shared_experts: int = 0
    moe_dispatch: str = "blocked"

    @property
    def routed_experts(self) -> int:
        return self.experts * self.granularity

    @property
    def active_experts(self) -> int:
        return self.top_k * self.granularity


def moe_of(cfg: Any) -> MoeSpec | None:
    """The mixture-of-experts fields of a ModelConfig (or a timing record's config dict), for the counts below;
    None for a dense MLP."""
    get = cfg.get if isinstance(cfg, dict) else lambda name, default: getattr(cfg, name, default)
    if not get("experts", 0):
        return None
    return MoeSpec(*(get(f.name, f.default) for f in dataclasses.fields(MoeSpec)))


def moe_terms(moe: Any, d: Any, n: Any, w: Any, s: Any, b: Any, activation: str = "gelu") -> dict[str, Any]:
    """The FLOPs of a mixture-of-experts MLP in a training step of b sequences (`moe` a ModelConfig with
    experts > 0; model/moe.py), in place of the dense `mlp` and `hidden` terms of `train_step_terms`:

    `router` (3 x 2sdE per layer and sequence, E routed experts), `mlp` the experts' matmuls, 3 x 2*m*d*G per
    computed row (G = w/granularity; the rows are `computed_rows` of the batch's b*s tokens: the routed rows
    padded to whole blocks, or unpadded for ragged dispatch), plus the shared experts' 3 x 2*m*s*d*shared*G per
    sequence, `hidden` their activations (ELEMENTWISE_PER_W per hidden unit and row), and `routing`: the
    router's element-wise work per token and routed expert (ELEMENTWISE_PER_ROUTE) and the dispatch and gate
    weighting per routed row and unit of d (ELEMENTWISE_PER_ROW, the combining sum included)."""
    m, G, E = _mlp_mats(activation), w // moe.granularity, moe.routed_experts
    rows = computed_rows(moe, b * s)
    shared_rows = b * s * moe.shared_experts
    routed = b * s * moe.active_experts
    return dict(
        router=3 * b * n * 2 * s * d * E,
        mlp=3 * n * 2 * m * d * G * (rows + shared_rows),
        hidden=n * G * (rows + shared_rows) * ELEMENTWISE_PER_W,
        routing=n * (b * s * E * ELEMENTWISE_PER_ROUTE + routed * d * ELEMENTWISE_PER_ROW),
    )


GATHER_PASSES = 4  # blocked dispatch, per step: expert weight blocks gathered (fwd), read (bwd), grads written, summed


def moe_step_bytes(
    moe: Any, d: Any, n: Any, w: Any, s: Any, b: Any, bytes_per: int = 4, activation: str = "gelu"
) -> Any:
    """A mixture of experts' activation traffic in a training step, in place of the dense MLP hidden layer's
    (m*s*w per layer and sequence of `activation_bytes_per_sequence`), at 4 passes (written and read back, and
    their gradients): per layer the router's float32 logits and probabilities (2sE per sequence), the rows
    dispatched to the experts and their outputs (2 * d per computed row), the experts' hidden layers (m*G per row;
    the shared experts' too). Plus, for blocked dispatch, each block's gathered expert weights (N blocks of
    m*d*G) GATHER_PASSES times. All expert weights are read and updated like any weight (`weight_bytes`)."""
    m, G, E = _mlp_mats(activation), w // moe.granularity, moe.routed_experts
    rows = computed_rows(moe, b * s)
    shared_rows = b * s * moe.shared_experts
    per_layer = bytes_per * (2 * d * rows + m * G * (rows + shared_rows)) + 4 * 2 * b * s * E
    blocks = padded_blocks(b * s * moe.active_experts, E)[0]
    gathered = GATHER_PASSES * bytes_per * m * d * G * blocks if moe.moe_dispatch == "blocked" else 0
    return n * (4 * per_layer + gathered)


def _moe_params(moe: Any) -> dict[str, Any]:
    if moe is None:
        return {}
    return dict(experts=moe.experts, top_k=moe.top_k, granularity=moe.granularity, shared=moe.shared_experts)


def forward_matmul_flops(d: Any, n: Any, h: Any, w: Any, s: Any, v: Any, activation: str = "gelu") -> Any:
    """Matmul FLOPs of one sequence's forward pass (see the module docstring); `h` does not enter."""
    per_layer = 8 * s * d * d + 4 * s * s * d + 2 * _mlp_mats(activation) * s * d * w
    return n * per_layer + 2 * s * d * v


def train_step_flops(
    d: Any,
    n: Any,
    h: Any,
    w: Any,
    s: Any,
    v: Any,
    b: Any,
    activation: str = "gelu",
    norm: str = "rmsnorm",
    tied: bool = True,
    precision: Precision | None = None,
    moe: Any = None,
) -> Any:
    """FLOPs of one training step of b sequences: 3x forward matmuls, element-wise work, AdamW (the sum of
    `train_step_terms`)."""
    return sum(train_step_terms(d, n, h, w, s, v, b, activation, norm, tied, precision, moe=moe).values())


def train_step_terms(
    d: Any,
    n: Any,
    h: Any,
    w: Any,
    s: Any,
    v: Any,
    b: Any,
    activation: str = "gelu",
    norm: str = "rmsnorm",
    tied: bool = True,
    precision: Precision | None = None,
    moe: Any = None,
) -> dict[str, Any]:
    """FLOPs of one training step of b sequences by kind of work; they sum to `train_step_flops`.

    Matmuls (3x forward: forward, gradient of the input, gradient of the weight): `projection` (q, k, v
    and out, 8sd^2 per layer and sequence), `mlp` (2*m*s*d*w), `attention` (QK^T and PV over the full
    s x s, 4s^2d), `output` (the output layer, 2svd). Element-wise work, forward + backward: `width`
    (norms, residuals, rotary: per token and unit of d), `hidden` (the MLP activation: per token and
    unit of w), `scores` (mask and softmax: per score and head), `logits` (cross-entropy), `optimizer`
    (AdamW and clipping: per parameter, once per step whatever b is), `quantise` (rounding to the grids of a
    quantised `precision`, `quantise_flops`; 0 unquantised). Priced apart by the step-time
    models, because on real hardware each kind runs at its own rate. With `moe` (a ModelConfig with experts >
    0) the MLP terms are a mixture of experts' (`moe_terms`: `mlp`, `hidden`, and also `router`, `routing`).
    """
    m = _mlp_mats(activation)
    params = sum(param_counts(v, d, n, w, norm=norm, activation=activation, tied=tied, **_moe_params(moe)))
    terms = dict(
        projection=3 * b * n * 8 * s * d * d,
        mlp=3 * b * n * 2 * m * s * d * w,
        attention=3 * b * n * 4 * s * s * d,
        output=3 * b * 2 * s * d * v,
        width=b * n * s * d * ELEMENTWISE_PER_D,
        hidden=b * n * s * w * ELEMENTWISE_PER_W,
        scores=b * n * h * s * s * ELEMENTWISE_PER_SCORE,
        logits=b * s * v * ELEMENTWISE_PER_LOGIT,
        optimizer=OPTIMIZER_PER_PARAM * params + 0 * b,  # + 0 * b: broadcast to the candidates' shape
        quantise=quantise_flops(d, n, w, s, b, activation, precision),
    )
    if moe is not None:
        terms.update(moe_terms(moe, d, n, w, s, b, activation))
    return terms


def spilled_terms(
    d: Any,
    n: Any,
    h: Any,
    w: Any,
    s: Any,
    v: Any,
    b: Any,
    cache_bytes: float | None,
    activation: str = "gelu",
    norm: str = "rmsnorm",
    tied: bool = True,
    bytes_per: int = 4,
    precision: Precision | None = None,
    moe: Any = None,
) -> dict[str, Any]:
    """The element-wise terms of `train_step_terms` whose per-layer tensor does not fit in a cache of
    `cache_bytes` (zero where it fits, or when `cache_bytes` is None).

    An element-wise op streams its tensor through the cache: while one layer's tensor (b*s*d values for
    `width`, b*s*w for `hidden`, b*h*s^2 for `scores`) fits in the core's cache, the op and its consumer
    run from cache; beyond, every pass goes to main memory and costs more per element. On the 2-core CPU
    of results/cpu/timing (1 MiB L2 per core) steps slow down 1.2-1.6x per doubling of the batch when
    these tensors cross the cache size, where they otherwise slow down 0.8-1.0x.
    """
    terms = train_step_terms(d, n, h, w, s, v, b, activation, norm, tied, precision, moe=moe)
    limit = np.inf if cache_bytes is None else cache_bytes
    sizes = dict(width=b * s * d, hidden=b * s * w, scores=b * h * s * s)
    return {k: np.where(bytes_per * size > limit, terms[k], 0 * terms[k]) for k, size in sizes.items()}


def train_attention_flops(d: Any, n: Any, s: Any, b: Any) -> Any:
    """The part of `train_step_flops` spent in attention's two s x s matmuls (QK^T and PV), forward and
    backward: 3 * 4 * s^2 * d per layer and sequence. Kept apart because, per FLOP, these batched small
    matmuls run far slower than the dense layers on some backends (measured on CPU: see results/cpu)."""
    return 3 * 4 * b * n * s * s * d


def activation_bytes_per_sequence(
    d: Any, n: Any, h: Any, w: Any, s: Any, v: Any, bytes_per: int = 4, activation: str = "gelu"
) -> Any:
    """Activations one sequence writes in the forward pass and the backward pass reads back.

    At `bytes_per` bytes (the compute dtype: `bytes_per_element`), per layer: the block input and two norm
    outputs (3sd), q, k, v and the attention output (4sd), the out-projection and MLP outputs (2sd), the
    MLP hidden layer before and after the activation (2sw, or 3sw for SwiGLU); then the final norm's
    output (sd). In float32 whatever the compute dtype: the attention scores and probabilities (2hs^2 per
    layer; the softmax runs in float32) and the logits and their softmax (2sv; the model casts logits up).
    """
    hidden = (3 if activation == "swiglu" else 2) * s * w
    in_compute_dtype = n * (9 * s * d + hidden) + s * d
    in_float32 = n * 2 * h * s * s + 2 * s * v
    return bytes_per * in_compute_dtype + 4 * in_float32


def weight_bytes(
    d: Any,
    n: Any,
    w: Any,
    v: Any,
    activation: str = "gelu",
    norm: str = "rmsnorm",
    tied: bool = True,
    precision: Precision | None = None,
    moe: Any = None,
) -> Any:
    """Per-step traffic of parameters, gradients and Adam moments (float32): independent of the batch; with
    quantised weights, plus the quantised copy of the blocks' kernels (`quantised_weight_bytes`). A mixture of
    experts' every expert weight counts, active or not (all are updated every step)."""
    params = sum(param_counts(v, d, n, w, norm=norm, activation=activation, tied=tied, **_moe_params(moe)))
    return WEIGHT_PASSES * 4 * params + QUANT_COPY_PASSES * quantised_weight_bytes(d, n, w, activation, precision)


def quantised_weight_bytes(d: Any, n: Any, w: Any, activation: str = "gelu", precision: Precision | None = None) -> Any:
    """Bytes of the blocks' kernels as a quantised step stores them: the straight-through integer copy in the
    compute dtype (model/quant.py: quantise-dequantise, so no smaller than the dtype), the FP8 copy in 1 byte;
    0 where weights are not quantised."""
    p = precision or Precision()
    size = 1 if p.dtype == "float8" else (BYTES_PER_ELEMENT[p.dtype] if p.bits_weights else 0)
    return size * n * (4 * d * d + _mlp_mats(activation) * d * w)


def quantise_flops(
    d: Any, n: Any, w: Any, s: Any, b: Any, activation: str = "gelu", precision: Precision | None = None
) -> Any:
    """Element-wise FLOPs of quantising (model/quant.py), forward only (the straight-through backward is free):
    QUANT_PER_ELEMENT per element of the blocks' kernels (once per step), of the blocks' linear-layer inputs
    (per token: q/k/v and out take d each, the MLP's up (and gate) d, down w) and of keys and values (2d per
    token); FP8 also rounds the gradient arriving at each linear layer's output (5d + (m-1)w per token)."""
    p, m = precision or Precision(), _mlp_mats(activation)
    weights = n * (4 * d * d + m * d * w)
    inputs = b * n * s * ((m + 1) * d + w)
    kv = b * n * s * 2 * d
    outputs = b * n * s * (4 * d + (m - 1) * w + d)
    if p.dtype == "float8":
        elements = weights + inputs + outputs
    else:
        elements = weights * bool(p.bits_weights) + inputs * bool(p.bits_activations)
    return QUANT_PER_ELEMENT * elements + QUANT_KV_PER_ELEMENT * kv * bool(p.bits_kv) + 0 * b


def train_step_bytes(
    d: Any,
    n: Any,
    h: Any,
    w: Any,
    s: Any,
    v: Any,
    b: Any,
    activation: str = "gelu",
    norm: str = "rmsnorm",
    tied: bool = True,
    bytes_per: int = 4,
    precision: Precision | None = None,
    moe: Any = None,
) -> Any:
    """Memory traffic of one training step: weights-sized traffic once, activations written and read per
    sequence (twice each: written forward, read backward; gradients of the same size likewise). With `moe`
    the MLP hidden layer's traffic is the mixture of experts' (`moe_step_bytes`)."""
    weights = weight_bytes(d, n, w, v, activation, norm, tied, precision, moe=moe)
    activations = b * 4 * activation_bytes_per_sequence(d, n, h, w, s, v, bytes_per, activation)
    if moe is None:
        return weights + activations
    dense_hidden = b * 4 * bytes_per * n * _mlp_mats(activation) * s * w
    return weights + activations - dense_hidden + moe_step_bytes(moe, d, n, w, s, b, bytes_per, activation)


def train_memory_bytes(
    d: Any,
    n: Any,
    h: Any,
    w: Any,
    s: Any,
    v: Any,
    b: Any,
    activation: str = "gelu",
    norm: str = "rmsnorm",
    tied: bool = True,
    bytes_per: int = 4,
    micro_batches: Any = 1,
    precision: Precision | None = None,
    moe: Any = None,
) -> Any:
    """Peak memory of a training step: parameters, gradients and two Adam moments in float32, plus the
    activations saved for the backward pass and the logits' gradient (float32, 2sv: an estimate, tested
    against XLA's memory analysis on small configurations).

    With gradient accumulation over `micro_batches` (model/train.py) only one micro-batch's activations,
    b / micro_batches sequences, live at a time, and the running sum of gradients adds 4 bytes per parameter.
    A mixture of experts (`moe`) holds all its experts' weights and, in place of the MLP hidden layer, a quarter of
    `moe_step_bytes` (its saved activations, written once).
    """
    params = sum(param_counts(v, d, n, w, norm=norm, activation=activation, tied=tied, **_moe_params(moe)))
    per_sequence = activation_bytes_per_sequence(d, n, h, w, s, v, bytes_per, activation) + 8 * s * v
    accumulator = 4 * params * (micro_batches > 1)
    copy = quantised_weight_bytes(d, n, w, activation, precision)
    activations = b // micro_batches * per_sequence
    if moe is not None:
        rows = b // micro_batches
        activations = activations + moe_step_bytes(moe, d, n, w, s, rows, bytes_per, activation) / 4
        activations = activations - rows * bytes_per * n * _mlp_mats(activation) * s * w
    return 16 * params + accumulator + copy + activations


def counts_for(cfg: Any, b: int) -> dict[str, float]:
    """All counts of one configuration (a ModelConfig) at batch b, for timing records."""
    d, n, h, w, s, v = cfg.d, cfg.n, cfg.h, cfg.w, cfg.s, cfg.v
    opts = dict(activation=cfg.activation, norm=cfg.norm, tied=cfg.tied_embeddings)
    moe, precision = moe_of(cfg), Precision.of(cfg)
    bytes_per = bytes_per_element(cfg.dtype)
    counts = dict(
        paper_params=float(PARAMS(d, n, v, w)),
        paper_memcpys=float(MEMCPYS(d, n, s, v, w, h)),
        paper_flops=float(FLOPS(d, n, s, v, w, h)),
        params=float(sum(param_counts(v, d, n, w, **opts, **_moe_params(moe)))),
        flops=float(train_step_flops(d, n, h, w, s, v, b, **opts, precision=precision, moe=moe)),
        bytes=float(train_step_bytes(d, n, h, w, s, v, b, bytes_per=bytes_per, **opts, precision=precision, moe=moe)),
        memory=float(
            train_memory_bytes(d, n, h, w, s, v, b, bytes_per=bytes_per, **opts, precision=precision, moe=moe)
        ),
    )
    if moe is not None:  # a dense record's counts are as before
        counts["active_params"] = float(count_params(cfg).active)
    return counts
