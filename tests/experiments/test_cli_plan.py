"""`smallest-loss plan` and `fit` from the command line: a law from a CSV, a plan from it, bad input."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from smallest_loss.experiments.cli import main
from smallest_loss.scaling.laws import CHINCHILLA_PUBLISHED, save_law
from smallest_loss.timing.profile import DeviceProfile, save_profile


@pytest.fixture
def law_file(tmp_path):
    return str(save_law(tmp_path / "law.json", CHINCHILLA_PUBLISHED))


@pytest.fixture
def profile_file(tmp_path):
    profile = DeviceProfile(
        device_kind="cpu",
        model="paper: memcpys + flops",
        coefficients=(4e-12, 2e-15, 2e-3),
        peak_flops=1e15,
        bandwidth=3e12,
        held_out=dict(mape=0.05),
        price_per_hour=2.0,
    )
    return str(save_profile(tmp_path / "profile.json", profile))


@pytest.mark.slow
def test_fit_from_csv_then_plan(tmp_path, capsys):
    rng = np.random.default_rng(0)
    N, D = np.geomspace(1e7, 1e9, 12), np.geomspace(1e9, 1e11, 12)[rng.permutation(12)]
    loss = CHINCHILLA_PUBLISHED.loss(N, D) * (1 + 0.002 * rng.standard_normal(12))
    csv = tmp_path / "points.csv"
    csv.write_text("N,D,loss,note\n" + "".join(f"{a},{b},{c},x\n" for a, b, c in zip(N, D, loss, strict=True)))
    assert main(["fit", "--csv", str(csv), "--bootstrap", "50", "--out", str(tmp_path / "fitted.json")]) == 0
    assert "alpha" in capsys.readouterr().out and (tmp_path / "fitted.png").exists()
    assert (
        main(
            [
                "plan",
                "--budget",
                "1e21",
                "--law",
                str(tmp_path / "fitted.json"),
                "--space",
                "chinchilla",
                "--out",
                str(tmp_path / "plan"),
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["best"][0]["loss"] > 0 and "loss_interval" in report["best"][0]
    assert (tmp_path / "plan" / "plan.png").exists() and (tmp_path / "plan" / "plan.md").exists()


def test_time_and_money_plans(law_file, profile_file, capsys):
    assert main(["plan", "--budget", "4h", "--law", law_file, "--profile", profile_file]) == 0
    out = capsys.readouterr().out
    assert "space cpu (the space for this profile's cpu in float32)" in out
    assert "Width vs depth" in out and "Time-optimal vs FLOPs-optimal" in out and "Ties: " in out
    # $8 at the profile's $2 per device-hour with a 50% spot discount buys 8 / (2 * 0.5) = 8 hours: the plan is
    # the 8h plan, row for row.
    plans = {}
    for budget, extra in (("$8", ["--spot-discount", "0.5"]), ("8h", [])):
        args = ["plan", "--budget", budget, "--law", law_file, "--profile", profile_file, "--top", "3", "--json"]
        assert main(args + extra) == 0
        plans[budget] = json.loads(capsys.readouterr().out)
    money, time = plans["$8"], plans["8h"]
    assert money["budget_kind"] == "dollars" and time["budget_kind"] == "seconds"
    assert money["seconds"] == pytest.approx(8 / (2.0 * (1 - 0.5)) * 3600) and time["seconds"] == 8 * 3600
    assert len(money["best"]) == 3 and money["best"] == time["best"] and money["by_depth"] == time["by_depth"]
    assert {k: v for k, v in money.items() if k not in ("budget", "budget_kind")} == {
        k: v for k, v in time.items() if k not in ("budget", "budget_kind")
    }
    assert all(row["steps"] * row["step_seconds"] <= 8 * 3600 for row in money["best"])


def test_flops_budget_chooses_the_space_that_holds_the_optimum(law_file, capsys):
    assert main(["plan", "--budget", "1e21", "--law", law_file, "--json", "--top", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    N_opt = CHINCHILLA_PUBLISHED.optimal_allocation(1e21)[0]
    assert report["space"] == "chinchilla" and f"{N_opt:.3g}" in report["space_choice"]
    assert report["best"][0]["params"] == pytest.approx(N_opt, rel=0.02) and "warning" not in report
    assert main(["plan", "--budget", "1e21", "--law", law_file, "--space", "cpu"]) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "largest width d=512" in warnings[0] and "--space chinchilla" in warnings[0]


def test_exact_flops_accounting(law_file, capsys):
    """--flops exact spends the budget at our exact FLOPs per token, more than 6N (attention, output layer)."""
    from smallest_loss.timing.counts import train_step_flops

    assert (
        main(
            [
                "plan",
                "--budget",
                "1e21",
                "--law",
                law_file,
                "--space",
                "chinchilla",
                "--flops",
                "exact",
                "--json",
                "--top",
                "1",
            ]
        )
        == 0
    )
    best = json.loads(capsys.readouterr().out)["best"][0]
    per_token = train_step_flops(best["d"], best["n"], best["h"], best["w"], best["s"], 32000, best["b"]) / (
        best["b"] * best["s"]
    )
    assert best["tokens"] * per_token == pytest.approx(1e21, rel=1e-9)
    assert per_token > 6 * best["params"]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--budget", "4h", "--space", "gpu"], "measured on cpu (cpu, float32) but space gpu is for gpu/tpu"),
        (["--budget", "4h", "--device", "h100-sxm"], "--device h100-sxm is a gpu but the profile was measured on cpu"),
        (["--budget", "1e21", "--inference-tokens", "-1"], "--inference-tokens -1: the tokens to serve must be 0"),
        (["--budget", "1e21", "--top", "0"], "--top 0: show at least one configuration"),
        (["--budget", "1e21", "--top", "-1"], "--top -1: show at least one configuration"),
        (["--budget", "4h", "--max-latency-ms", "0"], "the latency limit must be a positive number"),
        (["--budget", "1e400"], "'1e400' is not a finite number"),
        (["--budget", "$5", "--price-per-hour", "-2"], "a price per device-hour must be a positive number"),
        (["--budget", "1e21", "--spot-discount", "-0.5"], "--spot-discount -0.5 must lie in [0, 1)"),
    ],
)
def test_plan_refusals(law_file, profile_file, extra, message, capsys):
    assert main(["plan", "--law", law_file, "--profile", profile_file, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("error: ")


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--budget", "4 parsecs"], "unknown budget unit"),
        (["--budget", "4h"], "needs a device profile"),
        (["--budget", "1e3", "--space", "cpu"], "too small to train any candidate"),
        (["--budget", "1e20", "--device", "abacus"], "unknown device 'abacus'"),
        (["--budget", "1e20", "--space", "huge"], "unknown search space"),
        (["--budget", "1e20", "--profile", "/nope.json"], "does not exist"),
    ],
)
def test_plan_bad_input(law_file, extra, message, capsys):
    assert main(["plan", "--law", law_file, "--space", "chinchilla", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_bad_law_and_fit_files(tmp_path, capsys):
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["plan", "--budget", "1e20", "--law", str(tmp_path / "bad.json")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    (tmp_path / "few.csv").write_text("N,D,loss\n1e6,1e9,3.0\n")
    assert main(["fit", "--csv", str(tmp_path / "few.csv")]) == 2
    assert "need at least 6" in capsys.readouterr().err
    (tmp_path / "cols.csv").write_text("params,tokens,loss\n1,2,3\n")
    assert main(["fit", "--csv", str(tmp_path / "cols.csv")]) == 2
    assert "N" in capsys.readouterr().err
    assert main(["fit"]) == 2
    assert "either run folders or --csv" in capsys.readouterr().err


@pytest.mark.slow
def test_fit_leaves_out_diverged_runs_and_names_them(tmp_path, capsys):
    from smallest_loss.model.train import RunDiverged, train
    from smallest_loss.scaling.collect import collect_runs

    from tests.conftest import tiny_run

    train(tiny_run(steps=4, eval_every=0, checkpoint_every=0), tmp_path / "runs" / "ok", progress=False)
    with pytest.raises(RunDiverged):
        train(tiny_run(steps=20, lr=1e6, warmup_steps=0, grad_clip=0.0), tmp_path / "runs" / "bad", progress=False)
    records, left_out = collect_runs([tmp_path / "runs"])
    assert [r.name for r in records] == ["ok"] and len(left_out) == 1 and left_out[0].startswith("bad: diverged")
    # The left-out run is named before the fit, so the user sees it even when too few runs remain to fit.
    assert main(["fit", str(tmp_path / "runs"), "--bootstrap", "0"]) == 2
    err = capsys.readouterr().err
    assert "warning: left out bad: diverged" in err and "at least 6" in err
    assert main(["fit", str(tmp_path)]) == 2
    assert "neither a run folder nor a folder of runs" in capsys.readouterr().err


def _metrics(step_seconds, steps, log_every, eval_every, checkpoint_every, compile_s, eval_s, checkpoint_s):
    """Metrics lines as the training loop writes them: every step logged, the wall time read at each host sync
    (every log_every steps, at evaluations and checkpoints). An interval between syncs holds its steps, plus
    compilation (the first), an evaluation (one ending at an eval step) or a checkpoint save (the interval
    after a checkpoint step)."""
    lines, wall, last = [], compile_s, 0
    for step in range(1, steps + 1):
        is_eval, is_ckpt = step % eval_every == 0 or step == steps, step % checkpoint_every == 0
        if step % log_every and not is_eval and not is_ckpt:
            continue
        wall += (step - last) * step_seconds + (eval_s if is_eval else 0.0)
        wall += checkpoint_s if last and last % checkpoint_every == 0 else 0.0
        lines += [dict(step=k, wall_seconds=wall) for k in range(last + 1, step + 1)]
        if is_eval:
            lines[-1]["eval_loss"] = 3.0
        last = step
    return lines


@pytest.mark.parametrize("compile_s,eval_s,checkpoint_s", [(0, 0, 0), (30, 5, 2), (1e3, 1e2, 1e4)])
@pytest.mark.parametrize("log_every,eval_every,checkpoint_every", [(5, 20, 50), (7, 40, 30), (1, 13, 17)])
def test_verify_step_time_leaves_out_compilation_evaluation_and_checkpoints(
    compile_s, eval_s, checkpoint_s, log_every, eval_every, checkpoint_every
):
    from smallest_loss.scaling.verify import steady_step_seconds

    lines = _metrics(0.01, 100, log_every, eval_every, checkpoint_every, compile_s, eval_s, checkpoint_s)
    assert steady_step_seconds(lines, checkpoint_every) == pytest.approx(0.01, rel=1e-9)
    assert steady_step_seconds(lines[:1], checkpoint_every) is None  # one sync: no clean interval


def test_a_runs_quarters_show_the_machine_slowing_down():
    """`step_seconds_by_part`: seconds a step in each quarter of a run's clean intervals, in run order."""
    from smallest_loss.model.runs import step_seconds_by_part

    fast, slow = _metrics(0.01, 100, 5, 1000, 1000, 0, 0, 0), _metrics(0.02, 100, 5, 1000, 1000, 0, 0, 0)
    shift = fast[-1]["wall_seconds"]
    lines = fast + [dict(x, step=x["step"] + 100, wall_seconds=x["wall_seconds"] + shift) for x in slow]
    lines = [{k: v for k, v in x.items() if k != "eval_loss"} for x in lines]
    parts = step_seconds_by_part(lines, 0)
    assert len(parts) == 4 and parts[0] == pytest.approx(0.01) and parts[-1] == pytest.approx(0.02)
    assert parts == sorted(parts) and 0.01 <= parts[1] <= parts[2] <= 0.02
    assert step_seconds_by_part(lines[:6], 0) is None  # one clean interval: no quarters


