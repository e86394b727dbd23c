"""Quantised training (model/quant.py): the integer grid's properties, the straight-through gradient, FP8's
emulation off FP8 hardware, a tiny model training quantised, and the dense default left as it was."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.overrides import apply_overrides
from smallest_loss.configs.schema import ModelConfig, RunConfig
from smallest_loss.model.quant import (
    FP8_BACKWARD,
    FP8_FORWARD,
    fake_quant,
    fp8_dequantized,
    fp8_forward,
    fp8_gradient,
    fp8_native,
    fp8_note,
    int_levels,
    quant_dot,
    quantize_int,
)
from smallest_loss.model.train import init_state, make_optimizer, make_step_fn, train
from smallest_loss.model.transformer import Transformer

from tests.conftest import TINY_MODEL, tiny_run

X = jax.random.normal(jax.random.PRNGKey(0), (16, 24)) * jnp.linspace(0.1, 3.0, 24)


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("axis", [None, 0])
def test_quantisation_is_idempotent_and_its_error_is_bounded(bits, axis):
    q = quantize_int(X, bits, axis)
    # The absmax stays on the grid, so the scale is the same (to a float32 ulp: absmax / Q * Q) and so are the points.
    np.testing.assert_allclose(quantize_int(q, bits, axis), q, rtol=1e-6, atol=0)
    amax = jnp.max(jnp.abs(X), axis=axis, keepdims=axis is not None)
    step = amax / int_levels(bits)
    assert jnp.all(jnp.abs(q - X) <= step / 2 * (1 + 1e-5))
    assert jnp.all(jnp.abs(q - X) <= amax / 2 ** (bits - 1))  # the brief's bound: absmax / 2^(P-1)
    levels = np.unique(np.round(np.asarray(q / step)))
    assert len(levels) <= 2 * int_levels(bits) + 1 and np.allclose(np.asarray(q / step), np.round(q / step), atol=1e-4)


def test_per_channel_scales_each_output_column_apart():
    w = X.at[:, 0].multiply(100.0)  # one loud column
    per_tensor, per_channel = quantize_int(w, 4), quantize_int(w, 4, axis=0)
    quiet = slice(1, None)
    assert jnp.abs(per_channel - w)[:, quiet].max() < jnp.abs(per_tensor - w)[:, quiet].max() / 4


def test_straight_through_gradient_is_the_identity():
    g = jax.grad(lambda x: jnp.sum(fake_quant(x, 3, None) * jnp.arange(24.0)))(X)
    assert jnp.array_equal(g, jnp.broadcast_to(jnp.arange(24.0), X.shape))
    g8 = jax.grad(lambda x: jnp.sum(fp8_forward(x) * jnp.arange(24.0)))(X)
    assert jnp.array_equal(g8, jnp.broadcast_to(jnp.arange(24.0), X.shape))


def test_fp8_grids_forward_and_backward():
    for f8 in (FP8_FORWARD, FP8_BACKWARD):
        q = fp8_dequantized(X, f8)
        scale = jnp.max(jnp.abs(X)) / float(jnp.finfo(f8).max)
        assert jnp.array_equal((q / scale).astype(f8).astype(jnp.float32) * scale, q)  # on the scaled grid
        assert 0 < jnp.abs(q - X).max() <= jnp.abs(X).max() * 2.0 ** -jnp.finfo(f8).nmant
    # The gradient into a layer's output is rounded to e5m2 on its way back; the forward value is untouched.
    y, pull = jax.vjp(fp8_gradient, X)
    assert jnp.array_equal(y, X) and jnp.array_equal(pull(X)[0], fp8_dequantized(X, FP8_BACKWARD))


def test_fp8_off_fp8_hardware_is_emulated_and_says_so():
    cfg = dataclasses.replace(TINY_MODEL, dtype="float8")
    if jax.default_backend() == "cpu":
        assert not fp8_native() and "not FP8" in fp8_note(cfg)
    assert fp8_note(TINY_MODEL) is None


def test_config_fields_parse_validate_and_old_configs_load():
    cfg = apply_overrides(RunConfig(), ["model.bits_weights=4", "model.bits_kv=0"])
    assert (cfg.model.bits_weights, cfg.model.bits_activations, cfg.model.bits_kv) == (4, None, None)
    old = RunConfig().to_dict()
    for name in ("bits_weights", "bits_activations", "bits_kv"):
        old["model"].pop(name)
    assert RunConfig.from_dict(json.loads(json.dumps(old))) == RunConfig()
    for bad in (dict(bits_weights=1), dict(bits_kv=17), dict(dtype="float8", bits_activations=8)):
        with pytest.raises(UserError, match="model\\."):
            ModelConfig(**bad)
    with pytest.raises(UserError, match="param_dtype"):
        ModelConfig(param_dtype="float8")


def test_dense_default_is_unchanged():
    assert quant_dot(TINY_MODEL) is None and not TINY_MODEL.quantised
    model = Transformer(TINY_MODEL, nnx.Rngs(0))
    assert model.blocks[0].attn.qkv.dot_general is jax.lax.dot_general  # nnx.Linear's own matmul, as before
    # Quantisation at 16 bits changes the forward pass by at most float32 noise of the 16-bit grid.
    tokens = jnp.arange(32).reshape(2, 16)
    fine = Transformer(dataclasses.replace(TINY_MODEL, bits_weights=16, bits_activations=16, bits_kv=16), nnx.Rngs(0))
    forward = nnx.jit(lambda m, t: m(t))
    assert jnp.allclose(forward(model, tokens), forward(fine, tokens), atol=2e-3)


@pytest.mark.slow
@pytest.mark.parametrize(
    "precision", [dict(bits_weights=4, bits_activations=4, bits_kv=4), dict(dtype="bfloat16", bits_weights=4)]
)
def test_tiny_model_trains_quantised_at_4_bits(precision):
    cfg = dataclasses.replace(TINY_MODEL, **precision)
    optimizer = make_optimizer(tiny_run(lr=1e-2).train, 4)
    graphdef, state = init_state(cfg, optimizer, 0)
    step = jax.jit(make_step_fn(graphdef, optimizer))
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 8, (4, cfg.s + 1)), jnp.int32)
    losses = []
    for _ in range(4):
        state, m = step(state, tokens)
        losses.append(float(m["loss"]))
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]  # the same batch: the loss must fall
    leaves = jax.tree.leaves(state["opt_state"]) + jax.tree.leaves(state["params"])
    assert all(x.dtype == jnp.float32 for x in leaves if jnp.issubdtype(x.dtype, jnp.floating))  # master state


@pytest.mark.slow
def test_fp8_run_trains_and_notes_the_emulation(tmp_path, capsys):
    config = tiny_run(steps=3, eval_every=0, checkpoint_every=0)
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, dtype="float8"))
    summary = train(config, tmp_path / "run", progress=False)
    assert summary["status"] == "completed" and np.isfinite(summary["final_eval_loss"])
    if not fp8_native():
        assert "the matmul itself is not FP8" in capsys.readouterr().err
