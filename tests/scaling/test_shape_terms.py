"""The shape terms (scaling/shape_terms.py): each recovers its known constants from synthetic points, the law file
records the term (a file without one reads as the symmetric term), and the time-budget regret script's core
(experiments/scripts/shape_time_regret.py) on a tiny synthetic table."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.experiments.scripts import shape_time_regret as regret
from smallest_loss.scaling.aspect import AspectLaw, AspectPoints, fit_aspect, varied_sizes
from smallest_loss.scaling.fitting import fit_law
from smallest_loss.scaling.holdout import choose_shape_term
from smallest_loss.scaling.laws import CHINCHILLA_PUBLISHED, law_from_dict, law_to_dict, save_law
from smallest_loss.scaling.points import FitPoints
from smallest_loss.scaling.shape_terms import TERMS, get_term

TRUE = dict(E=0.8, A=40.0, B=300.0, alpha=0.3, beta=0.4)
RATIOS = [1.5, 3.0, 6.0, 12.0, 24.0, 48.0, 96.0]
N_REF = 4e4


def synthetic(term: str, gamma: float, r_opt: float, extras: tuple[float, ...], noise: float = 0.001) -> AspectPoints:
    """Four budgets x three sizes x seven d/n; the loss the Chinchilla form times the term's factor."""
    rng = np.random.default_rng(0)
    C, N, r = (a.ravel() for a in np.meshgrid([1e11, 3e11, 9e11, 2.7e12], [1.5e4, 4e4, 1e5], RATIOS))
    D = C / (6 * N)
    n = np.maximum(1.0, np.round(np.sqrt(N / (12 * r * r))))
    chinchilla = TRUE["E"] + TRUE["A"] / N ** TRUE["alpha"] + TRUE["B"] / D ** TRUE["beta"]
    g = get_term(term).log_factor(np.log(r / r_opt), np.log(N / N_REF), gamma, extras, np)
    return AspectPoints(FitPoints(N, D, chinchilla * np.exp(g + rng.normal(0.0, noise, len(N)))), r * n, n)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("term", "extras", "tol"),
    [("flat", (1.0,), 0.15), ("asymmetric", (0.005,), 0.3), ("drift", (0.3,), 0.1)],
)
def test_each_term_recovers_its_constants(term, extras, tol):
    gamma, r_opt = 0.03, 10.0
    fit = fit_aspect(synthetic(term, gamma, r_opt, extras), term=term)
    assert fit.converged and fit.shape.term == term
    assert fit.shape.gamma == pytest.approx(gamma, rel=0.15)
    name = get_term(term).extras[0]
    assert fit.shape.params[name] == pytest.approx(extras[0], rel=tol)
    centre = fit.shape.aspect_opt
    if term == "drift":  # the fit's reference size is the points' geometric mean N, not N_REF
        centre *= (N_REF / fit.shape.params["n_ref"]) ** fit.shape.params["kappa"]
    assert centre == pytest.approx(r_opt, rel=0.15)
    # the drift term's gamma kappa^2 ln(N / n_ref)^2 is partly a term in N alone: alpha is less well pinned there
    assert fit.law.alpha == pytest.approx(TRUE["alpha"], abs=0.06 if term == "drift" else 0.03)


def test_law_file_records_the_term(tmp_path):
    shape = AspectLaw(0.02, 12.0, (2.0, 48.0), term="asymmetric", params={"gamma_high": 0.005})
    path = save_law(tmp_path / "law.json", CHINCHILLA_PUBLISHED, shape=shape)
    loaded = law_from_dict(json.loads(path.read_text()))
    assert loaded.shape.term == "asymmetric" and loaded.shape.params == {"gamma_high": 0.005}
    assert loaded.shape.factor(48, 1) == pytest.approx(np.exp(0.005 * np.log(4) ** 2))
    assert loaded.shape.factor(12, 4) == pytest.approx(np.exp(0.02 * np.log(4) ** 2))
    section = {"gamma": 0.02, "aspect_opt": 12.0, "aspect_range": [2, 48]}
    old = law_from_dict({**law_to_dict(CHINCHILLA_PUBLISHED), "shape": section})
    assert old.shape.term == "symmetric" and old.shape.factor(48, 1) == pytest.approx(np.exp(0.02 * np.log(4) ** 2))
    with pytest.raises(UserError, match="term='cubic' must be one of"):
        law_from_dict({**law_to_dict(CHINCHILLA_PUBLISHED), "shape": {**section, "term": "cubic"}})
    with pytest.raises(UserError, match="needs finite kappa"):
        AspectLaw(0.02, 12.0, (2.0, 48.0), term="drift", params={"n_ref": 1e5})
    assert set(TERMS) == {"symmetric", "flat", "asymmetric", "drift"}


