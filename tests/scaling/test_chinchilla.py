"""Approach 3 fit (scaling/chinchilla.py), bounds and fallback forms, the fast path, and its bootstrap
(scaling/bootstrap.py), on synthetic data with known constants (generated here, not by the code under test)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling import bootstrap, optimize, projection
from smallest_loss.scaling.bootstrap import bootstrap_chinchilla
from smallest_loss.scaling.chinchilla import (
    CHINCHILLA_PARAMS,
    E_FLOOR,
    EXPONENT_BOUNDS,
    SE_LIMITS,
    FitResult,
    chinchilla_bounds,
    chinchilla_objective,
    fit_chinchilla,
    make_form,
)
from smallest_loss.scaling.chinchilla_lbfgs import form_problem, form_vg
from smallest_loss.scaling.laws import EPOCH_REPLICATION, load_law, save_law
from smallest_loss.scaling.optimize import BOUND_TOL
from smallest_loss.scaling.points import FitPoints, centring

SMALL_GRID = {"a": (5.0, 10.0), "b": (5.0, 10.0), "e": (0.0, 1.0), "alpha": (0.3, 0.6), "beta": (0.3, 0.6)}
# About 100 starts: enough to exercise the screen (more than REFINE_STARTS), cheap to run exhaustively.
MEDIUM_GRID = {"a": (0.0, 5.0, 10.0), "b": (0.0, 5.0, 10.0), "e": (-0.5, 0.5), "alpha": (0.2, 0.6), "beta": (0.2, 0.6)}


def law_loss(N, D, E, A, B, alpha, beta):
    """The Chinchilla form written out here, independently of scaling.laws."""
    return E + A / N**alpha + B / D**beta


def synthetic(n: int, noise: float, seed: int, law=EPOCH_REPLICATION) -> FitPoints:
    """N log-uniform in 1e7..1e10, D in 1e9..1e12, multiplicative lognormal noise."""
    rng = np.random.default_rng(seed)
    N = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n))
    D = np.exp(rng.uniform(np.log(1e9), np.log(1e12), n))
    loss = law_loss(N, D, law.E, law.A, law.B, law.alpha, law.beta)
    return FitPoints(N, D, loss * np.exp(rng.normal(0.0, noise, n)))


def tiny_isoflop(seed: int) -> FitPoints:
    """A first sweep of 9 tiny runs: 3 budgets x 3 model sizes, far from the irreducible loss, 1% noise.
    Unbounded, such sets drive E to 0 (log E to -170 and beyond)."""
    C = np.repeat([1e12, 3e12, 1e13], 3)
    N = np.tile([1e5, 2e5, 4e5], 3)
    D = C / (6 * N)
    loss = law_loss(N, D, E=0.8, A=60.0, B=80.0, alpha=0.3, beta=0.25)
    return FitPoints(N, D, loss * np.exp(np.random.default_rng(seed).normal(0.0, 0.01, 9)))


def _reference_objective(params: np.ndarray, pts: FitPoints, delta: float) -> float:
    """Independent: Huber (scipy.special) of log(E + A N^-alpha + B D^-beta) - log L."""
    a, b, e, alpha, beta = params
    pred = np.log(np.exp(e) + np.exp(a) * pts.N**-alpha + np.exp(b) * pts.D**-beta)
    return float(np.sum(special.huber(delta, pred - np.log(pts.loss))))


@pytest.fixture(scope="module")
def well_spread() -> tuple[FitPoints, FitResult]:
    pts = synthetic(60, 0.003, seed=0)
    return pts, fit_chinchilla(pts)


@pytest.fixture(scope="module")
def badly_spread() -> list[tuple[FitPoints, FitResult]]:
    return [(pts, fit_chinchilla(pts)) for pts in map(tiny_isoflop, range(4))]


@pytest.mark.parametrize(
    "params", [[6.2, 7.6, 0.6, 0.35, 0.37], [3.0, 12.0, -0.5, 0.1, 0.7], [6.0, 8.0, 0.6, 0.3, 0.4]]
)
def test_objective_and_gradient_against_reference(params):
    pts = synthetic(40, 0.01, seed=1)
    params = np.array(params)
    for delta in (1e-3, 1e-1):
        f, g = chinchilla_objective(params, pts, delta)
        assert f == pytest.approx(_reference_objective(params, pts, delta), rel=1e-10)
        h = 1e-6
        fd = [
            (_reference_objective(params + h * np.eye(5)[i], pts, delta)
             - _reference_objective(params - h * np.eye(5)[i], pts, delta)) / (2 * h)
            for i in range(5)
        ]  # fmt: skip
        np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-9)


@pytest.mark.slow
def test_form_gradients_match_autodiff():
    """Full, E-fixed and tied forms: the analytic gradient in free coordinates equals JAX's autodiff."""
    pts = synthetic(40, 0.01, seed=2)
    box = chinchilla_bounds(pts)
    forms = [make_form("tied_fixed_E", box, e_fixed=0.4, ratio=1.5)]  # the full form: the test above
    u = np.array([[0.1, 0.2, 0.5, 0.35, 0.37], [-0.3, 0.4, 0.0, 0.2, 0.0]])
    weights = np.random.default_rng(0).integers(0, 3, size=(2, 40)).astype(float)
    with jax.enable_x64(True):
        for form in forms:
            data = tuple(jnp.asarray(d) for d in form_problem(form, centring(pts), 1e-3).data_for(pts))
            _, g = form_vg(jnp.asarray(u), jnp.asarray(weights), data)
            auto = jax.vmap(jax.grad(lambda ui, wi: form_vg(ui[None], wi[None], data)[0][0]))(u, weights)  # noqa: B023
            np.testing.assert_allclose(g, auto, rtol=1e-9, atol=1e-12)
    tied = forms[0]
    z = tied.z0 + tied.M @ np.array([0.0, 0.0, 7.0, 0.3, 9.0])  # the fixed and tied coordinates ignore u
    assert z[2] == 0.4 and z[4] == pytest.approx(1.5 * 0.3) and tied.free == (0, 1, 3)
    assert tied.box[1, 3] * 1.5 <= box[1, 4] + 1e-12  # beta = 1.5 alpha stays inside beta's bounds


