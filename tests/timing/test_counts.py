"""Analytic counts: the paper's formulas by hand, and our exact counts against XLA's compiled step.

The model's layers are a Python loop (not `lax.scan`), so XLA's cost analysis counts every layer.
"""

from __future__ import annotations

import numpy as np
import pytest

from configs.schema import ModelConfig
from model.transformer import count_params
from timing.counts import FLOPS, MEMCPYS, PARAMS, counts_for, train_memory_bytes, train_step_flops
from timing.measure import compile_step, normalise_cost_analysis, normalise_memory_analysis


def test_paper_formulas_by_hand():
    # d=2, n=1, v=3, w=4, s=5, h=1:
    # PARAMS  = 3*2 + 1*2*(8 + 8 + 8) + 1*4                      = 6 + 48 + 4            = 58
    # MEMCPYS = 2*3*2 + 2*5*3 + 1*5*(4 + 2*1*5) + 2*1*2*(4 + 20 + 4) = 12 + 30 + 70 + 112 = 224
    # FLOPS   = 2*5*3*2 + 2*2*1*5*(4 + 4 + 5) + 1*1*25             = 60 + 260 + 25       = 345
    assert PARAMS(2, 1, 3, 4) == 58
    assert MEMCPYS(d=2, n=1, s=5, v=3, w=4, h=1) == 224
    assert FLOPS(d=2, n=1, s=5, v=3, w=4, h=1) == 345
    # GPT-2 small shape, tied: PARAMS = 50257*768 + 12*768*(8 + 6144 + 3072) + 12*3072 = 123,642,624 (by hand)
    assert PARAMS(768, 12, 50257, 3072) == 50257 * 768 + 12 * 768 * 9224 + 12 * 3072 == 123_642_624


def test_formulas_are_vectorised():
    d = np.array([64, 128])
    expected = [FLOPS(64, 2, 64, 256, 256, 4), FLOPS(128, 2, 64, 256, 512, 4)]
    assert np.array_equal(FLOPS(d, 2, 64, 256, 4 * d, 4), expected)
    assert train_step_flops(d, 2, 4, 4 * d, 64, 256, 8).shape == (2,)


TINY = [ModelConfig(v=256, d=d, n=n, h=h, w=w, s=s) for d, n, h, w, s in
        [(32, 1, 2, 64, 16), (64, 2, 4, 256, 32), (64, 3, 2, 128, 64), (96, 1, 3, 384, 32), (128, 2, 4, 256, 16)]]


@pytest.fixture(scope="module")
def compiled():
    out = []
    for cfg in TINY:
        step, *_ = compile_step(cfg, 4)
        cost, memory = normalise_cost_analysis(step.cost_analysis()), normalise_memory_analysis(step.memory_analysis())
        out.append((cfg, cost, memory))
    return out


def test_exact_training_flops_match_xla_within_10_percent(compiled):
    for cfg, cost, _ in compiled:
        ours = counts_for(cfg, 4)["flops"]
        assert ours == pytest.approx(cost["flops"], rel=0.10), cfg


def test_paper_flops_proportional_to_xla_flops(compiled):
    paper = [FLOPS(c.d, c.n, c.s, c.v, c.w, c.h) for c, _, _ in compiled]
    xla = [cost["flops"] for _, cost, _ in compiled]
    assert np.corrcoef(paper, xla)[0, 1] >= 0.999


def test_memory_estimate_against_memory_analysis(compiled):
    for cfg, _, memory in compiled:
        estimate = train_memory_bytes(cfg.d, cfg.n, cfg.h, cfg.w, cfg.s, cfg.v, 4)
        assert estimate == pytest.approx(memory["peak_bytes"], rel=0.5), cfg


def test_counts_params_match_model():
    for cfg in TINY:
        assert counts_for(cfg, 1)["params"] == count_params(cfg).total
