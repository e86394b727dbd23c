"""Post-training quantisation from tables and in plans: the wide `loss_post_<P>` columns, a run counted once in the
training law, the PTQ penalty fitted from one training precision with each width held out, and `plan --serve-bits`
ranking by the served loss within the serving memory."""

from __future__ import annotations

import csv
import dataclasses
import math

import numpy as np
import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.experiments.cli import main
from smallest_loss.scaling.planner import make_plan
from smallest_loss.scaling.precision_fit import fit_precision, fit_precision_law
from smallest_loss.scaling.precision_law import PrecisionLaw, PTQPenalty
from smallest_loss.scaling.precision_pricing import QuantisedLaw
from smallest_loss.scaling.precision_table import read_precision_table
from smallest_loss.scaling.serving_plan import plan_serving

TRUE = PrecisionLaw(E=1.8, A=60.0, B=90.0, alpha=0.35, beta=0.3, gamma_w=2.5, gamma_a=1.6,
                    ptq=PTQPenalty(C_T=0.002, gamma_D=0.45, gamma_N=0.3, gamma_post=1.2))  # fmt: skip
SIZES, TOKENS = (2e4, 6e4, 2e5), (2e6, 6e6, 2e7)


def write_wide(path, configs=((3, 3), (math.inf, math.inf)), widths=(3, 4, 6), quantised_only=None, seed=0):
    """A table as `smallest-loss table` writes it: a row per run, a loss_post_<P> column per width (filled only for
    runs trained at `quantised_only` bits, where given), losses with 0.2% noise."""
    rng, rng_post = np.random.default_rng(seed), np.random.default_rng(seed + 1)  # the losses alike without PTQ
    rows = []
    for i, (N, D, (w, a)) in enumerate((N, D, c) for N in SIZES for D in TOKENS for c in configs):
        loss = float(TRUE.loss(N, D, w, a)) * math.exp(rng.normal(0, 0.002))
        row = dict(
            run=f"r{i}", N=N, D=D, loss=loss, bits_w="" if w == math.inf else w, bits_a="" if a == math.inf else a
        )
        for P in widths:
            rise = float(TRUE.ptq.delta(TRUE.n_eff(N, w, a), D, P)) * math.exp(rng_post.normal(0, 0.02))
            row[f"loss_post_{P}"] = "" if quantised_only not in (None, (w, a)) else loss + rise
        rows.append(row)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_wide_columns_read_as_long_rows_and_each_run_counts_once_in_the_training_law(tmp_path):
    # Only the unquantised runs were quantised after training: counted once per row, they would outweigh the rest.
    wide = write_wide(tmp_path / "wide.csv", quantised_only=(math.inf, math.inf))
    data = read_precision_table(wide)
    assert len(data.points) == 18 + 9 * 3 and len(data.training_rows()) == 18
    assert np.isfinite(data.bits_post).sum() == 27 and set(data.bits_post[np.isfinite(data.bits_post)]) == {3, 4, 6}
    plain = read_precision_table(write_wide(tmp_path / "plain.csv", widths=()))
    with_ptq, without = fit_precision(data, "separate"), fit_precision(plain, "separate")
    assert with_ptq.objective == pytest.approx(without.objective, rel=1e-9)
    assert with_ptq.law.gamma_w == pytest.approx(without.law.gamma_w, rel=1e-6)
    with pytest.raises(UserError, match="not both"):
        bad = tmp_path / "both.csv"
        text = wide.read_text().splitlines()
        bad.write_text("\n".join([text[0] + ",bits_post", *(line + ",4" for line in text[1:])]) + "\n")
        read_precision_table(bad)


def test_ptq_penalty_from_one_training_precision_with_each_width_held_out(tmp_path):
    data = read_precision_table(write_wide(tmp_path / "fp.csv", configs=((math.inf, math.inf),), widths=(3, 4, 5, 6)))
    law_file = fit_precision_law(data, bootstrap=0)
    ptq = law_file.precision.ptq
    assert ptq.gamma_post == pytest.approx(1.2, rel=0.05) and ptq.gamma_D == pytest.approx(0.45, abs=0.05)
    held = law_file.diagnostics["ptq_holdout"]["widths"]
    assert [r["bits_post"] for r in held] == [3, 4, 5, 6] and all(r["mean_abs_rel_error"] < 0.01 for r in held)
    assert any("one precision" in w for w in law_file.diagnostics["warnings"])
    with pytest.raises(UserError, match="one precision"):
        fit_precision_law(read_precision_table(write_wide(tmp_path / "no.csv", ((3, 3),), widths=())), bootstrap=0)


@pytest.fixture(scope="module")
def ptq_law(tmp_path_factory):
    path = write_wide(tmp_path_factory.mktemp("ptq") / "fp.csv", configs=((math.inf, math.inf),), widths=(3, 4, 6))
    return fit_precision_law(read_precision_table(path), bootstrap=20)


def test_a_served_plan_ranks_by_the_loss_after_quantisation(ptq_law):
    plain, served = make_plan("1e13", ptq_law, space="cpu"), make_plan("1e13", ptq_law, space="cpu",
                                                                               serve_bits=4)  # fmt: skip
    law, best = ptq_law.precision, served.best
    assert best.loss == pytest.approx(law.loss(best.params, best.tokens, bits_post=4), rel=1e-9)
    assert served.serving.ptq_loss == pytest.approx(law.ptq.delta(best.params, best.tokens, 4), rel=1e-9)
    assert served.serving.weight_bytes == pytest.approx(best.params * 4 / 8)
    # Quantising costs more the more tokens per parameter: serving at 4 bits moves the optimum to fewer of them.
    assert best.tokens_per_param < plain.best.tokens_per_param and plain.serving is None
    lo, hi = best.loss_interval
    assert lo < hi and "Served** 4 bits" in served.to_markdown()
    assert make_plan("1e13", ptq_law, space="cpu", serve_bits=16).best == plain.best