def test_well_spread_points_recover_the_law(well_spread):
    """The default fit (variable projection) on 60 well-spread points with 0.3% noise: the full law, identified."""
    pts, result = well_spread
    law = EPOCH_REPLICATION
    assert result.identified and result.form == "full" and result.not_identified == {} and result.warnings == ()
    assert result.n_starts == projection.GRID_SIZE**2 and result.converged and result.n_at_best >= 1
    assert abs(result.law.alpha - law.alpha) < 0.02 and abs(result.law.beta - law.beta) < 0.02
    assert result.law.E == pytest.approx(law.E, rel=0.02)
    assert result.law.A == pytest.approx(law.A, rel=0.1) and result.law.B == pytest.approx(law.B, rel=0.3)
    np.testing.assert_allclose(result.params[:3], np.log([result.law.A, result.law.B, result.law.E]))
    truth = np.log([law.A, law.B, law.E]).tolist() + [law.alpha, law.beta]
    assert result.objective <= _reference_objective(np.array(truth), pts, 1e-3)
    diag = result.diagnostics
    assert diag["identified"] is True and diag["form"] == "full" and set(diag["params"]) == set(CHINCHILLA_PARAMS)
    assert diag["bounds"]["E"][1] == pytest.approx(pts.loss.min())


@pytest.mark.slow
def test_fast_path_finds_the_exhaustive_optimum(well_spread, monkeypatch):
    """With more points than the screen's subset, the screened fit reaches the optimum of running every start
    to convergence on every point."""
    pts, _ = well_spread
    monkeypatch.setattr(optimize, "SCREEN_POINTS", 40)
    fast = fit_chinchilla(pts, grid=MEDIUM_GRID)
    exhaustive = fit_chinchilla(pts, grid=MEDIUM_GRID, exhaustive=True)
    assert fast.objective == pytest.approx(exhaustive.objective, rel=1e-9)
    np.testing.assert_allclose(fast.params, exhaustive.params, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_badly_spread_points_fall_back_inside_bounds(badly_spread):
    """9 tiny runs: never an error; constants finite, positive and inside the stated bounds; a form that is
    not the full law says why, in the result and in a warning."""
    for pts, result in badly_spread:
        law, box = result.law, chinchilla_bounds(pts)
        values = [law.E, law.A, law.B, law.alpha, law.beta]
        assert all(math.isfinite(v) and v > 0 for v in values)
        assert pts.loss.min() * E_FLOOR * (1 - 1e-9) <= law.E <= pts.loss.min() * (1 + 1e-9)
        assert EXPONENT_BOUNDS[0] - 1e-12 <= min(law.alpha, law.beta) <= max(law.alpha, law.beta) <= 2.0 + 1e-12
        mu = centring(pts)
        for term in (law.A / math.exp(mu[0]) ** law.alpha, law.B / math.exp(mu[1]) ** law.beta):
            assert math.exp(box[0, 0]) * (1 - 1e-9) <= term <= math.exp(box[1, 0]) * (1 + 1e-9)
        assert result.identified == (result.form not in result.not_identified)
        assert set(result.standard_errors) == {*result.not_identified, result.form}  # each form tried
        for form, reasons in result.not_identified.items():  # a standard error named as a reason is the recorded one
            for reason in reasons:
                if "standard error of log E" in reason:
                    se = result.standard_errors[form]["log E"]
                    assert se > SE_LIMITS["e"] and f"standard error of log E {se:.3g})" in reason
        if result.form != "full":
            assert result.not_identified["full"] and any(result.form_description in w for w in result.warnings)
        if result.form.startswith("tied"):
            assert law.beta == pytest.approx(law.alpha)  # no Approach 2 exponent given: alpha = beta
        assert result.diagnostics["form"] == result.form and result.converged
    # Seeds 1 and 2 are the sets whose unbounded optimum drives E to zero: E runs to its floor.
    for pts, result in badly_spread[1:3]:
        assert "E ran to its lower bound" in result.not_identified["full"] and result.form != "full"
        assert result.law.E == pytest.approx(E_FLOOR * pts.loss.min(), rel=1e-6)


def test_allocation_exponent_ties_beta_to_alpha():
    """With Approach 2's a, a tied form keeps beta / (alpha + beta) = a."""
    pts = tiny_isoflop(2)
    result = fit_chinchilla(pts, allocation_exponent=0.6)
    if result.form.startswith("tied"):
        assert result.law.n_exponent == pytest.approx(0.6)
    form = make_form("tied", chinchilla_bounds(pts), ratio=0.6 / 0.4, ratio_source="test")
    z = form.z0 + form.M @ np.array([0.0, 0.0, 0.0, 0.4, 0.0])
    assert z[4] / (z[3] + z[4]) == pytest.approx(0.6) and "beta tied to alpha" in form.description


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(grid={"a": (0.0,), "b": (0.0,)}), "exactly the keys"),
        (dict(grid={**SMALL_GRID, "e": ()}), "non-empty"),
        (dict(grid={**SMALL_GRID, "e": (float("nan"),)}), "finite"),
        (dict(delta=0.0), "delta"),
    ],
)
def test_fit_rejects_bad_arguments(kwargs, message):
    with pytest.raises(UserError, match=message):
        fit_chinchilla(synthetic(20, 0.01, seed=0), **kwargs)


