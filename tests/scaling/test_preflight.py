"""Measuring before choosing: the best candidates by the profile timed on this machine, the space scored again with
their measured steps (again while a new one comes first), kept for reruns, refused where it cannot hold; `plan
--measure` end to end with real timings."""

from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path

import pytest
import smallest_loss.scaling.preflight as preflight_module
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.spaces import get_space
from smallest_loss.experiments.cli import main
from smallest_loss.model.runs import environment
from smallest_loss.scaling.budget import parse_budget
from smallest_loss.scaling.laws import load_law
from smallest_loss.scaling.plan import candidate_keys, score
from smallest_loss.scaling.plan_result import Preflight, row_key
from smallest_loss.scaling.plan_setup import build_plan_inputs
from smallest_loss.scaling.planner import calibrated_space, make_plan
from smallest_loss.scaling.preflight import (
    CONFIRM_SECONDS,
    MAX_ROUNDS,
    SECONDS,
    confirm_seconds,
    key_model,
    preflight,
    profile_weight,
    time_again,
)
from smallest_loss.scaling.verify import AFTER_FILE, Verification, after_reading, timed_after, verify_line
from smallest_loss.timing.profile import load_profile, save_profile

ROOT = Path(__file__).resolve().parents[2]
LAW = ROOT / "results/cpu/quickstart/law.json"
PROFILE = ROOT / "results/cpu/quickstart/calibration/profile.json"
BUDGET = parse_budget("1min")


@pytest.fixture(scope="module")
def setup():
    # The committed profile without its drift: its measured steps alone price a plan, whatever the hour the test
    # runs (a profile's price is weighed in only within an hour of its calibration; `_drifting` makes one that is)
    law, profile = load_law(LAW), dataclasses.replace(load_profile(PROFILE), drift=None)
    return law, profile, build_plan_inputs(calibrated_space(get_space("cpu"), profile)[0], profile)  # as make_plan


class Slower:
    """A stand-in for the machine: every step measures at the profile's price, the first `slow` keys asked for at
    `factor` times it; records what it was asked."""

    def __init__(self, inputs, factor: float = 2.0, slow: int = 1):
        self.inputs, self.factor, self.slow, self.asked = inputs, factor, slow, []

    def __call__(self, keys, space, profile):
        scores = score(BUDGET, load_law(LAW), dataclasses.replace(self.inputs, measured_steps=None))
        priced = dict(zip(map(tuple, candidate_keys(scores.candidates).tolist()), scores.step_seconds, strict=True))
        out = []
        for key in keys:
            self.asked.append(key)
            out.append(priced[key] * (self.factor if len(self.asked) <= self.slow else 1.0))
        return out


def test_the_best_by_the_profile_are_measured_and_a_slow_one_loses_its_place(setup):
    law, profile, inputs = setup
    before = score(BUDGET, law, inputs)
    top = [tuple(k) for k in candidate_keys(before.candidates)[before.order[:3]].tolist()]
    machine = Slower(inputs, factor=2.0, slow=2)  # the profile's two best measure twice their price
    measured_inputs, done = preflight(BUDGET, law, inputs, profile, k=3, measure=machine)
    assert machine.asked[:3] == top and done.rounds >= 1 and done.steps[0].round == 1
    assert done.steps[0].measured == pytest.approx(2 * done.steps[0].priced) and done.steps[0].error == pytest.approx(
        -0.5
    )
    after = score(BUDGET, law, measured_inputs)
    best = tuple(candidate_keys(after.candidates)[after.order[0]].tolist())
    assert best != top[0] and best in done.seconds  # the new best was measured too
    assert after.step_seconds[after.order[0]] == pytest.approx(done.seconds[best])
    assert len(done.steps) == len(set(machine.asked)) <= 3 * MAX_ROUNDS
    profile_price = dict(zip(map(tuple, candidate_keys(before.candidates).tolist()), before.step_seconds, strict=True))
    assert all(m.priced == pytest.approx(profile_price[m.key]) for m in done.steps)  # the profile's, never rescaled
    chosen = next(m for m in done.steps if m.key == best)
    assert chosen.first is not None and machine.asked.count(best) == 2  # the winner timed again, and priced at that


