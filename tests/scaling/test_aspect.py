"""The shape-aware law (scaling/aspect.py): known constants recovered from synthetic points, bootstrap intervals,
leave-one-shape-out against the N-D law (scaling/holdout.py), the refusal of points that cannot identify the shape
term, the CSV's d and n columns, and the law file's shape section."""

from __future__ import annotations

import json

import numpy as np
import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.aspect import (
    AspectLaw,
    AspectPoints,
    bootstrap_aspect,
    check_shapes,
    fit_aspect,
    read_aspect_csv,
)
from smallest_loss.scaling.holdout import leave_one_shape_out
from smallest_loss.scaling.laws import CHINCHILLA_PUBLISHED, law_from_dict, load_law, save_law
from smallest_loss.scaling.points import FitPoints

# A law of the CPU sweeps' scale, written out here: (E + A/N^alpha + B/D^beta) exp(gamma ln(r/r_opt)^2).
TRUE = dict(E=0.8, A=40.0, B=300.0, alpha=0.3, beta=0.4)
GAMMA, ASPECT_OPT = 0.02, 12.0


def synthetic(gamma: float, noise: float = 0.002, seed: int = 0) -> AspectPoints:
    """Three IsoFLOP budgets, three model sizes each, each size at d/n = 2, 6, 16 and 48; `noise` on log loss."""
    rng = np.random.default_rng(seed)
    C, N, r = (a.ravel() for a in np.meshgrid([1e11, 3e11, 9e11], [1.5e4, 4e4, 1e5], [2.0, 6.0, 16.0, 48.0]))
    D = C / (6 * N)
    n = np.maximum(1.0, np.round(np.sqrt(N / (12 * r * r))))
    chinchilla = TRUE["E"] + TRUE["A"] / N ** TRUE["alpha"] + TRUE["B"] / D ** TRUE["beta"]
    loss = chinchilla * np.exp(gamma * np.log(r / ASPECT_OPT) ** 2 + rng.normal(0.0, noise, len(N)))
    return AspectPoints(FitPoints(N, D, loss), r * n, n)


@pytest.fixture(scope="module")
def points():
    return synthetic(GAMMA)


@pytest.fixture(scope="module")
def fitted(points):
    return fit_aspect(points)


@pytest.mark.slow
def test_fit_recovers_known_constants(fitted):
    assert fitted.converged and not fitted.warnings
    assert fitted.shape.gamma == pytest.approx(GAMMA, rel=0.1)
    assert fitted.shape.aspect_opt == pytest.approx(ASPECT_OPT, rel=0.1)
    assert fitted.shape.aspect_range == pytest.approx((2.0, 48.0))
    assert fitted.law.alpha == pytest.approx(TRUE["alpha"], abs=0.03)
    assert fitted.law.beta == pytest.approx(TRUE["beta"], abs=0.03)


def test_bootstrap_intervals_hold_the_truth(points, fitted):
    boot = bootstrap_aspect(points, fitted, n_boot=16)
    assert boot.n_converged >= 14 and all(len(v) == 16 for v in boot.samples.values())
    for name, truth in (("gamma", GAMMA), ("aspect_opt", ASPECT_OPT), ("alpha", TRUE["alpha"])):
        lo, hi = boot.intervals[name]
        assert lo < truth < hi and hi / lo < 2.0, name


@pytest.mark.slow
def test_leave_one_shape_out_beats_the_nd_law(points):
    result = leave_one_shape_out(points)
    assert result["shapes"] == 4 and len(result["points"]) + 9 * len(result["skipped"]) == 36
    # Left out, the extreme shapes sit 3-5% above the N-D law's prediction; the shape factor predicts them.
    assert result["shape_law"]["mean_abs_rel_error"] < 0.5 * result["nd_law"]["mean_abs_rel_error"]


def test_flat_points_fit_gamma_zero_and_say_so():
    fit = fit_aspect(synthetic(0.0, noise=0.001, seed=1))
    assert fit.shape.gamma < 1e-3
    assert any("no effect of the aspect ratio" in w for w in fit.warnings)


def test_one_aspect_ratio_per_size_is_refused():
    N = np.array([7e3, 1.3e4, 2e4, 3.3e4, 6.8e4, 1.6e5])
    d, n = [16, 24, 32, 32, 48, 64], [1, 1, 1, 2, 2, 3]  # the cpu-isoflop sweep's smaller shapes
    p = AspectPoints(FitPoints(N, 1e11 / (6 * N), np.linspace(2.3, 1.7, 6)), d, n)
    with pytest.raises(UserError, match="one aspect ratio d/n per model size N"):
        check_shapes(p)


def _write(path, header, rows):
    path.write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def test_csv_columns_d_and_n(tmp_path, points):
    p = points.points
    rows = list(zip(p.N, p.D, p.loss, points.d.astype(int), points.n.astype(int), strict=True))
    read = read_aspect_csv(_write(tmp_path / "ok.csv", "N,D,loss,d,n", rows))
    assert np.allclose(read.aspect, points.aspect) and np.allclose(read.points.loss, p.loss)
    with pytest.raises(UserError, match="lacks column.*n.*width d and depth n"):
        read_aspect_csv(_write(tmp_path / "no_n.csv", "N,D,loss,d", [r[:4] for r in rows]))
    bad = rows[:3] + [rows[3][:4] + (0,)] + rows[4:]
    with pytest.raises(UserError, match="row 5: n='0' must be positive"):
        read_aspect_csv(_write(tmp_path / "bad.csv", "N,D,loss,d,n", bad))


def test_law_file_shape_section(tmp_path):
    shape = AspectLaw(0.02, 12.0, (2.0, 48.0), {"gamma": (0.01, 0.03)}, {"gamma": np.array([0.01, 0.03])})
    loaded = load_law(save_law(tmp_path / "law.json", CHINCHILLA_PUBLISHED, shape=shape))
    assert loaded.shape.aspect_opt == 12.0 and loaded.shape.intervals["gamma"] == (0.01, 0.03)
    assert loaded.shape.factor(24, 2) == 1.0
    assert loaded.shape.factor(48, 1) == pytest.approx(np.exp(0.02 * np.log(4) ** 2))
    old = json.loads((tmp_path / "law.json").read_text())
    del old["shape"]
    assert law_from_dict(old).shape is None  # a law file written before the shape section
    for bad, message in (
        ([1], "must be an object"),
        ({"gamma": 1, "aspect_opt": 2}, "aspect_range=None"),
        ({"gamma": -1, "aspect_opt": 2, "aspect_range": [1, 4]}, "gamma=-1.0 must be"),
    ):
        with pytest.raises(UserError, match=f"law: shape section.*{message}"):
            law_from_dict(dict(old, shape=bad))
