"""Analytic counts: the paper's formulas by hand, and our exact counts against XLA's compiled step.

How the layer loop is written matters here: model/transformer.py runs its blocks in a Python loop (no
`lax.scan`), so XLA compiles every layer and its cost analysis counts all n of them. A scanned body would
be counted once, and these comparisons would be off by a factor of about n.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.ad_checkpoint import print_saved_residuals
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.schema import ModelConfig
from smallest_loss.model.params import count_params
from smallest_loss.model.train import loss_fn
from smallest_loss.model.transformer import Transformer, count_params_in_tree
from smallest_loss.timing.counts import (
    FLOPS,
    MEMCPYS,
    PARAMS,
    WEIGHT_PASSES,
    bytes_per_element,
    counts_for,
    forward_matmul_flops,
    train_memory_bytes,
    train_step_flops,
    train_step_terms,
)
from smallest_loss.timing.measure import base_record, compile_step, xla_analyses
from smallest_loss.timing.models import design_matrix, get_model, shape_columns

from tests.timing.jaxprs import only_the_dots

B = 4  # the batch at which all configurations below are compiled
GELU = ModelConfig(v=256, d=64, n=1, h=4, w=256, s=32)
TINY = [
    ModelConfig(v=256, d=d, n=n, h=h, w=w, s=s)
    for d, n, h, w, s in [(32, 1, 2, 64, 32), (64, 2, 4, 256, 16), (128, 2, 4, 256, 16)]
] + [GELU]
SWIGLU = dataclasses.replace(GELU, activation="swiglu")
VARIANTS = [SWIGLU, ModelConfig(v=512, d=64, n=1, h=4, w=256, s=32, tied_embeddings=False, norm="layernorm")]


def test_paper_formulas_by_hand():
    # d=2, n=1, v=3, w=4, s=5, h=1:
    # PARAMS  = 3*2 + 1*2*(8 + 8 + 8) + 1*4                          = 6 + 48 + 4            = 58
    # MEMCPYS = 2*3*2 + 2*5*3 + 1*5*(4 + 2*1*5) + 2*1*2*(4 + 20 + 4) = 12 + 30 + 70 + 112    = 224
    # FLOPS   = 2*5*3*2 + 2*2*1*5*(4 + 4 + 5) + 1*1*25               = 60 + 260 + 25         = 345
    assert PARAMS(2, 1, 3, 4) == 58
    assert MEMCPYS(d=2, n=1, s=5, v=3, w=4, h=1) == 224
    assert FLOPS(d=2, n=1, s=5, v=3, w=4, h=1) == 345
    # d=4, n=2, v=10, w=8, s=3, h=2:
    # PARAMS  = 10*4 + 2*4*(8 + 16 + 16) + 2*8                        = 40 + 320 + 16         = 376
    # MEMCPYS = 2*10*4 + 2*3*10 + 2*3*(8 + 2*2*3) + 2*2*4*(8 + 12 + 8) = 80 + 60 + 120 + 448   = 708
    # FLOPS   = 2*3*10*4 + 2*4*2*3*(8 + 8 + 3) + 2*2*3^2               = 240 + 912 + 36        = 1188
    assert PARAMS(d=4, n=2, v=10, w=8) == 376
    assert MEMCPYS(d=4, n=2, s=3, v=10, w=8, h=2) == 708
    assert FLOPS(d=4, n=2, s=3, v=10, w=8, h=2) == 1188
    # GPT-2 small shape: 50257*768 + 12*768*(8 + 6144 + 3072) + 12*3072 = 123,642,624
    assert PARAMS(768, 12, 50257, 3072) == 123_642_624


def test_formulas_are_vectorised_and_broadcast():
    d = np.array([64, 128])
    expected = [FLOPS(64, 2, 64, 256, 256, 4), FLOPS(128, 2, 64, 256, 512, 4)]
    assert np.array_equal(FLOPS(d, 2, 64, 256, 4 * d, 4), expected)
    grid = np.meshgrid(np.arange(1, 5), np.array([32, 64, 128]), indexing="ij")
    assert MEMCPYS(128, grid[0], grid[1], 256, 512, 4).shape == (4, 3)
    assert train_step_flops(d[:, None], 2, 4, 4 * d[:, None], np.array([32, 64, 128]), 256, 8).shape == (2, 3)
    assert train_memory_bytes(d, 2, 4, 4 * d, 64, 256, np.array([[1], [8]])).shape == (2, 2)


def test_terms_sum_to_the_step_flops():
    for act in ("gelu", "swiglu"):
        terms = train_step_terms(64, 3, 4, 256, 128, 512, 8, activation=act, tied=False)
        assert sum(terms.values()) == train_step_flops(64, 3, 4, 256, 128, 512, 8, activation=act, tied=False)
    optimizer = train_step_terms(np.array([64, 64]), 2, 4, 256, 64, 256, np.array([1, 8]))["optimizer"]
    assert optimizer[0] == optimizer[1]  # once per step, whatever the batch


@pytest.fixture(scope="module")
def compiled():
    """XLA's analyses of the real training step of each configuration at batch B (compiled, not run)."""
    return [(cfg, xla_analyses(compile_step(cfg, B)[0])) for cfg in TINY + VARIANTS]


