"""The main job end to end at test scale: calibrate, sweep, fit, plan, verify, report; a rerun reuses it.

Training outcomes differ between CPUs (XLA's kernels differ), so the end-to-end test checks properties that
hold on any machine where the code is right, never one machine's losses.
"""

from __future__ import annotations

import json
import math
import sys

import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.experiments import quickstart_cmd
from smallest_loss.experiments.cli import main
from smallest_loss.experiments.quickstart import law_used_line, quickstart
from smallest_loss.model.fresh import INTERRUPTED

# The tiny grid timed briefly, the 6-run tiny sweep, few bootstrap resamples: the method, not its accuracy.
TEST_SCALE = dict(
    budget="3s",
    grid="tiny",
    design="tiny-isoflop",
    space="cpu",
    n_boot=20,
    min_seconds=0.05,
    repeats=3,
    budget_covers="steps",  # 3 s of steps: a whole run's start-up and compile alone take longer here
    probes=0,  # no probe runs then: the profile prices the steps alone
    noise=1,  # the noise floor from 1 configuration timed again (8 by default): each is compiled again
    measure=1,  # the plan's best candidate timed before choosing (3 by default)
)


@pytest.mark.slow
def test_quickstart_end_to_end_and_rerun(tmp_path, capsys):
    from pathlib import Path

    import numpy as np
    from smallest_loss.configs.designs import get_design
    from smallest_loss.experiments.sweep import plan_runs
    from smallest_loss.scaling.laws import load_law
    from smallest_loss.timing.profile import load_profile

    out = tmp_path / "qs"
    report = quickstart(out, **TEST_SCALE, retime=True)
    v, best = report["verify"], report["plan"]["best"][0]
    assert v["steps"] >= 1 and best["params"] > 0 and best["tokens"] > 0
    # Byte-level losses lie between 0 and the uniform distribution's ln 256; a law gone degenerate does not.
    for loss in (v["actual_loss"], v["predicted_loss"], v["common_loss"]):
        assert 0 < loss < math.log(256)
    assert v["common_sequences"] == 1024
    assert v["loss_error"] == pytest.approx(v["actual_loss"] / v["predicted_loss"] - 1)
    assert v["predicted_loss"] == best["loss"]  # the plan's first row is the configuration verified
    # The plan priced the machine's speed just before it (the anchors timed again), kept for the rerun below.
    retimed = report["plan"]["retimed"]
    assert retimed["factor"] > 0 and v["retime_factor"] == retimed["factor"]
    assert len(list((out / "plan").glob("retimed-*.json"))) == 1
    # The plan's best candidate was timed on this machine before choosing (kept for the rerun too): where the best
    # row's step is that measurement, the verification gives the profile's price and its error beside it.
    measured = report["plan"]["measured"]
    assert measured["steps"] and len(list((out / "plan").glob("measured-*.json"))) == 1
    if v.get("profile_step_seconds"):
        assert best["step_seconds"] in [m["measured"] for m in measured["steps"]]
        assert v["calibrated_time_error"] == pytest.approx(v["actual_step_seconds"] / v["profile_step_seconds"] - 1)
        assert v["after_step_seconds"] > 0  # and timed again after the run the same way (kept for the rerun below)
    else:
        assert ("calibrated_time_error" in v) == (retimed["factor"] != 1.0 and "time_error" in v)
    # Every promised file exists and parses.
    assert json.loads((out / "report.json").read_text())["budget"] == "3s"
    profile = load_profile(out / "calibration" / "profile.json")
    assert profile.coefficients and profile.held_out
    law = load_law(out / "law.json")
    sweep = json.loads((out / "sweep" / "sweep.json").read_text())
    planned = {r["name"] for r in sweep["runs"]}
    assert sweep["design"] == "tiny-isoflop" and planned == {r.name for r in plan_runs(get_design("tiny-isoflop"))}
    assert all((out / "sweep" / name / "summary.json").exists() for name in planned)
    for name in ("law.png", "plan/plan.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG"), name
    for name in ("calibration/comparison.md", "plan/plan.md"):
        assert (out / name).read_text().strip(), name
    # The report names the configuration it chose and trained, and the verification's run is that one.
    text = (out / "report.md").read_text()
    # It opens with the answer (what to train, what training gave), before any table.
    answer = f"**Train** d={best['d']}, n={best['n']} (h={best['h']}"
    assert answer in text and text.index(answer) < text.index("**Trained it:**") < text.index("|")
    assert "common validation sample" in text
    assert f"d{best['d']}-n{best['n']}-h{best['h']}-w{best['w']}-s{best['s']}-b{best['b']}-" in v["run"]
    # The report says which law it used and why, as the law file records it.
    used = report["law_used"]
    assert used == law.fit_form and isinstance(used["identified"], bool)
    assert used["form"] in ("full", "fixed_E", "tied", "tied_fixed_E")
    # The full law was tried first: reasons why it was not identified are given exactly when the report does not
    # rest on an identified full law.
    reasons = used["not_identified"].get("full", [])
    assert bool(reasons) == (used["form"] != "full" or not used["identified"]) and all(reasons)
    assert law_used_line(used) in text

    # A rerun reuses every finished stage: no timing, sweep run or verification run is redone (their files are
    # unchanged byte for byte), and the same records give the same law, profile, plan and verification.
    kept = [out / "calibration" / name for name in ("records.jsonl", "noise.json", "device.json")]
    runs = [out / "sweep" / name for name in sorted(planned)] + [Path(v["run"])]
    kept += [run / name for run in runs for name in ("metrics.jsonl", "summary.json")]
    before = {path: path.read_bytes() for path in kept}
    capsys.readouterr()
    again = quickstart(out, **TEST_SCALE, retime=True)
    assert {path: path.read_bytes() for path in kept} == before
    relaw = load_law(out / "law.json")
    assert relaw.law == law.law and relaw.intervals == law.intervals
    assert all(np.array_equal(relaw.samples[k], law.samples[k]) for k in law.samples)
    assert load_profile(out / "calibration" / "profile.json") == profile
    assert again["plan"]["best"] == report["plan"]["best"] and again["law_used"] == used
    assert again["calibration"] == report["calibration"]
    assert {k: x for k, x in again["verify"].items() if k != "common_loss"} == {
        k: x for k, x in v.items() if k != "common_loss"
    }
    assert again["verify"]["common_loss"] == pytest.approx(v["common_loss"], rel=1e-6)


