"""The planner: closed-form agreement under C = 6ND, time budgets, serving costs, filters, ties, edges, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.spaces import get_space
from smallest_loss.scaling.budget import parse_budget
from smallest_loss.scaling.kaplan import KaplanLaw
from smallest_loss.scaling.laws import CHINCHILLA_PUBLISHED, LawFile
from smallest_loss.scaling.plan import (
    TIE_TOLERANCE,
    Candidates,
    PlanInputs,
    compute_optimal_params,
    enumerate_candidates,
    rank,
)
from smallest_loss.scaling.planner import plan_with_inputs
from smallest_loss.scaling.report import DEPTHS_SHOWN, plan_markdown, shown_depths
from smallest_loss.timing.counts import FLOPS, MEMCPYS

LAW = LawFile(CHINCHILLA_PUBLISHED)


def memory_copy_step_seconds(d, n, h, w, s, v, b, **arch):
    """A step-time model of the paper's form (c1*MEMCPYS + c2*FLOPS + c3, per sequence times b) with
    coefficients of a plausible accelerator: copies cost far more per unit than FLOPs."""
    return b * (4e-12 * MEMCPYS(d, n, s, v, w, h) + 2e-15 * FLOPS(d, n, s, v, w, h)) + 2e-3


@pytest.mark.parametrize("C", [1e18, 1e20, 1e22, 5.76e23])
def test_flops_budget_matches_the_closed_form(C):
    plan = plan_with_inputs(parse_budget(f"{C:g}"), LAW, PlanInputs(get_space("chinchilla")))
    best = plan.best
    N_opt, D_opt = CHINCHILLA_PUBLISHED.optimal_allocation(C)
    assert best.params == pytest.approx(N_opt, rel=0.02)
    assert best.tokens == pytest.approx(D_opt, rel=0.02)


def test_one_plan_at_several_batches_is_listed_once():
    # A step time proportional to the batch, no fixed cost: every batch of a shape buys the same tokens (up to a
    # step's rounding), and a law without a batch term gives them one loss. The table lists distinct plans.
    def proportional(d, n, h, w, s, v, b, **arch):
        return b * 1e-15 * FLOPS(d, n, s, v, w, h)

    space = get_space("gpu")
    assert len(space.b) > 1
    plan = plan_with_inputs(parse_budget("4h"), LAW, PlanInputs(space, step_seconds=proportional), top=6)
    shapes = [(r.d, r.n, r.h, r.w, r.s) for r in plan.rows]
    assert len(plan.rows) == 6 and len(set(shapes)) == 6


def test_candidates_respect_head_sizes():
    space = get_space("cpu")
    c = enumerate_candidates(space)
    assert len(c) > 500
    assert np.all(c.d % c.h == 0) and np.all((c.d // c.h) % 2 == 0) and np.all(c.w == 4 * c.d)
    lo, hi = space.aspect_ratio
    assert np.all(c.d >= lo * c.n) and np.all(c.d <= hi * c.n)


def test_time_budget_beats_the_flops_rule_and_reports_depth():
    inputs = PlanInputs(get_space("gpu"), step_seconds=memory_copy_step_seconds)
    plan = plan_with_inputs(parse_budget("4h"), LAW, inputs)
    best = plan.best
    assert best.steps * best.step_seconds <= 4 * 3600
    rule = plan.flops_rule
    # The rule's pick is the 6ND optimum at the FLOPs the time-optimal choice uses (up to the space's grid and
    # the tie window, a few percent in N) ...
    assert rule.row.params == pytest.approx(CHINCHILLA_PUBLISHED.optimal_allocation(rule.flops)[0], rel=0.05)
    # ... and its loss is read at the tokens its own step time buys in 4h, worse than the time-optimal choice.
    step = memory_copy_step_seconds(rule.row.d, rule.row.n, rule.row.h, rule.row.w, rule.row.s, 50304, rule.row.b)
    tokens = (4 * 3600 // step) * rule.row.b * rule.row.s
    assert rule.row.loss == pytest.approx(CHINCHILLA_PUBLISHED.loss(rule.row.params, tokens), rel=1e-9)
    assert rule.loss_cost == pytest.approx(rule.row.loss - best.loss) and rule.loss_cost > 0.01
    depths = plan.by_depth
    assert [r.n for r in depths] == sorted({int(n) for n in plan.scores.candidates.n})
    assert min(r.loss for r in depths) == pytest.approx(best.loss)


def test_money_budget_uses_the_price():
    inputs = PlanInputs(get_space("gpu"), step_seconds=memory_copy_step_seconds, price_per_hour=2.0)
    money = plan_with_inputs(parse_budget("$8"), LAW, inputs)
    time = plan_with_inputs(
        parse_budget("4h"), LAW, PlanInputs(get_space("gpu"), step_seconds=memory_copy_step_seconds)
    )
    assert money.best.loss == pytest.approx(time.best.loss)


def test_serving_costs_and_latency_push_towards_smaller_models():
    space = get_space("chinchilla")
    plain = plan_with_inputs(parse_budget("1e21"), LAW, PlanInputs(space))
    serving = plan_with_inputs(parse_budget("1e21"), LAW, PlanInputs(space, inference_tokens=2e11))
    assert serving.best.params < 0.9 * plain.best.params
    gpu = get_space("gpu")
    free = plan_with_inputs(parse_budget("24h"), LAW, PlanInputs(gpu, step_seconds=memory_copy_step_seconds))
    best = free.best
    latency_ms = best.step_seconds / (3 * best.b * best.s) * 1e3
    fast = plan_with_inputs(
        parse_budget("24h"), LAW, PlanInputs(gpu, step_seconds=memory_copy_step_seconds, max_latency_ms=latency_ms / 2)
    )
    assert fast.dropped["latency"] > 0
    assert fast.best.params < free.best.params


def test_memory_limit_drops_candidates():
    memory = lambda d, n, h, w, s, v, b, **arch: 16.0 * (12 * n * d * d + v * d)  # weights, grads, Adam moments
    inputs = PlanInputs(get_space("chinchilla"), memory_bytes=memory, memory_limit=16e9)
    plan = plan_with_inputs(parse_budget("1e23"), LAW, inputs)
    used = memory(plan.scores.candidates.d, plan.scores.candidates.n, 0, 0, 0, 32000, 0)
    assert plan.dropped["memory"] > 0 and np.all(used * inputs.memory_headroom <= 16e9)


def test_intervals_from_bootstrap_samples():
    rng = np.random.default_rng(0)
    samples = {
        k: getattr(CHINCHILLA_PUBLISHED, k) * (1 + 0.02 * rng.standard_normal(200))
        for k in ("E", "A", "B", "alpha", "beta")
    }
    plan = plan_with_inputs(
        parse_budget("1e21"), LawFile(CHINCHILLA_PUBLISHED, samples=samples), PlanInputs(get_space("chinchilla")), top=3
    )
    # Each of the top rows' interval is the 2.5th and 97.5th percentile of its loss under every sample's law,
    # written out here (L = E + A / N^alpha + B / D^beta), at the row's N and tokens.
    N = np.array([row.params for row in plan.rows])
    D = np.array([row.tokens for row in plan.rows])
    per_sample = samples["E"][:, None] + samples["A"][:, None] / N ** samples["alpha"][:, None]
    per_sample = per_sample + samples["B"][:, None] / D ** samples["beta"][:, None]
    expected = np.stack([np.percentile(per_sample, 2.5, axis=0), np.percentile(per_sample, 97.5, axis=0)], axis=1)
    intervals = np.array([row.loss_interval for row in plan.rows])
    assert intervals.shape == (3, 2)
    np.testing.assert_allclose(intervals, expected, rtol=1e-12)
    for (lo, hi), row in zip(intervals, plan.rows, strict=True):
        assert lo < row.loss < hi  # 2% spreads around the published constants straddle its prediction


def test_bad_inputs():
    with pytest.raises(UserError, match="needs a device profile"):
        plan_with_inputs(parse_budget("4h"), LAW, PlanInputs(get_space("gpu")))
    with pytest.raises(UserError, match="too small to train any candidate"):
        plan_with_inputs(parse_budget("1e3"), LAW, PlanInputs(get_space("cpu")))
    with pytest.raises(UserError, match="unknown search space"):
        get_space("nope")


def test_ties_go_to_the_preferred_shapes():
    """Chinchilla's law cannot tell 1088x126, 11072x1 and 2368x26 apart; the tie rule picks in-band shapes."""
    space = get_space("chinchilla")
    plan = plan_with_inputs(parse_budget("1e21"), LAW, PlanInputs(space))
    c, loss, order = plan.scores.candidates, plan.scores.loss, plan.scores.order
    shapes = [
        np.flatnonzero((c.d == d) & (c.n == n) & (c.d // c.h == 64))[0]
        for d, n in ((1088, 126), (11072, 1), (2368, 26))
    ]
    assert np.ptp(loss[shapes]) < TIE_TOLERANCE * loss.min()
    lo, hi = space.preferred_aspect
    for i in order[:10]:
        assert lo <= c.d[i] / c.n[i] <= hi and c.d[i] // c.h[i] == space.preferred_head_size
    position = {int(i): k for k, i in enumerate(order)}
    assert position[shapes[2]] < min(position[shapes[0]], position[shapes[1]])


def test_rank_orders_ties_by_aspect_then_head_then_loss():
    space = get_space("cpu")  # preferred d/n in [16, 32], head size 32
    d, n, k = np.array([640, 640, 640, 6400, 480]), np.array([20, 20, 20, 10, 20]), np.array([8, 32, 32, 32, 32])
    cands = Candidates(d=d, n=n, h=d // k, w=4 * d, s=d * 0 + 8, b=d * 0 + 1, N=d * 1.0)
    loss = np.array([2.0, 2.0 + 1e-6, 2.0, 2.0 - 1e-6, 2.5])
    # Rows 0-3 tie (within 1e-5 of the lowest, row 3's); row 4 does not. In the band with head size 32: rows 2
    # then 1 (lower loss first); then row 0 (in the band, head size 8); then row 3 (d/n 640, out of the band).
    assert rank(loss, cands, space).tolist() == [2, 1, 0, 3, 4]


def test_edges_of_the_space_are_reported_with_the_law_optimum():
    cpu = plan_with_inputs(parse_budget("1e21"), LAW, PlanInputs(get_space("cpu")))
    assert {e.edge for e in cpu.edges} == {"largest width d=512", "largest depth n=16"}
    assert all(e.beyond_loss < cpu.best.loss for e in cpu.edges)
    assert plan_with_inputs(parse_budget("1e21"), LAW, PlanInputs(get_space("chinchilla"))).edges == ()
    small = plan_with_inputs(parse_budget("1e15"), LAW, PlanInputs(get_space("chinchilla")))
    assert [e.edge for e in small.edges] == ["smallest width d=128"]


def test_compute_optimal_params_matches_closed_forms():
    for C in (1e15, 1e21, 1e25):
        assert compute_optimal_params(CHINCHILLA_PUBLISHED, C) == pytest.approx(
            CHINCHILLA_PUBLISHED.optimal_allocation(C)[0], rel=1e-4
        )
    kaplan = KaplanLaw(Nc=8.8e13, Dc=5.4e13, aN=0.076, aD=0.095)
    p = kaplan.aN / kaplan.aD  # d/dN of (Nc/N)^p + 6 Dc N / C vanishes at N^(p+1) = p Nc^p C / (6 Dc)
    C = 1e21
    assert compute_optimal_params(kaplan, C) == pytest.approx(
        (p * kaplan.Nc**p * C / (6 * kaplan.Dc)) ** (1 / (p + 1)), rel=1e-4
    )


def test_cost_functions_get_the_space_architecture():
    import dataclasses

    space = dataclasses.replace(get_space("cpu"), activation="swiglu", norm="layernorm", tied=False)
    seen = {}

    def step_seconds(d, n, h, w, s, v, b, **arch):
        seen["step"] = arch
        return memory_copy_step_seconds(d, n, h, w, s, v, b)

    def memory(d, n, h, w, s, v, b, **arch):
        seen["memory"] = arch
        return d * 0.0

    inputs = PlanInputs(space, step_seconds=step_seconds, memory_bytes=memory, memory_limit=1e9)
    plan_with_inputs(parse_budget("60s"), LAW, inputs)
    arch = dict(activation="swiglu", norm="layernorm", tied=False)
    assert seen["step"] == {**arch, "dtype": "float32"} and seen["memory"] == {**arch, "bytes_per": 4}


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("inference_tokens", -1.0, "--inference-tokens -1: the tokens to serve must be 0 or more"),
        ("max_latency_ms", 0.0, "--max-latency-ms 0: the latency limit must be a positive number"),
        ("price_per_hour", -2.0, "--price-per-hour -2: a price per device-hour must be a positive number"),
        ("spot_discount", 1.0, "--spot-discount 1 must lie in"),
        ("flops", "7N", "use 6N or exact"),
    ],
)
def test_plan_inputs_refuse_bad_quantities(field, value, message):
    with pytest.raises(UserError, match=message):
        PlanInputs(get_space("cpu"), **{field: value})


def test_top_must_be_positive():
    for top in (0, -1):
        with pytest.raises(UserError, match="show at least one configuration"):
            plan_with_inputs(parse_budget("1e15"), LAW, PlanInputs(get_space("cpu")), top=top)


def test_width_vs_depth_table_thins_a_deep_space():
    # The chinchilla space has depths 1 to 160: the report lists about 16 of them, evenly in log depth, the first,
    # the last and the best's among them; the plan itself keeps every depth.
    plan = plan_with_inputs(parse_budget("1e19"), LAW, PlanInputs(get_space("chinchilla")))
    depths = [r.n for r in plan.by_depth]
    assert len(depths) > 2 * DEPTHS_SHOWN
    text = plan_markdown(plan)
    table = text.split("## Width vs depth")[1].split("\n\n")[0]
    listed = [int(line.split("|")[2]) for line in table.splitlines()[3:]]
    assert listed == sorted(listed) and len(listed) <= DEPTHS_SHOWN + 1
    assert {depths[0], depths[-1], plan.best.n} <= set(listed)
    assert f"{len(listed)} of its {len(depths)} depths" in table
    ratios = np.diff(np.log(listed))
    assert ratios.max() < 3 * np.log(depths[-1] / depths[0]) / DEPTHS_SHOWN


def test_shown_depths_keeps_a_short_list_whole():
    assert shown_depths([1, 2, 3, 4], best=3) == [1, 2, 3, 4]
    assert shown_depths(list(range(1, 101)), best=37, most=5) == [1, 5, 22, 37, 100]  # 4 spread, and the best