def test_a_fast_fluke_is_timed_again_before_it_wins(setup):
    """The fastest of several measurements is biased fast: a candidate whose first measurement came out at half its
    price (a fluke) would win by it; it is timed again, priced at the second measurement, and the plan moves on."""
    law, profile, inputs = setup
    before = score(BUDGET, law, inputs)
    keys = [tuple(k) for k in candidate_keys(before.candidates)[before.order[:6]].tolist()]
    fluke, asked = keys[2], []
    priced = dict(zip(map(tuple, candidate_keys(before.candidates).tolist()), before.step_seconds, strict=True))

    def machine(todo, *_):
        asked.extend(todo)
        return [priced[k] * (0.5 if k == fluke and asked.count(k) == 1 else 1.0) for k in todo]

    measured_inputs, done = preflight(BUDGET, law, inputs, profile, k=3, measure=machine)
    step = next(m for m in done.steps if m.key == fluke)
    assert step.first == pytest.approx(0.5 * step.priced) and step.measured == pytest.approx(step.priced)
    assert "confirmed after" in done.line()
    after = score(BUDGET, law, measured_inputs)
    assert tuple(candidate_keys(after.candidates)[after.order[0]].tolist()) == keys[0]  # as the profile ranked it


def test_a_plan_made_after_measuring_says_what_was_measured(setup, tmp_path, monkeypatch):
    law, profile, inputs = setup
    monkeypatch.setattr(preflight_module, "measure_keys", lambda *_: pytest.fail("measured for real"))
    plain = make_plan(BUDGET, law, profile, space="cpu")
    assert plain.preflight is None and "measured here" not in plain.to_markdown()
    _, done = preflight(BUDGET, law, inputs, profile, k=2, folder=tmp_path, measure=Slower(inputs, 1.1, 0))
    assert all(m.error == pytest.approx(0.0) for m in done.steps)  # measured at their price: nothing moves
    measured = make_plan(BUDGET, law, profile, space="cpu", measure=2, measured_folder=tmp_path)  # read back, kept
    assert row_key(measured.best) == row_key(plain.best) and measured.preflight == done
    assert measured.profile_step_seconds == pytest.approx(plain.best.step_seconds)
    assert "measured here before choosing (the 2 best by the profile, 1 round" in measured.to_markdown()
    assert measured.to_dict()["measured"]["steps"][0]["config"] == done.steps[0].label
    kept = json.loads((tmp_path / next(p.name for p in tmp_path.glob("measured-*.json"))).read_text())
    assert kept == dict(Preflight(done.steps, 2, 1).to_dict(), finished=True)


def test_measurements_are_kept_and_a_rerun_plans_the_same_run(setup, tmp_path):
    law, profile, inputs = setup
    first, done = preflight(BUDGET, law, inputs, profile, k=2, folder=tmp_path, measure=Slower(inputs, 1.5, 2))

    def fail(*_):
        raise AssertionError("measured again")

    again, kept = preflight(BUDGET, law, inputs, profile, k=2, folder=tmp_path, measure=fail)
    assert kept.steps == done.steps and again.measured_steps == first.measured_steps
    assert score(BUDGET, law, again).order[0] == score(BUDGET, law, first).order[0]  # the same plan
    # Cut short while measuring (not finished): the rerun goes on from what was kept.
    path = next(tmp_path.glob("measured-*.json"))
    cut = dict(json.loads(path.read_text()), finished=False)
    cut["steps"] = cut["steps"][:1]
    path.write_text(json.dumps(cut))
    machine = Slower(inputs, 1.0, 0)
    _, resumed = preflight(BUDGET, law, inputs, profile, k=2, folder=tmp_path, measure=machine)
    assert resumed.steps[0] == done.steps[0] and done.steps[0].key not in machine.asked
    other = dataclasses.replace(profile, noise_floor=0.5)  # another profile: its own file
    _, fresh = preflight(BUDGET, law, inputs, other, k=1, folder=tmp_path, measure=Slower(inputs, 1.0, 0))
    assert len(fresh.steps) == 1 and len(list(tmp_path.glob("measured-*.json"))) == 2
    (tmp_path / next(p.name for p in tmp_path.glob("measured-*.json"))).write_text("{not json")
    with pytest.raises(UserError, match="unreadable measured steps"):
        for _ in range(2):  # whichever file was cut short
            preflight(BUDGET, law, inputs, profile, k=2, folder=tmp_path, measure=fail)
            preflight(BUDGET, law, inputs, other, k=1, folder=tmp_path, measure=fail)


