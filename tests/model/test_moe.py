"""The mixture-of-experts MLP (model/moe.py): dispatch against a per-token reference, its config checks, its
parameter counts, and its router losses in the training step."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.overrides import apply_overrides
from smallest_loss.configs.schema import ModelConfig, RunConfig
from smallest_loss.model.moe import STAT_NAMES, Moe, call_with_router_stats, route
from smallest_loss.model.params import count_params, padded_blocks
from smallest_loss.model.train import init_state, loss_fn, make_step_fn, objective
from smallest_loss.model.transformer import Mlp, count_params_in_tree

MOE = ModelConfig(v=64, d=16, n=1, h=2, w=32, s=8, experts=4, top_k=2, granularity=2, shared_experts=1)


def reference(layer: Moe, x_BxLxD: jax.Array) -> jax.Array:
    """Each token through its chosen experts one by one, weighted by their router probabilities."""
    cfg = layer.cfg
    x_TxD = x_BxLxD.reshape(-1, cfg.d)
    probs = jax.nn.softmax(x_TxD @ layer.router.kernel[...], axis=-1)
    gates, chosen = jax.lax.top_k(probs, cfg.active_experts)
    rows = []
    for t in range(x_TxD.shape[0]):
        y = 0.0
        for j in range(cfg.active_experts):
            e = int(chosen[t, j])
            up = x_TxD[t] @ layer.up[...][e]
            g = x_TxD[t] @ layer.gate[...][e] if cfg.activation == "swiglu" else None
            h = jax.nn.silu(g) * up if g is not None else jax.nn.gelu(up)
            y = y + gates[t, j] * (h @ layer.down[...][e])
        rows.append(y)
    return jnp.stack(rows).reshape(x_BxLxD.shape) + layer.shared(x_BxLxD)


@pytest.mark.slow
@pytest.mark.parametrize("dispatch", ["blocked", "ragged"])
@pytest.mark.parametrize("activation", ["gelu", "swiglu"])
def test_dispatch_matches_a_per_token_reference(dispatch, activation):
    cfg = dataclasses.replace(MOE, moe_dispatch=dispatch, activation=activation)
    layer = Moe(cfg, nnx.Rngs(0), Mlp)
    x = jax.random.normal(jax.random.key(1), (2, cfg.s, cfg.d))
    np.testing.assert_allclose(call_with_router_stats(layer, x)[0], reference(layer, x), rtol=2e-5, atol=2e-5)


@pytest.mark.slow
def test_blocked_and_ragged_give_the_same_gradients_even_when_one_expert_takes_every_token():
    grads = []
    for dispatch in ("blocked", "ragged"):
        cfg = dataclasses.replace(MOE, moe_dispatch=dispatch, top_k=1, granularity=1, shared_experts=0)
        layer = Moe(cfg, nnx.Rngs(0), Mlp)
        # A router that sends every token to expert 0: the most unequal load, which blocks must still hold.
        layer.router.kernel[...] = jnp.zeros_like(layer.router.kernel[...]).at[:, 0].set(5.0)
        graphdef, params = nnx.split(layer, nnx.Param)
        x = jnp.abs(jax.random.normal(jax.random.key(2), (2, cfg.s, cfg.d)))

        def f(p, x=x, graphdef=graphdef):
            y, stats = call_with_router_stats(nnx.merge(graphdef, p), x)
            return jnp.sum(y**2), stats

        (_, stats), g = jax.jit(jax.value_and_grad(f, has_aux=True))(params)
        assert float(stats["expert_load_max"]) == 1.0 and float(stats["expert_load_min"]) == 0.0
        grads.append(g)
    for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_padded_blocks_hold_any_routing():
    rng = np.random.default_rng(0)
    for rows, experts in [(64, 4), (256, 8), (24, 16), (1000, 3)]:
        n_blocks, q = padded_blocks(rows, experts)
        for _ in range(50):
            counts = rng.multinomial(rows, rng.dirichlet(np.full(experts, 0.3)))
            assert np.sum(-(-counts // q)) <= n_blocks


def test_router_statistics_by_hand():
    logits = jnp.log(jnp.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1]]))
    _, chosen, stats = route(logits, 1)
    assert chosen.ravel().tolist() == [0, 0]
    # f = (1, 0, 0), P = (0.65, 0.25, 0.1): 3 * 0.65; logsumexp of log-probabilities is 0.
    assert float(stats["router_aux_loss"]) == pytest.approx(1.95)
    assert float(stats["router_z_loss"]) == pytest.approx(0.0, abs=1e-10)
    assert (float(stats["expert_load_max"]), float(stats["expert_load_min"])) == (1.0, 0.0)


def test_config_checks_and_overrides():
    cfg = apply_overrides(RunConfig(), ["model.experts=4", "model.top_k=2", "train.router_aux_weight=0.1"])
    assert (cfg.model.experts, cfg.model.top_k, cfg.train.router_aux_weight) == (4, 2, 0.1)
    assert RunConfig.from_dict({"model": {"d": 32, "h": 2}}).model.experts == 0  # an old run's config loads
    for bad, message in [
        (["model.experts=2", "model.top_k=3"], "top_k=3 exceeds"),
        (["model.experts=2", "model.granularity=3"], "does not divide model.w"),
        (["model.experts=-1"], "must not be negative"),
        (["train.router_z_weight=-1"], "must not be negative"),
    ]:
        with pytest.raises(UserError, match=message):
            apply_overrides(RunConfig(), bad)


@pytest.mark.parametrize(
    "cfg",
    [
        MOE,
        dataclasses.replace(MOE, activation="swiglu", tied_embeddings=False, norm="layernorm", n=2, shared_experts=0),
    ],
)
def test_parameter_counts_match_the_tree(cfg):
    counts = count_params(cfg)
    assert counts == count_params_in_tree(cfg)
    E, G, m = cfg.routed_experts, cfg.expert_width, cfg.activation == "swiglu" and 3 or 2
    assert counts.inactive == cfg.n * (E - cfg.active_experts) * m * cfg.d * G
    dense = count_params(dataclasses.replace(cfg, experts=0, shared_experts=0))
    active_mlp = (cfg.active_experts + cfg.shared_experts) * m * cfg.d * G  # top_k experts of width w, and shared
    assert counts.active - dense.total == cfg.n * (cfg.d * E + active_mlp - m * cfg.d * cfg.w)


@pytest.mark.slow
def test_training_step_differentiates_the_router_losses_and_logs_cross_entropy():
    cfg = dataclasses.replace(MOE, shared_experts=0)
    graphdef, state = init_state(cfg, optax.sgd(0.1), 0)
    tokens = jax.random.randint(jax.random.key(3), (4, cfg.s + 1), 0, cfg.v)
    total, (ce, stats) = jax.jit(objective, static_argnums=(1, 3))(state["params"], graphdef, tokens, (0.5, 0.25))
    assert float(total) == pytest.approx(float(ce + 0.5 * stats["router_aux_loss"] + 0.25 * stats["router_z_loss"]))
    assert float(jax.jit(loss_fn, static_argnums=1)(state["params"], graphdef, tokens)) == pytest.approx(float(ce))
    _, metrics = jax.jit(make_step_fn(graphdef, optax.sgd(0.1), weights=(0.5, 0.25)))(state, tokens)
    assert set(metrics) == {"loss", "grad_norm", *STAT_NAMES} and float(metrics["dropped_tokens"]) == 0.0
    assert float(metrics["loss"]) == pytest.approx(float(ce))
    # The router's gradient with and without the aux losses differs: they reach the differentiated loss.
    grad = [
        jax.jit(jax.grad(lambda p, w=w: objective(p, graphdef, tokens, w)[0]))(state["params"])
        for w in ((0, 0), (1, 1))
    ]
    router = [g["blocks"][0]["mlp"]["router"]["kernel"][...] for g in grad]
    assert not np.allclose(router[0], router[1])


def test_dense_step_metrics_are_unchanged():
    cfg = ModelConfig(v=64, d=16, n=1, h=2, w=32, s=8)
    graphdef, state = init_state(cfg, optax.sgd(0.1), 0)
    tokens = jax.random.randint(jax.random.key(3), (4, cfg.s + 1), 0, cfg.v)
    _, metrics = jax.jit(make_step_fn(graphdef, optax.sgd(0.1)))(state, tokens)
    assert set(metrics) == {"loss", "grad_norm"}
