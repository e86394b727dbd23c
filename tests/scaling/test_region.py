"""The runs' region in (log N, log D): its convex hull, and a plan in a corner that no run is near."""

from __future__ import annotations

import numpy as np
import pytest
from smallest_loss.scaling.chinchilla import ChinchillaLaw
from smallest_loss.scaling.laws import LawFile
from smallest_loss.scaling.points import FitPoints
from smallest_loss.scaling.region import convex_hull, distance_outside


def test_hull_and_distance_outside():
    square = convex_hull(np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0.5], [0.2, 0.9]]))
    assert len(square) == 4 and {tuple(p) for p in square} == {(0, 0), (1, 0), (1, 1), (0, 1)}
    assert distance_outside(square, [0.5, 0.5]) == 0.0 and distance_outside(square, [1.0, 0.3]) == 0.0
    assert distance_outside(square, [1.3, 0.5]) == pytest.approx(0.3)
    assert distance_outside(square, [2.0, 2.0]) == pytest.approx(np.sqrt(2))
    assert convex_hull(np.array([[0, 0], [1, 1], [2, 2]])) is None and convex_hull(np.array([[0, 0], [1, 1]])) is None


def test_a_plan_in_a_corner_of_the_ranges_that_no_run_is_near_is_said():
    # An IsoFLOP-like sweep whose largest budget has one run, at large N (as the quickstart's): large N and large D
    # together lie inside the range of N, of D and of C = 6ND, but no run is near them.
    N = np.array([1e4, 3e4, 1e5, 3e4, 1e5, 3e5, 1e6])
    D = np.array([1e6, 3e5, 1e5, 3e6, 1e6, 3e5, 1e6])
    points = FitPoints(N, D, np.full(len(N), 3.0))
    law = LawFile(ChinchillaLaw(1.8, 400.0, 2000.0, 0.34, 0.37), diagnostics=dict(fitted_range=points.fitted_range))
    assert law.outside(N=1e5, D=2e6, C=1.2e12) is None  # among the runs
    corner = law.outside(N=2e5, D=2.5e6, C=3e12)  # N, D and C each within their ranges
    assert corner.startswith("warning: the law is extrapolated: (N, D) = (2e+05, 2.5e+06) lies 0.17 decades outside")
    beyond = law.outside(N=1e7, D=1e6, C=6e13)
    assert beyond.startswith("warning: the law is extrapolated: N = 1e+07 is 1.0 decades above") and "(N, D)" in beyond
