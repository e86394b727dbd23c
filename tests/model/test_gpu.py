"""Checks that need an accelerator (marker `gpu`): skipped on CPU, run wherever JAX sees a GPU."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from smallest_loss.configs.schema import ModelConfig
from smallest_loss.model.transformer import Transformer, attention_implementation
from smallest_loss.timing.measure import measure_peak_flops


@pytest.mark.gpu
def test_cudnn_attention_matches_xla_in_bf16():
    cfg = ModelConfig(v=256, d=256, n=2, h=4, s=128, dtype="bfloat16", attention="auto")
    assert attention_implementation(cfg) == "cudnn"
    tokens = jax.random.randint(jax.random.key(0), (2, 128), 0, 256)
    fused = Transformer(cfg, nnx.Rngs(0))(tokens)
    plain = Transformer(dataclasses.replace(cfg, attention="xla"), nnx.Rngs(0))(tokens)
    # Same weights (same seed), two kernels: bf16 logits agree to bf16's precision.
    np.testing.assert_allclose(np.asarray(fused, np.float32), np.asarray(plain, np.float32), atol=0.1, rtol=0.05)


@pytest.mark.gpu
def test_peak_probe_uses_bf16_on_the_accelerator():
    rate, dtype = measure_peak_flops("bfloat16")
    assert dtype == "bfloat16" and rate > 1e13  # any data-centre GPU does more than 10 TFLOP/s in bf16
    assert jnp.zeros(1).devices().pop().platform == "gpu"