def test_a_step_that_could_not_be_timed_keeps_its_price_and_says_so(setup):
    law, profile, inputs = setup
    _, done = preflight(BUDGET, law, inputs, profile, k=1, measure=lambda keys, *_: [None] * len(keys))
    (step,) = done.steps
    assert not step.timed and step.measured == step.priced and "not timed here" in done.line()
    best = make_plan(BUDGET, load_law(LAW), profile, space="cpu").best
    assert Preflight(done.steps, 1, 1).priced(best) is None  # not a measurement: no second price to report


def test_preflight_refuses_what_it_cannot_measure(setup):
    law, profile, inputs = setup
    with pytest.raises(UserError, match="measure at least one"):
        preflight(BUDGET, law, inputs, profile, k=0)
    with pytest.raises(UserError, match="FLOPs budget"):
        preflight(parse_budget("1e12"), law, inputs, profile)
    with pytest.raises(UserError, match="give one \\(--profile\\)"):
        preflight(BUDGET, law, inputs, None)
    elsewhere = dataclasses.replace(profile, device_kind="TPU v5 lite")
    with pytest.raises(UserError, match="calibrated on TPU v5 lite"):
        preflight(BUDGET, law, inputs, elsewhere)


def test_the_verify_line_gives_the_measured_price_and_the_profiles():
    v = Verification("run", 1.5, 1.52, 0.010, 0.0104, 100, 2.0, None, 0, profile_step_seconds=0.0125)
    assert v.time_error == pytest.approx(0.04) and v.calibrated_time_error == pytest.approx(0.0104 / 0.0125 - 1)
    line = verify_line(v)
    assert "vs predicted 10.00 ms (+4.0%) (measured before the run; the profile priced 12.50 ms, -16.8%)" in line
    assert Verification.from_dict(v.to_dict()) == v
    drifted = dataclasses.replace(v, actual_step_seconds=0.0125, part_step_seconds=[0.0098, 0.0121, 0.0140, 0.0139])
    line = verify_line(drifted)
    assert "its quarters ran 9.80-14.00 ms a step (the machine's speed moved across the prediction" in line
    assert Verification.from_dict(drifted.to_dict()) == drifted
    steady = dataclasses.replace(drifted, part_step_seconds=[0.0124, 0.0125, 0.0126, 0.0125])
    assert verify_line(steady).endswith("quarters ran 12.40-12.60 ms a step") and "moved" not in verify_line(steady)


def test_the_step_timed_again_after_the_run_says_what_a_miss_was():
    """The verified step timed again after the run, as before it: the machine changed speed (the step alone now runs
    as the run did), or the run's steps were slower than the step alone (which still times as priced)."""
    v = Verification("run", 1.5, 1.52, 0.010, 0.0125, 100, 2.0, None, 0, profile_step_seconds=0.011)
    slowed = dataclasses.replace(v, after_step_seconds=0.0124)
    line = verify_line(slowed)
    assert "timed again after the run 12.40 ms (+24.0% on the price) (the machine slowed after the price" in line
    assert Verification.from_dict(slowed.to_dict()) == slowed
    assert slowed.to_dict()["after_error"] == pytest.approx(0.24) and v.after_error is None
    loop = dataclasses.replace(v, after_step_seconds=0.0102)
    assert "(+2.0% on the price) (the step alone timed as priced before and after the run: the run's own steps ran " \
           "slower)" in verify_line(loop)  # fmt: skip
    sped = dataclasses.replace(v, actual_step_seconds=0.0080, after_step_seconds=0.0082)
    assert "the machine sped up after the price was measured" in verify_line(sped)
    for unclear in (0.0150, 0.0070):  # the step alone off its price and off the run: neither reading holds
        assert "timed again after the run" in verify_line(dataclasses.replace(v, after_step_seconds=unclear))
        assert after_reading(dataclasses.replace(v, after_step_seconds=unclear)) is None
    within = dataclasses.replace(v, actual_step_seconds=0.0105, after_step_seconds=0.0125)  # +5%: no miss to read
    assert after_reading(within) is None and "on the price)" in verify_line(within)
    assert "timed again" not in verify_line(v)  # not timed again: nothing said
    usage = dict(wall=2.0, cpu_user=3.0, cpu_system=0.6, minor_faults=500, involuntary_switches=250, gc_seconds=0.05)
    spent = verify_line(dataclasses.replace(loop, steps_usage=usage))  # on a miss: what the process spent meanwhile
    assert spent.endswith("; while it trained the process held 1.80 cores, 36.0 ms CPU a step (17% system), 5 page "
                          "faults a step, 2.5 preemptions a step, garbage collection 0.05 s")  # fmt: skip
    assert "while it trained" not in verify_line(dataclasses.replace(within, steps_usage=usage))
    assert Verification.from_dict(dataclasses.replace(loop, steps_usage=usage).to_dict()).steps_usage == usage


