"""Re-timing a profile to the machine's speed now: anchors chosen at calibration, timed again for real, the profile
rescaled by their median ratio, kept for reruns, refused where it cannot hold; `plan --retime` end to end."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import smallest_loss.timing.retime as retime_module
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.grids import get_grid
from smallest_loss.configs.spaces import get_space
from smallest_loss.experiments.cli import main
from smallest_loss.model.runs import environment
from smallest_loss.scaling.planner import calibrated_space, make_plan
from smallest_loss.timing.measure import record_config
from smallest_loss.timing.profile import Retiming, calibrated_ranges, load_profile, rescaled, save_profile
from smallest_loss.timing.retime import (
    check_retimable,
    floor_from_noise,
    machine_drift,
    noise_floor_of,
    noise_shift_and_spread,
    pick_anchors,
    retime_once,
    retime_profile,
    with_anchors,
)
from smallest_loss.timing.wallclock import WallClock

ROOT = Path(__file__).resolve().parents[2]
LAW = ROOT / "results/cpu/quickstart/law.json"
OLD = ROOT / "tests/timing/data/profile_v4_quickstart.json"  # a profile from before anchors
CLOCK = WallClock((1e-3, 1e-7), (2.0, 0.5, 1.0), 0.4, (0.1, 1.0), (1.0, 0.1), dict(mape=0.05, max_ape=0.1, probes=3))
SHAPE = dict(d=64, n=2, h=2, w=256, s=32, v=256, b=4)


def tiny_anchors(seconds: float = 0.01) -> tuple[dict, ...]:
    """Two configurations of the tiny grid as a profile's anchors, 'measured' at `seconds` a step."""
    points = get_grid("tiny")[:2]
    return tuple(dict(config=record_config(c), batch=b, devices=k, step_seconds=seconds) for c, b, k in points)


@pytest.fixture
def profile():
    """The quickstart profile of 2026-12-05 with wall-clock terms and tiny anchors, on this machine's device."""
    old = load_profile(OLD)
    return dataclasses.replace(
        old, device_kind=environment()["device_kind"], wall_clock=CLOCK.to_dict(), anchors=tiny_anchors()
    )


def test_anchors_are_measured_configurations_at_the_quartiles_of_their_step_times():
    records = [dict(status="ok", config=dict(d=i), batch=4, device_count=1, step_seconds=0.01 * i) for i in range(1, 9)]
    records += [
        dict(status="oom", config=dict(d=99), batch=4),
        dict(status="ok", config=dict(d=50), batch=4, device_count=2, step_seconds=0.2),  # more devices
    ]
    anchors = pick_anchors(records, "median")
    assert [a["config"]["d"] for a in anchors] == [3, 5, 7] and all(a["devices"] == 1 for a in anchors)
    assert [a["step_seconds"] for a in anchors] == pytest.approx([0.03, 0.05, 0.07])
    external = [dict(r, source="records") for r in records]
    assert pick_anchors(external, "median") == () and pick_anchors(records[:1], "median")[0]["config"] == dict(d=1)


@pytest.mark.parametrize("whole_run", [True, False])
def test_a_rescaled_profile_prices_the_step_and_on_cpu_every_term_by_the_factor(profile, whole_run):
    timing = Retiming(0.8, (("d64-n2-s32-b4", 0.01, 0.008),), whole_run, "2026-12-06T00:00:00+00:00")
    scaled = rescaled(profile, timing)
    bare = profile.predict_with(profile.model, profile.coefficients, **SHAPE)
    host = CLOCK.host_seconds(SHAPE["b"], SHAPE["s"])
    expected = 0.8 * bare + (0.8 if whole_run else 1.0) * host
    assert scaled.predict_step_seconds(**SHAPE) == pytest.approx(expected, rel=1e-12)
    assert scaled.clock.compile_seconds(4, 1e6) == pytest.approx(
        (0.8 if whole_run else 1.0) * CLOCK.compile_seconds(4, 1e6)
    )
    assert scaled.retiming == timing and "0.800 times" in timing.line() and "x0.800" in timing.line()


def test_a_change_within_twice_the_noise_floor_is_not_applied(profile):
    """Seconds of anchors on a shared machine catch its spells; within what its noise explains, the calibration's
    minutes of rounds price a run better, so the profile keeps its speed (and says what was measured)."""
    within = Retiming(0.92, (("d64-n2-s32-b4", 0.01, 0.0092),), True, "2026-12-06T00:00:00+00:00", threshold=0.1)
    assert within.factor == 1.0 and "not every anchor beyond what the machine's noise explains (+-10%" in within.line()
    assert rescaled(profile, within).predict_step_seconds(**SHAPE) == pytest.approx(
        profile.predict_step_seconds(**SHAPE)
    )
    beyond = dataclasses.replace(within, measured=0.85, anchors=(("a", 0.01, 0.0085), ("b", 0.02, 0.016)))
    assert beyond.factor == 0.85 and Retiming.from_dict(beyond.to_dict()) == beyond
    # Anchors that disagree (one caught in a spell: 0.62, 0.84, 0.98 on the shared CPU) move nothing.
    spell = dataclasses.replace(beyond, measured=0.84, anchors=(("a", 1, 0.62), ("b", 1, 0.84), ("c", 1, 0.98)))
    assert spell.factor == 1.0