def _tiny_table(path):
    """Three models: the fast one reaches the best loss per node-second; node-seconds per step = 1e-12 x FLOPs
    + 1e-9 x N x nodes."""
    rows = []
    for name, N, d, n, k, offset in (("a", 1e6, 64, 2, 1, 0.0), ("b", 2e6, 32, 16, 2, 0.05),
                                     ("c", 1.5e6, 128, 1, 4, 0.1)):  # fmt: skip
        per_step = 1e-12 * (6 * N * 1000 + 12 * n * d * 16 * 1000) + 1e-9 * N * k
        for steps in (100, 200, 400, 800):
            loss = 3.0 + offset - 0.1 * np.log(steps)
            rows.append([name, N, steps * 1000, loss, d, n, steps, k, per_step / k, steps * per_step])
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["run", "N", "D", "loss", "d", "n", "steps", "nodes", "seconds_per_step", "node_seconds"])
        w.writerows(rows)
    return path


def test_regret_core_on_a_tiny_table(tmp_path):
    models = regret.read_models(_tiny_table(tmp_path / "t.csv"))
    assert [m.name for m in models] == ["a", "b", "c"] and models[0].tokens_per_step == 1000
    coef = regret.fit_step_time(models, seq_len=16, step_model="sync")
    assert coef == pytest.approx([1e-12, 1e-12, 1e-9], rel=1e-4)
    assert len(regret.fit_step_time(models, seq_len=16, step_model="flops")) == 2
    assert len(regret.fit_step_time(models, seq_len=16)) == 4  # the default, `tokens`, adds the per-token term
    # Step times made by the FLOPs-only model are predicted exactly with each model left out; an all-reduce term the
    # model lacks shows in its held-out error.
    flops = regret.step_features(models, 16, "flops").sum(axis=1)
    exact = [dataclasses.replace(m, node_seconds_per_step=float(f * 1e-12)) for m, f in zip(models, flops, strict=True)]
    assert regret.step_time_loso(exact, 16, "flops")["worst"] < 1e-9
    assert regret.step_time_loso(models, 16, "flops")["worst"] > 0.1
    T = float(np.sqrt(models[0].node_seconds[1] * models[0].node_seconds[2]))
    assert models[0].measured_loss(T) == pytest.approx(3.0 - 0.1 * np.log(np.sqrt(200 * 400)))
    assert models[0].measured_loss(1e-9) is None
    # a law that knows the offsets picks "a" (no regret); one that prefers "c" pays c's measured excess
    offsets = {2: 0.0, 16: 0.05, 1: 0.1}
    truth = lambda N, D, d, n: np.array([offsets[int(k)] for k in n]) - 0.1 * np.log(D)  # noqa: E731
    assert regret.pick(models, truth, coef, 16, T, "sync") == 0
    assert regret.regret(models, 0, T) == 0.0
    wrong = lambda N, D, d, n: -np.asarray(d, float)  # noqa: E731
    i = regret.pick(models, wrong, coef, 16, T, "sync")
    assert models[i].name == "c" and regret.regret(models, i, T) > 0
    lines = regret.table({"nd": np.array([[0.0, 0.01], [0.02, 0.0]])}, [1.0, 2.0])
    assert lines[2] == "| nd | 1.00% (2.00%) | 0.50% (1.00%) | 0.75% | 2.00% |"


def test_varied_sizes_counts_the_sizes_that_identify_drift():
    points = synthetic("symmetric", 0.03, 10.0, ())
    assert varied_sizes(points) == 3
    one = points.take((points.points.N == 4e4) | (points.aspect == 12.0))  # several shapes at one size only
    assert varied_sizes(one) == 1


@pytest.mark.slow
def test_auto_chooses_the_term_that_predicts_left_out_shapes():
    """`fit_law(form="shape")` (term auto): drift where the optimum truly moves with N and the sizes identify it,
    by the leave-one-shape-out error of both terms; the bowl alone, without leave-one-out fits, where only one size
    has several shapes (drift's N-dependence is not identified there)."""
    moving = synthetic("drift", 0.03, 10.0, (0.5,))
    ratio = moving.aspect
    law = fit_law(moving.take((ratio > 2) & (ratio < 90)), "shape", bootstrap=0)  # 5 shapes: 10 left-out fits
    record = law.diagnostics["shape_term_choice"]
    assert law.shape.term == record["chosen"] == "drift"
    assert record["leave_one_shape_out"]["drift"] < record["leave_one_shape_out"]["symmetric"]
    still = synthetic("symmetric", 0.03, 10.0, ())
    one = still.take(still.points.N == 1.5e4)
    chosen, record = choose_shape_term(one)
    assert varied_sizes(one) == 1 and chosen == "symmetric" and record["leave_one_shape_out"] == {}