def test_only_unusable_data_raise():
    pts = synthetic(20, 0.01, seed=0)
    with pytest.raises(UserError, match="share one N"):
        fit_chinchilla(FitPoints(np.full(20, 1e8), pts.D, pts.loss))


@pytest.fixture(scope="module")
def well_spread_bootstrap(well_spread):
    pts, fit = well_spread
    return bootstrap_chinchilla(pts, n_boot=300, seed=0, starts=2, fit=fit)


def test_bootstrap_intervals_and_law_file(well_spread, well_spread_bootstrap, tmp_path):
    pts, fit = well_spread
    boot = well_spread_bootstrap
    assert boot.n_boot == 300 and boot.n_converged >= 285 and boot.fit is fit and boot.n_at_bound == 0
    assert boot.n_groups_used == boot.n_groups == 60 and boot.warnings == ()
    for name in ("E", "A", "B", "alpha", "beta", "n_exponent", "d_exponent"):
        lo, hi = boot.intervals[name]
        assert boot.samples[name].shape == (300,) and lo < hi
    np.testing.assert_allclose(boot.samples["n_exponent"] + boot.samples["d_exponent"], 1.0)
    for name in ("alpha", "beta", "E"):
        assert boot.intervals[name][0] < getattr(EPOCH_REPLICATION, name) < boot.intervals[name][1]
    loaded = load_law(save_law(tmp_path / "law.json", fit.law, boot.intervals, boot.samples, fit.diagnostics))
    assert loaded.law == fit.law and loaded.intervals == boot.intervals
    np.testing.assert_array_equal(loaded.samples["beta"], boot.samples["beta"])
    form = loaded.fit_form
    errors = form.pop("standard_errors")
    assert form == {"form": "full", "identified": True, "form_description": fit.form_description,
                               "not_identified": {}}  # fmt: skip
    # the full law's standard errors, recorded in the law file: within the limits it is identified by
    assert set(errors) == {"full"} and errors["full"] == fit.standard_errors["full"]
    assert 0 < errors["full"]["log E"] <= SE_LIMITS["e"] and 0 < errors["full"]["alpha"] <= SE_LIMITS["alpha"]


