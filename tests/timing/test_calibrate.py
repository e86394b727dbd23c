"""Calibration end to end on the tiny grid: real measurements, resume without re-measuring, reports."""

from __future__ import annotations

import json

import pytest

from configs.errors import UserError
from configs.grids import get_grid
from experiments.calibrate import read_records, run_grid
from experiments.cli import main
from timing.measure import measure


def test_interrupted_calibration_resumes_and_reports(tmp_path, capsys):
    out = tmp_path / "cal"
    out.mkdir()
    configs = get_grid("tiny")
    point = configs[0]
    first = measure(point.model, point.batch, min_seconds=0.05, min_repeats=3)  # as if a killed run finished one
    (out / "records.jsonl").write_text(json.dumps(first) + "\n" + '{"cut short by a kill')
    counts = run_grid("tiny", out, progress=False, min_seconds=0.05)
    assert counts["skipped"] == 1 and counts.get("ok", 0) == len(configs) - 1
    assert run_grid("tiny", out, progress=False) == {"skipped": len(configs)}
    assert len(read_records(out / "records.jsonl")) == len(configs)
    assert main(["calibrate", "--fit-only", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "paper: memcpys + flops" in printed and "profile:" in printed
    profile = json.loads((out / "profile.json").read_text())
    assert profile["device_kind"] and profile["held_out"]["mape"] >= 0
    assert (out / "comparison.md").exists() and list(out.glob("pred_vs_measured_*.png"))


@pytest.mark.parametrize("error,status", [(RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating"), "oom"),
                                          (ValueError("compile failed"), "error")])
def test_failed_configuration_is_recorded_and_the_grid_goes_on(tmp_path, monkeypatch, error, status):
    import timing.measure as measure_mod

    real, calls = measure_mod.compile_step, []

    def fail_first(cfg, b, devices=1):  # the device runs out of memory (or the compiler fails) on one
        calls.append(cfg)
        if len(calls) == 1:
            raise error
        return real(cfg, b, devices)

    monkeypatch.setattr(measure_mod, "compile_step", fail_first)
    counts = run_grid("tiny", tmp_path, progress=False, min_seconds=0.01)
    assert counts[status] == 1 and counts["ok"] == len(get_grid("tiny")) - 1
    failed = [r for r in read_records(tmp_path / "records.jsonl") if r["status"] != "ok"]
    assert failed[0]["status"] == status and failed[0]["message"]


def test_bad_input(tmp_path, capsys):
    assert main(["calibrate", "--grid", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown timing grid 'nope'" in capsys.readouterr().err
    assert main(["calibrate", "--fit-only", "--out", str(tmp_path / "empty")]) == 2
    assert "holds no timing records" in capsys.readouterr().err
    with pytest.raises(UserError):
        get_grid("")
