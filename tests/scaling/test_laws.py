"""Loss laws: formulas, closed-form allocation (against brute force), wall-clock form, law JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import optimize
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.chinchilla import ChinchillaLaw
from smallest_loss.scaling.kaplan import KaplanLaw
from smallest_loss.scaling.laws import (
    CHINCHILLA_PUBLISHED,
    EPOCH_REPLICATION,
    load_law,
    loss_for_time,
    save_law,
    tokens_for_time,
)


def test_chinchilla_loss_formula_scalar_and_vectorised():
    law = CHINCHILLA_PUBLISHED
    expected = 1.69 + 406.4 / 70e9**0.34 + 410.7 / 1.4e12**0.28
    assert law.loss(70e9, 1.4e12) == pytest.approx(expected, rel=1e-12)
    assert isinstance(law.loss(70e9, 1.4e12), float)
    N, D = np.array([1e8, 1e9, 1e10]), np.array([1e10, 1e11, 1e12])
    np.testing.assert_allclose(law.loss(N, D), [law.loss(n, d) for n, d in zip(N, D, strict=True)])
    assert law.loss(N[:, None], D[None, :]).shape == (3, 3)


def test_published_constants():
    assert (EPOCH_REPLICATION.E, EPOCH_REPLICATION.A, EPOCH_REPLICATION.B) == (1.82, 482.0, 2085.0)
    assert (EPOCH_REPLICATION.alpha, EPOCH_REPLICATION.beta) == (0.348, 0.366)
    assert CHINCHILLA_PUBLISHED == ChinchillaLaw(1.69, 406.4, 410.7, 0.34, 0.28)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(E=1.0, A=-1.0, B=1.0, alpha=0.3, beta=0.3),
        dict(E=1.0, A=1.0, B=1.0, alpha=0.0, beta=0.3),
        dict(E=-0.1, A=1.0, B=1.0, alpha=0.3, beta=0.3),
        dict(E=float("nan"), A=1.0, B=1.0, alpha=0.3, beta=0.3),
        dict(E=1.0, A=float("inf"), B=1.0, alpha=0.3, beta=0.3),
        dict(E="1", A=1.0, B=1.0, alpha=0.3, beta=0.3),
    ],
)
def test_chinchilla_law_validation(kwargs):
    with pytest.raises(UserError):
        ChinchillaLaw(**kwargs)


def test_exponents_and_G():
    law = EPOCH_REPLICATION
    assert law.n_exponent == pytest.approx(0.366 / (0.348 + 0.366))
    assert law.n_exponent + law.d_exponent == pytest.approx(1.0)
    assert law.G == pytest.approx((0.348 * 482.0 / (0.366 * 2085.0)) ** (1 / 0.714))


@pytest.mark.parametrize("law", [CHINCHILLA_PUBLISHED, EPOCH_REPLICATION])
def test_allocation_matches_closed_form_and_brute_force(law):
    C = np.geomspace(1e18, 1e25, 8)
    N, D = law.optimal_allocation(C)
    np.testing.assert_allclose(6 * N * D, C, rtol=1e-12)
    np.testing.assert_allclose(N, law.G * (C / 6) ** law.n_exponent, rtol=1e-12)
    np.testing.assert_allclose(D, (C / 6) ** law.d_exponent / law.G, rtol=1e-12)
    for c, n in zip(C, N, strict=True):  # minimise L(N, C / 6N) over log N numerically
        res = optimize.minimize_scalar(
            lambda x, c=c: law.loss(np.exp(x), c / (6 * np.exp(x))),
            bracket=(np.log(n) - 3, np.log(n) + 3), tol=1e-12,
        )  # fmt: skip
        assert np.exp(res.x) == pytest.approx(n, rel=1e-4)
    n1, d1 = law.optimal_allocation(1e21)
    assert isinstance(n1, float) and 6 * n1 * d1 == pytest.approx(1e21)


def test_allocation_rejects_bad_budget():
    with pytest.raises(UserError):
        EPOCH_REPLICATION.optimal_allocation(-1.0)


def test_kaplan_loss_formula():
    law = KaplanLaw(Nc=8.8e13, Dc=5.4e13, aN=0.076, aD=0.095)
    N, D = 1e9, 1e11
    assert law.loss(N, D) == pytest.approx(((8.8e13 / N) ** (0.076 / 0.095) + 5.4e13 / D) ** 0.095)
    with pytest.raises(UserError):
        KaplanLaw(Nc=0.0, Dc=1.0, aN=0.1, aD=0.1)


def test_wall_clock_form():
    assert tokens_for_time(3600.0, 0.5, batch=32, seq_len=1024) == pytest.approx(3600 / 0.5 * 32 * 1024)
    T = np.array([60.0, 3600.0])
    np.testing.assert_allclose(tokens_for_time(T, 0.1, 8, 128), T / 0.1 * 8 * 128)
    law = EPOCH_REPLICATION
    D = tokens_for_time(3600.0, 0.5, 32, 1024)
    assert loss_for_time(law, 1e8, 3600.0, 0.5, 32, 1024) == pytest.approx(law.loss(1e8, D))
    for bad in (dict(T_seconds=-1.0, step_seconds=0.1), dict(T_seconds=1.0, step_seconds=0.0)):
        with pytest.raises(UserError):
            tokens_for_time(**bad, batch=8, seq_len=128)
    with pytest.raises(UserError):
        tokens_for_time(1.0, 0.1, batch=0, seq_len=128)


def test_law_json_round_trip(tmp_path):
    law = EPOCH_REPLICATION
    intervals = {"alpha": (0.3, 0.4), "E": (1.7, 1.9)}
    samples = {"alpha": np.array([0.33, 0.35, 0.36]), "E": np.array([1.8, 1.81, 1.83])}
    diagnostics = {"objective": np.float64(1.5e-3), "converged": True, "grid": np.arange(3)}
    path = save_law(tmp_path / "sub" / "law.json", law, intervals, samples, diagnostics)
    raw = json.loads(path.read_text())
    assert raw["version"] == 1 and raw["form"] == "chinchilla" and raw["alpha"] == 0.348
    loaded = load_law(path)
    assert loaded.law == law
    assert loaded.intervals == intervals
    assert set(loaded.samples) == {"alpha", "E"}
    np.testing.assert_array_equal(loaded.samples["alpha"], samples["alpha"])
    assert loaded.diagnostics == {"objective": 1.5e-3, "converged": True, "grid": [0, 1, 2]}
    kaplan = KaplanLaw(Nc=8.8e13, Dc=5.4e13, aN=0.076, aD=0.095)
    loaded = load_law(save_law(tmp_path / "k.json", kaplan))
    assert loaded.law == kaplan and loaded.intervals is None and loaded.samples is None
    assert loaded.fit_form["form"] == "kaplan"


def test_old_law_files_load_with_unknown_identification(tmp_path):
    """Law files written before fits recorded their form read as the full law, identification unknown."""
    path = tmp_path / "old.json"
    path.write_text('{"version": 1, "form": "chinchilla", "E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, '
                    '"beta": 0.28, "diagnostics": {"objective": 0.001, "converged": true}}')  # fmt: skip
    info = load_law(path).fit_form
    assert info == {"form": "full", "identified": None, "form_description": "", "not_identified": {},
                    "standard_errors": {}}  # fmt: skip
    diagnostics = {"form": "fixed_E", "identified": True, "form_description": "E fixed at 0.04; A, B fitted",
                   "not_identified": {"full": ["E ran to its lower bound"]}}  # fmt: skip
    info = load_law(save_law(tmp_path / "new.json", EPOCH_REPLICATION, diagnostics=diagnostics)).fit_form
    assert info == {**diagnostics, "standard_errors": {}}  # a file without standard errors: none
    diagnostics["standard_errors"] = {"full": {"log E": 1.2, "alpha": 0.3, "beta": 0.2}, "fixed_E": {"alpha": 0.1}}
    assert load_law(save_law(tmp_path / "se.json", EPOCH_REPLICATION, diagnostics=diagnostics)).fit_form == diagnostics


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ('["a list"]', "JSON object"),
        ('{"form": "power", "E": 1}', "unknown law form"),
        ('{"form": "chinchilla", "E": 1.7, "A": 400, "B": 400, "alpha": 0.3}', "missing key 'beta'"),
        ('{"form": "chinchilla", "E": 1.7, "A": "big", "B": 400, "alpha": 0.3, "beta": 0.3}', "A="),
        ('{"form": "chinchilla", "E": 1.7, "A": -4, "B": 400, "alpha": 0.3, "beta": 0.3}', "positive"),
        ('{"version": 7, "form": "chinchilla"}', "version"),
        ('{"form": "kaplan", "Nc": 1e13, "Dc": 1e13, "aN": 0.07, "aD": true}', "aD="),
        (
            '{"form": "chinchilla", "E": 1.7, "A": 400, "B": 400, "alpha": 0.3, "beta": 0.3, "samples": {"E": 1}}',
            "samples",
        ),
        (
            '{"form": "chinchilla", "E": 1.7, "A": 400, "B": 400, "alpha": 0.3, "beta": 0.3, "intervals": {"E": [1]}}',
            "intervals",
        ),
    ],
)
def test_malformed_law_files(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message) as err:
        load_law(path)
    assert str(path) in str(err.value)


def test_missing_law_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_law(tmp_path / "nope.json")
