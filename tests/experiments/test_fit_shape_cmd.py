"""`smallest-loss fit --form shape` through the CLI's main: the law file's shape section from a CSV with columns
d and n, and input that cannot identify the shape term refused with one line and exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from smallest_loss.experiments.cli import main


def _csv(path, rows):
    path.write_text("N,D,loss,d,n\n" + "".join(",".join(map(str, row)) + "\n" for row in rows))
    return str(path)


@pytest.fixture(scope="module")
def shape_csv(tmp_path_factory):
    """Two budgets, two sizes, d/n = 2, 8 and 32 at each size; loss 3% above the N-D law at d/n = 2 and 32."""
    rows = []
    for C in (1e11, 1e12):
        for N, depths in ((2e4, (8, 4, 2)), (6e4, (12, 6, 3))):
            for n, r in zip(depths, (2, 8, 32), strict=True):
                D = C / (6 * N)
                loss = (0.8 + 40 / N**0.3 + 300 / D**0.4) * np.exp(0.0075 * np.log(r / 8) ** 2)
                rows.append((N, D, loss, r * n, n))
    return _csv(tmp_path_factory.mktemp("shape") / "shape.csv", rows)


@pytest.mark.slow
def test_shape_law_file_from_csv(shape_csv, tmp_path, capsys):
    # 16 resamples of 4 starts: the bootstrap compiles the same program as tests/scaling/test_shape.py's
    out = tmp_path / "law.json"
    assert main(["fit", "--csv", shape_csv, "--form", "shape", "--bootstrap", "16", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "fitted shape-aware law to 12 points" in text and "| aspect_opt |" in text
    law = json.loads(out.read_text())
    assert law["form"] == "chinchilla" and law["diagnostics"]["form"] == "shape"
    assert law["shape"]["aspect_opt"] == pytest.approx(8.0, rel=0.05) and law["shape"]["aspect_range"] == [2, 32]
    assert len(law["shape"]["samples"]["gamma"]) == len(law["samples"]["alpha"]) == 16


@pytest.mark.parametrize("rows, flags, message", [
    ([(2e4 * 1.6**i, 1e6 * 1.3**i, 2.3 - 0.1 * i, 16 * 2**(i % 3), 1 + i % 2) for i in range(8)], [],
     "one aspect ratio d/n per model size N"),
    ([(2e4, 1e6, 2.0, 32, 2)] * 8, ["--holdout-largest"], "--holdout-largest: not with the shape-aware law"),
])  # fmt: skip
def test_refusals(tmp_path, rows, flags, message, capsys):
    assert main(["fit", "--csv", _csv(tmp_path / "bad.csv", rows), "--form", "shape", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err


def test_shape_design_file_is_the_built_in_design():
    """The example design file holds the built-in cpu-shape design, whose budgets each vary d/n at nearly one N."""
    from pathlib import Path

    from smallest_loss.configs.designs import DESIGNS, load_design_file
    from smallest_loss.model.params import count_params

    root = Path(__file__).resolve().parents[2]
    design = DESIGNS["cpu-shape"]
    assert load_design_file(root / "configs" / "cpu-shape.toml") == design
    for shapes in design.shapes:
        N = [count_params(design.model(shape)).total for shape in shapes]
        assert max(N) <= 1.25 * min(N) and len({d / n for d, n, _ in shapes}) == len(shapes) >= 4


@pytest.mark.slow
def test_shape_term_flag(shape_csv, tmp_path, capsys):
    """--shape-term asymmetric: the law file records the term and its extra constant; without --form shape refused."""
    out = tmp_path / "law.json"
    args = ["fit", "--csv", shape_csv, "--form", "shape", "--shape-term", "asymmetric", "--bootstrap", "0"]
    assert main([*args, "--out", str(out)]) == 0
    assert "| gamma_high |" in capsys.readouterr().out
    shape = json.loads(out.read_text())["shape"]
    assert shape["term"] == "asymmetric" and set(shape["params"]) == {"gamma_high"}
    assert main(["fit", "--csv", shape_csv, "--shape-term", "drift"]) == 2
    assert "--shape-term names the shape-aware law's term: add --form shape" in capsys.readouterr().err