def test_retiming_times_the_anchors_again_and_keeps_what_it_measured(profile, tmp_path):
    now = retime_profile(profile, min_seconds=0.05, rounds=2)
    timing = now.retiming
    assert timing is not None and len(timing.anchors) == 2 and timing.whole_run  # the CPU backend
    ratios = [t1 / t0 for _, t0, t1 in timing.anchors]
    assert timing.measured == pytest.approx(float(np.median(ratios))) and timing.threshold == 0.1  # 2 x 5% default
    moved = [t1 / t0 for _, t0, t1 in timing.anchors]
    agree = all(r > 1.1 for r in moved) or all(r < 1 / 1.1 for r in moved)
    assert timing.factor == (timing.measured if agree else 1.0)
    assert now.predict_step_seconds(**SHAPE) == pytest.approx(timing.factor * profile.predict_step_seconds(**SHAPE))
    assert load_profile(save_profile(tmp_path / "p.json", now)) == now  # anchors and re-timing survive the file
    with pytest.raises(UserError, match="re-timed already"):
        retime_profile(now)


def test_a_kept_retiming_is_reused_by_a_rerun(profile, tmp_path, monkeypatch):
    first = retime_once(profile, tmp_path)
    monkeypatch.setattr(retime_module, "measure_many", lambda *a, **k: pytest.fail("measured again"))
    assert retime_once(profile, tmp_path) == first and len(list(tmp_path.glob("retimed-*.json"))) == 1


def test_profiles_that_cannot_be_retimed_say_why(profile):
    assert check_retimable(profile) is None
    assert "no anchor" in check_retimable(load_profile(OLD))
    assert "calibrated on TPU v5 lite" in check_retimable(dataclasses.replace(profile, device_kind="TPU v5 lite"))
    with pytest.raises(UserError, match="cannot be re-timed: it keeps no anchor"):
        retime_profile(load_profile(OLD))


def test_plan_retime_end_to_end(profile, tmp_path, capsys):
    path = str(save_profile(tmp_path / "profile.json", profile))
    base = ["plan", "--budget", "20s", "--law", str(LAW), "--profile", path, "--json"]
    assert main(base) == 0
    plain = json.loads(capsys.readouterr().out)
    assert "retimed" not in plain
    assert main([*base, "--retime"]) == 0
    plan = json.loads(capsys.readouterr().out)
    factor = plan["retimed"]["factor"]
    assert factor > 0 and len(plan["retimed"]["anchors"]) == 2
    assert main([*base[:-1], "--retime"]) == 0
    assert "re-timed now: the calibration's anchor steps take" in capsys.readouterr().out
    assert main(["plan", "--budget", "20s", "--law", str(LAW), "--profile", str(OLD), "--retime"]) == 2
    assert "keeps no anchor configurations" in capsys.readouterr().err