def test_serving_widths_within_a_memory_limit(ptq_law, capsys):
    free = make_plan("1e13", ptq_law, space="cpu").best
    limit = free.params * 2 / 3  # the unconstrained best does not fit unquantised
    plans = plan_serving("1e13", ptq_law, None, [16, 8, 4], space="cpu", serve_memory=limit)
    for bits, plan in zip(plans.widths, plans.plans, strict=True):
        assert all(r.params * bits / 8 <= limit for r in plan.rows) and plan.dropped["serving memory"] > 0
    assert plans.chosen == min(range(3), key=lambda i: plans.plans[i].best.loss)
    with pytest.raises(UserError, match="--serve-memory"):
        make_plan("1e13", ptq_law, space="cpu", serve_bits=4, serve_memory=10.0)
    with pytest.raises(UserError, match="once"):
        plan_serving("1e13", ptq_law, None, [4, 4], space="cpu")


def test_serving_refusals(tmp_path, ptq_law):
    plain = fit_precision_law(read_precision_table(write_wide(tmp_path / "t.csv", widths=())), bootstrap=0)
    with pytest.raises(UserError, match="post-training quantisation penalty"):
        make_plan("1e13", plain, space="cpu", serve_bits=4)
    with pytest.raises(UserError, match="integer from 2 to 16"):
        make_plan("1e13", ptq_law, space="cpu", serve_bits=1)


def test_cli_plans_each_serving_width(tmp_path, capsys, ptq_law):
    ptq_law.save(tmp_path / "law.json")
    args = ["plan", "--budget", "1e13", "--law", str(tmp_path / "law.json"), "--space", "cpu"]
    assert main([*args, "--serve-bits", "16", "4", "--out", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "Plans by serving width" in out and (tmp_path / "p" / "serving.md").exists()
    assert (tmp_path / "p" / "serve4" / "plan.json").exists()
    assert main([*args, "--serve-bits", "16", "4", "--verify"]) == 2
    assert "drop --verify" in capsys.readouterr().err


def test_two_penalty_terms_keep_the_optimum_where_the_loss_is_lowest():
    law = QuantisedLaw(1.8, 60.0, 90.0, 0.35, 0.3, terms=((1e-3, 0.5, 0.2), (2e-4, 0.45, 0.3)))
    N, D = law.optimal_allocation(1e16)
    grid = np.geomspace(N / 30, N * 30, 20001)
    assert N == pytest.approx(grid[np.argmin(law.loss(grid, 1e16 / (6 * grid)))], rel=1e-3)
    assert N * D == pytest.approx(1e16 / 6)
    with pytest.raises(UserError, match="terms"):
        QuantisedLaw(1.8, 60.0, 90.0, 0.35, 0.3, terms=((math.nan, 0.5, 0.2),))


def test_precision_laws_store_a_calibration_and_plans_give_a_new_run_s_interval(tmp_path, ptq_law):
    from smallest_loss.scaling.intervals import stored_calibration

    law_file = fit_precision_law(read_precision_table(write_wide(tmp_path / "t.csv", widths=(4,))), "separate", 20)
    cal = stored_calibration(law_file)
    # A run counts once (18 runs, 9 of them with a PTQ row); E, A, B, alpha, beta and one gamma (weights and
    # activations share their bits in every row, so one gamma).
    assert cal.n_points == 18 and cal.n_params == 6 and cal.scatter > 0 and cal.step_ratio >= 1
    plan = make_plan("1e13", law_file, space="cpu")
    lo, hi = plan.best.loss_interval
    assert plan.interval_kind == "a new run's loss, calibrated" and lo < plan.best.loss < hi
    # The runs' scatter (0.2% noise here) widens a new run's interval beyond the constants' spread alone.
    bootstrap = make_plan("1e13", dataclasses.replace(law_file, diagnostics={}), space="cpu")
    blo, bhi = bootstrap.best.loss_interval
    assert hi - lo > bhi - blo and bootstrap.interval_kind == "law bootstrap"


def test_precision_coverage_script_holds_out_the_largest_budget(tmp_path):
    from smallest_loss.experiments.scripts.precision_coverage import held_out

    # Four budgets: the law is fitted on the three below the largest and predicts its runs at their own bits.
    rng = np.random.default_rng(3)
    rows = ["run,N,D,loss,bits_w,bits_a"]
    for i, (N, D) in enumerate((N, D) for N in (2e4, 6e4, 2e5) for D in (2e6, 6e6, 2e7, 6e7)):
        for w in (3, math.inf):
            loss = float(TRUE.loss(N, D, w, w)) * math.exp(rng.normal(0, 0.003))
            bits = "" if w == math.inf else w
            rows.append(f"r{i}{w},{N},{D},{loss},{bits},{bits}")
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    r = held_out(str(tmp_path / "t.csv"), bootstrap=10, form="tied")
    assert len(r["runs"]) == 2 and r["fitted"] == 22
    assert all(0 < row["half_new"] and 0 <= row["error"] < 0.05 for row in r["runs"])
