"""The planner with a shape-aware law: width against depth decided by the law's aspect-ratio factor inside the d/n
range it was fitted on, intervals carrying the shape term's spread, the cost of the N-only choice, and the note an
N-D law's report carries."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from smallest_loss.configs.spaces import get_space
from smallest_loss.scaling.aspect import AspectLaw, AspectPoints
from smallest_loss.scaling.budget import parse_budget
from smallest_loss.scaling.chinchilla import ChinchillaLaw
from smallest_loss.scaling.fitting import with_aspect_range
from smallest_loss.scaling.laws import LawFile
from smallest_loss.scaling.plan import PlanInputs, best_by_depth, enumerate_candidates
from smallest_loss.scaling.planner import plan_with_inputs
from smallest_loss.scaling.points import FitPoints

# Constants of the order the CPU shape sweep gave (results/cpu/shape), written out here.
ND = ChinchillaLaw(E=0.3, A=12.0, B=270.0, alpha=0.23, beta=0.44)
SHAPE = AspectLaw(gamma=0.017, aspect_opt=11.0, aspect_range=(2.0, 64.0))


def per_layer_step_seconds(d, n, h, w, s, v, b, **arch):
    """A CPU-like step time: a fixed cost per layer plus work growing with width, so wide and shallow is fast."""
    return 2e-3 + n * (3e-3 + 2e-9 * b * s * d * d)


@pytest.fixture(scope="module")
def plans():
    inputs = PlanInputs(get_space("cpu"), step_seconds=per_layer_step_seconds)
    budget = parse_budget("60s")
    return plan_with_inputs(budget, LawFile(ND, shape=SHAPE), inputs), plan_with_inputs(budget, LawFile(ND), inputs)


def test_shape_law_decides_width_against_depth(plans):
    shaped, nd = plans
    best, nd_best = shaped.best, nd.best
    lo, hi = get_space("cpu").aspect_ratio
    assert nd_best.aspect_ratio >= 0.75 * hi  # the N-D law leans towards the space's widest bound
    assert SHAPE.aspect_opt <= best.aspect_ratio < nd_best.aspect_ratio  # speed pulls wider than r_opt
    c = shaped.scores.candidates
    assert c.d.max() / c.n.min() > hi  # the law's fitted range, not the space's
    assert np.all(c.d <= 64 * c.n)
    choice = shaped.shape.nd_choice
    assert (choice.row.d, choice.row.n) == (nd_best.d, nd_best.n)
    assert choice.row.loss == pytest.approx(nd_best.loss * SHAPE.factor(nd_best.d, nd_best.n))
    assert choice.loss_without_shape == nd_best.loss and choice.loss_cost > 0


def test_intervals_carry_the_shape_term(plans):
    shaped, _ = plans
    rng = np.random.default_rng(0)
    samples = {k: getattr(ND, k) * np.exp(rng.normal(0, 0.02, 64)) for k in ("E", "A", "B", "alpha", "beta")}
    without = LawFile(ND, samples=samples, shape=SHAPE)
    with_shape = LawFile(
        ND,
        samples=samples,
        shape=dataclasses.replace(
            SHAPE,
            samples={
                "gamma": SHAPE.gamma * np.exp(rng.normal(0, 0.3, 64)),
                "aspect_opt": SHAPE.aspect_opt * np.exp(rng.normal(0, 0.2, 64)),
            },
        ),
    )
    assert all(row.loss_interval is None for row in best_by_depth(shaped.scores, without))
    rows = best_by_depth(shaped.scores, with_shape)
    deepest = rows[-1]  # d/n far from r_opt: the shape term's spread widens its interval
    width = [r.loss_interval[1] - r.loss_interval[0] for r in rows]
    assert deepest.loss_interval[0] < deepest.loss < deepest.loss_interval[1] and width[-1] > min(width)


def test_nd_law_report_says_the_bounds_decide(plans):
    _, nd = plans
    assert not nd.shape.from_law and "aspect-ratio bounds d/n in [12, 48]" in nd.shape.note
    assert nd.to_dict()["shape"] == dict(from_law=False, note=nd.shape.note)
    assert "Shape: the law has no shape term" in nd.to_markdown()
    # The N-D law presses against the widest bound, but that bound is the space's rule for shapes the law cannot
    # rank, not an optimum outside the space; the shape-aware law's fitted range would be.
    hi = get_space("cpu").aspect_ratio[1]
    assert nd.best.n == 1 or hi * (nd.best.n - 1) < nd.best.d  # one layer fewer would cross the bound
    assert not any(e.edge.startswith("aspect-ratio bound") for e in nd.edges) and nd.warning is None
    wide_only = LawFile(ND, shape=dataclasses.replace(SHAPE, aspect_opt=64.0, aspect_range=(2.0, 8.0)))
    pressed = plan_with_inputs(parse_budget("60s"), wide_only, PlanInputs(get_space("cpu"), per_layer_step_seconds))
    assert any(e.edge == "aspect-ratio bound d/n <= 8" for e in pressed.edges) and "edge" in pressed.warning


def test_shape_report_names_the_n_only_cost(plans):
    shaped, nd = plans
    nd_best = nd.best
    text = shaped.to_markdown()
    assert "## Shape: from the law's aspect-ratio factor" in text
    assert f"Without its shape term the law would pick d={nd_best.d}, n={nd_best.n}" in text
    assert len(enumerate_candidates(get_space("cpu"), aspect=SHAPE.aspect_range)) > len(shaped.scores.candidates) / 2


def test_a_law_without_a_shape_term_keeps_to_the_d_n_of_its_runs():
    """A law in N and D fitted on runs of d/n 16 to 24 plans within that (the N-D plan above leans to the space's
    widest bound), says so, and falls back to the space's bounds, saying why, when the runs lie outside the space."""
    inputs = PlanInputs(get_space("cpu"), step_seconds=per_layer_step_seconds)
    budget = parse_budget("60s")
    held = plan_with_inputs(budget, with_aspect_range(LawFile(ND), [16.0, 24.0]), inputs)
    c = held.scores.candidates
    assert 16 <= (c.d / c.n).min() and (c.d / c.n).max() <= 24 and 16 <= held.best.aspect_ratio <= 24
    assert "held to d/n in [16, 24]" in held.shape.note
    free = plan_with_inputs(budget, LawFile(ND), inputs)
    assert free.best.aspect_ratio > 24 and "held to" not in free.shape.note
    apart = plan_with_inputs(budget, with_aspect_range(LawFile(ND), [100.0, 200.0]), inputs)
    assert apart.best == free.best and "outside it" in apart.shape.note


def test_fitting_runs_records_their_d_n(tmp_path):
    from smallest_loss.scaling.fitting import fit_law
    from smallest_loss.scaling.points import table_aspect_range

    N = np.array([1e4, 2e4, 4e4, 1e4, 2e4, 4e4, 1e4, 2e4, 4e4])
    D = np.array([1e6, 1e6, 1e6, 3e6, 3e6, 3e6, 1e7, 1e7, 1e7])
    points = FitPoints(N, D, ND.loss(N, D))
    d, n = np.array([32, 48, 64] * 3), np.array([2, 2, 3] * 3)
    law = fit_law(AspectPoints(points, d, n), bootstrap=0)
    assert law.fitted_range["aspect"] == pytest.approx([16.0, 24.0])
    assert "aspect" not in fit_law(points, bootstrap=0).fitted_range
    table = tmp_path / "t.csv"
    rows = zip(N, D, points.loss, d, n, strict=True)
    table.write_text("N,D,loss,width,n\n" + "".join(f"{a},{b},{c},{w},{k}\n" for a, b, c, w, k in rows))
    assert table_aspect_range(table, "d=width") == pytest.approx([16.0, 24.0])
    assert table_aspect_range(table) is None  # no column d
