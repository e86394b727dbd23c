"""Analytic counts of a training step: the paper's formulas exactly as written, and our model's own.

Symbols (DESIGN.md): d width, n layers, h heads, w MLP hidden width, v vocabulary, s sequence length,
b batch (sequences per step). Every function is plain arithmetic, so it takes Python numbers or NumPy
arrays alike (the planner scores a million candidates in one call).

1. "Time Matters" (Inbar and Sernau, 2024, arXiv 2406.18922), per sequence, no batch size:
       PARAMS  = v*d + n*d*(8 + 2w + 4d) + n*w
       MEMCPYS = 2vd + 2sv + n*s*(w + 2hs) + 2nd*(w + 4s + 2d)
       FLOPS   = 2svd + 2dns*(w + 2d + s) + n*h*s^2
   A training step of b sequences is b times these in the paper's accounting.

2. Our model (model/transformer.py), for a real training step of b sequences (forward, backward, AdamW):
   - matmul FLOPs, forward, per sequence: per layer qkv 6sd^2, scores QK^T 2s^2d, weighted sum 2s^2d,
     out projection 2sd^2, MLP 2*m*s*d*w (m = 2 matrices, 3 for SwiGLU); output layer 2svd. XLA's dense
     attention computes the full s x s score matrix and masks it, so causal attention is not halved.
     Backward is twice the forward (gradients for inputs and for weights): training = 3x forward.
   - element-wise FLOPs (norms, residual adds, rotary, softmax, activation, cross-entropy, AdamW, global
     norm clipping), forward + backward: per layer and token 60 per unit of d, 40 per unit of w (GELU),
     20 per attention score per head; 10 per logit; 21 per parameter for the optimizer. These per-element
     costs were read off XLA's compiled cost analysis of this step on CPU (a least-squares fit over ten
     tiny configurations, then rounded); they are 3-13% of the total at small sizes and vanish at large.
   - memory traffic (bytes), batch-aware: parameters, gradients and both Adam moments are read and
     written a fixed number of times per step whatever b is (WEIGHT_PASSES, below), while activations
     are written in the forward pass and read back in the backward pass per sequence, times b.

Differences from the paper: it counts biases and two norms per layer in PARAMS (we have no biases and
count one final norm); its FLOPS are forward-only and per sequence with a causal half of the attention
(n*h*s^2); its MEMCPYS counts each tensor once per sequence, with no optimizer and no batch.
"""

from __future__ import annotations

from typing import Any

from model.transformer import param_counts

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

ELEMENTWISE_PER_D = 60  # per layer, token and unit of width: norms, residuals, rotary (fwd + bwd)
ELEMENTWISE_PER_W = 40  # per layer, token and MLP unit: the activation (fwd + bwd)
ELEMENTWISE_PER_SCORE = 20  # per attention score: mask, softmax (fwd + bwd)
ELEMENTWISE_PER_LOGIT = 10  # per logit: log-softmax cross-entropy (fwd + bwd)
OPTIMIZER_PER_PARAM = 21  # AdamW update, global-norm clipping
WEIGHT_PASSES = 10  # per step: params read fwd + bwd + update, written once; grads written + read; 2 moments r/w


def _mlp_mats(activation: str) -> int:
    return 3 if activation == "swiglu" else 2


def forward_matmul_flops(d: Any, n: Any, h: Any, w: Any, s: Any, v: Any, activation: str = "gelu") -> Any:
    """Matmul FLOPs of one sequence's forward pass (see the module docstring); `h` does not enter."""
    per_layer = 8 * s * d * d + 4 * s * s * d + 2 * _mlp_mats(activation) * s * d * w
    return n * per_layer + 2 * s * d * v


def train_step_flops(d: Any, n: Any, h: Any, w: Any, s: Any, v: Any, b: Any, activation: str = "gelu",
                     norm: str = "rmsnorm", tied: bool = True) -> Any:
    """FLOPs of one training step of b sequences: 3x forward matmuls, element-wise work, AdamW."""
    params = sum(param_counts(v, d, n, w, norm=norm, activation=activation, tied=tied))
    elementwise = n * s * (ELEMENTWISE_PER_D * d + ELEMENTWISE_PER_W * w) + n * h * s * s * ELEMENTWISE_PER_SCORE
    elementwise = elementwise + ELEMENTWISE_PER_LOGIT * s * v
    return b * (3 * forward_matmul_flops(d, n, h, w, s, v, activation) + elementwise) + OPTIMIZER_PER_PARAM * params