def test_law_used_line_names_the_fallback_and_why():
    reduced = dict(
        form="fixed_E",
        identified=True,
        form_description="E fixed at 0.04; A, B, alpha, beta fitted",
        not_identified={"full": ["E ran to its lower bound"]},
    )
    line = law_used_line(reduced)
    assert "E fixed at 0.04" in line and "E ran to its lower bound" in line and "reduced form" in line
    full = dict(form="full", identified=True, form_description="all five constants fitted", not_identified={})
    assert "identified by the sweep" in law_used_line(full)
    # with the fit's standard errors, how far inside its limit the full law's E sits
    margin = law_used_line({**full, "standard_errors": {"full": {"log E": 0.4762, "alpha": 0.2}}})
    assert "(identified by the sweep; standard error of log E 0.48, limit log 2 = 0.69)" in margin


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(budget="abc"), "budget"),
        (dict(budget="$5"), r"not \$5; after it, plan money with: smallest-loss plan --budget .\$5. --price-per-hour"),
        (dict(budget="1e3"), "too small to train one step of any model of space cpu"),
        (dict(design="nope"), "unknown sweep design"),
        (dict(grid="nope"), "grid"),
        (dict(space="nope"), "unknown search space"),
        (dict(measure=-1), "--measure -1: give a count"),
        (dict(n_boot=1), "at least 2 resamples"),
    ],
)
def test_quickstart_refuses_bad_arguments_before_any_stage(tmp_path, kwargs, message):
    with pytest.raises(UserError, match=message):
        quickstart(tmp_path / "qs", **kwargs)
    assert not (tmp_path / "qs").exists()  # refused before the first stage wrote anything


def test_quickstart_refuses_an_output_folder_that_is_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        quickstart(tmp_path / "afile", **TEST_SCALE)


def test_the_command_prints_the_plan_and_the_verification(tmp_path, monkeypatch, capsys):
    """The CLI layer over `quickstart`: what it prints from the report (the stages themselves are tested above)."""
    verified = dict(
        run="qs/verify/d64-n2", predicted_loss=1.84, actual_loss=1.86, predicted_step_seconds=0.025,
        actual_step_seconds=0.03, steps=794, wall_seconds=30.0, common_loss=1.85, common_sequences=1024,
        loss_error=1.86 / 1.84 - 1, time_error=0.2,
    )  # fmt: skip
    best = dict(d=64, n=2, h=1, params=1.15e5, tokens=8.1e5)
    used = dict(form="full", identified=True, form_description="all five fitted", not_identified={})
    report = dict(verify=verified, plan=dict(best=[best]), law_used=used)
    asked = []
    monkeypatch.setattr(
        quickstart_cmd,
        "quickstart",
        lambda out, budget, n_boot, budget_covers="run", retime=False, measure=3: (
            asked.append((retime, measure)) or report
        ),
    )
    assert main(["quickstart", "--out", str(tmp_path / "qs")]) == 0
    out = capsys.readouterr().out
    assert main(["quickstart", "--out", str(tmp_path / "qs2"), "--retime", "--measure", "0"]) == 0
    assert asked == [(False, 3), (True, 0)]
    assert "plan for 1min: d=64 n=2 h=1 (115,000 parameters), 810,000 tokens" in out
    assert "verify: trained 794 steps in qs/verify/d64-n2: loss 1.8600 vs predicted 1.8400 (+1.1%)" in out


def test_a_failed_verify_process_says_how_to_resume(tmp_path, monkeypatch):
    """The verify stage trains in a process of its own: where that process fails, the quickstart says so and how to
    resume, rather than reading a verification that was never written."""
    from smallest_loss.experiments import quickstart as module

    monkeypatch.setattr(sys, "executable", "false")  # a "Python" that exits 1 at once
    with pytest.raises(UserError, match=r"the verify stage's process failed \(exit 1.*--out .*qs to resume it"):
        module._verify_fresh(tmp_path / "qs", "3s", "cpu", "run", "tiny-isoflop", False, 1)


def test_ctrl_c_in_the_verify_process_stops_the_quickstart_as_an_interrupt(tmp_path, monkeypatch):
    """The verify process exits 130 after Ctrl-C (its steps kept): the quickstart stops as interrupted, so the CLI
    says how to continue, not that a stage failed."""
    from smallest_loss.experiments import quickstart as module

    stopped = tmp_path / "stopped"
    stopped.write_text(f"#!/bin/sh\nexit {INTERRUPTED}\n")
    stopped.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(stopped))
    with pytest.raises(KeyboardInterrupt):
        module._verify_fresh(tmp_path / "qs", "3s", "cpu", "run", "tiny-isoflop", False, 1)