def flops_tolerance(cfg: ModelConfig) -> float:
    """How far our FLOPs may be from XLA's: 0.5%, 1% with SwiGLU. XLA's count of element-wise work moves between
    versions (jaxlib 0.10: ours within 0.05-0.28% of it; 0.11 counts the cross-entropy's per-logit work lower:
    0.04-0.37%); a matmul left out is 10% or more of these steps."""
    return 0.01 if cfg.activation == "swiglu" else 0.005


@pytest.mark.slow  # compiles every configuration's training step (the `compiled` fixture)
def test_exact_training_flops_match_xla(compiled):
    """Our FLOPs are within 0.5% of XLA's compiled count (GELU, RMSNorm or LayerNorm, tied or not) and within
    1% with SwiGLU, whose third MLP matrix is 18% of the SwiGLU step's FLOPs here: missing it fails by far."""
    for cfg, xla in compiled:
        assert counts_for(cfg, B)["flops"] == pytest.approx(xla["flops"], rel=flops_tolerance(cfg)), cfg
    third = train_step_terms(SWIGLU.d, SWIGLU.n, SWIGLU.h, SWIGLU.w, SWIGLU.s, SWIGLU.v, B)["mlp"] / 2
    assert third / dict(compiled)[SWIGLU]["flops"] > 0.15


def forward_matmul_xla_flops(cfg: ModelConfig, b: int) -> float:
    """XLA's cost analysis of the matmuls of the real model's forward pass on b sequences: the dot_generals of
    its traced program, compiled alone (tests/timing/jaxprs.py)."""
    graphdef, params = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0))))
    tokens = jax.ShapeDtypeStruct((b, cfg.s), jnp.int32)
    dots, inputs = only_the_dots(jax.make_jaxpr(lambda p, t: nnx.merge(graphdef, p)(t))(params, tokens).jaxpr)
    cost = jax.jit(dots).lower(*inputs).compile().cost_analysis()
    return (cost[0] if isinstance(cost, list) else cost)["flops"]


# Shapes apart from TINY's: heads of 32, 64 and 16 wide; vocabularies not a power of two; 1 to 3 layers.
SHAPES = [
    ModelConfig(v=300, d=96, n=2, h=3, w=200, s=24),
    ModelConfig(v=512, d=64, n=3, h=1, w=128, s=8),
    ModelConfig(v=1000, d=128, n=1, h=8, w=512, s=64),
]


@pytest.mark.parametrize(
    "cfg", TINY + VARIANTS + SHAPES, ids=lambda c: f"d{c.d}-n{c.n}-h{c.h}-w{c.w}-s{c.s}-v{c.v}-{c.activation}"
)
def test_paper_flops_count_the_layer_matmuls_at_one_flop_per_multiply_add(cfg):
    """The paper's FLOPS, exactly, against XLA's count of the forward pass's matmuls (2 FLOPs per multiply-add):
    FLOPS = (layer matmuls) / 2 + (output layer) + n h s^2, i.e. its 2dns(w + 2d + s) is half of the layers'
    q, k, v, out, MLP and attention matmuls, its 2svd the whole output layer, and n h s^2 (the softmax) no
    matmul. The paper sees two MLP matrices: SwiGLU's third, 2sdw per layer and sequence, is not in FLOPS."""
    d, n, h, w, s, v = cfg.d, cfg.n, cfg.h, cfg.w, cfg.s, cfg.v
    output = 2 * s * v * d
    layers = 2 * (FLOPS(d, n, s, v, w, h) - n * h * s**2 - output)
    third = n * 2 * s * d * w if cfg.activation == "swiglu" else 0
    assert forward_matmul_xla_flops(cfg, B) == B * (layers + third + output)
    assert forward_matmul_flops(d, n, h, w, s, v, cfg.activation) == layers + third + output


