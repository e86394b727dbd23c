"""Recipe laws from anyone's table: the best rate from its neighbourhood, diverged runs, the optimal-batch and
lr(N, D) forms, their held-out comparison and the choice's cost, on synthetic sweeps with a known truth."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.laws import load_law
from smallest_loss.scaling.recipe import exploded, lr_optimum, make_cells, recipe_from_dict, recipe_to_dict
from smallest_loss.scaling.recipe_fit import fit_recipe
from smallest_loss.scaling.recipe_forms import fit_lr_nd, fit_optimal_batch
from smallest_loss.scaling.recipe_synth import SweepTruth, synthetic_rows, write_rows
from smallest_loss.scaling.recipe_table import read_recipe_table

# (N, D) points whose N and D do not vary together, so that lr(N, D) is identified
POINTS = ((2e7, 2e8), (2e7, 8e8), (5e7, 1e9), (1e8, 1e9), (1e8, 4e9), (4e8, 8e9))
FACTORS = (1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8)


def test_best_rate_from_the_neighbourhood_ignores_far_and_diverged_runs():
    """A curve that is a parabola near its optimum (at 1e-3) and flat far below it, with exploded and nan runs
    above: the neighbourhood finds the optimum; one parabola through every run does not."""
    lrs = 1e-3 * 2.0 ** np.arange(-5, 4)
    x = np.log(lrs / 1e-3)
    losses = 3.0 + 0.02 * np.minimum(x**2, 2.0)  # flat below a quarter of the optimum
    clean_lr, clean_loss, ok = lr_optimum(lrs[:7], losses[:7])
    assert ok and clean_lr == pytest.approx(1e-3, rel=1e-6) and clean_loss == pytest.approx(3.0)
    losses[6:] = [9.0, math.nan, math.inf]  # exploding and diverged runs above the optimum
    lr, loss, ok = lr_optimum(lrs, losses)
    assert ok and lr == pytest.approx(1e-3, rel=1e-6) and loss == pytest.approx(3.0)
    keep = np.isfinite(losses)
    c2, c1, _ = np.polyfit(np.log(lrs[keep]), losses[keep], 2)  # today's parabola through every rate
    assert abs(-c1 / (2 * c2) - math.log(1e-3)) > 0.3


def test_reported_loss_stays_within_the_noise_of_the_best_run():
    lrs = np.array([1e-3, 2e-3, 4e-3])
    losses = np.array([2.5, 2.0, 2.0])  # the parabola through them dips to 1.9375
    assert lr_optimum(lrs, losses, noise=0.0)[1] == pytest.approx(2.0)
    assert lr_optimum(lrs, losses, noise=0.01)[1] == pytest.approx(1.99)
    assert lr_optimum(lrs, losses, noise=1.0)[1] == pytest.approx(1.9375)


def test_edge_of_stability_and_unbracketed_ends():
    lrs = np.array([1e-3, 2e-3, 4e-3])
    lr, _, ok = lr_optimum(lrs, np.array([2.2, 2.1, math.nan]))  # best just below a diverged rate
    assert ok and lr == pytest.approx(2e-3)
    lr, _, ok = lr_optimum(lrs, np.array([2.2, 2.1, 2.0]))  # still falling at the top rate
    assert not ok and lr == pytest.approx(4e-3)
    marked = np.array([False, False, True])  # a status says the top run diverged, though its loss looks fine
    assert lr_optimum(lrs, np.array([2.2, 2.1, 2.0]), marked)[:2] == pytest.approx((2e-3, 2.1))


def test_explosion_counts_only_above_the_best_rate():
    lrs = np.array([1e-5, 1e-3, 1e-2, 1e-1])
    flagged = exploded(lrs, np.array([5.0, 2.0, 3.5, math.nan]))
    assert flagged.tolist() == [False, False, True, True]


def test_cells_recover_the_true_rates_from_a_noise_free_sweep_with_divergence(tmp_path):
    truth = SweepTruth()
    runs = read_recipe_table_from(synthetic_rows(truth, POINTS, FACTORS, FACTORS, noise=0.0), tmp_path)
    cells, _ = make_cells(runs)
    assert sum(c.diverged for c in cells) > 0
    for c in cells:
        assert c.lr_star == pytest.approx(truth.lr_star(c.N, c.D), rel=1e-6)
        assert c.loss_star <= c.best_trained + 1e-12
    law = fit_lr_nd(cells)
    assert (law.n_exponent, law.d_exponent) == pytest.approx((truth.a, truth.d), abs=1e-6)


def read_recipe_table_from(rows, folder):
    return read_recipe_table(write_rows(rows, folder / "runs.csv"))


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    rows = synthetic_rows(SweepTruth(), POINTS, FACTORS, FACTORS, noise=0.001, seed=1)
    runs = read_recipe_table_from(rows, tmp_path_factory.mktemp("sweep"))
    return fit_recipe(runs, reference_batch_tokens=65536.0, n_boot=0)


def test_optimal_batch_law_recovers_the_truth(noisy):
    _, cells, _ = noisy
    law = fit_optimal_batch(cells)
    truth = SweepTruth()
    assert law.d_exponent == pytest.approx(truth.b_d, abs=0.05)
    assert law.gamma == pytest.approx(truth.gamma_b, rel=0.2)
    assert law.b_opt(1e8, 4e9) == pytest.approx(truth.b_opt(4e9), rel=0.2)


def test_held_out_comparison_picks_the_optimal_batch_and_the_choice_is_near_the_best_run(noisy):
    law, _, names = noisy
    ev = law.evidence
    assert ev["comparison"]["batch"]["winner"] == "optimal" and law.batch_form == "optimal"
    assert ev["comparison"]["held_points"] == [len(names) - 1]  # the largest (N, D)
    assert ev["choice"]["max"] < 0.005  # the goal: within 0.5% of the point's best trained run
    assert ev["choice_mccandlish_nb"]["mean"] > ev["choice"]["mean"]  # McCandlish picks the smallest batch
    assert ev["diverged_runs"] > 0


def test_law_section_round_trips_and_plans_with_the_loss_factor(noisy):
    law, _, _ = noisy
    back = recipe_from_dict(recipe_to_dict(law))
    assert back.batch_form == law.batch_form and back.optimal_batch == law.optimal_batch
    assert back.lr.form == law.lr.form
    N, D = 1e8, 4e9
    assert back.loss_factor(65536.0, N, D) == pytest.approx(1.0)
    b_opt = float(law.optimal_batch.b_opt(N, D))
    assert back.loss_factor(b_opt, N, D) < 1.0 < back.loss_factor(b_opt * 64, N, D)
    assert back.loss_factor(b_opt / 64, N, D) > 1.0  # both sides cost
    assert back.data_factor(b_opt * 64) == 1.0  # the optimal form charges the loss, not the tokens
    nd = dataclasses.replace(back.lr, form="N,D", d_exponent=0.1)
    assert nd.lr(N, 1.0, D) == pytest.approx(math.exp(nd.c0) * N**nd.n_exponent * D**0.1)


def test_batch_in_sequences_with_a_context_length_and_a_status(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text(
        "N,D,batch,seq_len,lr,loss,status\n1e6,2e7,8,512,1e-3,3.1,finished\n1e6,2e7,16,512,1e-3,nan,\n"
        "1e6,2e7,32,512,1e-3,3.0,Diverged\n"
    )
    runs = read_recipe_table(path)
    assert [r.batch_tokens for r in runs] == [4096, 8192, 16384]
    assert [r.diverged for r in runs] == [False, True, True]


@pytest.mark.parametrize(
    "body, message",
    [
        ("N,D,batch,lr\n1e6,2e7,8,1e-3\n", "lacks column(s) loss"),
        ("N,D,batch,lr,loss\n1e6,2e7,8,1e-3,3.0\n1e6,2e7,8,-1e-3,3.0\n", "line 3: lr=-0.001 must be positive"),
        ("N,D,batch,lr,loss\n1e6,2e7,8,1e-3,-3.0\n", "line 2: loss=-3 must not be negative"),
        ("N,D,batch,lr,loss,status\n1e6,2e7,8,1e-3,3.0,running\n", "line 2: status 'running'"),
        ("N,D,batch,lr,loss,warmup\n1e6,2e7,8,1e-3,3.0,200\n", "line 2: warmup=200 must be a fraction"),
        ("N,D,batch,lr,loss\n1e6,2e7,eight,1e-3,3.0\n", "line 2: batch='eight' is not a number"),
    ],
)
def test_bad_tables_are_refused_naming_the_line(tmp_path, body, message):
    path = tmp_path / "runs.csv"
    path.write_text(body)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_recipe_table(path)


def test_a_column_map_reads_other_tools_names(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text("params,tokens,batch,optim/lr,eval/loss\n1e6,2e7,4096,1e-3,3.1\n")
    runs = read_recipe_table(path, "N=params,D=tokens,lr=optim/lr,loss=eval/loss")
    assert (runs[0].N, runs[0].D, runs[0].lr, runs[0].loss) == (1000000, 20000000, 1e-3, 3.1)


def test_a_data_frame_reads_like_its_csv(tmp_path):
    pd = pytest.importorskip("pandas")
    rows = synthetic_rows(SweepTruth(), POINTS[:2], FACTORS[:3], FACTORS[:3])
    assert read_recipe_table(pd.DataFrame(rows))[0].loss == read_recipe_table_from(rows, tmp_path)[0].loss


def test_an_old_law_file_loads_as_mccandlish_with_lr_in_n_and_b():
    recipe = load_law(Path(__file__).parents[2] / "results/cpu/recipe/law.json").recipe
    assert recipe.batch_form == "mccandlish" and recipe.optimal_batch is None and recipe.lr.form == "N,B"
    assert recipe.loss_factor(np.array([256.0, 4096.0]), 1e6, 1e8).tolist() == [1.0, 1.0]
    assert recipe.lr_at(1e6, 1024.0, 1e8) == recipe.lr.lr(1e6, 1024.0)
