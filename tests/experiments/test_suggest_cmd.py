"""`smallest-loss suggest` through the CLI's main: a table in, the proposed runs printed and a design file that the
sweep's design reader takes; bad input refused with one line and nothing written."""

from __future__ import annotations

import numpy as np
import pytest
from smallest_loss.configs.designs import load_design_file
from smallest_loss.experiments.cli import main
from smallest_loss.experiments.sweep import plan_runs


def _law(N, D):
    return 0.4 + 14.5 / N**0.26 + 212 / D**0.42  # about this CPU's law (results/cpu/scaling)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """Two small IsoFLOP budgets of CPU-sized models, 1% noise."""
    rng = np.random.default_rng(0)
    C = np.repeat([1e11, 2e11], 4)
    N = np.tile([7e3, 1.3e4, 2.1e4, 3.3e4], 2)
    D = C / (6 * N)
    loss = _law(N, D) * np.exp(rng.normal(0, 0.01, len(N)))
    path = tmp_path_factory.mktemp("suggest") / "runs.csv"
    path.write_text("N,D,loss\n" + "".join(f"{n},{d},{x}\n" for n, d, x in zip(N, D, loss, strict=True)))
    return str(path)


def test_suggest_prints_runs_within_the_spend_and_writes_a_design_the_sweep_reads(table, tmp_path, capsys):
    out = tmp_path / "next.toml"
    argv = ["suggest", "--csv", table, "--target", "3e12", "--spend", "2e12", "--runs", "3", "--space", "cpu"]
    assert main([*argv, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "now," in text and "after these runs" in text and "shape in space cpu" in text
    design = load_design_file(out)
    runs = plan_runs(design)
    assert 1 <= len(runs) <= 3
    assert sum(design.budgets) <= 2e12 * 1.3  # 6 N_shape D: the nearest shape's N, within a space's steps


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--target", "big"], "--target 'big' is not a number"),
        (["--spend", "-1"], "--spend '-1' must be a positive"),
        (["--spend", "1e5"], "buys no run"),
        (["--out", "{tmp}/design.json"], "ends in .toml"),
        (["--out", "{tmp}"], "is a directory"),
        (["--space", "nowhere"], "unknown search space"),
        (["runs-folder"], "not both"),
        (["--columns", "N=params"], None),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(table, tmp_path, capsys, extra, message):
    argv = {"--target": "1e13", "--spend": "1e12"}
    rest = []
    for flag, value in zip(extra[::2], extra[1::2], strict=False):
        if flag in argv:
            argv[flag] = value
        else:
            rest += [flag, value.format(tmp=tmp_path)]
    if len(extra) == 1:
        rest = extra
    args = ["suggest", "--csv", table, *(x for kv in argv.items() for x in kv), *rest]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    if message:
        assert message in err
    assert not (tmp_path / "design.json").exists()


def test_suggest_without_input_is_refused(capsys):
    assert main(["suggest", "--target", "1e13", "--spend", "1e12"]) == 2
    assert "either run folders or --csv" in capsys.readouterr().err
