"""Recipe sweeps end to end without training: design files, `fit-recipe` on run folders, `plan` choosing the batch."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from smallest_loss.configs.designs import load_design_file
from smallest_loss.configs.schema import ModelConfig, RunConfig, TrainConfig
from smallest_loss.configs.spaces import get_space
from smallest_loss.experiments.cli import main
from smallest_loss.experiments.sweep import plan_runs
from smallest_loss.model.params import count_params
from smallest_loss.model.runs import RunDir
from smallest_loss.scaling.budget import parse_budget
from smallest_loss.scaling.laws import CHINCHILLA_PUBLISHED, LawFile, load_law, save_law
from smallest_loss.scaling.plan import PlanInputs
from smallest_loss.scaling.planner import plan_with_inputs
from smallest_loss.timing.profile import DeviceProfile, save_profile

from tests.scaling.test_recipe import BATCHES, LRS, synthetic_runs

GOOD_TOML = """
name = "my-recipe"
budgets = [2e9]
shapes = [[16, 1, 2], [32, 1, 2]]
batch_sizes = [4, 16]
lrs = [2e-3, 8e-3]
min_steps = 5
[set]
"train.schedule" = "constant"
"""


def test_design_file_crosses_shapes_batches_and_rates(tmp_path):
    path = tmp_path / "d.toml"
    path.write_text(GOOD_TOML)
    design = load_design_file(path)
    runs = plan_runs(design)
    assert len(runs) == 2 * 2 * 2 and design.name == "my-recipe"
    assert {r.config.train.schedule for r in runs} == {"constant"}
    assert {(r.config.train.batch_size, r.config.train.lr) for r in runs} == {
        (4, 2e-3),
        (4, 8e-3),
        (16, 2e-3),
        (16, 8e-3),
    }
    assert all(r.name.endswith(f"-b{r.config.train.batch_size}-lr{r.config.train.lr:.3g}") for r in runs)
    json_path = tmp_path / "d.json"
    json_path.write_text(json.dumps(dict(budgets=[2e9], shapes=[[[16, 1, 2]]], lrs=[1e-3])))
    assert len(plan_runs(load_design_file(json_path))) == 1


@pytest.mark.parametrize(
    "extra, message",
    [
        ("batch = 3\n", "unknown field 'batch'"),
        ("lrs = [-1e-3]\n", "learning rate -0.001 must be a positive number"),
        ("batch_sizes = [0]\n", "batch size 0 must be a positive integer"),
        ('[set]\n"train.lr" = "fast"\n', "expected a number"),
    ],
)
def test_bad_design_files_are_one_line_each(tmp_path, capsys, extra, message):
    path = tmp_path / "bad.toml"
    base = "\n".join(
        line for line in GOOD_TOML.splitlines() if not line.startswith(("lrs", "batch_sizes", "[set]", '"train'))
    )
    path.write_text(base + "\n" + extra)
    assert main(["sweep", "--design", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and str(path) in err[0]
    assert not (tmp_path / "out").exists()


def _write_runs(folder, seq: int = 64) -> None:
    """Run folders in the real format whose summaries carry the synthetic sweep's losses (no training)."""
    for run in synthetic_runs():
        d = {7000: 16, 20000: 32, 70000: 48}[run.N]
        model = ModelConfig(v=256, d=d, n=1, h=2, s=seq)
        train = TrainConfig(batch_size=run.batch, steps=100, lr=run.lr, warmup_steps=5)
        out = RunDir.create(folder / run.name, RunConfig(model=model, train=train), dict(fingerprint="synthetic"))
        out.write_summary(
            dict(
                status="completed", final_eval_loss=run.loss, tokens=run.D, steps=100, params=count_params(model).total
            )
        )


@pytest.fixture(scope="module")
def recipe_law(tmp_path_factory):
    folder = tmp_path_factory.mktemp("recipe")
    _write_runs(folder / "sweep")
    base = save_law(folder / "base.json", CHINCHILLA_PUBLISHED)
    out = folder / "law.json"
    code = main(
        [
            "fit-recipe",
            str(folder / "sweep"),
            "--law",
            str(base),
            "--out",
            str(out),
            "--holdout-batches",
            "8,32",
            "--bootstrap",
            "50",
        ]
    )
    return code, out


@pytest.mark.slow
def test_fit_recipe_writes_the_law_with_its_recipe(recipe_law, capsys):
    code, out = recipe_law
    assert code == 0
    law = load_law(out)
    assert law.law == CHINCHILLA_PUBLISHED and law.recipe is not None and law.recipe.batch.identified
    assert law.recipe.evidence["holdout"]["held_batch_tokens"] == [512.0, 2048.0]
    assert out.with_suffix(".recipe.png").exists()


def _profile(tmp_path) -> str:
    # Per-step overhead makes larger batches faster per token, as on every real device.
    profile = DeviceProfile(
        device_kind="cpu",
        model="paper: memcpys + flops",
        coefficients=(2e-12, 1e-12, 5e-3),
        peak_flops=1e12,
        bandwidth=1e11,
        held_out=dict(mape=0.05),
    )
    return str(save_profile(tmp_path / "profile.json", profile))


