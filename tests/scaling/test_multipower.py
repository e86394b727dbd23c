"""The multi-power law (Luo et al. 2025) against its double sum written out here: the merged drops' accuracy,
recovery of known constants, a held-out schedule, and the law through curve_law's `form` argument."""

from __future__ import annotations

import numpy as np
import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.curve_law import (
    Curve,
    bootstrap_curve_law,
    curve_law_from_dict,
    fit_curve_law_of_shape,
    fit_curve_laws,
    prefix_errors,
)
from smallest_loss.scaling.multipower import PARAMS, MultiPowerLaw, design, reduction

TRUE = dict(L0=1.5, A=0.8, alpha=0.5, B=100.0, C=1.0, beta=0.6, gamma=0.5)


def schedule(steps: int, kind: str, peak: float = 3e-3, warmup: int = 10, floor: float = 0.1) -> np.ndarray:
    """Linear warmup from 0, then constant, cosine to `floor` * peak, or constant with a 1-sqrt cool-down over the
    last 20% (to `floor` * peak)."""
    t = np.arange(steps, dtype=float)
    lr = np.where(t < warmup, peak * t / warmup, peak)
    if kind == "cosine":
        lr = np.where(
            t < warmup, lr, peak * (floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * (t - warmup) / (steps - warmup))))
        )
    if kind == "wsd":
        cool = steps // 5
        fall = 1 - np.sqrt(np.clip((t - steps + cool + 1) / cool, 0, 1))
        lr = np.where(t >= steps - cool, peak * (floor + (1 - floor) * fall), lr)
    return lr


def exact_reduction(lr: np.ndarray, t: int, p: dict = TRUE) -> float:
    """LD after t updates, the paper's double sum over every update k = 2..t (rate lr[k-1]) that falls:
    B sum_k (eta_{k-1} - eta_k) G(eta_k^-gamma S_k(t)), S_k(t) = eta_k + ... + eta_t."""
    eta, before = lr[1:t], lr[: max(t - 1, 0)]
    S = np.cumsum(eta[::-1])[::-1]
    falls = before > eta
    G = 1 - (p["C"] * eta[falls] ** -p["gamma"] * S[falls] + 1) ** -p["beta"]
    return p["B"] * float(np.sum((before - eta)[falls] * G))


def reference_loss(lr: np.ndarray, p: dict = TRUE) -> np.ndarray:
    """The loss logged at each step: the law after the updates before it (step 1: none, inf)."""
    area = np.concatenate([[0.0], np.cumsum(lr)[:-1]])
    with np.errstate(divide="ignore"):
        return np.array([p["L0"] + p["A"] * area[t] ** -p["alpha"] - exact_reduction(lr, t, p) for t in range(len(lr))])


def curve(
    name: str, lr: np.ndarray, first: int = 12, family: str | None = None, noise: float = 0.0, seed: int = 0
) -> Curve:
    loss = reference_loss(lr) * np.exp(np.random.default_rng(seed).normal(0, noise, len(lr)))
    return Curve(name, 1000, 1024, lr, loss, first, None, family or name)


@pytest.fixture(scope="module")
def runs() -> list[Curve]:
    """Two cosine runs, a constant run and two 1-sqrt cool-down branches of it (they share its steps)."""
    const = schedule(400, "constant")
    return [
        curve("cos400", schedule(400, "cosine")),
        curve("cos200", schedule(200, "cosine")),
        curve("const", const),
        curve("cool400", schedule(400, "wsd"), 320, "const"),
        curve("cool250", schedule(250, "wsd"), 200, "const"),
    ]


@pytest.fixture(scope="module")
def fitted(runs):
    return fit_curve_law_of_shape(runs, form="multipower")


