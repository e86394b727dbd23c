"""`smallest-loss fit --csv` with a `group` column through the CLI's main: the grouped fit's table and law
file, and the refusals (one line each, exit 2). The recovery of a known multiplier is checked in
tests/scaling/test_groups.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from smallest_loss.experiments.cli import main

TWO = {"web": (1.82, 1.0), "code": (1.82, 3.0)}  # E_g, k_g: code's tokens worth three of web's


def _write(path, groups: dict[str, tuple[float, float]], seed: int = 0, per_group: int | None = None) -> str:
    """IsoFLOP points (3 budgets x 4 sizes) per group (E_g, k_g) of L = E_g + 482/N^0.348 + 2085/(k_g D)^0.366,
    0.5% noise; `per_group` keeps only that many points of the last group."""
    rng = np.random.default_rng(seed)
    lines = ["N,D,loss,C,group"]
    for name, (E, k) in groups.items():
        rows = []
        for C in (1e18, 1e19, 1e20):
            for N in np.sqrt(C / 6) / 4 * np.geomspace(0.3, 3, 4):
                D = C / (6 * N)
                loss = (E + 482 / N**0.348 + 2085 / (k * D) ** 0.366) * np.exp(rng.normal(0, 0.005))
                rows.append(f"{N},{D},{loss},{C:g},{name}")
        lines += rows[:per_group] if name == list(groups)[-1] and per_group else rows
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    """A grouped fit with 200 bootstrap resamples (the optimiser pool tests/scaling/test_groups.py compiles
    too, so the XLA cache serves one of them): its exit code and its law file."""
    folder = tmp_path_factory.mktemp("groups")
    path = _write(folder / "groups.csv", TWO)
    out = folder / "law.json"
    return main(["fit", "--csv", path, "--bootstrap", "200", "--out", str(out)]), out


@pytest.mark.slow
def test_grouped_fit_report_and_law_file(grouped, capsys):
    code, out = grouped
    assert code == 0
    law = json.loads(out.read_text())
    d = law["diagnostics"]
    assert law["form"] == "chinchilla" and d["form"] == "grouped" and d["reference"] == "web"
    web, other = d["groups"]
    assert web["reference"] and web["name"] == "web" and web["multiplier"][0]["value"] == pytest.approx(1.0)
    assert (
        other["name"] == "code"
        and other["points"] == 12
        and [m["C"] for m in other["multiplier"]] == pytest.approx([1e18, 1e20])
    )
    for m in other["multiplier"]:  # 3x data multiplier, 0.5% noise at three budgets: within a factor of 1.5
        assert 2.0 < m["value"] < 4.5 and m["interval"][0] <= m["value"] <= m["interval"][1]
    assert law["E"] == pytest.approx(web["E"]) and set(law["intervals"]) >= {"E", "A", "B", "alpha", "beta"}
    assert d["bootstrap"]["n_boot"] == 200 and len(law["samples"]["E"]) == 200


@pytest.mark.slow
def test_grouped_fit_prints_one_row_per_group(tmp_path, capsys):
    path = _write(tmp_path / "g.csv", TWO)
    assert main(["fit", "--csv", path, "--bootstrap", "0", "--reference", "code"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("fitted 2 groups (24 points) with shared exponents")
    assert "| code (reference) | 12 |" in out and "| web | 12 |" in out
    assert "compute multiplier at C=1e+18" in out and "no bootstrap (--bootstrap 0): no intervals" in out


@pytest.mark.parametrize(
    "groups, per_group, flags, message",
    [
        (TWO, 1, [], "group 'code' has 1 point(s); a grouped fit needs at least 4"),
        (TWO, None, ["--reference", "books"], "--reference 'books' is not a group of these points (groups: web, code)"),
        (TWO, None, ["--holdout-largest"], "--holdout-largest does not apply to a grouped fit"),
        (TWO, None, ["--form", "kaplan"], "--form kaplan does not apply to a grouped fit"),
        (
            {"web": (1.82, 1.0)},
            None,
            ["--reference", "books"],
            "--reference 'books' is not a group of these points (groups: web)",
        ),
    ],
)
def test_refusals(tmp_path, groups, per_group, flags, message, capsys):
    path = _write(tmp_path / "g.csv", groups, per_group=per_group)
    assert main(["fit", "--csv", path, *flags]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: {message}") and captured.err.count("\n") == 1 and captured.out == ""
