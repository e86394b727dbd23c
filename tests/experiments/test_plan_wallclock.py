"""Time budgets that pay for the whole run: the plan prices start-up, compile, steps, evaluations and saves; the
old meaning (`--budget-covers steps`) and old profiles plan as before."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest
from smallest_loss.configs.designs import get_design
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.schema import DataConfig
from smallest_loss.experiments import plan_cmd
from smallest_loss.experiments.cli import main
from smallest_loss.scaling.laws import load_law
from smallest_loss.scaling.planner import make_plan
from smallest_loss.scaling.verify import (
    LOAD_FILE,
    Verification,
    corpus_load,
    run_clock,
    trained_loss,
    verify_config,
    verify_line,
)
from smallest_loss.timing.profile import load_profile, save_profile
from smallest_loss.timing.wallclock import TERMS, Cadence, WallClock

ROOT = Path(__file__).resolve().parents[2]
LAW = ROOT / "results/cpu/quickstart/law.json"
OLD_PROFILES = [
    ROOT
    / "tests/timing/data/profile_v4_quickstart.json",  # the quickstart profile of 2026-12-05 before wall-clock terms
    ROOT / "tests/timing/data/profile_v3_quickstart.json",
]
CLOCK = WallClock(
    host=(0.0, 0.0),
    compile=(2.0, 0.5, 1.0),
    forward_fraction=0.4,
    save=(0.1, 1.0),
    startup=(1.0, 0.1),
    loop_held_out=dict(mape=0.05, max_ape=0.1, probes=3),
)
CADENCE = Cadence(eval_every=0, eval_points=0, checkpoint_every=100)


def with_clock(tmp_path: Path, clock: WallClock = CLOCK) -> Path:
    profile = dataclasses.replace(load_profile(OLD_PROFILES[0]), wall_clock=clock.to_dict())
    return save_profile(tmp_path / "profile.json", profile)


@pytest.mark.parametrize("path", OLD_PROFILES)
def test_an_old_profile_loads_and_plans_the_steps_as_before(path):
    profile = load_profile(path)
    assert profile.clock is None
    run, steps = make_plan("20s", LAW, profile), make_plan("20s", LAW, profile, budget_covers="steps")
    assert run.budget_covers == steps.budget_covers == "steps" and run.best == steps.best
    assert run.best.wall_clock is None and "for the training steps alone" in run.to_markdown()


def test_budget_covers_steps_reproduces_the_plan_without_wall_clock_terms(tmp_path):
    """With no host cost, a profile's wall-clock terms change nothing when the budget covers the steps alone."""
    old = make_plan("60s", LAW, OLD_PROFILES[0], cadence=CADENCE)
    new = make_plan("60s", LAW, with_clock(tmp_path), budget_covers="steps", cadence=CADENCE)
    assert new.best == old.best and new.rows == old.rows


def test_the_whole_run_fits_the_budget_and_its_terms_sum_to_it(tmp_path):
    profile = with_clock(tmp_path, dataclasses.replace(CLOCK, host=(0.001, 0.0)))
    steps_only = make_plan("60s", LAW, profile, budget_covers="steps", cadence=CADENCE)
    plan = make_plan("60s", LAW, profile, cadence=CADENCE)
    terms = plan.best.wall_clock
    assert plan.budget_covers == "run" and set(terms) == {*TERMS, "total"}
    assert terms["total"] == pytest.approx(sum(terms[k] for k in TERMS))
    assert 50 < terms["total"] <= 60.0 * 1.001  # the run fills the budget, start-up and compile included
    assert terms["steps"] == pytest.approx(plan.best.steps * plan.best.step_seconds)
    assert plan.best.tokens < steps_only.best.tokens  # the fixed terms cost tokens
    assert "wall-clock of the run: start-up" in plan.to_markdown()


def test_a_budget_smaller_than_start_up_and_compile_is_refused_with_the_way_out(tmp_path, capsys):
    profile = str(with_clock(tmp_path))
    assert main(["plan", "--budget", "2s", "--law", str(LAW), "--profile", profile]) == 2
    assert "--budget-covers steps" in capsys.readouterr().err
    assert main(["plan", "--budget", "2s", "--law", str(LAW), "--profile", profile, "--budget-covers", "steps"]) == 0


def test_plan_json_and_verify_report_each_term(tmp_path, capsys):
    args = ["plan", "--budget", "60s", "--law", str(LAW), "--profile", str(with_clock(tmp_path)), "--json"]
    assert main(args) == 0
    plan = json.loads(capsys.readouterr().out)
    # The recipe's corpus (the standard library's sources) loaded here, as the run would load it: part of start-up.
    assert plan["budget_covers"] == "run" and set(plan["best"][0]["wall_clock"]) == {*TERMS, "total", "corpus_load"}
    predicted = plan["best"][0]["wall_clock"]
    assert 0 < predicted["corpus_load"] < predicted["startup"]
    predicted = {k: predicted[k] for k in (*TERMS, "total")}
    actual = {k: 1.1 * v for k, v in predicted.items()}
    v = Verification("run", 1.0, 1.0, 0.01, 0.01, 10, 1.0, None, 0, predicted, actual)
    line = verify_line(v).splitlines()[-1]
    assert line.startswith("verify wall-clock") and all(f"{term} " in line for term in TERMS) and "+10%" in line
    assert (
        Verification.from_dict({k: x for k, x in v.to_dict().items() if "wall_clock" not in k}).actual_wall_clock
        is None
    )