@pytest.mark.slow
def test_plan_names_the_batch_rate_and_schedule(recipe_law, tmp_path, capsys):
    _, out = recipe_law
    assert main(["plan", "--budget", "60s", "--law", str(out), "--profile", _profile(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    best = report["best"][0]
    assert report["recipe"]["chosen"] and best["lr"] > 0 and best["b"] in (4, 8, 12, 16, 24, 32, 48, 64)
    assert report["batch_choice"][0]["choice"].startswith("chosen")
    assert main(["plan", "--budget", "60s", "--law", str(out), "--profile", _profile(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "## Recipe" in text and "learning rate" in text and "warmup" in text and "Critical batch" in text


def test_old_law_plans_the_fixed_recipe_with_a_note(tmp_path, capsys):
    law = str(save_law(tmp_path / "law.json", CHINCHILLA_PUBLISHED))
    assert main(["plan", "--budget", "60s", "--law", law, "--profile", _profile(tmp_path)]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Recipe:")]
    assert len(notes) == 1 and "no recipe laws" in notes[0]


@pytest.mark.slow
def test_malformed_recipe_section_is_refused(recipe_law, tmp_path, capsys):
    raw = json.loads(recipe_law[1].read_text())
    raw["recipe"]["batch"]["b_crit"] = "big"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(raw))
    assert main(["plan", "--budget", "60s", "--law", str(bad), "--profile", _profile(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "recipe.batch: b_crit='big' must be a finite number" in err[0]


@pytest.mark.slow
def test_small_critical_batch_stops_the_planner_taking_the_largest_batch(recipe_law, tmp_path):
    recipe = load_law(recipe_law[1]).recipe
    profile = DeviceProfile(
        device_kind="cpu",
        model="paper: memcpys + flops",
        coefficients=(2e-12, 1e-12, 5e-3),
        peak_flops=1e12,
        bandwidth=1e11,
        held_out=dict(mape=0.05),
    )
    inputs = PlanInputs(space=get_space("cpu"), step_seconds=profile.predict_step_seconds)

    def chosen_batch(b_crit: float) -> int:
        batch = dataclasses.replace(recipe.batch, b_crit=b_crit)
        law = LawFile(CHINCHILLA_PUBLISHED, recipe=dataclasses.replace(recipe, batch=batch))
        plan = plan_with_inputs(parse_budget("60s"), law, inputs, top=1)
        return int(plan.best.b)

    largest = max(b for b in get_space("cpu").batch_choices if b * 64 <= recipe.batch.batch_range[1])
    assert chosen_batch(1e9) == largest  # no cost within the range: throughput decides
    assert chosen_batch(100.0) < largest


@pytest.mark.slow
def test_a_critical_batch_that_grows_as_the_loss_falls_allows_larger_batches(recipe_law):
    """With B_crit(L) = 100 (L/L_ref)^-k, the planner's B_crit is taken at each plan's own loss (a fixed point): the
    report's B_crit is the law's at the chosen loss, and with L_ref above the plan's loss the chosen batch is no
    smaller than with k = 0."""
    recipe = load_law(recipe_law[1]).recipe
    profile = DeviceProfile(
        device_kind="cpu",
        model="paper: memcpys + flops",
        coefficients=(2e-12, 1e-12, 5e-3),
        peak_flops=1e12,
        bandwidth=1e11,
        held_out=dict(mape=0.05),
    )
    inputs = PlanInputs(space=get_space("cpu"), step_seconds=profile.predict_step_seconds)
    best, ref = {}, 1.0
    for k in (0.0, 6.0):
        batch = dataclasses.replace(recipe.batch, b_crit=100.0, loss_exponent=k, loss_ref=ref)
        law = LawFile(CHINCHILLA_PUBLISHED, recipe=dataclasses.replace(recipe, batch=batch))
        plan = plan_with_inputs(parse_budget("60s"), law, inputs, top=1)
        best[k] = plan.best
        assert best[k].b_crit == pytest.approx(float(batch.b_crit_at(best[k].loss)))
        # The loss is the law's at the tokens discounted with B_crit at that same loss.
        eff = best[k].tokens * float(batch.data_factor(best[k].b * 64, recipe.reference_batch_tokens, best[k].loss))
        assert best[k].loss == pytest.approx(float(CHINCHILLA_PUBLISHED.loss(best[k].params, eff)), rel=1e-4)
        # Every candidate's loss is that fixed point, not only the best one's.
        c = plan.scores.candidates
        every = plan.scores.tokens * batch.data_factor(c.b * c.s, recipe.reference_batch_tokens, plan.scores.loss)
        np.testing.assert_allclose(plan.scores.loss, CHINCHILLA_PUBLISHED.loss(c.N, every), rtol=1e-9)
        ref = 1.5 * best[k].loss
    assert best[6.0].b_crit > 100.0  # the plan's loss sits below L_ref
    assert best[6.0].b >= best[0.0].b


def test_synthetic_sweep_covers_every_cell():
    runs = synthetic_runs()
    assert len(runs) == 3 * len(BATCHES) * len(LRS)
    assert np.all(np.isfinite([r.loss for r in runs]))


def test_fit_recipe_refuses_folders_without_runs(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    law = str(save_law(tmp_path / "law.json", CHINCHILLA_PUBLISHED))
    assert main(["fit-recipe", str(tmp_path / "empty"), "--law", law, "--out", str(tmp_path / "o.json")]) == 2
    assert "no config.json found" in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()
