"""`smallest-loss fit` through the CLI's main: Kaplan form, hold-out of the largest budget, the law used
when the full law is not identified, and flag values refused up front with one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from smallest_loss.experiments.cli import main


def _csv(path, N, D, loss):
    path.write_text("N,D,loss\n" + "".join(f"{a},{b},{c}\n" for a, b, c in zip(N, D, loss, strict=True)))
    return str(path)


@pytest.fixture(scope="module")
def points_csv(tmp_path_factory):
    """12 points from a known Chinchilla law (written out here), 0.2% noise, over 4 budgets."""
    rng = np.random.default_rng(0)
    N = np.tile([1e7, 3e7, 1e8], 4)
    D = np.repeat([1e9, 3e9, 1e10, 3e10], 3)
    loss = (1.8 + 480 / N**0.35 + 2000 / D**0.37) * np.exp(rng.normal(0.0, 0.002, 12))
    return _csv(tmp_path_factory.mktemp("fit") / "points.csv", N, D, loss)


@pytest.fixture(scope="module")
def tiny_csv(tmp_path_factory):
    """A first sweep of 9 tiny runs whose unbounded fit drives E to zero."""
    C, N = np.repeat([1e12, 3e12, 1e13], 3), np.tile([1e5, 2e5, 4e5], 3)
    D = C / (6 * N)
    loss = (0.8 + 60 / N**0.3 + 80 / D**0.25) * np.exp(np.random.default_rng(1).normal(0.0, 0.01, 9))
    return _csv(tmp_path_factory.mktemp("tiny") / "tiny.csv", N, D, loss)


def test_kaplan_form_from_csv(points_csv, capsys):
    assert main(["fit", "--csv", points_csv, "--form", "kaplan", "--json"]) == 0
    captured = capsys.readouterr()
    law = json.loads(captured.out)
    assert law["form"] == "kaplan" and law["Nc"] > 0 and law["aD"] > 0 and "intervals" not in law
    assert law["diagnostics"]["form"] == "kaplan" and "law used: Kaplan" in captured.err


def test_holdout_largest_from_csv(points_csv, capsys):
    assert main(["fit", "--csv", points_csv, "--bootstrap", "0", "--holdout-largest"]) == 0
    out = capsys.readouterr().out
    assert "fit without budget" in out and "predicting its 1 runs" in out
    error = float(out.split("fit without budget")[1].split("mean |error| ")[1].split("%")[0])
    assert error < 5.0  # 0.2% noise: extrapolating one budget up misses by a few percent at most


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
    assert "is a directory; give a file name" in capsys.readouterr().err
