"""`smallest-loss fit` through the CLI's main: Kaplan form, hold-out of the largest budget (budgets from a C
column or from 6ND), the law used when the full law is not identified, and input refused up front with one
line."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from smallest_loss.experiments.cli import main


def _csv(path, N, D, loss, C=None):
    header, columns = ("N,D,loss", (N, D, loss)) if C is None else ("N,D,loss,C", (N, D, loss, C))
    path.write_text(header + "\n" + "".join(",".join(map(str, row)) + "\n" for row in zip(*columns, strict=True)))
    return str(path)


def _law(N, D):
    """Epoch's refit of Chinchilla (Besiroglu et al. 2024), written out here."""
    return 1.82 + 482 / N**0.348 + 2085 / D**0.366


def isoflop(jitter: float, seed: int):
    """Four sizes around the optimum at each of four budgets, 0.3% noise on loss; each point's 6ND off its
    budget by up to `jitter` (as in Chinchilla's figure), which a C column names exactly."""
    rng = np.random.default_rng(seed)
    C = np.repeat([1e18, 3e18, 1e19, 3e19], 4)
    N = np.sqrt(C / 6) / 4 * np.tile(np.geomspace(0.3, 3, 4), 4)
    D = C * np.exp(rng.uniform(-jitter, jitter, 16)) / (6 * N)
    return N, D, _law(N, D) * np.exp(rng.normal(0.0, 0.003, 16)), C


@pytest.fixture(scope="module")
def points_csv(tmp_path_factory):
    """12 points from a known Chinchilla law, 0.2% noise, at 8 budgets 6ND (only some shared)."""
    rng = np.random.default_rng(0)
    N = np.tile([1e7, 3e7, 1e8], 4)
    D = np.repeat([1e9, 3e9, 1e10, 3e10], 3)
    loss = _law(N, D) * np.exp(rng.normal(0.0, 0.002, 12))
    return _csv(tmp_path_factory.mktemp("fit") / "points.csv", N, D, loss)


@pytest.fixture(scope="module")
def tiny_csv(tmp_path_factory):
    """A first sweep of 9 tiny runs whose unbounded fit drives E to zero."""
    C, N = np.repeat([1e12, 3e12, 1e13], 3), np.tile([1e5, 2e5, 4e5], 3)
    D = C / (6 * N)
    loss = (0.8 + 60 / N**0.3 + 80 / D**0.25) * np.exp(np.random.default_rng(1).normal(0.0, 0.01, 9))
    return _csv(tmp_path_factory.mktemp("tiny") / "tiny.csv", N, D, loss)


@pytest.mark.slow
def test_kaplan_form_from_csv(points_csv, capsys):
    assert main(["fit", "--csv", points_csv, "--form", "kaplan", "--json"]) == 0
    captured = capsys.readouterr()
    law = json.loads(captured.out)
    assert law["form"] == "kaplan" and law["Nc"] > 0 and law["aD"] > 0 and "intervals" not in law
    assert law["diagnostics"]["form"] == "kaplan" and "law used: Kaplan" in captured.err


def test_holdout_largest_from_csv(points_csv, capsys):
    assert main(["fit", "--csv", points_csv, "--bootstrap", "0", "--holdout-largest"]) == 0
    out = capsys.readouterr().out
    assert "fit without budget 1.8e+19, predicting its 1 point" in out
    error = float(out.split("fit without budget")[1].split("mean |error| ")[1].split("%")[0])
    assert error < 5.0  # 0.2% noise: extrapolating one budget up misses by a few percent at most
    assert "its optimum not compared: budget C=1.8e+19 has 1 distinct model sizes" in out


@pytest.mark.parametrize("with_C", [True, False])
def test_holdout_largest_on_isoflop_profiles(tmp_path, with_C, capsys):
    """With a C column the jittered points fall into their budgets; without one, points whose 6ND agree
    within 3% do (here 6ND is exact)."""
    N, D, loss, C = isoflop(0.05 if with_C else 0.0, seed=2)
    path = _csv(tmp_path / "iso.csv", N, D, loss, C if with_C else None)
    assert main(["fit", "--csv", path, "--bootstrap", "0", "--holdout-largest"]) == 0
    out = capsys.readouterr().out
    assert "fit without budget 3e+19, predicting its 4 points" in out
    assert float(re.search(r"mean \|error\| ([\d.]+)%", out)[1]) < 2.0  # 0.3% noise, one budget up
    assert "its IsoFLOP optimum (parabola in log N over its points)" in out
    errors = dict(re.findall(r"(\w+)_opt: law \S+, points \S+ \(([-+\d.]+)%\)", out))
    assert set(errors) == {"N", "D", "loss"}
    assert abs(float(errors["loss"])) < 2.0 and abs(float(errors["N"])) < 25.0


