"""The planner under a law with a `moe` section: dense and mixture-of-experts candidates side by side, the best of
each, which wins and by how much (with the interval of the difference), memory from all experts' weights, and a
dense law's plan unchanged."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.schema import ModelConfig
from smallest_loss.configs.spaces import get_space, load_space_file, space_to_toml
from smallest_loss.experiments.cli import main
from smallest_loss.model.params import count_params
from smallest_loss.scaling.budget import parse_budget
from smallest_loss.scaling.chinchilla import ChinchillaLaw
from smallest_loss.scaling.laws import LawFile
from smallest_loss.scaling.moe_law import MoeLaw
from smallest_loss.scaling.plan import PlanInputs, moe_specs
from smallest_loss.scaling.planner import make_plan, plan_with_inputs
from smallest_loss.timing.counts import MoeSpec, train_memory_bytes, train_step_bytes, train_step_flops
from smallest_loss.timing.profile import DeviceProfile, save_profile

# Constants of the order of a small CPU sweep's Chinchilla law, written out; delta < 0: experts lower the N term
# (Ludziejewski et al. 2025 find the same sign), by exp(delta ln Ehat): 0.81 at 8 experts.
HELPS = MoeLaw(form="joint", a=12.0, b=270.0, c=0.3, alpha=0.23, beta=0.44, delta=-0.1)
HURTS = dataclasses.replace(HELPS, delta=0.1)
FITTED = dict(fitted_range=dict(N=[1e5, 1e7], D=[1e7, 1e9], C=[1e13, 1e16], E=[1.0, 8.0]))


def law_file(moe: MoeLaw, samples: bool = False) -> LawFile:
    """A law file as fit --form moe writes one: the dense restriction as its main law, the MoE law in `moe`."""
    if samples:
        rng = np.random.default_rng(0)
        draws = {k: v * (1 + 0.02 * rng.standard_normal(200)) for k, v in moe.constants.items() if v}
        draws |= {k: np.zeros(200) for k, v in moe.constants.items() if not v}
        moe = dataclasses.replace(moe, samples=draws)
    E, A, B, alpha, beta = moe.dense()
    return LawFile(ChinchillaLaw(E=E, A=A, B=B, alpha=alpha, beta=beta), diagnostics=FITTED, moe=moe)


def step_seconds(d, n, h, w, s, v, b, activation="gelu", norm="rmsnorm", tied=True, dtype=None, moe=None):
    """A hand-made step time: a fixed cost plus the step's FLOPs (router and experts counted) at 1e10 FLOP/s."""
    return 1e-3 + train_step_flops(d, n, h, w, s, v, b, activation, norm, tied, moe=moe) / 1e10


def test_candidates_carry_active_and_total_parameters():
    space = get_space("cpu")
    plan = plan_with_inputs(parse_budget("1e15"), law_file(HELPS), PlanInputs(space))
    c = plan.scores.candidates
    assert set(np.unique(c.E)) == {1, 2, 4, 8}  # 1 plus the powers of two up to the law's largest fitted count
    moe, dense = plan.moe_choice.moe, plan.moe_choice.dense
    cfg = ModelConfig(v=space.v, d=moe.d, n=moe.n, h=moe.h, w=moe.w, s=moe.s, experts=moe.experts, top_k=moe.top_k)
    assert moe.params == count_params(cfg).active and moe.params_total == count_params(cfg).total
    assert moe.params_total > moe.params and dense.params_total == dense.params and dense.experts == 1
    expected = train_memory_bytes(moe.d, moe.n, moe.h, moe.w, moe.s, space.v, moe.b, moe=_spec(moe))
    assert moe.memory_bytes == pytest.approx(expected)
    assert moe.flops_per_step > train_step_flops(moe.d, moe.n, moe.h, moe.w, moe.s, space.v, moe.b)  # the router
    assert moe_specs(dataclasses.replace(space, experts=(1, 16), top_k=(1, 2)), HELPS) == (
        (1, 1, 1),
        (16, 1, 1),
        (16, 2, 1),
    )


def _spec(row):
    return MoeSpec(row.experts, row.top_k, row.granularity)