def test_the_step_timed_after_the_run_is_kept_for_a_rerun(tmp_path):
    calls = []

    def remeasure():
        calls.append(1)
        return 0.0123

    assert timed_after(tmp_path, None) is None and not (tmp_path / AFTER_FILE).exists()
    assert timed_after(tmp_path, remeasure) == 0.0123 and timed_after(tmp_path, remeasure) == 0.0123
    assert len(calls) == 1  # the rerun read it back
    (tmp_path / AFTER_FILE).write_text("{cut")
    assert timed_after(tmp_path, remeasure) == 0.0123 and len(calls) == 2  # unreadable: timed again
    (tmp_path / AFTER_FILE).unlink()
    assert timed_after(tmp_path, lambda: None) is None and not (tmp_path / AFTER_FILE).exists()


def test_only_a_step_priced_at_a_measurement_is_timed_again(setup, tmp_path, monkeypatch):
    law, profile, inputs = setup
    monkeypatch.setattr(
        preflight_module, "measure_keys", lambda keys, space, p, seconds: [0.5 if p is profile else None]
    )
    assert time_again(make_plan(BUDGET, law, profile, space="cpu")) is None  # priced by the profile alone
    preflight(BUDGET, law, inputs, profile, k=2, folder=tmp_path, measure=Slower(inputs, 1.1, 0))
    measured = make_plan(BUDGET, law, profile, space="cpu", measure=2, measured_folder=tmp_path)
    assert measured.preflight.profile is profile and time_again(measured)() == 0.5  # with the profile it priced with


def test_the_best_is_confirmed_over_a_share_of_the_budget_and_timed_again_as_long(setup, tmp_path, monkeypatch):
    """The first measurements take SECONDS each; the best's confirmation, which prices the run, a twelfth of the time
    budget (at most CONFIRM_SECONDS), kept with the step, and the step timed after the run is timed as long."""
    law, profile, inputs = setup
    here = dataclasses.replace(profile, device_kind=environment()["device_kind"])  # measurable on this machine
    asked, machine = [], Slower(inputs, 1.0, 0)

    def this_machine(keys, space, p, seconds=None):
        asked.append(seconds)
        return machine(keys, space, p)

    monkeypatch.setattr(preflight_module, "measure_keys", this_machine)
    _, done = preflight(BUDGET, law, inputs, here, k=2, folder=tmp_path)
    assert confirm_seconds(BUDGET) == CONFIRM_SECONDS == 5.0  # a minute's twelfth
    assert asked[0] is None and asked[-1] == CONFIRM_SECONDS  # first at SECONDS, the confirmation longer
    confirmed = [m for m in done.steps if m.first is not None]
    assert len(confirmed) == 1 and confirmed[0].timed_for == CONFIRM_SECONDS
    assert all(m.timed_for is None for m in done.steps if m.first is None)
    plan = make_plan(BUDGET, law, here, space="cpu", measure=2, measured_folder=tmp_path)  # read back: kept
    assert plan.preflight.steps == done.steps and "confirmed over 5 s" in plan.to_markdown()
    assert time_again(plan)() > 0 and asked[-1] == CONFIRM_SECONDS
    for text, seconds in (("3s", SECONDS), ("24s", 2.0), ("2h", CONFIRM_SECONDS), ("$5", CONFIRM_SECONDS)):
        assert confirm_seconds(parse_budget(text)) == pytest.approx(seconds), text


