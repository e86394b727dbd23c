"""Training sweeps: a design plans deterministic runs; reruns skip finished runs and resume cut ones;
shards split the design between workers with no run lost or run twice."""

from __future__ import annotations

import dataclasses
import json

import pytest
import smallest_loss.model.train as train_mod
from smallest_loss.configs.designs import DESIGNS, get_design
from smallest_loss.configs.errors import UserError
from smallest_loss.experiments.cli import main
from smallest_loss.experiments.sweep import parse_shard, plan_runs, run_sweep
from smallest_loss.scaling.collect import collect_runs, to_points
from smallest_loss.timing.counts import train_step_flops


def test_cpu_isoflop_design_meets_its_brief():
    runs = plan_runs(DESIGNS["cpu-isoflop"])
    budgets = {r.budget for r in runs}
    assert len(budgets) >= 3 and all(sum(r.budget == b for r in runs) >= 5 for b in budgets)
    for r in runs:  # tokens = C / (6N), to within one step's tokens: whole steps, never over the budget
        info = r.describe()
        step_tokens = info["batch_size"] * r.config.model.s
        assert info["tokens"] == info["steps"] * step_tokens
        target = r.budget / (6 * info["params"])
        assert 0 <= target - info["tokens"] < step_tokens, (r.name, target, info["tokens"], step_tokens)
    assert [r.name for r in runs] == [r.name for r in plan_runs(DESIGNS["cpu-isoflop"])]


def test_shards_partition_the_design():
    names = [r.name for r in plan_runs(DESIGNS["cpu-isoflop"])]
    parts = [names[i::3] for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(names)
    assert parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "a/b", "1"):
        with pytest.raises(UserError):
            parse_shard(bad)


@pytest.mark.slow
def test_sweep_shards_skip_and_resume(tmp_path, monkeypatch):
    # tiny-isoflop cut to three runs: one for shard 1/2, two for shard 0/2 (the first of them crashes).
    design = dataclasses.replace(
        get_design("tiny-isoflop"), budgets=(2e9, 6e9), shapes=(((16, 1, 2),), ((16, 1, 2), (32, 1, 2)))
    )
    runs = plan_runs(design)
    assert len(runs) == 3
    out = tmp_path / "sweep"
    assert run_sweep(design, out, (1, 2), progress=False) == {"trained": 1}
    real_batch = train_mod.batch

    def crash(tokens, seed, k, *args):
        if k == 5:
            raise RuntimeError("simulated crash")
        return real_batch(tokens, seed, k, *args)

    monkeypatch.setattr(train_mod, "batch", crash)
    with pytest.raises(RuntimeError):
        run_sweep(design, out, (0, 2), progress=False)
    records, left_out = collect_runs([out])
    assert len(records) == 1 and left_out == [f"{runs[0].name}: interrupted before its first logged step"]
    monkeypatch.setattr(train_mod, "batch", real_batch)
    assert run_sweep(design, out, (0, 2), progress=False) == {"resumed": 1, "trained": 1}
    assert run_sweep(design, out, progress=False) == {"skipped": 3}
    records, left_out = collect_runs([out])
    assert len(records) == 3 and not left_out
    manifest = json.loads((out / "sweep.json").read_text())
    assert {r.name: r.budget for r in records} == {r["name"]: r["budget"] for r in manifest["runs"]}
    with pytest.raises(UserError, match="need at least 6 points"):  # fit needs more runs than this cut design
        to_points(records)


def test_exact_flops_design_buys_the_steps_its_budget_pays_for():
    base = get_design("tiny-isoflop")
    exact = dataclasses.replace(base, flops="exact")
    rough = {run.name: run.config.total_steps for run in plan_runs(base)}
    runs = plan_runs(exact)
    assert runs and set(rough) >= {run.name for run in runs}
    for run in runs:
        m, b = run.config.model, run.config.train.batch_size
        per_step = train_step_flops(m.d, m.n, m.h, m.w, m.s, m.v, b, m.activation, m.norm, m.tied_embeddings)
        steps = run.config.total_steps
        assert steps * per_step <= run.budget < (steps + 1) * per_step
        # Exact counts add attention, the output layer and element-wise work to 6N per token: fewer steps.
        assert steps < rough[run.name]


def test_sweep_cli_errors(tmp_path, capsys):
    assert main(["sweep", "--design", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown sweep design 'nope'" in capsys.readouterr().err
    assert main(["sweep", "--design", "cpu-isotime", "--out", str(tmp_path)]) == 2
    assert "--profile" in capsys.readouterr().err


def test_isotime_design_buys_steps_from_the_profile():
    from smallest_loss.timing.profile import DeviceProfile

    profile = DeviceProfile(
        device_kind="cpu",
        model="paper: flops only",
        coefficients=(1e-10, 1e-3),
        peak_flops=1e11,
        bandwidth=1e10,
        held_out={},
    )
    runs = plan_runs(DESIGNS["cpu-isotime"], profile.step_seconds_for)
    assert len(runs) == 5
    for r in runs:
        step = profile.step_seconds_for(r.config.model, r.config.train.batch_size)
        assert r.config.total_steps == int(60.0 // step)
