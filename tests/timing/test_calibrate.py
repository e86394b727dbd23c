"""Calibration end to end on the tiny grid: real measurements, resume after a kill, reports, bad input."""

from __future__ import annotations

import datetime
import json
from types import SimpleNamespace

import pytest
import smallest_loss.timing.calibration as cal
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.grids import get_grid
from smallest_loss.configs.schema import ModelConfig, TrainConfig
from smallest_loss.experiments.cli import main
from smallest_loss.model.runs import environment
from smallest_loss.timing.calibration import measure_key
from smallest_loss.timing.measure import base_record, record_config
from smallest_loss.timing.profile import load_profile
from smallest_loss.timing.retime import floor_from_noise, noise_shift_and_spread

FAST = dict(progress=False, min_seconds=0.02, rounds=3, repeats=3)
N = 2  # configurations the killed session, and then the resumed one, measure (limit=N)


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs (not even `except Exception` handlers)."""


def spy(monkeypatch, name, kill_after=None):
    """Count the calls of a function of timing.calibration (the real one runs); optionally 'kill' the
    calibration at the given call."""
    real, calls = getattr(cal, name), []

    def wrapper(*args, **kwargs):
        calls.append(args)
        if kill_after is not None and len(calls) > kill_after:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(cal, name, wrapper)
    return calls


EARLIER, MEASURED = (1, 2), (0, 3)  # tiny-grid points recorded by an earlier session; measured here (batch 4,
# as in tests/timing/test_counts.py: the test session's compilation cache compiles each program once)


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """A tiny-grid calibration of N configurations one at a time (chunk 1, as on accelerators), killed in
    the second round of the second one, then resumed: its folder, the rounds saved before the kill, and
    what the resumed session prepared (compiled) and timed."""
    out = tmp_path_factory.mktemp("cal")
    points = get_grid("tiny")
    earlier = [dict(base_record(*points[i]), status="ok", rounds=3) for i in EARLIER]
    lines = "".join(json.dumps(r) + "\n" for r in earlier)
    (out / "records.jsonl").write_text(lines + '{"cut short by a kill')  # killed mid-write
    with pytest.MonkeyPatch.context() as m:
        spy(m, "time_round", kill_after=3 + 1)  # 3 rounds of the first configuration, 1 of the second, then killed
        with pytest.raises(Killed):
            cal.run_grid("tiny", out, limit=N, chunk=1, **FAST)
    partial = cal.read_records(out / "partial.jsonl")
    with pytest.MonkeyPatch.context() as m:
        prepared, timed = spy(m, "prepare"), spy(m, "time_round")
        counts = cal.run_grid("tiny", out, limit=1, chunk=1, **FAST)  # the one left unfinished
    return SimpleNamespace(out=out, points=points, partial=partial, prepared=prepared, timed=timed, counts=counts)


@pytest.mark.slow
def test_killed_calibration_resumes_without_re_measuring(resumed, monkeypatch):
    out, points = resumed.out, resumed.points
    assert len(resumed.partial) == 3 + 1  # the rounds timed before the kill
    assert resumed.counts == {"skipped": len(EARLIER) + 1, "ok": 1}  # the earlier session's and the first here
    assert [measure_key(*args) for args in resumed.prepared] == [measure_key(*points[MEASURED[1]])]
    assert len(resumed.timed) == 3 - 1  # the round saved before the kill is not timed again
    records = cal.read_records(out / "records.jsonl")
    assert all(r["status"] == "ok" and r["rounds"] == 3 for r in records)
    assert [measure_key(ModelConfig(**r["config"]), r["batch"]) for r in records] == [
        measure_key(*points[i]) for i in (*EARLIER, *MEASURED)
    ]
    assert not (out / "partial.jsonl").exists()
    prepared = spy(monkeypatch, "prepare")
    assert cal.run_grid("tiny", out, limit=0, **FAST) == {"skipped": len(EARLIER) + N}
    assert prepared == []


@pytest.mark.slow
def test_records_are_complete(resumed):
    """Every field of a timing record (README, "File formats"), from a real measurement."""
    record = cal.read_records(resumed.out / "records.jsonl")[-1]
    assert record["status"] == "ok", record.get("message")
    assert record["repeats"] >= 3 and record["rounds"] == 3 and len(record["round_medians"]) == 3
    assert record["min_seconds"] <= record["best_round_seconds"] <= max(record["round_medians"])
    assert record["sync_every"] == TrainConfig().log_every  # timed at the training loop's cadence
    assert record["min_seconds"] <= record["step_seconds"] <= record["max_seconds"]
    assert record["iqr_seconds"] >= 0 and record["compile_seconds"] > 0
    assert record["xla"]["flops"] > 0 and record["xla"]["bytes_accessed"] > 0 and record["xla"]["peak_bytes"] > 0
    assert record["counts"]["flops"] == pytest.approx(record["xla"]["flops"], rel=0.003)  # tests/timing/test_counts
    point = resumed.points[MEASURED[-1]]
    assert record["batch"] == point.batch and record["dtype"] == "float32" and record["device_kind"]
    assert record["config"] == record_config(point.model) and record["mesh"] == [1, 1]


@pytest.mark.slow
def test_noise_floor_re_measures_one_configuration_at_a_time_on_accelerators(resumed, tmp_path, monkeypatch):
    """On an accelerator (`chunk_size` 1) the configurations measured again are compiled, timed and freed one
    after the other; the result is kept in noise.json and a rerun measures nothing."""
    import smallest_loss.timing.measure as measure_mod

    timed = [r for r in cal.read_records(resumed.out / "records.jsonl") if "step_seconds" in r]
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in timed))
    monkeypatch.setattr(measure_mod, "chunk_size", lambda n: 1)
    live, most = [], []
    real_prepare, real_finish = measure_mod.prepare, measure_mod.finish

    def prepare(*args, **kwargs):
        live.append(args)
        most.append(len(live))
        return real_prepare(*args, **kwargs)

    def finish(item):
        live.pop()
        return real_finish(item)

    monkeypatch.setattr(measure_mod, "prepare", prepare)
    monkeypatch.setattr(measure_mod, "finish", finish)
    noise = cal.noise_floor(tmp_path, k=N, min_seconds=0.02, repeats=3)
    assert noise["configurations"] == N and len(most) == N and max(most) == 1
    assert noise["statistic"] == "median" and all(d > -1 for d in noise["diffs"])
    assert noise["max_abs"] == max(abs(d) for d in noise["diffs"])
    shift, spread = noise_shift_and_spread(noise["diffs"])
    assert noise["shift"] == shift and noise["spread"] == spread and noise["floor"] == floor_from_noise(noise)
    assert noise["floor"] == (noise["median_abs"] if spread is None else spread)
    monkeypatch.setattr(cal, "measure_many", lambda *a, **k: pytest.fail("measured again"))
    assert cal.noise_floor(tmp_path, k=N) == noise == json.loads((tmp_path / "noise.json").read_text())


@pytest.mark.slow
def test_fit_only_writes_table_plots_and_profile(tmp_path, capsys):
    from tests.timing.test_models import synthetic_records

    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in synthetic_records(noise=0.02)))
    (tmp_path / "device.json").write_text(
        json.dumps(dict(device_kind=environment()["device_kind"], peak_flops=1e11, bandwidth=1e10, cache_bytes=2**20))
    )
    assert main(["calibrate", "--fit-only", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "| paper |" in printed and "profile:" in printed and "(model 'paper'," in printed
    profile = load_profile(tmp_path / "profile.json")
    assert profile.model == "paper" and profile.held_out["mape"] < 0.05  # the true model wins
    assert profile.statistic == "median" and profile.cache_bytes == 2**20
    assert datetime.datetime.fromisoformat(profile.created).tzinfo is not None  # its time (a plan weighs it by age)
    table = (tmp_path / "comparison.md").read_text()
    assert "held out" in table and "no (needs a compiled step" in table
    assert len(list(tmp_path.glob("pred_vs_measured_*.png"))) == table.count("| yes |") + table.count("| no (")


def test_failed_configurations_are_recorded_and_the_grid_goes_on(tmp_path, monkeypatch):
    import smallest_loss.timing.measure as measure_mod

    errors = [RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating"), ValueError("compile failed")]

    def compile_step(*_):  # the device runs out of memory on the first, the compiler fails on the next
        raise errors.pop(0)

    monkeypatch.setattr(measure_mod, "compile_step", compile_step)
    assert cal.run_grid("tiny", tmp_path, limit=2, **FAST) == {"skipped": 0, "oom": 1, "error": 1}
    records = cal.read_records(tmp_path / "records.jsonl")
    assert [r["status"] for r in records] == ["oom", "error"] and not (tmp_path / "partial.jsonl").exists()
    assert "RESOURCE_EXHAUSTED" in records[0]["message"] and "compile failed" in records[1]["message"]


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
    with pytest.raises(UserError, match="no successful timing records"):
        cal.noise_floor(tmp_path)

    from tests.timing.test_models import synthetic_records

    mixed = [dict(r, dtype="bfloat16" if i % 2 else "float32") for i, r in enumerate(synthetic_records())]
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mixed))
    assert main(["calibrate", "--fit-only", "--out", str(tmp_path)]) == 2
    assert "several dtypes (bfloat16, float32)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["measure", "--min-seconds", "-1"],
        ["measure", "--rounds", "0"],
        ["calibrate", "--grid", "tiny", "--min-seconds", "0"],
        ["calibrate", "--grid", "tiny", "--repeats", "-3"],
        ["calibrate", "--grid", "tiny", "--rounds", "0"],
        ["calibrate", "--grid", "tiny", "--limit", "0"],
    ],
)
def test_non_positive_options_are_refused_before_compiling(argv, tmp_path, capsys, monkeypatch):
    import smallest_loss.timing.measure as measure_mod

    compiled = []
    monkeypatch.setattr(measure_mod, "compile_step", lambda *a: compiled.append(a))
    out = ["--out", str(tmp_path)] if argv[0] == "calibrate" else []
    assert main([*argv, *out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{argv[-2]} must be positive, got {argv[-1]}" in err[0].replace(".0", "")
    assert compiled == [] and not (tmp_path / "records.jsonl").exists()


@pytest.mark.slow  # times one configuration
def test_measure_only_times_the_grid_and_fits_nothing(tmp_path, capsys):
    out = tmp_path / "cal"
    argv = ["calibrate", "--grid", "tiny", "--out", str(out), "--limit", "1", "--min-seconds", "0.01", "--rounds", "2"]
    assert main([*argv, "--no-noise-check", "--probes", "0", "--measure-only", "--quiet"]) == 0
    assert len((out / "records.jsonl").read_text().splitlines()) == 1 and not (out / "profile.json").exists()
    assert f"smallest-loss calibrate --fit-only --out {out}" in capsys.readouterr().out
    assert main(["calibrate", "--fit-only", "--measure-only", "--out", str(out)]) == 2
    assert "--measure-only times a --grid and fits nothing" in capsys.readouterr().err


def test_the_api_measures_without_fitting_then_fits_what_it_measured(tmp_path, monkeypatch):
    """`calibrate(..., fit=False)` (the API's --measure-only) writes no profile and returns None; called again it
    fits the records already measured. The grid's timing is replaced by synthetic records (its own tests time it)."""
    from tests.timing.test_models import synthetic_records

    measured = []

    def run_grid(grid, out, **_):
        measured.append(grid)
        (out / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in synthetic_records(noise=0.02)))
        rates = dict(device_kind=environment()["device_kind"], peak_flops=1e11, bandwidth=1e10, cache_bytes=2**20)
        (out / "device.json").write_text(json.dumps(rates))
        return {"ok": len(synthetic_records())}

    monkeypatch.setattr(cal, "run_grid", run_grid)
    args = dict(noise_check=False, probes=0, progress=False)
    assert cal.calibrate("tiny", tmp_path, fit=False, **args) is None and measured == ["tiny"]
    assert (tmp_path / "records.jsonl").exists() and not (tmp_path / "profile.json").exists()
    calibration = cal.calibrate("tiny", tmp_path, **args)
    assert calibration.profile.model == "paper" and load_profile(tmp_path / "profile.json") == calibration.profile
