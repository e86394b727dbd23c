"""The joint MoE law (Ludziejewski et al. 2025) and the granularity law (Krajewski et al. 2024): recovery of known
constants from noisy synthetic tables, the reduced forms when the design cannot identify the full law, the law file's
`moe` section, `fit --csv --form moe` through the CLI's main, and input refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.experiments.cli import main
from smallest_loss.scaling.laws import CHINCHILLA_PUBLISHED, LawFile, law_from_dict, load_law
from smallest_loss.scaling.moe_fit import fit_moe, fit_moe_law, holdout_budget, holdout_experts
from smallest_loss.scaling.moe_law import MoeLaw, MoePoints, effective_experts, read_moe_table

# Constants of the size Ludziejewski et al. report, written with Chinchilla's signs (alpha, beta > 0).
TRUE = MoeLaw("joint", a=36, b=36, c=1.36, alpha=0.19, beta=0.18, gamma=-0.01, zeta=0.026, delta=0.23, omega=-0.55)


def _points(law: MoeLaw, experts=(1, 4, 16, 64), sizes=4, tokens=3, noise=0.001, seed=1, G=None) -> MoePoints:
    E, N, D = np.meshgrid(experts, np.geomspace(3e7, 1e9, sizes), np.geomspace(1e9, 3e10, tokens), indexing="ij")
    E, N, D = E.ravel().astype(float), N.ravel(), D.ravel()
    G = np.ones_like(E) if G is None else np.resize(np.asarray(G, float), len(E))
    loss = law.loss(N, D, E, G) * np.exp(np.random.default_rng(seed).normal(0.0, noise, len(E)))
    nan = np.full(len(E), np.nan)
    return MoePoints(N, D, E, loss, nan, nan, G)


def _write(path, points: MoePoints, extra: dict | None = None) -> str:
    columns = {"N_active": points.N, "N_total": points.N * np.maximum(points.E / 2, 1), "experts": points.E,
               "top_k": np.minimum(points.E, 2), "D": points.D, "loss": points.loss, **(extra or {})}  # fmt: skip
    rows = zip(*columns.values(), strict=True)
    path.write_text(",".join(columns) + "\n" + "".join(",".join(f"{v:.10g}" for v in row) + "\n" for row in rows))
    return str(path)


def test_effective_experts_dense_is_one_and_saturates():
    Ehat = effective_experts([1, 2, 8, 1e6], e_max=256)
    assert Ehat[0] == pytest.approx(1.0) and 1.9 < Ehat[1] < 2.0 and Ehat[3] == pytest.approx(256, rel=1e-3)
    E, A, B, alpha, beta = TRUE.dense()
    assert TRUE.loss(1e8, 1e10, 1) == pytest.approx(E + A / 1e8**alpha + B / 1e10**beta)


def test_recovers_known_constants_from_noisy_table():
    fit = fit_moe(_points(TRUE), latin=4)
    assert fit.form == "full" and fit.identified and fit.converged
    for name in ("alpha", "beta"):
        assert getattr(fit.law, name) == pytest.approx(getattr(TRUE, name), rel=0.05)
    assert fit.law.gamma == pytest.approx(TRUE.gamma, abs=0.005) and fit.law.c == pytest.approx(TRUE.c, rel=0.05)
    N = np.geomspace(3e7, 3e9, 9)  # predictions, a little beyond the fitted sizes too
    for E in (1, 8, 32):
        assert np.max(np.abs(fit.law.loss(N, 1e10, E) / TRUE.loss(N, 1e10, E) - 1)) < 0.005


def test_two_expert_counts_give_the_reduced_form_and_one_gives_chinchilla():
    reduced = fit_moe(_points(TRUE, experts=(1, 8)), latin=3)
    assert reduced.form == "reduced" and reduced.law.gamma == 0 and reduced.law.zeta == 0
    assert "interactions" in reduced.warnings[0] and reduced.identified
    dense = fit_moe(_points(TRUE, experts=(1,)), latin=3)
    assert dense.form == "no_experts" and dense.law.delta == 0 and dense.law.omega == 0
    assert dense.law.alpha == pytest.approx(TRUE.alpha, rel=0.1)


def test_granularity_form_recovers_its_exponent():
    law = MoeLaw("granularity", a=18, b=36, c=1.4, g=20, alpha=0.19, beta=0.18, gamma_g=0.5)
    fit = fit_moe(_points(law, experts=(8,), G=(1, 2, 4, 8, 16)), "granularity", latin=3)
    assert fit.form == "full" and fit.law.gamma_g == pytest.approx(0.5, abs=0.1)
    assert fit.law.loss(1e8, 1e10, 8, 4) == pytest.approx(law.loss(1e8, 1e10, 8, 4), rel=0.003)


@pytest.mark.slow
def test_holdouts_predict_the_left_out_runs():
    points = _points(TRUE, experts=(1, 4, 16), sizes=3)
    fit = fit_moe(points, latin=2)
    budget, experts = holdout_budget(points, start=fit), holdout_experts(points, start=fit)
    assert budget["held_points"] >= 1 and budget["mean_abs_rel_error"] < 0.02
    assert len(experts["counts"]) == 3 and experts["mean_abs_rel_error"] < 0.05
    assert "skipped" in holdout_experts(_points(TRUE, experts=(1, 8)))


def test_law_file_round_trip_and_old_files_unchanged(tmp_path):
    law_file = fit_moe_law(_points(TRUE, experts=(1, 8)), bootstrap=4)
    assert law_file.moe.intervals and law_file.moe.samples["alpha"].shape == (4,)
    back = load_law(law_file.save(tmp_path / "law.json"))
    assert back.moe == law_file.moe and back.moe.intervals.keys() == law_file.moe.intervals.keys()
    assert all(back.moe.intervals[k] == pytest.approx(v) for k, v in law_file.moe.intervals.items())
    assert back.predict(1e8, 1e10, experts=8) == pytest.approx(law_file.moe.loss(1e8, 1e10, 8))
    assert back.predict(1e8, 1e10) == pytest.approx(back.law.loss(1e8, 1e10), rel=1e-9)  # dense: the main law
    old = LawFile(CHINCHILLA_PUBLISHED).to_dict()
    assert "moe" not in old and law_from_dict(old).moe is None
    with pytest.raises(UserError, match="moe section"):
        law_from_dict({**old, "moe": {"form": "joint", "a": "x"}})


@pytest.mark.slow
def test_fit_csv_form_moe_through_main(tmp_path, capsys):
    points = _points(TRUE, experts=(1, 8), sizes=3)
    table = _write(tmp_path / "moe.csv", points, {"lr": np.full(len(points), 1e-3)})
    out = tmp_path / "law.json"
    assert main(["fit", "--csv", table, "--form", "moe", "--bootstrap", "0", "--best-of", "lr", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "fitted MoE (joint) law to 18 points" in text and "MoE hold-outs" in text
    assert "expert counts not left out" in text and "fit without budget C = 6 N_act D" in text
    assert json.loads(out.read_text())["moe"]["form"] == "joint"
    # a table with an experts column fitted without --form: said, not silently ignored (here it has no N column)
    assert main(["fit", "--csv", table, "--bootstrap", "0"]) == 2
    err = capsys.readouterr().err
    assert "--form moe fits the joint MoE law" in err and "error:" in err


def test_best_of_keeps_each_configurations_best_row(tmp_path):
    points = _points(TRUE, experts=(1, 8), sizes=2, tokens=2)
    doubled = MoePoints(*(np.r_[v, v] for v in (points.N, points.D, points.E)), np.r_[points.loss, points.loss + 0.1],
                        *(np.r_[v, v] for v in (points.N_total, points.top_k, points.G)))  # fmt: skip
    lr = np.r_[np.full(len(points), 1e-3), np.full(len(points), 3e-3)]
    table = _write(tmp_path / "sweep.csv", doubled, {"lr": lr})
    best = read_moe_table(table, best_of="lr")
    assert len(best) == 8 and np.allclose(best.loss, points.loss, rtol=1e-9) and len(read_moe_table(table)) == 16
    with pytest.raises(UserError, match="has no column batch"):
        read_moe_table(table, best_of="lr,batch")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--moe-form", "granularity"], "go with --form moe"),
        (["--form", "moe", "--plot", "p.png"], "--plot: not with the MoE law"),
        (["--form", "moe", "--moe-form", "granularity"], "needs a granularity in every row"),
    ],
)
def test_fit_flags_refused_before_fitting(tmp_path, capsys, flags, message):
    table = _write(tmp_path / "moe.csv", _points(TRUE, experts=(1, 8), sizes=3))
    assert main(["fit", "--csv", table, "--bootstrap", "0", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") <= 2  # the hint line at most, then one error line


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.pop("experts"), "lacks column"),
        (lambda c: c.update(experts=np.r_[0.0, c["experts"][1:]]), "experts=0 must be at least 1"),
        (lambda c: c.update(N_total=c["N_active"] / 2), "N_total=.* is below N_active"),
        (lambda c: c.update(D=-c["D"]), "must be positive"),
    ],
)
def test_bad_tables_refused_in_one_line(tmp_path, change, message):
    points = _points(TRUE, experts=(1, 8), sizes=3)
    columns = {"N_active": points.N, "N_total": points.N * 4, "experts": points.E, "D": points.D, "loss": points.loss}
    change(columns)
    path = tmp_path / "bad.csv"
    rows = zip(*columns.values(), strict=True)
    path.write_text(",".join(columns) + "\n" + "".join(",".join(f"{v:.10g}" for v in row) + "\n" for row in rows))
    with pytest.raises(UserError, match=message) as err:
        read_moe_table(str(path))
    assert "\n" not in str(err.value)


def test_steplaw_moe_table_is_its_converters_output(tmp_path):
    from smallest_loss.experiments.scripts import convert_steplaw_moe

    out = tmp_path / "joint.csv"
    assert convert_steplaw_moe.main(["--out", str(out)]) == 0
    assert out.read_text() == (convert_steplaw_moe.OUT).read_text()
    points = read_moe_table(str(out), best_of="lr,batch")  # one row per configuration: 17 dense, 16 MoE
    assert len(points) == 33 and sorted(set(points.E)) == [1, 8, 88, 89]
    assert convert_steplaw_moe.experts_of("x_3in8_moeh2888_sed8664_h1408") == (3, 8, 31768)
    with pytest.raises(UserError, match="shared expert width"):
        convert_steplaw_moe.experts_of("x_2in8_moeh100_sed100_h1")
