"""Design replicates (a budget's runs trained with several seeds) and one record per configuration for the fits of
run folders (`sl.read_runs`, `fit`, run tables): the replicates' geometric mean loss (scaling/collect.py)."""

from __future__ import annotations

import dataclasses
import math

import pytest
from smallest_loss.configs.designs import DESIGNS, load_design_file
from smallest_loss.configs.errors import UserError
from smallest_loss.experiments.sweep import plan_runs, run_sweep
from smallest_loss.scaling.collect import collect_runs


def test_replicates_train_a_budgets_runs_with_more_seeds():
    tiny = dataclasses.replace(DESIGNS["tiny-isoflop"], replicates=(2, 1))
    runs = plan_runs(tiny)
    once = plan_runs(DESIGNS["tiny-isoflop"])
    extra = [r for r in runs if r.name.endswith("-seed1")]
    assert len(runs) == len(once) + len(extra) and len(extra) == sum(r.budget == 2e9 for r in once) > 0
    by_name = {r.name: r for r in runs}
    for r in extra:
        twin = by_name[r.name.removesuffix("-seed1")]
        assert r.config.train.seed == 1 and twin.config.train.seed == 0
        assert dataclasses.replace(r.config.train, seed=0) == twin.config.train and r.config.model == twin.config.model
    assert not any(r.name.endswith("-seed1") for r in once)


def test_replicates_are_checked():
    design = DESIGNS["tiny-isoflop"]
    for bad, message in (((2,), "1 replicate counts but 2 budgets"), ((2, 0), "positive integers"),
                         ((2, 1.5), "positive integers")):  # fmt: skip
        with pytest.raises(UserError, match=message):
            dataclasses.replace(design, replicates=bad)


def test_design_file_replicates(tmp_path):
    path = tmp_path / "d.toml"
    path.write_text("budgets = [2e9, 6e9]\nshapes = [[16, 1, 2]]\nmin_steps = 8\nreplicates = [3, 1]\n")
    design = load_design_file(path)
    assert design.replicates == (3, 1) and design.seeds(0) == (0, 1, 2) and design.seeds(1) == (0,)
    path.write_text("budgets = [2e9]\nshapes = [[16, 1, 2]]\nreplicates = 2\n")
    with pytest.raises(UserError, match="replicates must be a list"):
        load_design_file(path)


def test_a_fit_of_runs_takes_replicates_mean_loss(tmp_path):
    design = dataclasses.replace(DESIGNS["tiny-isoflop"], budgets=(2e9,), shapes=(((16, 1, 2),),), replicates=(2,))
    run_sweep(design, tmp_path / "sweep", progress=False)
    names = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert len(names) == 2 and names[1] == names[0] + "-seed1"
    single = [collect_runs([tmp_path / "sweep" / name])[0][0] for name in names]
    records, left_out = collect_runs([tmp_path / "sweep"])
    assert not left_out and len(records) == 1 and records[0].replicates == 2 and records[0].name == names[0]
    assert records[0].loss == pytest.approx(math.sqrt(single[0].loss * single[1].loss))
    assert single[0].loss != single[1].loss  # two seeds: two trainings
