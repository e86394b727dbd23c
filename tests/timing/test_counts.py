"""Analytic counts: the paper's formulas by hand, and our exact counts against XLA's compiled step.

How the layer loop is written matters here: model/transformer.py runs its blocks in a Python loop (no
`lax.scan`), so XLA compiles every layer and its cost analysis counts all n of them. A scanned body would
be counted once, and these comparisons would be off by a factor of about n.
"""

from __future__ import annotations

import numpy as np
import pytest
from smallest_loss.configs.schema import ModelConfig
from smallest_loss.model.transformer import count_params, count_params_in_tree
from smallest_loss.timing.counts import (
    FLOPS,
    MEMCPYS,
    PARAMS,
    counts_for,
    train_memory_bytes,
    train_step_flops,
    train_step_terms,
)
from smallest_loss.timing.measure import compile_step, xla_analyses

B = 4  # the batch at which all configurations below are compiled
TINY = [ModelConfig(v=256, d=d, n=n, h=h, w=w, s=s) for d, n, h, w, s in
        [(32, 1, 2, 64, 16), (64, 2, 4, 256, 32), (64, 3, 2, 128, 64), (96, 1, 3, 384, 32), (128, 2, 4, 256, 16),
         (32, 4, 1, 128, 32)]]
VARIANTS = [ModelConfig(v=256, d=64, n=1, h=4, w=256, s=32, activation="swiglu"),
            ModelConfig(v=512, d=64, n=1, h=4, w=256, s=32, tied_embeddings=False, norm="layernorm")]


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
    """XLA's analyses of the real training step of each configuration at batch B."""
    return [(cfg, xla_analyses(compile_step(cfg, B)[0])) for cfg in TINY + VARIANTS]


def test_exact_training_flops_match_xla_within_10_percent(compiled):
    for cfg, xla in compiled:
        assert counts_for(cfg, B)["flops"] == pytest.approx(xla["flops"], rel=0.10), cfg


def test_paper_flops_proportional_to_xla_flops(compiled):
    """At a fixed batch the paper's per-sequence FLOPS tracks XLA's training flops (Pearson >= 0.999),
    though not with one exact ratio: it counts layer matmuls at one FLOP per multiply-add but the output
    layer at two, and no backward pass or optimizer (timing/counts.py)."""
    paper = np.array([FLOPS(c.d, c.n, c.s, c.v, c.w, c.h) for c, _ in compiled[: len(TINY)]])
    xla = np.array([x["flops"] for _, x in compiled[: len(TINY)]])
    assert np.corrcoef(paper, xla)[0, 1] >= 0.999
    ratio = xla / (B * paper)
    assert 3 < ratio.min() and ratio.max() < 8  # 6x for layer matmuls, 3x for the output layer, plus element-wise


def test_memory_estimate_against_memory_analysis(compiled):
    """Our peak-memory estimate is within 25% of XLA's (arguments + outputs + temporaries - aliased)."""
    for cfg, xla in compiled:
        assert counts_for(cfg, B)["memory"] == pytest.approx(xla["peak_bytes"], rel=0.25), cfg


def test_counts_params_match_model():
    for cfg in TINY + VARIANTS:
        assert counts_for(cfg, 1)["params"] == count_params(cfg).total == count_params_in_tree(cfg).total