@pytest.mark.parametrize("kind", ["cosine", "wsd"])
def test_merged_drops_match_the_double_sum(kind):
    """30-step segments (10 for 300 steps) cut at 11 evaluated steps: within 2e-3 of LD's size; a segment per
    step: exact."""
    lr = schedule(300, kind)
    law = MultiPowerLaw(1, *TRUE.values(), eval_gap=0.0)
    t = np.arange(0, 301, 30)
    exact = np.array([exact_reduction(lr, k) for k in t])
    assert np.max(np.abs(law.decay(lr, t, max_segments=10) - exact)) < 2e-3 * exact.max()
    np.testing.assert_allclose(law.decay(lr, t, max_segments=300), exact, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(law.curve(lr)[1:], reference_loss(lr)[1:], rtol=1e-12)


def test_a_fit_sees_the_double_sum_at_every_sampled_step():
    """A 3000-step cool-down branch in 100 windows of 6 steps: LD by segments at window starts, linear between,
    is within 5e-4 of the loss at every sampled step."""
    lr = schedule(3000, "wsd")
    d = design([Curve("cool", 1000, 1024, lr, np.full(3000, 3.0), 2401, None, "c")], bins=100)
    LD = d.interp @ reduction(np.log(TRUE["B"]), np.log(TRUE["C"]), TRUE["beta"], TRUE["gamma"], d.pairs)[0]
    exact = np.array([exact_reduction(lr, t) for t in d.sample])
    loss = reference_loss(lr)[d.sample]
    assert exact.max() > 0.1 and np.max(np.abs(LD - exact) / loss) < 5e-4


def test_a_long_schedule_costs_pairs_not_steps_squared():
    """A fit's design of a 30k-step cosine run evaluates LD on a few thousand (step, segment) pairs and the law
    at at most 16 steps of each of its 100 windows, not on 30k x 30k terms."""
    c = Curve("long", 1000, 1024, schedule(30_000, "cosine", warmup=1500), np.full(30_000, 3.0), 1502, None, "long")
    d = design([c], bins=100)
    assert d.pairs.evaluated == 101 and len(d.pairs.at) < 101 * 250 / 2 and len(d.log_S) <= 1600


def test_recovers_known_constants(fitted):
    law, rms = fitted
    assert tuple(getattr(law, k) for k in PARAMS) == pytest.approx(tuple(TRUE.values()), rel=1e-2)
    assert rms < 1e-4


@pytest.mark.slow
def test_predicts_a_held_out_schedule_within_noise():
    """Fitted to noisy (1% a step) cosine runs and a constant run, the law predicts a cool-down's final loss."""
    train = [curve(f"cos{n}", schedule(n, "cosine"), noise=0.01, seed=n) for n in (150, 400)]
    law, _ = fit_curve_law_of_shape(
        [*train, curve("const", schedule(300, "constant"), noise=0.01, seed=3)], form="multipower"
    )
    lr = schedule(500, "wsd")
    assert law.curve(lr)[-1] == pytest.approx(reference_loss(lr)[-1], rel=0.01)


@pytest.mark.slow
def test_the_form_runs_through_curve_law(runs, fitted):
    law = fitted[0]
    assert curve_law_from_dict(dict(law.to_dict(), runs=["x"], rms_log_error=0.1)) == law
    result = fit_curve_laws(runs, n_boot=0, form="multipower")
    assert result["form"] == "multipower2025" and "lam" not in result and "LD(t)" in result["formula"]
    assert result["shapes"][0]["form"] == "multipower"
    intervals = bootstrap_curve_law(runs, law, n_boot=2)
    assert set(intervals) == {*PARAMS, "eval_gap"}
    rows = prefix_errors(runs, 0.5, form="multipower")
    assert {r["name"] for r in rows} == {"cos400", "cos200", "const"}  # branches: no prefix of their own steps
    assert all(abs(r["rel_error"]) < 1e-3 for r in rows)  # noiseless: the other runs pin the law


def test_unknown_form_is_one_line(runs):
    with pytest.raises(UserError, match="unknown curve-law form 'power'"):
        fit_curve_law_of_shape(runs, form="power")
    with pytest.raises(UserError, match="unknown curve-law form"):
        curve_law_from_dict(dict(form="power"))