def test_the_corpus_load_is_priced_in_start_up_and_measured_once_for_a_verified_plan(tmp_path):
    profile = with_clock(tmp_path)
    plain = make_plan("60s", LAW, profile, cadence=CADENCE)
    loaded = make_plan("60s", LAW, profile, cadence=dataclasses.replace(CADENCE, load_seconds=2.0))
    assert loaded.best.wall_clock["startup"] == pytest.approx(plain.best.wall_clock["startup"] + 2.0)
    assert loaded.best.wall_clock["corpus_load"] == 2.0 and "corpus_load" not in plain.best.wall_clock
    assert loaded.best.steps < plain.best.steps  # two seconds fewer for the steps
    startup = loaded.best.wall_clock["startup"]
    assert f"start-up {startup:.3g} s (loading the corpus 2 s)" in loaded.to_markdown()
    # Kept beside the verified run: a rerun reads it and prices (so plans) the same run.
    design = get_design("tiny-isoflop")
    first = corpus_load(design, tmp_path / "verify")
    assert first > 0 and corpus_load(design, tmp_path / "verify") == first
    stored = json.loads((tmp_path / "verify" / LOAD_FILE).read_text())
    assert stored == dict(corpus="stdlib", seconds=first)
    # As `plan --verify` asks for it (its folder a string), and not at all where nothing prices the start-up.
    args = argparse.Namespace(profile=[str(profile)], budget_covers="run", budget="60s", verify=True,
                              verify_out=str(tmp_path / "cli"), out=None)  # fmt: skip
    assert plan_cmd._corpus_load(args, design) > 0 and (tmp_path / "cli" / LOAD_FILE).is_file()
    for change in (dict(budget="1e15"), dict(budget_covers="steps"), dict(profile=[])):
        assert plan_cmd._corpus_load(argparse.Namespace(**{**vars(args), **change}), design) == 0.0
    # A recipe whose corpus is not on this machine: a plan alone does not price its loading; --verify refuses.
    elsewhere = dataclasses.replace(design, base=dataclasses.replace(design.base, data=DataConfig(str(tmp_path / "x"))))
    assert plan_cmd._corpus_load(argparse.Namespace(**{**vars(args), "verify": False}), elsewhere) == 0.0
    with pytest.raises(UserError, match="does not exist"):
        plan_cmd._corpus_load(argparse.Namespace(**{**vars(args), "verify_out": str(tmp_path / "v2")}), elsewhere)


def test_a_plan_that_covers_the_run_verifies_a_run_that_ends_on_its_clock(tmp_path):
    """The verified run of a whole-run budget ends on the clock (`train.end_within`, tests/model/test_clock.py); one
    whose budget covers the steps alone trains the planned steps."""
    profile = with_clock(tmp_path)
    run, steps = make_plan("60s", LAW, profile, cadence=CADENCE), make_plan("60s", LAW, profile, budget_covers="steps")
    assert run_clock(run) == 60.0 and run_clock(steps) is None and run_clock(make_plan("1e12", LAW, profile)) is None
    design = get_design("quick-isoflop")
    config = verify_config(run.best, run.space, design, end_within=run_clock(run))
    assert config.train.end_within == 60.0 and config.total_steps == run.best.steps
    assert verify_config(steps.best, steps.space, design).train.end_within == 0.0
    v = Verification("run", 1.5, 1.52, 0.01, 0.012, 450, 59.9, None, 0, end_within=60.0, planned_steps=500)
    assert "trained 450 steps (planned 500, -10.0%: it ended on its 60 s clock) in run: loss 1.5200 vs predicted " \
           "1.5000 (+1.3%)" in verify_line(v)  # fmt: skip
    assert Verification.from_dict(v.to_dict()) == v
    assert "planned" not in verify_line(dataclasses.replace(v, end_within=None, planned_steps=None))
    # the loss the law predicts for the steps it trained, beside the plan's for those planned
    law, best = load_law(LAW), run.best
    fewer = trained_loss(best, law, 0.8 * best.tokens)
    assert fewer == pytest.approx(best.loss + law.law.loss(best.params, 0.8 * best.tokens)
                                  - law.law.loss(best.params, best.tokens))  # fmt: skip
    assert fewer > best.loss > trained_loss(best, law, 1.2 * best.tokens)
    assert trained_loss(best, law, best.tokens) is None  # the planned tokens: nothing to move
    line = verify_line(dataclasses.replace(v, predicted_loss=best.loss, predicted_trained_loss=fewer))
    assert f"; {fewer:.4f} for the steps it trained, {1.52 / fewer - 1:+.1%})" in line