def test_bootstrap_of_a_subset_of_groups_matches_the_full_bootstrap(well_spread, well_spread_bootstrap, monkeypatch):
    """m-out-of-n: 30 of 60 groups, spread rescaled by sqrt(30/60); the intervals keep their width."""
    pts, fit = well_spread
    monkeypatch.setattr(bootstrap, "BOOT_MAX_POINTS", 30)
    monkeypatch.setattr(bootstrap, "BOOT_MIN_GROUPS", 30)
    sub = bootstrap_chinchilla(pts, n_boot=300, seed=1, starts=2, fit=fit)
    assert sub.n_groups_used == 30 and sub.n_groups == 60 and any("m-out-of-n" in w for w in sub.warnings)
    for name in ("alpha", "beta", "n_exponent"):
        width = np.diff(sub.intervals[name])[0] / np.diff(well_spread_bootstrap.intervals[name])[0]
        assert 0.5 < width < 2.0, (name, width)


@pytest.mark.slow
def test_bootstrap_of_badly_spread_points_stays_inside_bounds(badly_spread):
    """Every resample's constants lie in the fit's box, whatever the form; the draws that ran to a bound and those
    that did not converge are counted from the samples returned, and said in a warning when they are many."""
    for pts, fit in badly_spread[:2]:  # the full law (seed 0) and E fixed (seed 1): both run to bounds
        assert fit.form in ("full", "fixed_E")
        boot = bootstrap_chinchilla(pts, n_boot=200, seed=0, starts=2, fit=fit)
        s, bounds = boot.samples, fit.bounds
        assert boot.n_boot == 200 and boot.n_groups_used == boot.n_groups == 9
        assert all(v.shape == (200,) and np.isfinite(v).all() for v in s.values())
        # The box in the fit's own coordinates: each term at the data's geometric mean N (D), log E, the exponents.
        coords = {
            "A_term_at_mean_N": np.log(s["A"]) - s["alpha"] * math.log(bounds["mean_N"]),
            "B_term_at_mean_D": np.log(s["B"]) - s["beta"] * math.log(bounds["mean_D"]),
            "E": np.log(s["E"]),
            "alpha": s["alpha"],
            "beta": s["beta"],
        }
        box = {k: (np.array(bounds[k]) if k in ("alpha", "beta") else np.log(bounds[k])) for k in coords}
        np.testing.assert_allclose([box[k] for k in coords], chinchilla_bounds(pts).T, rtol=1e-12)
        for name, z in coords.items():
            lo, hi = box[name]
            assert np.all((z >= lo - 1e-9 * (hi - lo)) & (z <= hi + 1e-9 * (hi - lo))), name
        if fit.form == "fixed_E":
            assert np.all(s["E"] == fit.law.E)
        free = [k for k in coords if not (k == "E" and fit.form == "fixed_E")]
        near = [np.minimum(abs(coords[k] - box[k][0]), abs(coords[k] - box[k][1])) <= BOUND_TOL * np.diff(box[k])
                for k in free]  # fmt: skip
        at_bound = int(np.any(near, axis=0).sum())
        assert at_bound > 0 and boot.n_at_bound == at_bound
        said = [w for w in boot.warnings if "ran to a bound" in w]  # said when more than 5% of the draws
        assert len(said) == (at_bound > 10) and all(w.startswith(f"{at_bound} of 200 bootstrap refits") for w in said)
        assert 0 <= boot.n_converged <= 200
        said = [w for w in boot.warnings if "converged" in w]  # said when fewer than 90% of the refits converged
        assert len(said) == (boot.n_converged < 180)
        assert all(w.startswith(f"only {boot.n_converged} of 200 bootstrap refits converged") for w in said)
        for name, v in s.items():  # the intervals are the samples' 2.5th and 97.5th percentiles
            assert boot.intervals[name] == pytest.approx((np.percentile(v, 2.5), np.percentile(v, 97.5)), rel=1e-12)


def test_bootstrap_rejects_bad_arguments(well_spread):
    pts, fit = well_spread
    with pytest.raises(UserError):
        bootstrap_chinchilla(pts, n_boot=1, fit=fit)
    with pytest.raises(UserError):
        bootstrap_chinchilla(pts, level=1.5, fit=fit)
