"""The planner: closed-form agreement under C = 6ND, time budgets, serving costs, filters, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.spaces import get_space
from smallest_loss.scaling.budget import parse_budget
from smallest_loss.scaling.laws import CHINCHILLA_PUBLISHED, LawFile
from smallest_loss.scaling.plan import PlanInputs, best_by_depth, enumerate_candidates, flops_rule_choice, make_plan

LAW = LawFile(CHINCHILLA_PUBLISHED)


def memory_copy_step_seconds(d, n, h, w, s, v, b):
    """A step-time model of the paper's form (c1*MEMCPYS + c2*FLOPS + c3, per sequence times b) with
    coefficients of a plausible accelerator: copies cost far more per unit than FLOPs."""
    memcpys = 2 * v * d + 2 * s * v + n * s * (w + 2 * h * s) + 2 * n * d * (w + 4 * s + 2 * d)
    flops = 2 * s * v * d + 2 * d * n * s * (w + 2 * d + s) + n * h * s**2
    return b * (4e-12 * memcpys + 2e-15 * flops) + 2e-3


@pytest.mark.parametrize("C", [1e18, 1e20, 1e22, 5.76e23])
def test_flops_budget_matches_the_closed_form(C):
    plan = make_plan(parse_budget(f"{C:g}"), LAW, PlanInputs(get_space("chinchilla")))
    best = plan.row(int(plan.order[0]))
    N_opt, D_opt = CHINCHILLA_PUBLISHED.optimal_allocation(C)
    assert best["params"] == pytest.approx(N_opt, rel=0.02)
    assert best["tokens"] == pytest.approx(D_opt, rel=0.02)


def test_candidates_respect_head_sizes():
    space = get_space("cpu")
    c = enumerate_candidates(space)
    assert len(c) > 500
    assert np.all(c.d % c.h == 0) and np.all((c.d // c.h) % 2 == 0) and np.all(c.w == 4 * c.d)
    lo, hi = space.aspect_ratio
    assert np.all(c.d >= lo * c.n) and np.all(c.d <= hi * c.n)


def test_time_budget_beats_the_flops_rule_and_reports_depth():
    inputs = PlanInputs(get_space("gpu"), step_seconds=memory_copy_step_seconds)
    plan = make_plan(parse_budget("4h"), LAW, inputs)
    best = plan.row(int(plan.order[0]))
    assert best["steps"] * best["step_seconds"] <= 4 * 3600
    rule = flops_rule_choice(plan, LAW.law)
    assert rule["loss_cost"] >= 0  # the FLOPs rule can only do worse under a time budget
    depths = best_by_depth(plan)
    assert [r["n"] for r in depths] == sorted({int(n) for n in plan.candidates.n})
    assert min(r["loss"] for r in depths) == pytest.approx(best["loss"])


def test_money_budget_uses_the_price():
    inputs = PlanInputs(get_space("gpu"), step_seconds=memory_copy_step_seconds, price_per_hour=2.0)
    money = make_plan(parse_budget("$8"), LAW, inputs)
    time = make_plan(parse_budget("4h"), LAW, PlanInputs(get_space("gpu"), step_seconds=memory_copy_step_seconds))
    assert money.loss[money.order[0]] == pytest.approx(time.loss[time.order[0]])


def test_serving_costs_and_latency_push_towards_smaller_models():
    space = get_space("chinchilla")
    plain = make_plan(parse_budget("1e21"), LAW, PlanInputs(space))
    serving = make_plan(parse_budget("1e21"), LAW, PlanInputs(space, inference_tokens=2e11))
    assert serving.candidates.N[serving.order[0]] < 0.9 * plain.candidates.N[plain.order[0]]
    gpu = get_space("gpu")
    free = make_plan(parse_budget("24h"), LAW, PlanInputs(gpu, step_seconds=memory_copy_step_seconds))
    best = free.row(int(free.order[0]))
    latency_ms = best["step_seconds"] / (3 * best["b"] * best["s"]) * 1e3
    fast = make_plan(parse_budget("24h"), LAW, PlanInputs(gpu, step_seconds=memory_copy_step_seconds,
                                                          max_latency_ms=latency_ms / 2))
    assert fast.dropped["latency"] > 0
    assert fast.candidates.N[fast.order[0]] < free.candidates.N[free.order[0]]


def test_memory_limit_drops_candidates():
    memory = lambda d, n, h, w, s, v, b: 16.0 * (12 * n * d * d + v * d)  # weights, grads, Adam moments
    inputs = PlanInputs(get_space("chinchilla"), memory_bytes=memory, memory_limit=16e9)
    plan = make_plan(parse_budget("1e23"), LAW, inputs)
    used = memory(plan.candidates.d, plan.candidates.n, 0, 0, 0, 32000, 0)
    assert plan.dropped["memory"] > 0 and np.all(used * inputs.memory_headroom <= 16e9)


def test_intervals_from_bootstrap_samples():
    rng = np.random.default_rng(0)
    samples = {k: getattr(CHINCHILLA_PUBLISHED, k) * (1 + 0.02 * rng.standard_normal(200))
               for k in ("E", "A", "B", "alpha", "beta")}
    plan = make_plan(parse_budget("1e21"), LawFile(CHINCHILLA_PUBLISHED, samples=samples),
                     PlanInputs(get_space("chinchilla")), top=3)
    lo, hi = plan.intervals[0]
    assert lo < plan.loss[plan.order[0]] < hi


def test_bad_inputs():
    with pytest.raises(UserError, match="needs a device profile"):
        make_plan(parse_budget("4h"), LAW, PlanInputs(get_space("gpu")))
    with pytest.raises(UserError, match="too small to train any candidate"):
        make_plan(parse_budget("1e3"), LAW, PlanInputs(get_space("cpu")))
    with pytest.raises(UserError, match="unknown search space"):
        get_space("nope")
