"""`smallest-loss plan` with several device profiles, one per precision; one profile plans as before."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from smallest_loss.configs.spaces import get_space
from smallest_loss.experiments.cli import main
from smallest_loss.scaling.laws import CHINCHILLA_PUBLISHED, load_law, save_law
from smallest_loss.scaling.plan_setup import at_profile_precision, choose_space
from smallest_loss.scaling.precision_law import PrecisionLaw
from smallest_loss.scaling.precision_plan import plan_precisions, profile_penalty
from smallest_loss.timing.profile import DeviceProfile, save_profile

BASE = DeviceProfile(
    device_kind="cpu",
    model="paper",
    coefficients=(4e-12, 2e-15, 2e-3),
    peak_flops=1e15,
    bandwidth=3e12,
    held_out=dict(mape=0.05),
    price_per_hour=2.0,
)


@pytest.fixture
def files(tmp_path):
    law = save_law(tmp_path / "law.json", CHINCHILLA_PUBLISHED)
    dense = save_profile(tmp_path / "dense.json", BASE)
    half = tuple(c / 2 for c in BASE.coefficients)  # quantised steps at half the time
    quant = save_profile(tmp_path / "w4.json", dataclasses.replace(BASE, coefficients=half, bits=dict(weights=4)))
    return str(law), str(dense), str(quant)


@pytest.mark.slow
def test_two_profiles_plan_with_each_and_say_which_steps_faster(files, tmp_path, capsys):
    law, dense, quant = files
    argv = ["plan", "--budget", "60s", "--law", law, "--space", "cpu", "--top", "1"]
    assert main([*argv, "--profile", dense, "--profile", quant, "--out", str(tmp_path / "p")]) == 0
    printed = capsys.readouterr().out
    assert "# Plans by precision" in printed and "Faster per step: **float32+w4** (0.5 x the float32 step)" in printed
    assert (tmp_path / "p" / "float32+w4" / "plan.json").exists() and (tmp_path / "p" / "precisions.md").exists()
    assert main([*argv, "--profile", dense, "--profile", quant, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = report["precisions"]
    assert [r["precision"] for r in rows] == ["float32", "float32+w4"] and report["fastest_per_step"] == "float32+w4"
    assert rows[1]["tokens"] > rows[0]["tokens"] * 0.99  # twice the steps in the same time: at least as many tokens
    assert all(r["n_factor"] == 1.0 for r in rows)  # the law has no precision section
    # One profile plans exactly as before: the same JSON as the first profile's plan in the comparison.
    assert main([*argv, "--profile", dense, "--json"]) == 0
    single = json.loads(capsys.readouterr().out)
    assert single["best"] == report["plans"][0]["best"]


def test_several_profiles_refuse_verify(files, capsys):
    law, dense, quant = files
    argv = ["plan", "--budget", "60s", "--law", law, "--profile", dense, "--profile", quant, "--verify"]
    assert main(argv) == 2 and "give one --profile" in capsys.readouterr().err


def test_a_float8_profile_plans_in_the_bfloat16_space(files):
    law = load_law(files[0])
    fp8 = dataclasses.replace(BASE, device_kind="NVIDIA H100 80GB HBM3", dtype="float8")
    space, why = choose_space(None, None, law.law, fp8)
    assert space.dtype == "bfloat16" and at_profile_precision(space, fp8).dtype == "float8"
    assert at_profile_precision(get_space("cpu"), BASE) == get_space("cpu")
    assert profile_penalty(law, "float8") == 1.0


def test_a_precision_law_prices_the_bits_and_names_the_precision(files, tmp_path, capsys):
    """With a precision section, the quantised profile's plan counts N as N_eff: the same shape and tokens predict a
    higher loss than the law without it, by exactly the law's factor; the report names the precision to train in."""
    law_path, dense, quant = files
    plain = load_law(law_path)
    gamma = 2.0  # bits: w4 keeps 1 - e^-2 = 86% of the parameters
    c = plain.law
    law = dataclasses.replace(plain, precision=PrecisionLaw(c.E, c.A, c.B, c.alpha, c.beta, gamma_w=gamma))
    assert profile_penalty(law, "float32", dict(weights=4)) == pytest.approx(1 - math.exp(-4 / gamma))
    assert profile_penalty(law, "float32") == 1.0 and profile_penalty(law, "float8") < 1.0
    plans = plan_precisions("60s", law, [dense, quant], space="cpu", top=1)
    free = plan_precisions("60s", plain, [dense, quant], space="cpu", top=1)
    assert plans.plans[0].best == free.plans[0].best  # float32 unquantised: no penalty
    q = plans.plans[1].best
    f = 1 - math.exp(-4 / gamma)
    assert q.loss == pytest.approx(float(plain.law.loss(f * q.params, q.tokens)), rel=1e-9)
    assert q.loss > float(plain.law.loss(q.params, q.tokens))
    chosen = plans.profiles[plans.chosen].precision
    assert plans.plans[plans.chosen].best.loss == min(p.best.loss for p in plans.plans)
    assert f"**Train in {chosen}**" in plans.to_markdown() and plans.to_dict()["chosen"] == chosen


def test_a_cpu_bfloat16_profile_beside_a_float32_one_plans_the_same_space_in_its_dtype(files, tmp_path, capsys):
    """No built-in CPU space is made for bfloat16: the precisions share the float32 profile's space, each priced in
    its own dtype, and the report names the precision to train in."""
    law, dense, _ = files
    slow = tuple(c * 1.3 for c in BASE.coefficients)
    bf16 = save_profile(tmp_path / "bf16.json", dataclasses.replace(BASE, dtype="bfloat16", coefficients=slow))
    assert main(["plan", "--budget", "60s", "--law", law, "--profile", dense, "--profile", str(bf16), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["precision"] for r in report["precisions"]] == ["float32", "bfloat16"]
    assert report["chosen"] == "float32" == report["fastest_per_step"]  # same loss law, slower steps: fewer tokens
    rows = report["precisions"]
    assert rows[1]["loss"] > rows[0]["loss"] and rows[1]["common_step_seconds"] > rows[0]["common_step_seconds"]
