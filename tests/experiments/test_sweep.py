"""Training sweeps: a design plans deterministic runs; reruns skip finished runs and resume cut ones;
shards split the design between workers with no run lost or run twice."""

from __future__ import annotations

import json

import pytest
import smallest_loss.model.train as train_mod
from smallest_loss.configs.designs import DESIGNS, get_design
from smallest_loss.configs.errors import UserError
from smallest_loss.experiments.cli import main
from smallest_loss.experiments.sweep import parse_shard, plan_runs, run_sweep
from smallest_loss.scaling.collect import collect_runs, to_points


def test_cpu_isoflop_design_meets_its_brief():
    runs = plan_runs(DESIGNS["cpu-isoflop"])
    budgets = {r.budget for r in runs}
    assert len(budgets) >= 3 and all(sum(r.budget == b for r in runs) >= 5 for b in budgets)
    for r in runs:  # tokens = C / (6N), to within one step's tokens
        info = r.describe()
        assert info["tokens"] * 6 * info["params"] == pytest.approx(r.budget, rel=0.15)
    assert [r.name for r in runs] == [r.name for r in plan_runs(DESIGNS["cpu-isoflop"])]


def test_shards_partition_the_design():
    names = [r.name for r in plan_runs(DESIGNS["cpu-isoflop"])]
    parts = [names[i::3] for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(names)
    assert parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "a/b", "1"):
        with pytest.raises(UserError):
            parse_shard(bad)


def test_sweep_shards_skip_and_resume(tmp_path, monkeypatch):
    design = get_design("tiny-isoflop")
    runs = plan_runs(design)
    out = tmp_path / "sweep"
    assert run_sweep(design, out, (1, 2), progress=False) == {"trained": len(runs[1::2])}
    real_batch = train_mod.batch

    def crash(tokens, seed, k, *args):
        if k == 5:
            raise RuntimeError("simulated crash")
        return real_batch(tokens, seed, k, *args)

    monkeypatch.setattr(train_mod, "batch", crash)
    with pytest.raises(RuntimeError):
        run_sweep(design, out, (0, 2), progress=False)
    monkeypatch.setattr(train_mod, "batch", real_batch)
    assert run_sweep(design, out, (0, 2), progress=False) == {"resumed": 1, "trained": len(runs[0::2]) - 1}
    assert run_sweep(design, out, progress=False) == {"skipped": len(runs)}
    records, left_out = collect_runs([out])
    assert len(records) == len(runs) >= 6 and not left_out
    manifest = json.loads((out / "sweep.json").read_text())
    assert {r.name: r.budget for r in records} == {r["name"]: r["budget"] for r in manifest["runs"]}
    assert to_points(records).N.size == len(runs)
    with pytest.raises(UserError, match="need at least 6 points"):
        to_points(records[:3])


def test_sweep_cli_errors(tmp_path, capsys):
    assert main(["sweep", "--design", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown sweep design 'nope'" in capsys.readouterr().err
    assert main(["sweep", "--design", "cpu-isotime", "--out", str(tmp_path)]) == 2
    assert "--profile" in capsys.readouterr().err


def test_isotime_design_buys_steps_from_the_profile():
    from smallest_loss.timing.profile import DeviceProfile

    profile = DeviceProfile(device_kind="cpu", model="paper: flops only", coefficients=(1e-10, 1e-3),
                            peak_flops=1e11, bandwidth=1e10, held_out={})
    runs = plan_runs(DESIGNS["cpu-isotime"], profile.step_seconds_for)
    assert len(runs) == 5
    for r in runs:
        step = profile.step_seconds_for(r.config.model, r.config.train.batch_size)
        assert r.config.total_steps == int(60.0 // step)