def test_verify_trains_with_the_recipe():
    from smallest_loss.configs.designs import get_design
    from smallest_loss.configs.spaces import get_space
    from smallest_loss.scaling.plan_result import PlanRow
    from smallest_loss.scaling.verify import verify_config

    design, space = get_design("cpu-isoflop"), get_space("cpu")
    row = PlanRow(64, 3, 2, 256, 64, 16, 2e5, 16 * 64 * 400 + 5, 2.0, 2.0, 21.3, 1)
    config = verify_config(row, space, design)
    assert config.data == design.base.data and config.train.lr == design.base.train.lr
    assert config.total_steps == 400 and config.train.warmup_steps == round(design.warmup_fraction * 400)
    assert (config.model.d, config.model.n, config.model.h, config.model.w) == (64, 3, 2, 256)
    assert (config.model.activation, config.model.norm, config.model.dtype) == (
        space.activation,
        space.norm,
        space.dtype,
    )
    assert config.model.experts == 0  # a dense row trains the dense MLP


def test_verify_trains_a_planned_mixture_of_experts_as_one():
    """A MoE row of a plan trains with its experts, top-k and granularity (it once trained the dense shape), and a
    dense row of the same plan trains the dense MLP even where the recipe's model is a mixture."""
    from smallest_loss.configs.designs import get_design
    from smallest_loss.configs.spaces import get_space
    from smallest_loss.scaling.plan_result import PlanRow
    from smallest_loss.scaling.verify import verify_config

    design, space = get_design("cpu-moe"), get_space("cpu")
    moe = PlanRow(32, 2, 1, 128, 64, 16, 3.3e4, 16 * 64 * 400, 68.0, 1.7, 16.0, 1, experts=8, top_k=2, granularity=2)
    model = verify_config(moe, space, design).model
    assert (model.experts, model.top_k, model.granularity) == (8, 2, 2) and (model.d, model.n, model.w) == (32, 2, 128)
    moe_recipe = dataclasses.replace(design, base=dataclasses.replace(design.base, model=model))
    dense = dataclasses.replace(moe, experts=1, top_k=1, granularity=1)
    assert verify_config(dense, space, moe_recipe).model.experts == 0
    # A plan priced with a quantised profile trains at its bits; one priced unquantised trains unquantised.
    quantised = verify_config(dense, space, design, {"weights": 4, "activations": 6}).model
    assert (quantised.bits_weights, quantised.bits_activations, quantised.bits_kv) == (4, 6, None)
    assert verify_config(dense, space, design).model.bits_weights is None