def test_a_key_trains_the_model_it_names():
    space_cpu = build_plan_inputs(get_space("cpu"), load_profile(PROFILE)).space
    m = key_model((64, 2, 4, 256, 64, 16, 1, 4, 2, 1), space_cpu, None)
    assert (m.d, m.n, m.h, m.w, m.s, m.experts, m.top_k, m.bits_weights) == (64, 2, 4, 256, 64, 4, 2, None)
    dense = key_model((64, 2, 4, 256, 64, 16, 1, 1, 1, 1), space_cpu, {"weights": 4})
    assert dense.experts == 0 and dense.bits_weights == 4


def test_plan_measure_end_to_end_times_real_steps(tmp_path, capsys, monkeypatch):
    """`plan --measure 1` on a profile of this machine's device: real compiled steps of the best candidates."""
    monkeypatch.setattr(preflight_module, "SECONDS", 0.1)  # the test's own timing: short
    monkeypatch.setattr(preflight_module, "CONFIRM_SECONDS", 0.2)
    here = dataclasses.replace(load_profile(PROFILE), device_kind=environment()["device_kind"])
    path = str(save_profile(tmp_path / "profile.json", here))
    base = ["plan", "--budget", "20s", "--law", str(LAW), "--profile", path, "--json"]
    assert main([*base, "--measure", "1"]) == 0
    plan = json.loads(capsys.readouterr().out)
    steps = plan["measured"]["steps"]
    assert steps and all(s["timed"] and s["measured"] > 0 for s in steps)
    best = plan["best"][0]["step_seconds"]
    measured_best = any(s["measured"] == pytest.approx(best) for s in steps)
    assert measured_best or plan["measured"]["rounds"] == MAX_ROUNDS  # measured, or the rounds ran out first
    assert main([*base, "--measure", "-1"]) == 2 and "give a count" in capsys.readouterr().err
    assert main([*base[:-1], "--measure", "1", "--budget", "1e12"]) == 2
    assert "FLOPs budget" in capsys.readouterr().err


def _drifting(profile, drift=0.08, mape=0.05, age_minutes=5.0):
    """The committed profile as a calibration of `age_minutes` ago on a machine whose speed drifted by `drift`."""
    created = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=age_minutes)
    return dataclasses.replace(profile, drift=drift, held_out=dict(profile.held_out, mape=mape),
                               created=created.isoformat(timespec="seconds"))  # fmt: skip


def test_the_profile_s_price_is_weighed_in_by_the_machine_s_drift_and_the_model_s_error(setup):
    """w = D^2 / (2 D^2 + h^2) for a profile of this hour: more where the machine drifts more, less where the model
    errs more, never past 1/2; none for a profile that does not say its drift or its time, is older than an hour,
    was re-timed, or whose prices the candidates measured now are 1.5 times off (the machine in another state)."""
    _, profile, _ = setup
    assert profile.drift is None and profile_weight(profile, 1.0) == 0.0  # the committed profile: the measurement
    assert profile_weight(_drifting(profile), 1.0) == pytest.approx(0.08**2 / (2 * 0.08**2 + 0.05**2))
    weights = [profile_weight(_drifting(profile, drift=d), 1.0) for d in (0.005, 0.02, 0.08, 0.3, 3.0)]
    assert weights == sorted(weights) and weights[0] < 0.01 and 0.49 < weights[-1] < 0.5
    assert profile_weight(_drifting(profile, mape=0.2), 1.0) < profile_weight(_drifting(profile, mape=0.02), 1.0)
    assert profile_weight(_drifting(profile, age_minutes=61), 1.0) == 0.0
    assert profile_weight(_drifting(profile, age_minutes=-5), 1.0) == 0.0  # a clock that disagrees: not weighed
    assert profile_weight(dataclasses.replace(_drifting(profile), created="2026-12-07"), 1.0) == 0.0  # a day only
    assert profile_weight(dataclasses.replace(_drifting(profile), retimed=dict(factor=1.2)), 1.0) == 0.0
    assert profile_weight(_drifting(profile), 1.45) == profile_weight(_drifting(profile), 1 / 1.45) > 0
    assert profile_weight(_drifting(profile), 1.55) == profile_weight(_drifting(profile), 1 / 1.55) == 0.0


