"""Recipe laws (scaling/recipe.py): recovery on synthetic sweeps, the learning-rate vertex, the law file section."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.laws import CHINCHILLA_PUBLISHED, law_from_dict, law_to_dict
from smallest_loss.scaling.recipe import (
    RecipeRun,
    fit_recipe,
    lr_optimum,
    recipe_from_dict,
    recipe_to_dict,
)

SEQ = 64
TRUE = dict(b_crit=2000.0, beta=0.3, K=40.0, c0=-3.7, n_exponent=-0.3, batch_exponent=0.4)
SHAPES = ((7e3, 7e5, 2.4), (2e4, 2.4e5, 2.3), (7e4, 7e4, 2.5))  # (N, D, a_g)
BATCHES = (4, 8, 16, 32, 64)
LRS = tuple(4e-3 * 2.2**k for k in range(5))


def synthetic_runs(
    noise: float = 0.002, seed: int = 0, b_simple: float | None = None, **true: float
) -> list[RecipeRun]:
    """Runs whose final losses follow the batch law plus a parabola in log lr around the lr law (numpy only)."""
    p = dict(TRUE, **true)
    rng = np.random.default_rng(seed)
    runs = []
    for N, D, a in SHAPES:
        for b in BATCHES:
            B = b * SEQ
            lr_star = math.exp(p["c0"] + p["n_exponent"] * math.log(N) + p["batch_exponent"] * math.log(B))
            for lr in LRS:
                best = a + p["K"] * (D / (1 + B / p["b_crit"])) ** -p["beta"]
                loss = (best + 0.05 * math.log(lr / lr_star) ** 2) * (1 + noise * rng.standard_normal())
                runs.append(
                    RecipeRun(
                        f"N{N}-b{b}-lr{lr:.3g}",
                        int(N),
                        int(D),
                        3e10,
                        b,
                        SEQ,
                        lr,
                        loss,
                        b_simple,
                        dict(schedule="cosine", warmup_fraction=0.05, min_lr_ratio=0.1),
                    )
                )
    return runs


@pytest.fixture(scope="module")
def fitted():
    return fit_recipe(synthetic_runs(), reference_batch_tokens=1024, holdout=(512.0, 2048.0), n_boot=200)


@pytest.mark.slow
def test_recovers_the_batch_and_learning_rate_laws(fitted):
    law, cells, _ = fitted
    assert law.batch.identified
    lo, hi = law.batch.intervals["b_crit"]
    assert lo < TRUE["b_crit"] < hi and 0.6 < law.batch.b_crit / TRUE["b_crit"] < 1.6
    # The rates swept bracket every optimum except where lr* falls outside them; the exponents come back.
    assert abs(law.lr.n_exponent - TRUE["n_exponent"]) < 0.08
    assert abs(law.lr.batch_exponent - TRUE["batch_exponent"]) < 0.08


def test_held_out_batches_beat_a_law_without_batch_cost(fitted):
    holdout = fitted[0].evidence["holdout"]
    assert holdout["mape"] < 0.01
    assert holdout["mape"] < holdout["no_cost_mape"]


def test_data_factor_is_one_at_the_reference_batch_and_falls_with_batch(fitted):
    law = fitted[0]
    factor = law.data_factor(np.array([256.0, 1024.0, 4096.0]))
    assert factor[1] == pytest.approx(1.0)
    assert factor[0] > 1.0 > factor[2]


def test_no_batch_cost_is_reported_as_not_identified():
    law, _, _ = fit_recipe(synthetic_runs(b_crit=1e9), reference_batch_tokens=1024, n_boot=0)
    assert not law.batch.identified


def test_lr_vertex_and_unbracketed_ends():
    lrs = np.array([1e-3, 3e-3, 9e-3])
    lr, loss, ok = lr_optimum(lrs, (np.log(lrs) - math.log(3e-3)) ** 2 + 2.0)
    assert ok and lr == pytest.approx(3e-3, rel=1e-6) and loss == pytest.approx(2.0)
    lr, _, ok = lr_optimum(lrs, np.array([3.0, 2.5, 2.0]))  # still falling at the top rate
    assert not ok and lr == 9e-3


def test_too_few_bracketed_cells_is_refused():
    runs = [r for r in synthetic_runs() if r.lr == LRS[0] or r.lr == LRS[1]]  # two rates bracket nothing
    with pytest.raises(UserError, match="widen the design's lrs"):
        fit_recipe(runs, reference_batch_tokens=1024, n_boot=0)


def test_law_file_round_trip_and_old_files(fitted):
    law = fitted[0]
    data = json.loads(json.dumps(law_to_dict(CHINCHILLA_PUBLISHED, recipe=law)))
    back = law_from_dict(data).recipe
    assert back.batch.b_crit == pytest.approx(law.batch.b_crit)
    assert back.lr.lr(1e4, 1024) == pytest.approx(law.lr.lr(1e4, 1024))
    assert recipe_to_dict(back)["reference_batch_tokens"] == 1024
    assert law_from_dict(law_to_dict(CHINCHILLA_PUBLISHED)).recipe is None  # a law file without recipe laws


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.pop("lr"), "must be an object with 'lr' and 'batch'"),
        (lambda r: r["batch"].update(b_crit=-5), "b_crit=-5.0 must be positive"),
        (lambda r: r["lr"].update(c0="x"), "c0='x' must be a finite number"),
        (lambda r: r["batch"].update(batch_range=[1]), "batch_range must be"),
        (lambda r: r["batch"].update(batch_range=[4096, 256]), r"batch_range = \[4096, 256\] is reversed"),
        (lambda r: r["schedule"].update(schedule="zigzag"), "schedule = 'zigzag': use one of cosine, wsd, constant"),
    ],
)
def test_malformed_recipe_section_is_one_clear_error(fitted, change, message):
    raw = json.loads(json.dumps(recipe_to_dict(fitted[0])))
    change(raw)
    with pytest.raises(UserError, match=message):
        recipe_from_dict(raw, "law file x.json")


@pytest.mark.slow
def test_noise_scale_sets_b_crit_only_when_the_losses_cannot():
    pinned, _, _ = fit_recipe(synthetic_runs(b_simple=500.0), reference_batch_tokens=1024, n_boot=100)
    assert pinned.batch.source == "fit" and 0.6 < pinned.batch.b_crit / TRUE["b_crit"] < 1.6
    # Noisy losses (2%) cannot pin B_crit down: the measured noise scale sets it, and the law is still checked.
    loose, _, _ = fit_recipe(synthetic_runs(noise=0.02, b_simple=1800.0), reference_batch_tokens=1024, n_boot=100)
    assert loose.batch.source == "noise scale" and loose.batch.b_crit == pytest.approx(1800.0)
    assert "b_crit_from_losses" in loose.evidence and "b_crit" not in loose.batch.intervals


def _with_windows(runs: list[RecipeRun], exponent: float, seed: int = 0) -> list[RecipeRun]:
    """Each run gains 7 stretches along its curve: losses from 1.6x its final loss down to it, B_simple following
    800 (L/2.5)^-exponent tokens with 20% scatter."""
    rng = np.random.default_rng(seed)
    out = []
    for r in runs:
        losses = r.loss * np.geomspace(1.6, 1.0, 7)
        b = 800.0 * (losses / 2.5) ** -exponent * np.exp(0.2 * rng.standard_normal(7))
        out.append(dataclasses.replace(r, noise_windows=tuple(zip(losses.tolist(), b.tolist(), strict=True))))
    return out


@pytest.mark.slow
def test_b_crit_follows_the_loss_when_the_noise_scale_does():
    runs = _with_windows(synthetic_runs(noise=0.02, b_simple=800.0), exponent=3.0)
    law, cells, _ = fit_recipe(runs, reference_batch_tokens=1024, n_boot=100)
    along = law.evidence["noise_along_runs"]
    assert along["exponent_interval"][0] < 3.0 < along["exponent_interval"][1]
    assert law.batch.loss_exponent == pytest.approx(along["exponent"])
    # B_crit at L_ref is the noise-scale line's value there, and it grows as the loss falls.
    assert law.batch.b_crit == pytest.approx(800.0 * (law.batch.loss_ref / 2.5) ** -3.0, rel=0.3)
    ref = law.batch.loss_ref
    low, high = law.batch.b_crit_at(np.array([ref / 2, ref * 2]))
    assert low > law.batch.b_crit > high
    # A large batch costs less at a low loss.
    assert law.data_factor(4096.0, loss=ref / 2) > law.data_factor(4096.0, loss=ref * 2)
    back = recipe_from_dict(json.loads(json.dumps(recipe_to_dict(law))))
    assert back.batch.b_crit_at(1.5) == pytest.approx(law.batch.b_crit_at(1.5))


@pytest.mark.slow
def test_a_flat_noise_scale_keeps_b_crit_constant():
    law, _, _ = fit_recipe(
        _with_windows(synthetic_runs(noise=0.02, b_simple=800.0), exponent=0.0), reference_batch_tokens=1024, n_boot=100
    )
    assert law.batch.loss_exponent == 0.0
    assert law.batch.b_crit_at(1.0) == law.batch.b_crit_at(3.0)


def test_old_recipe_sections_have_a_constant_b_crit(fitted):
    raw = json.loads(json.dumps(recipe_to_dict(fitted[0])))
    for key in ("loss_exponent", "loss_ref"):
        raw["batch"].pop(key)
    assert recipe_from_dict(raw).batch.loss_exponent == 0.0
    raw["batch"]["loss_ref"] = 0
    with pytest.raises(UserError, match="loss_ref=0.0 must be positive"):
        recipe_from_dict(raw, "law file x.json")