def test_the_comparison_follows_the_law():
    inputs = PlanInputs(get_space("cpu"))
    budget = parse_budget("1e15")
    helps = plan_with_inputs(budget, law_file(HELPS, samples=True), inputs)
    hurts = plan_with_inputs(budget, law_file(HURTS), inputs)
    assert helps.moe_choice.winner == "moe" and helps.best.is_moe
    assert hurts.moe_choice.winner == "dense" and not hurts.best.is_moe
    for plan, law in ((helps, HELPS), (hurts, HURTS)):
        m = plan.moe_choice
        by_hand = [law.loss(r.params, r.tokens, r.experts) for r in (m.moe, m.dense)]
        assert m.difference == pytest.approx(by_hand[0] - by_hand[1], rel=1e-9)
        assert m.moe.tokens == pytest.approx(1e15 / (6 * m.moe.params), rel=1e-9)  # C = 6 N_act D
    lo, hi = helps.moe_choice.difference_interval
    assert lo < helps.moe_choice.difference < hi < 0 and helps.moe_choice.significant
    assert hurts.moe_choice.difference_interval is None  # no samples, no interval
    data = json.loads(json.dumps(helps.to_dict()))
    assert data["moe_choice"]["winner"] == "moe" and data["best"][0]["experts"] > 1
    assert "## Dense vs mixture of experts" in helps.to_markdown() and "**the mixture of experts wins**" in (
        helps.to_markdown()
    )


def test_moe_loses_at_a_tight_memory_limit():
    space, budget, law = get_space("cpu"), parse_budget("1e15"), law_file(HELPS)
    free = plan_with_inputs(budget, law, PlanInputs(space))
    assert free.moe_choice.winner == "moe"
    # half the memory the dense optimum needs with one sequence a pass (gradient accumulation): weights bind
    d = free.moe_choice.dense
    limit = 1.4 * 0.5 * train_memory_bytes(d.d, d.n, d.h, d.w, d.s, space.v, d.b, micro_batches=d.b)
    tight = plan_with_inputs(budget, law, PlanInputs(space, memory_limit=limit))
    m = tight.moe_choice
    assert m.winner == "dense" and m.difference > 0 and tight.dropped["memory"] > 0
    assert all(r.memory_bytes * 1.4 <= limit for r in (m.dense, m.moe))
    assert m.moe.params_total * 16 <= limit < free.moe_choice.moe.memory_bytes  # all experts' weights counted


def test_time_budget_prices_moe_steps_and_serving_uses_active_parameters():
    law, space = law_file(HELPS), get_space("cpu")
    plan = plan_with_inputs(parse_budget("60s"), law, PlanInputs(space, step_seconds=step_seconds))
    m = plan.moe_choice
    assert m.step_times == "given" and "given step-time function" in plan.to_markdown()
    for r in (m.dense, m.moe):
        flops = train_step_flops(r.d, r.n, r.h, r.w, r.s, space.v, r.b, moe=_spec(r) if r.is_moe else None)
        assert r.step_seconds == pytest.approx(1e-3 + flops / 1e10)
        assert r.tokens == r.steps * r.b * r.s and r.steps * r.step_seconds <= 60.0
    money = plan_with_inputs(
        parse_budget("$0.01"), law, PlanInputs(space, step_seconds=step_seconds, price_per_hour=1.2)
    )
    assert money.moe_choice.moe.steps * money.moe_choice.moe.step_seconds <= 30.0 and money.moe_choice.winner
    serving = plan_with_inputs(parse_budget("1e15"), law, PlanInputs(space, inference_tokens=2e8))
    r = serving.moe_choice.moe
    assert r.tokens == pytest.approx((1e15 - 2 * r.params * 2e8) / (6 * r.params), rel=1e-9)  # 2 N_act per token


