"""Cool-down designs: one constant-rate parent per shape and branches that end at the design's fractions, a
parent and its branches in one shard, and the design's fields checked up front."""

from __future__ import annotations

import dataclasses

import pytest
from smallest_loss.configs.designs import DESIGNS, SweepDesign, load_design_file
from smallest_loss.configs.errors import UserError
from smallest_loss.experiments.sweep import plan_runs, shard_runs
from smallest_loss.model.schedule import cooldown_steps


def test_parent_and_branches():
    design = DESIGNS["cpu-cooldown"]
    runs = plan_runs(design)
    parents = [r for r in runs if not r.branch]
    assert len(parents) == 3 and all(r.config.train.schedule == "constant" for r in parents)
    for parent in parents:
        branches = [r for r in runs if r.branch and r.branch[0] == parent.name]
        full = int(parent.budget / (6 * 1024 * parent.describe()["params"]))  # steps the budget buys at 6ND
        assert sorted(b.config.total_steps for b in branches) == sorted(int(f * full) for f in (0.1, 0.3, 1.0))
        for b in branches:
            T, k = b.config.total_steps, b.branch[1]
            assert T - k == cooldown_steps(b.config.train, T) == max(round(0.2 * T), 1)
            assert b.config.train.decay == "1-sqrt" and b.config.train.warmup_steps == parent.config.train.warmup_steps
            assert k in parent.keep_checkpoints and b.budget == pytest.approx(parent.budget * T / full)
        assert parent.config.total_steps == max(parent.keep_checkpoints)


def test_shards_keep_a_parent_with_its_branches():
    runs = plan_runs(DESIGNS["cpu-cooldown"])
    shards = [shard_runs(runs, (i, 2)) for i in range(2)]
    assert sorted(r.name for s in shards for r in s) == sorted(r.name for r in runs)
    for shard in shards:
        names = [r.name for r in shard]
        for r in shard:
            if r.branch:
                assert r.branch[0] in names and names.index(r.branch[0]) < names.index(r.name)
    iso = plan_runs(DESIGNS["data-isoflop"])
    assert shard_runs(iso, (1, 3)) == iso[1::3]  # other kinds shard as before


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(kind="isoflop", branch_fractions=(0.5,)), "go with kind cooldown"),
        (dict(branch_fractions=()), "go with kind cooldown"),
        (dict(branch_fractions=(0.0, 1.0)), r"must lie in \(0, 1\]"),
        (dict(cooldown_fraction=1.0), "cooldown_fraction"),
        (dict(decay="cosine"), "decay"),
    ],
)
def test_bad_cooldown_fields(fields, message):
    with pytest.raises(UserError, match=message):
        dataclasses.replace(DESIGNS["tiny-cooldown"], **fields)


def test_design_file(tmp_path):
    path = tmp_path / "cd.toml"
    path.write_text(
        'kind = "cooldown"\nbudgets = [2e9]\nshapes = [[16, 1, 2]]\nmin_steps = 8\n'
        'branch_fractions = [0.5, 1.0]\ncooldown_fraction = 0.25\ndecay = "linear"\n'
    )
    design = load_design_file(path)
    assert isinstance(design, SweepDesign) and design.branch_fractions == (0.5, 1.0) and design.decay == "linear"
    assert len(plan_runs(design)) == 3