def test_one_group_is_an_ordinary_fit(tmp_path, capsys):
    N, D, loss, C = isoflop(0.0, seed=3)
    path = tmp_path / "one.csv"
    path.write_text("N,D,loss,group\n" + "".join(f"{a},{b},{c},web\n" for a, b, c in zip(N, D, loss, strict=True)))
    assert main(["fit", "--csv", str(path), "--bootstrap", "0", "--reference", "web"]) == 0
    assert capsys.readouterr().out.startswith("fitted chinchilla law to 16 points")


@pytest.mark.parametrize(
    "rows, flags, message",
    [
        (
            lambda: (np.geomspace(1e7, 1e9, 8), np.geomspace(1e9, 1e11, 8)),
            ["--holdout-largest"],
            "each of the 8 points has its own; add a C column naming each point's budget",
        ),
        (
            lambda: (np.geomspace(1e7, 1e9, 8), 1e18 / (6 * np.geomspace(1e7, 1e9, 8))),
            [],
            "all 8 points share one compute budget (from 6ND, as it has no C column)",
        ),
        (
            lambda: (np.geomspace(1e7, 1e9, 8), np.geomspace(1e9, 1e11, 8)),
            ["--reference", "web"],
            "--reference 'web' is not a group of these points (groups: none: the CSV has no 'group' column)",
        ),
    ],
)
def test_budgets_refused_before_fitting(tmp_path, rows, flags, message, capsys):
    N, D = rows()
    assert main(["fit", "--csv", _csv(tmp_path / "p.csv", N, D, np.linspace(3, 2.5, 8)), *flags]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and message in captured.err and captured.err.count("\n") == 1
    assert captured.out == ""


@pytest.mark.slow
def test_unidentified_law_says_which_law_it_used(tiny_csv, tmp_path, capsys):
    assert main(["fit", "--csv", tiny_csv, "--bootstrap", "20", "--out", str(tmp_path / "law.json")]) == 0
    out = capsys.readouterr().out
    assert "warning: the full law is not identified (full: E ran to its lower bound" in out
    assert "law used: E fixed at" in out
    diagnostics = json.loads((tmp_path / "law.json").read_text())["diagnostics"]
    assert diagnostics["identified"] is True and diagnostics["form"] != "full"
    assert "E ran to its lower bound" in diagnostics["not_identified"]["full"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--bootstrap", "-5"], "--bootstrap -5: give 0 (no intervals) or at least 2 resamples"),
        (["--bootstrap", "1"], "--bootstrap 1: give 0 (no intervals) or at least 2 resamples"),
    ],
)
def test_bad_bootstrap_counts(points_csv, extra, message, capsys):
    assert main(["fit", "--csv", points_csv, *extra]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: {message} (default 1000)\n" and captured.out == ""


def test_csv_that_is_a_directory(tmp_path, capsys):
    assert main(["fit", "--csv", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a directory, not a file" in err and "does not exist" not in err and err.count("\n") == 1


def test_output_under_a_file_is_refused_before_fitting(points_csv, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert main(["fit", "--csv", points_csv, "--out", str(tmp_path / "afile" / "law.json")]) == 2
    captured = capsys.readouterr()
    assert "is a file, not a folder" in captured.err and captured.err.count("\n") == 1
    assert captured.out == ""  # refused before any fit: nothing was fitted or printed
    assert main(["fit", "--csv", points_csv, "--out", str(tmp_path)]) == 2
    assert "is a directory (a folder); give a file name" in capsys.readouterr().err


def test_chinchilla_isoflop_csv_is_the_converters_output(tmp_path):
    """The committed table is what experiments/scripts/convert_chinchilla_isoflop.py makes of Epoch's extraction."""
    from smallest_loss.experiments.scripts.convert_chinchilla_isoflop import OUT, write_csv
    from smallest_loss.scaling.points import read_fit_csv

    assert write_csv(tmp_path / "iso.csv").read_text() == OUT.read_text()
    pts = read_fit_csv(OUT)
    budgets, counts = np.unique(pts.C, return_counts=True)
    assert len(pts) == 122 and list(budgets) == [6e18, 1e19, 3e19, 6e19, 1e20, 3e20, 6e20, 1e21, 3e21]
    assert counts.min() >= 8  # every IsoFLOP profile has enough sizes for a parabola
    assert np.all(np.abs(np.log(6 * pts.N * pts.D / pts.C)) < 0.1)