def train_attention_flops(d: Any, n: Any, s: Any, b: Any) -> Any:
    """The part of `train_step_flops` spent in attention's two s x s matmuls (QK^T and PV), forward and
    backward: 3 * 4 * s^2 * d per layer and sequence. Kept apart because, per FLOP, these batched small
    matmuls run far slower than the dense layers on some backends (measured on CPU: see results/cpu)."""
    return 3 * 4 * b * n * s * s * d


def activation_bytes_per_sequence(d: Any, n: Any, h: Any, w: Any, s: Any, v: Any, bytes_per: int = 4,
                                  activation: str = "gelu") -> Any:
    """Activations one sequence writes in the forward pass and the backward pass reads back.

    Per layer: the block input and two norm outputs (3sd), q, k, v and the attention output (4sd), scores
    and probabilities (2hs^2), the out-projection and MLP outputs (2sd), the MLP hidden layer before and
    after the activation (2sw, or 3sw for SwiGLU); then the logits and their softmax (2sv).
    """
    hidden = (3 if activation == "swiglu" else 2) * s * w
    per_layer = 9 * s * d + 2 * h * s * s + hidden
    return bytes_per * (n * per_layer + 2 * s * v + s * d)


def weight_bytes(d: Any, n: Any, w: Any, v: Any, activation: str = "gelu", norm: str = "rmsnorm",
                 tied: bool = True) -> Any:
    """Per-step traffic of parameters, gradients and Adam moments (float32): independent of the batch."""
    return WEIGHT_PASSES * 4 * sum(param_counts(v, d, n, w, norm=norm, activation=activation, tied=tied))


def train_step_bytes(d: Any, n: Any, h: Any, w: Any, s: Any, v: Any, b: Any, activation: str = "gelu",
                     norm: str = "rmsnorm", tied: bool = True, bytes_per: int = 4) -> Any:
    """Memory traffic of one training step: weights-sized traffic once, activations written and read per
    sequence (twice each: written forward, read backward; gradients of the same size likewise)."""
    weights = weight_bytes(d, n, w, v, activation, norm, tied)
    return weights + b * 4 * activation_bytes_per_sequence(d, n, h, w, s, v, bytes_per, activation)


def train_memory_bytes(d: Any, n: Any, h: Any, w: Any, s: Any, v: Any, b: Any, activation: str = "gelu",
                       norm: str = "rmsnorm", tied: bool = True, bytes_per: int = 4) -> Any:
    """Peak memory of a training step: parameters, gradients and two Adam moments in float32, plus the
    activations saved for the backward pass and the logits' gradient (an estimate, tested against XLA's
    memory analysis on small configurations)."""
    params = sum(param_counts(v, d, n, w, norm=norm, activation=activation, tied=tied))
    return 16 * params + b * (activation_bytes_per_sequence(d, n, h, w, s, v, bytes_per, activation)
                              + 2 * bytes_per * s * v)


def counts_for(cfg: Any, b: int) -> dict[str, float]:
    """All counts of one configuration (a ModelConfig) at batch b, for timing records."""
    d, n, h, w, s, v = cfg.d, cfg.n, cfg.h, cfg.w, cfg.s, cfg.v
    opts = dict(activation=cfg.activation, norm=cfg.norm, tied=cfg.tied_embeddings)
    bytes_per = 2 if cfg.dtype in ("bfloat16", "float16") else 4
    return dict(
        paper_params=float(PARAMS(d, n, v, w)), paper_memcpys=float(MEMCPYS(d, n, s, v, w, h)),
        paper_flops=float(FLOPS(d, n, s, v, w, h)), params=float(sum(param_counts(v, d, n, w, **opts))),
        flops=float(train_step_flops(d, n, h, w, s, v, b, **opts)),
        bytes=float(train_step_bytes(d, n, h, w, s, v, b, bytes_per=bytes_per, **opts)),
        memory=float(train_memory_bytes(d, n, h, w, s, v, b, bytes_per=bytes_per, **opts)),
    )
