"""Design variants (named sets of overrides, every run trained once per variant): the cpu-precision design (bits of
quantised training) and the cpu-moe design (dense and mixture-of-experts variants of each shape)."""

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
    runs = plan_runs(design)
    assert len(runs) == 36 and {r.variant for r in runs} == {"fp32", "w6a6", "w4a4", "w3a3"}
    w3 = next(r for r in runs if r.variant == "w3a3").config.model
    assert (w3.bits_weights, w3.bits_activations, w3.bits_kv) == (3, 3, None)


def test_cpu_moe_design_trains_each_shape_dense_and_as_two_mixtures():
    runs = plan_runs(DESIGNS["cpu-moe"])
    assert len(runs) == 3 * 3 * 3 and {r.variant for r in runs} == {"dense", "e4", "e8"}
    by = {(r.budget, r.config.model.d, r.variant): r.config for r in runs}
    for (budget, d, variant), config in by.items():
        assert config.model.experts == {"dense": 0, "e4": 4, "e8": 8}[variant] and config.model.top_k == 1
        assert config.total_steps == by[(budget, d, "dense")].total_steps  # top-1: the dense model's FLOPs a token


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