def test_a_profile_from_before_anchors_takes_them_from_the_records_beside_it(profile, tmp_path, capsys):
    old = dataclasses.replace(profile, anchors=())
    path = save_profile(tmp_path / "profile.json", old)
    records = [
        dict(status="ok", config=a["config"], batch=a["batch"], device_count=1, step_seconds=0.01 * (i + 1))
        for i, a in enumerate(tiny_anchors())
    ]
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"cut short')
    (tmp_path / "noise.json").write_text(json.dumps(dict(median_abs=0.07)))
    filled = with_anchors(old, path)
    assert [a["step_seconds"] for a in filled.anchors] == [0.01, 0.02] and filled.noise_floor == 0.07
    assert with_anchors(old, tmp_path / "elsewhere" / "profile.json") == old  # no records beside it
    assert main(["plan", "--budget", "20s", "--law", str(LAW), "--profile", str(path), "--retime", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["retimed"]["anchors"]) == 2


def test_the_noise_floor_is_the_spread_around_the_machine_s_drift(tmp_path):
    """Configurations timed again after the grid all 30% slower, each within +-2% of that, have a floor of about 2%,
    not 30%: the common shift is the machine's drift; with too few to tell the two apart, the median |difference|."""
    rng = np.random.default_rng(0)
    noise = rng.uniform(-0.02, 0.02, 8)
    diffs = list(1.3 * (1 + noise) - 1)
    shift, spread = noise_shift_and_spread(diffs)
    assert shift == pytest.approx(0.3, abs=0.02) and 0.002 < spread < 0.02
    assert spread == pytest.approx(np.median(np.abs(np.log1p(noise) - np.median(np.log1p(noise)))))
    # medians of an even count: halfway between the middle two (log ratios -0.0101, 0.0100; deviations 0.0100, 0.0198)
    assert noise_shift_and_spread([0.01, -0.03, 0.02, -0.01]) == (
        pytest.approx(0.0, abs=1e-3),
        pytest.approx(0.015, abs=1e-3),
    )
    assert floor_from_noise(dict(median_abs=0.3, diffs=diffs)) == spread
    assert floor_from_noise(dict(median_abs=0.3, diffs=[0.3, 0.31])) == 0.3  # two: shift and noise not told apart
    assert floor_from_noise(dict(median_abs=0.07)) == 0.07  # a noise.json that kept only the summary
    (tmp_path / "noise.json").write_text(json.dumps(dict(median_abs=0.3, diffs=diffs)))
    assert noise_floor_of(tmp_path) == spread and noise_floor_of(tmp_path / "none") is None


def test_a_plan_outside_the_calibrated_ranges_says_its_step_time_is_extrapolated(profile):
    records = [
        dict(status="ok", config=dict(d=d, n=n, h=d // 16, w=4 * d, s=64), batch=b, device_count=1)
        for d, n, b in ((32, 1, 4), (128, 4, 16), (64, 2, 8))
    ]
    ranges = calibrated_ranges(records)
    assert ranges["head_size"] == [16.0, 16.0] and ranges["d"] == [32.0, 128.0] and ranges["b"] == [4.0, 16.0]
    assert dataclasses.replace(profile, ranges=ranges).outside_ranges(d=64, head_size=64, b=16) == [
        "head size 64 (calibrated 16-16)"
    ]
    ranged = dataclasses.replace(profile, ranges=dict(ranges, head_size=[4.0, 4.0]))  # no plan has head size 4
    plan = make_plan("20s", LAW, ranged)
    best = plan.best
    expected = ranged.outside_ranges(d=best.d, n=best.n, head_size=best.d / best.h, mlp_ratio=best.w / best.d,
                                     s=best.s, b=best.b)  # fmt: skip
    assert expected and "the step time is extrapolated beyond the calibration's records" in plan.to_markdown()
    assert all(part in plan.extrapolation for part in expected)
    assert "step time is extrapolated" not in (make_plan("20s", LAW, profile).extrapolation or "")  # no ranges kept


def test_plans_keep_to_the_head_sizes_the_profile_timed(profile):
    """A head size the calibration never timed is not searched (the planner would pick it where the model is
    optimistic); the plan says which were left out. Without ranges (older profiles) the whole space is searched."""
    ranged = dataclasses.replace(profile, ranges=dict(head_size=[16.0, 32.0], mlp_ratio=[2.0, 4.0]))
    space, note = calibrated_space(get_space("cpu"), ranged)
    assert space.head_sizes == (16, 32) and space.mlp_ratios == get_space("cpu").mlp_ratios
    assert note == "not searched, the profile never timed them: head size 8, 64 (calibrated 16-32)"
    plan = make_plan("20s", LAW, ranged)
    assert plan.best.d / plan.best.h in (16, 32) and note in plan.extrapolation
    assert calibrated_space(get_space("cpu"), profile) == (get_space("cpu"), None)
    outside = dataclasses.replace(profile, ranges=dict(head_size=[4.0, 4.0]))  # nothing left: the whole space
    assert calibrated_space(get_space("cpu"), outside)[0] == get_space("cpu")


def test_the_machine_s_drift_is_the_spread_of_its_rounds_speeds():
    """Every configuration's rounds slowed alike in a spell read as the machine's drift, whatever each configuration
    costs or how its model errs; a configuration's own scatter moves the median over configurations little; too few
    rounds or configurations (external records keep none) read None."""
    rng = np.random.default_rng(0)
    speed = np.array([1.0, 1.0, 1.5, 1.0, 1.0, 0.9, 1.0, 1.0])  # a 50% slow spell in round 3, a fast one in round 6
    records = [dict(status="ok", step_seconds=base, round_medians=list(base * speed * rng.lognormal(0, 0.005, 8)))
               for base in (0.002, 0.01, 0.05, 0.3, 1.0)]  # fmt: skip
    want = np.std(np.log(speed) - np.median(np.log(speed)), ddof=1)
    assert machine_drift(records) == pytest.approx(want, rel=0.1)
    steady = [dict(r, round_medians=[r["step_seconds"]] * 8) for r in records]
    assert machine_drift(steady) == pytest.approx(0.0, abs=1e-12)
    one_off = [dict(r, round_medians=list(r["step_seconds"] * speed)) for r in records[:1]] + steady[1:]
    assert machine_drift(one_off) == pytest.approx(0.0, abs=1e-12)  # one configuration's spell is not the machine's
    assert machine_drift(records[:2]) is None
    assert machine_drift([dict(r, round_medians=[1.0, 1.0]) for r in records]) is None
    assert machine_drift([dict(status="ok", step_seconds=1.0, source="records")] * 5) is None
    assert machine_drift([dict(r, status="error") for r in records]) is None
