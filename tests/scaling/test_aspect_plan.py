"""The planner with a shape-aware law: width against depth decided by the law's aspect-ratio factor inside the d/n
range it was fitted on, intervals carrying the shape term's spread, the cost of the N-only choice, and the note an
N-D law's report carries."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from smallest_loss.configs.spaces import get_space
from smallest_loss.experiments.plan_cmd import format_report, plan_report
from smallest_loss.scaling.aspect import AspectLaw
from smallest_loss.scaling.budget import parse_budget
from smallest_loss.scaling.chinchilla import ChinchillaLaw
from smallest_loss.scaling.laws import LawFile
from smallest_loss.scaling.plan import PlanInputs, best_by_depth, enumerate_candidates, make_plan

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
    return make_plan(budget, LawFile(ND, shape=SHAPE), inputs), make_plan(budget, LawFile(ND), inputs)


def test_shape_law_decides_width_against_depth(plans):
    shaped, nd = plans
    best, nd_best = shaped.row(int(shaped.order[0])), nd.row(int(nd.order[0]))
    lo, hi = get_space("cpu").aspect_ratio
    assert nd_best["aspect_ratio"] >= 0.75 * hi  # the N-D law leans towards the space's widest bound
    assert SHAPE.aspect_opt <= best["aspect_ratio"] < nd_best["aspect_ratio"]  # speed pulls wider than r_opt
    assert shaped.candidates.d.max() / shaped.candidates.n.min() > hi  # the law's fitted range, not the space's
    assert np.all(shaped.candidates.d <= 64 * shaped.candidates.n)
    choice = shaped.nd_choice
    assert (choice["d"], choice["n"]) == (nd_best["d"], nd_best["n"])
    assert choice["loss"] == pytest.approx(nd_best["loss"] * SHAPE.factor(nd_best["d"], nd_best["n"]))
    assert choice["loss_cost"] > 0


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
    assert all("loss_interval" not in row for row in best_by_depth(shaped, without))
    rows = best_by_depth(shaped, with_shape)
    deepest = rows[-1]  # d/n far from r_opt: the shape term's spread widens its interval
    width = [r["loss_interval"][1] - r["loss_interval"][0] for r in rows]
    assert deepest["loss_interval"][0] < deepest["loss"] < deepest["loss_interval"][1] and width[-1] > min(width)


def test_nd_law_report_says_the_bounds_decide(plans):
    _, nd = plans
    report = plan_report(nd, LawFile(ND), top=3)
    assert not report["shape"]["from_law"] and "aspect-ratio bounds d/n in [12, 48]" in report["shape"]["note"]
    assert "Shape: the law has no shape term" in format_report(report)


def test_shape_report_names_the_n_only_cost(plans):
    shaped, nd = plans
    nd_best = nd.row(int(nd.order[0]))
    text = format_report(plan_report(shaped, LawFile(ND, shape=SHAPE), top=3))
    assert "## Shape: from the law's aspect-ratio factor" in text
    assert f"Without its shape term the law would pick d={nd_best['d']}, n={nd_best['n']}" in text
    assert len(enumerate_candidates(get_space("cpu"), aspect=SHAPE.aspect_range)) > len(shaped.candidates) / 2
