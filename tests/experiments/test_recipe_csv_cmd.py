"""`fit-recipe --csv`: a recipe table in, both laws fitted and compared, the law written and planned; bad tables
refused in one line with nothing written."""

from __future__ import annotations

import json

import pytest
from smallest_loss.experiments.cli import main
from smallest_loss.scaling.laws import CHINCHILLA_PUBLISHED, load_law, save_law
from smallest_loss.scaling.recipe_synth import SweepTruth, synthetic_rows, write_rows

POINTS = ((2e7, 2e8), (2e7, 8e8), (5e7, 1e9), (1e8, 1e9), (1e8, 4e9), (4e8, 8e9))
FACTORS = (1 / 4, 1 / 2, 1, 2, 4, 8)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return write_rows(synthetic_rows(SweepTruth(), POINTS, FACTORS, FACTORS), tmp_path_factory.mktemp("t") / "r.csv")


def test_report_only_without_a_law(table, capsys):
    assert main(["fit-recipe", "--csv", str(table), "--bootstrap", "0"]) == 0
    out = capsys.readouterr().out
    assert "optimal (winner)" in out and "planning with: batch optimal" in out
    assert "diverged runs left out of the best rates:" in out and "nothing written" in out


@pytest.mark.slow
def test_writes_the_law_and_plan_uses_the_winner(table, tmp_path, capsys):
    law, out = str(save_law(tmp_path / "law.json", CHINCHILLA_PUBLISHED)), tmp_path / "with_recipe.json"
    args = ["fit-recipe", "--csv", str(table), "--law", law, "--out", str(out), "--reference-batch", "131072"]
    assert main([*args, "--bootstrap", "0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["recipe"]["batch_form"] == "optimal"
    assert report["recipe"]["evidence"]["choice"]["max"] < 0.005
    recipe = load_law(out).recipe
    assert recipe.batch_form == "optimal" and recipe.optimal_batch is not None
    assert main(["plan", "--budget", "1e20", "--law", str(out), "--out", str(tmp_path / "plan"), "--top", "3"]) == 0
    assert "Best batch B_opt" in (tmp_path / "plan" / "plan.md").read_text()


@pytest.mark.parametrize(
    "body, extra, message",
    [
        ("N,D,batch,lr,loss\n1e6,2e7,8,-1e-3,3.0\n", [], "line 2: lr=-0.001 must be positive"),
        ("N,D,batch,loss\n1e6,2e7,8,3.0\n", [], "lacks column(s) lr"),
        ("N,D,batch,lr,loss\n1e6,2e7,8,1e-3,3.0\n", ["--columns", "rate=lr"], "--columns maps rate"),
        ("N,D,batch,lr,loss\n1e6,2e7,8,1e-3,3.0\n", ["--no-ref"], "needs --reference-batch"),
    ],
)
def test_bad_tables_and_flags_are_one_line_and_write_nothing(tmp_path, capsys, body, extra, message):
    path, out = tmp_path / "bad.csv", tmp_path / "out.json"
    path.write_text(body)
    law = str(save_law(tmp_path / "law.json", CHINCHILLA_PUBLISHED))
    ref = [] if extra == ["--no-ref"] else ["--reference-batch", "4096"]
    flags = [x for x in extra if x != "--no-ref"]
    assert main(["fit-recipe", "--csv", str(path), "--law", law, "--out", str(out), *ref, *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_folders_and_a_table_together_are_refused(table, capsys):
    assert main(["fit-recipe", "runs/recipe", "--csv", str(table)]) == 2
    assert "not both" in capsys.readouterr().err
