"""Design variants (named sets of overrides, every run trained once per variant) and the cpu-precision design,
which declares the quantised-training overrides of the prec-model branch's model fields."""

from __future__ import annotations

import dataclasses

import pytest
from smallest_loss.configs.designs import DESIGNS, load_design_file
from smallest_loss.configs.errors import UserError
from smallest_loss.experiments.sweep import plan_runs


def test_cpu_precision_design_lists_its_runs():
    design = DESIGNS["cpu-precision"]
    grid = design.grid()
    assert len(grid) == 3 * 3 * 4
    assert {label for *_, label in grid} == {"fp32", "w6a6", "w4a4", "w3a3"}
    overrides = dict(design.variants)
    assert overrides["w3a3"] == ("model.bits_weights=3", "model.bits_activations=3") and overrides["fp32"] == ()
    plain = plan_runs(dataclasses.replace(design, variants=()))  # every budget buys every shape its steps
    assert len(plain) == 9 and 40_000 < 4 * sum(r.config.total_steps for r in plain) < 60_000
    try:  # the quantised-training fields exist only on the prec-model branch
        runs = plan_runs(design)
    except UserError as err:
        assert "bits_weights" in str(err)
    else:
        assert len(runs) == 36 and {r.variant for r in runs} == {"fp32", "w6a6", "w4a4", "w3a3"}


def test_variants_apply_their_overrides():
    tiny = dataclasses.replace(DESIGNS["tiny-isoflop"], variants=(("gelu", ()), ("relu", ("model.activation=relu",))))
    runs = plan_runs(tiny)
    assert len(runs) == 2 * len(plan_runs(DESIGNS["tiny-isoflop"]))
    relu = [r for r in runs if r.variant == "relu"]
    assert relu and all(r.name.endswith("-relu") and r.config.model.activation == "relu" for r in relu)


def test_design_file_variants(tmp_path):
    path = tmp_path / "d.toml"
    path.write_text(
        'budgets = [2e9]\nshapes = [[16, 1, 2]]\nmin_steps = 8\n[variants]\nfp = []\nrelu = ["model.activation=relu"]\n'
    )
    assert load_design_file(path).variants == (("fp", ()), ("relu", ("model.activation=relu",)))
    path.write_text('budgets = [2e9]\nshapes = [[16, 1, 2]]\n[variants]\nbad = "model.activation=relu"\n')
    with pytest.raises(UserError, match="variants must be a table"):
        load_design_file(path)
