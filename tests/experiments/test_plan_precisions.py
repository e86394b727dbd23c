"""`smallest-loss plan` with several device profiles, one per precision; one profile plans as before."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from smallest_loss.configs.spaces import get_space
from smallest_loss.experiments.cli import main
from smallest_loss.scaling.laws import CHINCHILLA_PUBLISHED, load_law, save_law
from smallest_loss.scaling.plan_setup import at_profile_precision, choose_space
from smallest_loss.scaling.planner import make_plan
from smallest_loss.scaling.precision_law import PrecisionLaw, TrainingPenalty
from smallest_loss.scaling.precision_plan import plan_precisions
from smallest_loss.scaling.precision_pricing import law_with_training_penalty, profile_penalty
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


def test_an_additive_precision_law_adds_its_penalty_to_the_quantised_plan(files):
    """The additive form prices quantised training as a loss that grows with the tokens: the quantised profile's
    plan predicts the unquantised law's loss plus C D^gamma_D / N^gamma_N e^(-4/gamma), its compute-optimal split
    is the numerical minimum, and the report gives the loss the bits add."""
    law_path, dense, quant = files
    plain = load_law(law_path)
    c = plain.law
    penalty = TrainingPenalty(C=1e-3, gamma_D=0.4, gamma_N=0.1)
    precision = PrecisionLaw(c.E, c.A, c.B, c.alpha, c.beta, gamma_w=1.5, form="additive", penalty=penalty)
    law = dataclasses.replace(plain, precision=precision)
    plans = plan_precisions("60s", law, [dense, quant], space="cpu", top=1)
    assert plans.plans[0].best == plan_precisions("60s", plain, [dense], space="cpu", top=1).plans[0].best
    q = plans.plans[1].best
    added = 1e-3 * q.tokens**0.4 / q.params**0.1 * math.exp(-4 / 1.5)
    assert q.loss == pytest.approx(float(c.loss(q.params, q.tokens)) + added, rel=1e-9)
    assert plans.costs[0] == 0.0 and plans.costs[1] == pytest.approx(added, rel=1e-9)
    single = make_plan("60s", law, quant, space="cpu", top=1)
    assert single.best == q  # one quantised profile: priced alike
    assert single.bits == {"weights": 4} == single.to_dict()["bits"] and plans.plans[0].bits is None
    assert "loss from bits" in plans.to_markdown() and plans.to_dict()["precisions"][1]["precision_loss"] > 0
    quantised = law_with_training_penalty(law, "float32", dict(weights=4)).law
    C = 1e18
    N_opt, D_opt = quantised.optimal_allocation(C)
    grid = np.exp(np.linspace(math.log(N_opt) - 1, math.log(N_opt) + 1, 2001))
    assert N_opt * D_opt * 6 == pytest.approx(C)
    assert N_opt == pytest.approx(grid[np.argmin(quantised.loss(grid, C / (6 * grid)))], rel=2e-3)
    assert N_opt > c.optimal_allocation(C)[0]  # a penalty growing with tokens and falling with N: more N, fewer D


def test_the_quantised_plans_interval_draws_each_samples_own_penalty(files):
    """With bootstrap samples, the interval of a quantised plan under the additive form spreads around the penalised
    loss: each sample's loss carries its own penalty (a sample set without it would sit a whole penalty below)."""
    law_path, _, quant = files
    plain = load_law(law_path)
    c, rng = plain.law, np.random.default_rng(0)
    samples = {k: np.full(64, getattr(c, k)) for k in ("A", "B", "alpha", "beta")}
    samples["E"] = c.E + rng.normal(0, 1e-3, 64)
    draws = dict(gamma_w=1.5 * np.exp(rng.normal(0, 0.05, 64)), penalty_C=np.full(64, 1e-3),
                 penalty_gamma_D=np.full(64, 0.4), penalty_gamma_N=np.full(64, 0.1))  # fmt: skip
    penalty = TrainingPenalty(C=1e-3, gamma_D=0.4, gamma_N=0.1)
    precision = PrecisionLaw(c.E, c.A, c.B, c.alpha, c.beta, gamma_w=1.5, form="additive", penalty=penalty,
                             samples=draws)  # fmt: skip
    law = dataclasses.replace(plain, samples=samples, precision=precision)
    best = make_plan("60s", law, quant, space="cpu", top=1).best
    low, high = best.loss_interval
    assert low < best.loss < high and low > float(c.loss(best.params, best.tokens))