def test_measured_steps_are_priced_at_the_measurement_weighed_with_the_profile(setup, tmp_path, monkeypatch):
    """Each measured step's price is measured^(1-w) x priced^w and the candidates not measured are priced at the
    median ratio so weighed; the plan, the report and a rerun say and keep it."""
    law, _, inputs = setup
    profile = _drifting(setup[1])
    measured_inputs, done = preflight(BUDGET, law, inputs, profile, k=2, folder=tmp_path,
                                      measure=Slower(inputs, 1.3, 10))  # fmt: skip
    w = done.weight
    assert 0 < w < 0.5 and w == pytest.approx(profile_weight(profile, done.scale))
    for m in done.steps:
        assert done.seconds[m.key] == pytest.approx(m.measured ** (1 - w) * m.priced**w)
        assert min(m.priced, m.measured) * (1 - 1e-9) <= done.seconds[m.key] <= max(m.priced, m.measured) * (1 + 1e-9)
    assert any(m.priced * 1.1 < done.seconds[m.key] < m.measured for m in done.steps)  # a slow one: between the two
    assert measured_inputs.measured_scale == pytest.approx(done.scale ** (1 - w)) and done.scale > 1
    assert f"weighed {1 - w:.2f} against the profile's prices {w:.2f}" in done.line()
    kept = json.loads(next(tmp_path.glob("measured-*.json")).read_text())
    assert kept["weight"] == pytest.approx(w) and kept["finished"]
    # A rerun (a verified run resumed, maybe an hour later) prices as the first run did, whatever the weight now.
    monkeypatch.setattr(preflight_module, "profile_weight", lambda *_: 0.0)
    again, kept_done = preflight(BUDGET, law, inputs, profile, k=2, folder=tmp_path, measure=lambda *_: pytest.fail())
    assert kept_done.weight == pytest.approx(w) and again.measured_steps == measured_inputs.measured_steps
    monkeypatch.setattr(preflight_module, "measure_keys", lambda *_: pytest.fail("measured for real"))
    monkeypatch.setattr(preflight_module, "profile_weight", lambda *_: w)
    plan = make_plan(BUDGET, law, profile, space="cpu", measure=2, measured_folder=tmp_path)
    assert plan.preflight.weight == pytest.approx(w)
    assert plan.measured_step_seconds == plan.preflight.measured(plan.best)
    assert plan.best.step_seconds == pytest.approx(plan.measured_step_seconds ** (1 - w) * plan.profile_step_seconds**w)


def test_the_verify_line_gives_the_measurement_and_the_profile_s_price_beside_their_weighing():
    v = Verification("run", 1.5, 1.52, 0.0110, 0.0104, 100, 2.0, None, 0, profile_step_seconds=0.0100,
                     measured_step_seconds=0.0115, after_step_seconds=0.0105)  # fmt: skip
    line = verify_line(v)
    assert v.measured_time_error == pytest.approx(0.0104 / 0.0115 - 1)
    assert v.after_error == pytest.approx(0.0105 / 0.0115 - 1)  # the step alone against the step alone
    assert ("vs predicted 11.00 ms (-5.5%) (measured before the run 11.50 ms, -9.6%, weighed with the profile's "
            "10.00 ms, +4.0%)") in line  # fmt: skip
    assert "timed again after the run 10.50 ms (-8.7% on the measurement)" in line
    assert Verification.from_dict(v.to_dict()) == v
    assert v.to_dict()["measured_time_error"] == pytest.approx(-0.0957, abs=1e-4)
    missed = dataclasses.replace(v, actual_step_seconds=0.0090, after_step_seconds=0.0091)
    assert "the machine sped up after the price was measured" in verify_line(missed)