@pytest.mark.slow  # compiles every configuration's training step (the `compiled` fixture)
def test_memory_estimate_against_memory_analysis(compiled):
    """Our peak-memory estimate is within 25% of XLA's (arguments + outputs + temporaries - aliased)."""
    for cfg, xla in compiled:
        assert counts_for(cfg, B)["memory"] == pytest.approx(xla["peak_bytes"], rel=0.25), cfg


def test_counts_params_match_model():
    for cfg in TINY + VARIANTS:
        assert counts_for(cfg, 1)["params"] == count_params(cfg).total == count_params_in_tree(cfg).total


def record_features(cfgs: list[ModelConfig]) -> dict[str, np.ndarray]:
    """The step-time models' features (FLOPs, weight bytes, activation bytes) of a timing record of each
    configuration at batch B, read back from the record as calibration reads it."""
    records = [dict(base_record(cfg, B), status="ok", step_seconds=1.0) for cfg in cfgs]
    model = get_model("exact-layers")
    X = design_matrix(model, shape_columns(records), {})
    return dict(flops=X[:, 0] + X[:, 1], weights=X[:, 2], activations=X[:, 3])


@pytest.mark.slow  # compiles every configuration's training step (the `compiled` fixture)
def test_record_features_see_activation_norm_and_tying(compiled):
    """Features of a record count what XLA compiles (FLOPs) and what the real parameter tree holds (weight
    traffic: the SwiGLU gate and an untied output layer included), and agree with the record's counts."""
    cfgs = [cfg for cfg, _ in compiled]
    features = record_features(cfgs)
    for i, (cfg, xla) in enumerate(compiled):
        assert features["flops"][i] == pytest.approx(xla["flops"], rel=flops_tolerance(cfg))
        assert features["weights"][i] == WEIGHT_PASSES * 4 * count_params_in_tree(cfg).total
        assert features["weights"][i] + features["activations"][i] == pytest.approx(counts_for(cfg, B)["bytes"])
    gate = WEIGHT_PASSES * 4 * SWIGLU.n * SWIGLU.d * SWIGLU.w
    assert features["weights"][cfgs.index(SWIGLU)] - features["weights"][cfgs.index(GELU)] == gate


SHORT_DTYPES = {"f32": 4, "bf16": 2, "f16": 2, "i32": 4, "bool": 1}


def saved_activation_bytes(cfg: ModelConfig, b: int) -> int:
    """Bytes of the activations the real loss saves for its backward pass, as JAX lists them
    (`jax.ad_checkpoint.print_saved_residuals`, from shapes alone): every residual of rank 3 or more (the
    rest are weights, their bf16 copies, norm scales and scalars)."""
    graphdef, params = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0))), nnx.Param)
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        print_saved_residuals(
            lambda p, t: loss_fn(p, graphdef, t), params, jax.ShapeDtypeStruct((b, cfg.s + 1), jnp.int32)
        )
    total = 0
    for dtype, dims in re.findall(r"^(\w+)\[([\d,]*)\]", text.getvalue(), re.MULTILINE):
        shape = [int(x) for x in dims.split(",") if x]
        total += SHORT_DTYPES[dtype] * int(np.prod(shape)) if len(shape) >= 3 else 0
    return total


def test_bf16_activation_bytes_against_the_saved_residuals():
    """In bf16 the activations take 2 bytes, except the softmaxes (attention, logits), which stay float32:
    our activation bytes shrink by the same factor as the residuals JAX saves (0.70 here, not 0.5);
    weight traffic (float32 master weights, gradients, moments) does not change."""
    bf16 = dataclasses.replace(GELU, dtype="bfloat16")
    features = record_features([GELU, bf16])
    ours = features["activations"][1] / features["activations"][0]
    real = saved_activation_bytes(bf16, B) / saved_activation_bytes(GELU, B)
    assert ours == pytest.approx(real, rel=0.05) and 0.5 < ours < 0.8
    assert features["weights"][0] == features["weights"][1]
    assert counts_for(bf16, B)["bytes"] == features["weights"][1] + features["activations"][1]


def test_bytes_per_element():
    assert [bytes_per_element(t) for t in ("float32", "bfloat16", "float16")] == [4, 2, 2]
    with pytest.raises(UserError, match="unknown dtype 'int8'"):
        bytes_per_element("int8")
