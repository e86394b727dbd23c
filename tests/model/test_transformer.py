"""The model: shapes, causality, jit equivalence, and the exact parameter count against the real tree."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from smallest_loss.configs.schema import ModelConfig
from smallest_loss.model.params import count_params
from smallest_loss.model.transformer import Transformer, count_params_in_tree

from tests.conftest import TINY_MODEL


def _model(cfg: ModelConfig = TINY_MODEL) -> Transformer:
    return Transformer(cfg, nnx.Rngs(0))


@pytest.mark.slow
def test_output_shape_and_dtype():
    tokens = jnp.zeros((3, TINY_MODEL.s), jnp.int32)
    logits = _model()(tokens)
    assert logits.shape == (3, TINY_MODEL.s, TINY_MODEL.v)
    assert logits.dtype == jnp.float32


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["gelu", "swiglu"])
def test_causal_gradient_of_early_outputs_ignores_later_inputs(activation):
    cfg = ModelConfig(v=64, d=32, n=2, h=2, w=64, s=12, activation=activation)
    graphdef, params = nnx.split(_model(cfg))
    x = jax.random.normal(jax.random.key(1), (1, cfg.s, cfg.d))

    def output_at(x, t):
        # Feed embeddings directly so the gradient with respect to every input position exists.
        model = nnx.merge(graphdef, params)
        for block in model.blocks:
            x = block(x)
        return model.final_norm(x)[0, t].sum()

    t = 5
    grad = jax.grad(output_at)(x, t)
    assert np.all(np.asarray(grad[0, t + 1 :]) == 0.0)
    assert np.any(np.asarray(grad[0, : t + 1]) != 0.0)


@pytest.mark.slow
def test_jit_and_eager_agree():
    graphdef, params = nnx.split(_model())
    tokens = jax.random.randint(jax.random.key(2), (2, TINY_MODEL.s), 0, TINY_MODEL.v)
    run = lambda p, t: nnx.merge(graphdef, p)(t)
    np.testing.assert_allclose(run(params, tokens), jax.jit(run)(params, tokens), rtol=1e-5, atol=1e-5)


_LEVELS = ([32, 48], [1, 3], [2, 4], [24, 80], ["rmsnorm", "layernorm"], ["gelu", "swiglu"], [True, False])
# A 2^(7-3) fractional factorial of resolution IV: four factors in full, the other three their products (E = ABC,
# F = ABD, G = ACD): every combination of the levels of any three factors appears, in 16 models instead of the full
# grid's 128 (each model costs about 0.2 s to build from shapes).
_GRID = [
    tuple(levels[bit] for levels, bit in zip(_LEVELS, (a, b, c, d, a ^ b ^ c, a ^ b ^ d, a ^ c ^ d), strict=True))
    for a, b, c, d in itertools.product((0, 1), repeat=4)
]


@pytest.mark.slow
@pytest.mark.parametrize("d,n,h,w,norm,act,tied", list(_GRID))
def test_parameter_count_equals_real_tree(d, n, h, w, norm, act, tied):
    cfg = ModelConfig(v=97, d=d, n=n, h=h, w=w, s=8, norm=norm, activation=act, tied_embeddings=tied)
    assert count_params(cfg) == count_params_in_tree(cfg)


def test_parameter_kinds():
    counts = count_params(ModelConfig(v=100, d=32, n=1, h=2, w=64, s=8, tied_embeddings=False))
    assert counts.embedding == 2 * 100 * 32
    assert counts.total == counts.embedding + counts.non_embedding


@pytest.mark.slow
def test_attention_falls_back_to_xla_off_gpu():
    from smallest_loss.model.transformer import attention_implementation

    for attention in ("auto", "xla", "cudnn"):
        cfg = ModelConfig(d=64, h=4, dtype="bfloat16", attention=attention)
        assert attention_implementation(cfg) == "xla"  # this backend is the CPU
    out = _model(ModelConfig(v=64, d=32, n=1, h=2, w=64, s=8, attention="cudnn"))(jnp.zeros((1, 8), jnp.int32))
    assert out.shape == (1, 8, 64)
