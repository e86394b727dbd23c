"""`smallest-loss plan` and `fit` from the command line: a law from a CSV, a plan from it, bad input."""

from __future__ import annotations

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
    profile = DeviceProfile(device_kind="cpu", model="paper: memcpys + flops", coefficients=(4e-12, 2e-15, 2e-3),
                            peak_flops=1e15, bandwidth=3e12, held_out=dict(mape=0.05), price_per_hour=2.0)
    return str(save_profile(tmp_path / "profile.json", profile))


def test_fit_from_csv_then_plan(tmp_path, capsys):
    rng = np.random.default_rng(0)
    N, D = np.geomspace(1e7, 1e9, 12), np.geomspace(1e9, 1e11, 12)[rng.permutation(12)]
    loss = CHINCHILLA_PUBLISHED.loss(N, D) * (1 + 0.002 * rng.standard_normal(12))
    csv = tmp_path / "points.csv"
    csv.write_text("N,D,loss,note\n" + "".join(f"{a},{b},{c},x\n" for a, b, c in zip(N, D, loss, strict=True)))
    assert main(["fit", "--csv", str(csv), "--bootstrap", "50", "--out", str(tmp_path / "fitted.json")]) == 0
    assert "alpha" in capsys.readouterr().out and (tmp_path / "fitted.png").exists()
    assert main(["plan", "--budget", "1e21", "--law", str(tmp_path / "fitted.json"), "--space", "chinchilla",
                 "--out", str(tmp_path / "plan"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["best"][0]["loss"] > 0 and "loss_interval" in report["best"][0]
    assert (tmp_path / "plan" / "plan.png").exists() and (tmp_path / "plan" / "plan.md").exists()


def test_time_and_money_plans(law_file, profile_file, capsys):
    assert main(["plan", "--budget", "4h", "--law", law_file, "--profile", profile_file, "--space", "gpu"]) == 0
    out = capsys.readouterr().out
    assert "Width vs depth" in out and "Time-optimal vs FLOPs-optimal" in out
    assert main(["plan", "--budget", "$8", "--law", law_file, "--profile", profile_file, "--space", "gpu",
                 "--spot-discount", "0.5", "--top", "3"]) == 0


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


def test_fit_leaves_out_diverged_runs_and_names_them(tmp_path, capsys):
    import dataclasses

    from smallest_loss.model.train import RunDiverged, train

    from tests.conftest import tiny_run

    for i in range(6):
        config = tiny_run(steps=4 + 2 * i, eval_every=0, checkpoint_every=0)
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, d=16 + 8 * (i % 3)))
        train(config, tmp_path / "runs" / f"ok{i}", progress=False)
    with pytest.raises(RunDiverged):
        train(tiny_run(steps=20, lr=1e6, warmup_steps=0, grad_clip=0.0), tmp_path / "runs" / "bad", progress=False)
    from smallest_loss.scaling.collect import collect_runs

    records, left_out = collect_runs([tmp_path / "runs"])
    assert len(records) == 6 and left_out == ["bad: diverged"]
    main(["fit", str(tmp_path / "runs"), "--bootstrap", "0"])  # six tiny runs: the fit itself may be degenerate
    assert "warning: left out bad: diverged" in capsys.readouterr().err
    assert main(["fit", str(tmp_path)]) == 2
    assert "neither a run folder nor a folder of runs" in capsys.readouterr().err
