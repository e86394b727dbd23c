"""experiments/scripts/seed_laws.py: which seeds' sweeps it reads, and each seed's law judged with runs left out."""

from __future__ import annotations

import numpy as np
from smallest_loss.experiments.scripts.seed_laws import judge, main, row, seed_sweeps
from smallest_loss.scaling.chinchilla import SE_LIMITS, ChinchillaLaw
from smallest_loss.scaling.points import FitPoints

LAW = ChinchillaLaw(E=1.8, A=480.0, B=2100.0, alpha=0.35, beta=0.37)


def test_a_seed_counts_only_with_every_run_of_the_sweep(tmp_path, capsys):
    for name in ("sweep/a", "sweep/b", "seeds/a-seed1", "seeds/b-seed1", "seeds/a-seed2", "seeds/c-seed3"):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "summary.json").write_text("{}")
    (tmp_path / "sweep" / "not-a-run").mkdir()
    sweeps = seed_sweeps(tmp_path / "sweep", tmp_path / "seeds")
    assert list(sweeps) == [0, 1] and sorted(sweeps[1]) == ["a", "b"]  # seed 2 lacks b; c is no run of the sweep
    assert sweeps[1]["a"] == tmp_path / "seeds" / "a-seed1" and seed_sweeps(tmp_path / "sweep", None).keys() == {0}
    # bad input: one line each, before anything is fitted
    assert main([str(tmp_path / "sweep"), "--without", "z"]) == 2
    assert "error: --without z: no such run in" in capsys.readouterr().err
    assert main([str(tmp_path / "nowhere")]) == 2 and "is not a folder" in capsys.readouterr().err
    assert main([str(tmp_path / "sweep")]) == 2  # the summaries are empty: no finished run to fit
    assert capsys.readouterr().err.startswith("error: ")


def test_each_seed_s_law_is_judged_with_and_without_a_run():
    """Four budgets of five runs around the optimum, a known law, two noise draws ("seeds"): the full law is
    identified in both, and left out of each seed's fit, a run changes its standard error."""
    C = np.repeat(np.geomspace(1e18, 1e21, 4), 5)
    N = np.tile(np.geomspace(0.3, 3.0, 5), 4) * 0.1 * np.sqrt(C / 6)
    D = C / (6 * N)
    names = [f"run{i}" for i in range(len(N))]
    points_of = {
        k: FitPoints(N, D, LAW.loss(N, D) * np.exp(np.random.default_rng(k).normal(0, 0.003, len(N)))) for k in (0, 1)
    }
    fits = judge(points_of, dict.fromkeys(points_of, names), ())
    assert [form for form, _ in fits] == ["full", "full"] and all(0 < se <= SE_LIMITS["e"] for _, se in fits)
    fewer = judge(points_of, dict.fromkeys(points_of, names), ("run0",))
    assert all(a != b for (_, a), (_, b) in zip(fits, fewer, strict=True))
    line = row("every run", [*fits, ("fixed_E", 1.5)])
    assert line.startswith("| every run | ") and line.endswith(" | 1.50* | 2 of 3 |")
