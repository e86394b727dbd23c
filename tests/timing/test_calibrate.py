"""Calibration end to end on the tiny grid: real measurements, resume after a kill, reports, bad input."""

from __future__ import annotations

import json

import pytest
import smallest_loss.experiments.calibrate as cal
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.grids import get_grid
from smallest_loss.experiments.calibrate import measure_key
from smallest_loss.experiments.cli import main
from smallest_loss.model.runs import environment
from smallest_loss.timing.measure import measure
from smallest_loss.timing.profile import load_profile

FAST = dict(progress=False, min_seconds=0.03, rounds=3, repeats=3)


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs (not even `except Exception` handlers)."""


def spy(monkeypatch, name, kill_after=None):
    """Count the calls of a function of experiments.calibrate (the real one runs); optionally 'kill' the
    calibration at the given call."""
    real, calls = getattr(cal, name), []

    def wrapper(*args, **kwargs):
        calls.append(args)
        if kill_after is not None and len(calls) > kill_after:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(cal, name, wrapper)
    return calls


def test_killed_calibration_resumes_without_re_measuring(tmp_path, monkeypatch):
    out = tmp_path / "cal"
    out.mkdir()
    points = get_grid("tiny")
    first = measure(points[0].model, points[0].batch, min_seconds=0.03, min_repeats=3, rounds=3)
    (out / "records.jsonl").write_text(json.dumps(first) + "\n" + '{"cut short by a kill')  # killed mid-write
    n = 3  # this session measures the next 3 configurations of the grid (limit=3)
    with monkeypatch.context() as m:
        spy(m, "time_round", kill_after=n + 2)  # killed during round 2, after 3 + 2 timed rounds
        with pytest.raises(Killed):
            cal.run_grid("tiny", out, limit=n, **FAST)
    assert len(cal.read_records(out / "partial.jsonl")) == n + 2  # the rounds timed before the kill
    with monkeypatch.context() as m:
        prepared, rounds = spy(m, "prepare"), spy(m, "time_round")
        counts = cal.run_grid("tiny", out, limit=n, **FAST)
    assert counts == {"skipped": 1, "ok": n}
    assert [measure_key(*args) for args in prepared] == [measure_key(*p) for p in points[1 : n + 1]]
    assert len(rounds) == 3 * n - (n + 2)  # rounds saved before the kill are not timed again
    records = cal.read_records(out / "records.jsonl")
    assert len(records) == n + 1 and all(r["status"] == "ok" and r["rounds"] == 3 for r in records)
    assert not (out / "partial.jsonl").exists()
    with monkeypatch.context() as m:
        prepared = spy(m, "prepare")
        assert cal.run_grid("tiny", out, limit=0, **FAST) == {"skipped": n + 1}
    assert prepared == []


def test_fit_only_writes_table_plots_and_profile(tmp_path, capsys):
    from tests.timing.test_models import synthetic_records

    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in synthetic_records(noise=0.02)))
    (tmp_path / "device.json").write_text(json.dumps(dict(device_kind=environment()["device_kind"], peak_flops=1e11,
                                                          bandwidth=1e10, cache_bytes=2**20)))
    assert main(["calibrate", "--fit-only", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "paper: memcpys + flops" in printed and "profile:" in printed
    profile = load_profile(tmp_path / "profile.json")
    assert profile.model == "paper: memcpys + flops" and profile.held_out["mape"] < 0.05  # the true model wins
    assert profile.statistic == "best_round" and profile.cache_bytes == 2**20
    table = (tmp_path / "comparison.md").read_text()
    assert "held out" in table and "no (needs a compiled step" in table
    assert len(list(tmp_path.glob("pred_vs_measured_*.png"))) == table.count("| yes |") + table.count("| no (")


@pytest.mark.parametrize("error,status", [(RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating"), "oom"),
                                          (ValueError("compile failed"), "error")])
def test_failed_configuration_is_recorded_and_the_grid_goes_on(tmp_path, monkeypatch, error, status):
    import smallest_loss.timing.measure as measure_mod
    real, calls = measure_mod.compile_step, []

    def fail_first(cfg, b, devices=1):  # the device runs out of memory (or the compiler fails) on one
        calls.append(cfg)
        if len(calls) == 1:
            raise error
        return real(cfg, b, devices)

    monkeypatch.setattr(measure_mod, "compile_step", fail_first)
    counts = cal.run_grid("tiny", tmp_path, limit=3, **FAST)
    assert counts == {"skipped": 0, status: 1, "ok": 2}
    failed = [r for r in cal.read_records(tmp_path / "records.jsonl") if r["status"] != "ok"]
    assert failed[0]["status"] == status and failed[0]["message"]


def test_bad_input(tmp_path, capsys, monkeypatch):
    assert main(["calibrate", "--grid", "nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown timing grid 'nope'" in err and "cpu-small" in err and len(err.strip().splitlines()) == 1
    assert main(["calibrate", "--fit-only", "--out", str(tmp_path / "empty")]) == 2
    assert "holds no timing records" in capsys.readouterr().err
    assert main(["calibrate", "--out", str(tmp_path)]) == 2
    assert "needs --grid" in capsys.readouterr().err
    with pytest.raises(UserError):
        get_grid("")

    import smallest_loss.timing.measure as measure_mod
    def out_of_memory(*_):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 81.00GiB")

    monkeypatch.setattr(measure_mod, "compile_step", out_of_memory)
    assert main(["measure", "--set", "model.d=8192"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not fit in memory" in err[0]