def test_a_dense_law_plans_as_before():
    dense = law_file(HELPS)
    dense = LawFile(dense.law, diagnostics=dense.diagnostics)
    plan = plan_with_inputs(parse_budget("1e15"), dense, PlanInputs(get_space("cpu")))
    assert plan.moe_choice is None and plan.scores.candidates.E is None
    data = plan.to_dict()
    assert "moe_choice" not in data and "experts" not in data["best"][0] and "params_total" not in data["best"][0]
    # the same law as a MoE law whose space searches no experts: the same answer, at E = 1
    only_dense = dataclasses.replace(get_space("cpu"), experts=(1,))
    moe = plan_with_inputs(parse_budget("1e15"), law_file(HELPS), PlanInputs(only_dense))
    assert (moe.best.d, moe.best.n, moe.best.tokens) == (plan.best.d, plan.best.n, plan.best.tokens)
    assert moe.best.loss == pytest.approx(plan.best.loss, rel=1e-12) and moe.moe_choice.moe is None
    assert "no MoE shape searched" in moe.moe_choice.note


def test_cli_plan_with_a_moe_law(tmp_path, capsys):
    path = law_file(HELPS, samples=True).save(tmp_path / "moe_law.json")
    assert main(["plan", "--law", str(path), "--budget", "1e15", "--space", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "## Dense vs mixture of experts" in out and "wins** by" in out and "95% interval" in out
    assert make_plan("1e15", path, space="cpu").moe_choice.winner == "moe"


def test_profile_prices_moe_steps_by_its_counts(tmp_path):
    """A profile's time model counts each MoE's work through its variant label; its records say whether those step
    times were measured (MoE records beside the profile) or extrapolated (dense records only)."""
    profile = DeviceProfile(device_kind="cpu", model="exact", coefficients=(1e-10, 1e-11, 1e-3), peak_flops=1e12,
                            bandwidth=1e11, held_out={})  # fmt: skip
    path = save_profile(tmp_path / "calibration" / "profile.json", profile)
    law = law_file(HELPS).save(tmp_path / "moe_law.json")
    plan = make_plan("1min", law, path, space="cpu", budget_covers="steps")
    r, space = plan.moe_choice.moe, get_space("cpu")
    args = (r.d, r.n, r.h, r.w, r.s, space.v, r.b)
    by_hand = 1e-10 * train_step_flops(*args, moe=_spec(r)) + 1e-11 * train_step_bytes(*args, moe=_spec(r)) + 1e-3
    assert r.step_seconds == pytest.approx(by_hand, rel=1e-9)
    assert plan.moe_choice.step_times == "extrapolated" and "(step time extrapolated)" in plan.to_markdown()
    record = dict(status="ok", config=dict(d=32, n=1, h=2, w=128, s=16, v=256, experts=4, top_k=1))
    (tmp_path / "calibration" / "records.jsonl").write_text(json.dumps(record) + "\n")
    measured = make_plan("1min", law, path, space="cpu", budget_covers="steps")
    assert measured.moe_choice.step_times == "measured" and measured.moe_choice.moe == plan.moe_choice.moe
    quantised = save_profile(tmp_path / "w4" / "profile.json", dataclasses.replace(profile, bits={"weights": 4}))
    refused = make_plan("1min", law, quantised, space="cpu", budget_covers="steps").moe_choice
    assert refused.moe is None and refused.dense is not None and "refuses MoE" in refused.note


def test_space_file_names_the_moe_shapes(tmp_path):
    path = tmp_path / "moe.toml"
    path.write_text('base = "cpu"\nexperts = [1, 16]\ntop_k = [1, 2]\n')
    space = load_space_file(path)
    assert (space.experts, space.top_k, space.granularity) == ((1, 16), (1, 2), ())
    assert load_space_file_text(space_to_toml(space), tmp_path) == space
    assert "experts" not in space_to_toml(get_space("cpu"))  # unset: the law's own, and old files read the same
    plan = make_plan("1e15", law_file(HELPS), space=str(path))
    assert {(r.experts, r.top_k) for r in plan.rows} <= {(1, 1), (16, 1), (16, 2)} and plan.best.experts == 16
    with pytest.raises(UserError, match="experts"):
        dataclasses.replace(space, experts=(0, 4))


def load_space_file_text(text, folder):
    (folder / "again.toml").write_text(text)
    return dataclasses.replace(load_space_file(folder / "again.toml"), name="moe")
