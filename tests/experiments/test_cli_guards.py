"""What every command promises before and after its work: outputs checked first (one line, exit 2, nothing
written), Ctrl-C as one line saying what was saved and how to continue (exit 130), plans that say when the law is
extrapolated, and curve-law predictions that never print an impossible loss without saying so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from smallest_loss.experiments import cli, fit_cmd
from smallest_loss.experiments.cli import main
from smallest_loss.experiments.predict_cmd import print_prediction
from smallest_loss.scaling.chinchilla import ChinchillaLaw
from smallest_loss.scaling.laws import CHINCHILLA_PUBLISHED, LawFile, save_law

LAW = "results/cpu/scaling/law.json"
PROFILE = "results/cpu/timing/profile.json"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "taken"
    path.write_text("not a folder\n")
    return path


@pytest.mark.parametrize(
    "argv,message",
    [
        (["plan", "--budget", "1e12", "--law", LAW, "--out", "{file}"], "--out {file} is a file, not a folder"),
        (["plan", "--budget", "1e12", "--law", LAW, "--out", "{file}/plan"], "is a file, not a folder, so"),
        (["calibrate", "--grid", "tiny", "--out", "{file}"], "--out {file} is a file, not a folder"),
        (["calibrate", "--fit-only", "--out", "{file}/cal"], "is a file, not a folder, so"),
        (["calibrate", "--fit-only", "--out", "cal", "--export-records", "{file}/r.csv"], "is a file, not a folder"),
        (["corpus", "--out", "{file}"], "--out {file} is a file, not a folder"),
        (["predict", "--curve-law", "x.json", "--steps", "100", "--out", "{file}/c.csv"], "is a file, not a folder"),
        (["sweep", "--design", "tiny-isoflop", "--out", "{file}"], "--out {file} is a file, not a folder"),
        (["quickstart", "--out", "{file}"], "--out {file} is a file, not a folder"),
    ],
)
def test_outputs_are_checked_before_any_work(argv, message, a_file, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    before = sorted(tmp_path.iterdir())
    assert main([a.format(file=a_file) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message.format(file=a_file) in err and "Traceback" not in err
    assert sorted(tmp_path.iterdir()) == before and a_file.read_text() == "not a folder\n"


def test_ctrl_c_is_one_line_with_what_was_saved(monkeypatch, capsys, tmp_path):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(fit_cmd, "run", interrupted)
    monkeypatch.setattr(cli, "command_module", lambda name: fit_cmd)
    assert main(["fit", "--csv", "x.csv"]) == 130
    err = capsys.readouterr().err.strip()
    assert err == cli.INTERRUPTED and "Traceback" not in err


def test_a_ctrl_c_that_a_finaliser_swallowed_is_delivered_again(monkeypatch, capsys):
    """A KeyboardInterrupt raised inside a finaliser (as inside JAX's garbage-collection callback) is one Python
    ignores: without `keep_interrupts` it is printed and lost, and the command went on to its end."""
    from smallest_loss.console import keep_interrupts

    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)  # restored after the test
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        keep_interrupts()

        class Interrupted:
            def __del__(self):
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            Interrupted()  # freed at once: its finaliser's KeyboardInterrupt is unraisable
            for _ in range(500):
                time.sleep(0.01)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert "Exception ignored" not in capsys.readouterr().err


@pytest.mark.slow
def test_ctrl_c_in_a_calibration_says_how_to_continue(tmp_path):
    """A real process interrupted mid-work: one line naming what was saved, exit 130, no traceback and no crash
    (the interpreter's teardown with XLA threads mid-compile ended in a segmentation fault here before)."""
    out = tmp_path / "cal"
    env = dict(os.environ, JAX_PLATFORMS="cpu", SMALLEST_LOSS_XLA_CACHE="off")
    # A test worker may run with SIGINT ignored, which a child inherits (Python then installs no handler of its own):
    # the child puts Python's handler back itself before the command runs.
    code = (
        "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from smallest_loss.console import main; main()"
    )
    argv = [sys.executable, "-c", code, "calibrate", "--grid", "tiny", "--out", str(out), "--quiet"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not out.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # the folder is made once the command runs (its imports done)
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    if proc.returncode == 0:
        pytest.skip("the calibration finished before the interrupt reached it")
    assert proc.returncode == 130, err
    saved = f"interrupted: every configuration timed so far is saved in {out}/records.jsonl"
    assert err.strip() == f"{saved}; rerun the same command to continue"


@pytest.mark.slow
def test_a_fitted_law_records_its_range_and_a_plan_beyond_it_warns(tmp_path, capsys):
    N = [1e6, 2e6, 4e6, 8e6, 1.6e7, 3.2e7, 1e6, 4e6, 1.6e7]
    D = [2e8, 1e8, 5e7, 2.5e7, 1.25e7, 6.25e6, 1e9, 2.5e8, 6.25e7]
    rows = ["N,D,loss"] + [f"{n},{d},{float(CHINCHILLA_PUBLISHED.loss(n, d)):.6f}" for n, d in zip(N, D, strict=True)]
    (tmp_path / "runs.csv").write_text("\n".join(rows) + "\n")
    law_path = tmp_path / "law.json"
    assert main(["fit", "--csv", str(tmp_path / "runs.csv"), "--bootstrap", "0", "--out", str(law_path)]) == 0
    fitted = json.loads(law_path.read_text())["diagnostics"]["fitted_range"]
    assert fitted["N"] == [min(N), max(N)] and fitted["D"] == [min(D), max(D)]
    C = [6 * n * d for n, d in zip(N, D, strict=True)]
    assert fitted["C"] == pytest.approx([min(C), max(C)])
    capsys.readouterr()
    assert main(["plan", "--budget", "3e15", "--law", str(law_path)]) == 0
    assert "warning: the law is extrapolated" not in capsys.readouterr().out  # C, N and D inside the fitted ones
    assert main(["plan", "--budget", "1e23", "--law", str(law_path), "--json"]) == 0
    warning = json.loads(capsys.readouterr().out)["extrapolation"]
    assert (
        warning.startswith("warning: the law is extrapolated: N = ") and "decades above the largest fitted" in warning
    )


def test_outside_counts_decades_both_ways():
    law = LawFile(ChinchillaLaw(1.7, 400.0, 400.0, 0.34, 0.28), diagnostics=dict(fitted_range={"N": [1e6, 1e8]}))
    assert law.outside(N=1e7) is None and LawFile(law.law).outside(N=1e12) is None  # inside; nothing recorded
    assert "N = 1e+10 is 2.0 decades above the largest fitted (1e+08)" in law.outside(N=1e10)
    assert "N = 1e+04 is 2.0 decades below the smallest fitted (1e+06)" in law.outside(N=1e4)


def test_a_fixed_batch_outside_the_recipe_range_is_said(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    law = "results/cpu/recipe/law.json"
    argv = ["plan", "--budget", "60s", "--law", law, "--profile", "results/cpu/recipe/bcrit-loss/timing/profile.json"]
    assert main([*argv, "--batch", "1000"]) == 0
    out = capsys.readouterr().out
    assert "warning: batch 1000 (64,000 tokens a step) lies outside the 256-4,096 tokens" in out
    assert "batch fixed at 1000 sequences by --batch" in out and "batches searched within" not in out
    assert main([*argv, "--batch", "16"]) == 0
    assert "lies outside the" not in capsys.readouterr().out


def test_a_non_positive_curve_prediction_is_never_printed_bare(capsys):
    report = dict(
        curve_law="law.json",
        form="multipower",
        schedule="cosine",
        warmup_fraction=0.05,
        predictions=[
            dict(N=1000, steps=10**7, peak_lr=1e-3, final_eval=-4.59, interval=None, draws=0, draws_not_positive=0),
            dict(
                N=2000,
                steps=5000,
                peak_lr=1e-3,
                final_eval=1.5,
                interval=None,
                draws=0,
                draws_not_positive=0,
                steps_range=[300, 2500],
            ),  # fmt: skip
        ],
    )
    print_prediction(report)
    out = capsys.readouterr().out
    assert "-4.5900" in out and "a loss <= 0 is impossible" in out and "outside what the fitted runs support" in out
    assert "warning: 5,000 steps is 2x the longest run this shape's law was fitted on (300-2,500 steps)" in out
    assert out.count("warning:") == 1  # the first prediction's law recorded no fitted lengths (an older file)


def test_save_law_keeps_a_hand_written_law_without_a_range(tmp_path, capsys):
    path = save_law(tmp_path / "law.json", CHINCHILLA_PUBLISHED)
    assert main(["plan", "--budget", "1e23", "--law", str(path)]) == 0
    assert "extrapolated" not in capsys.readouterr().out  # nothing recorded: nothing claimed


def test_a_C_column_far_from_6ND_is_counted_and_refused_for_a_holdout(tmp_path, capsys):
    """C 100x off 6ND in some rows: the fit says in how many; --holdout-largest, which groups rows by C, refuses."""
    N = [1e6, 2e6, 4e6, 1e6, 2e6, 4e6, 1e6, 2e6, 4e6]
    C = [1e15] * 3 + [4e15] * 3 + [1.6e16] * 3
    rows = ["N,D,C,loss"]
    for i, (n, c) in enumerate(zip(N, C, strict=True)):
        c_column = c * 100 if i >= 6 else c  # the largest budget's rows in other units
        rows.append(f"{n},{c / (6 * n)},{c_column},{float(CHINCHILLA_PUBLISHED.loss(n, c / (6 * n))):.6f}")
    (tmp_path / "runs.csv").write_text("\n".join(rows) + "\n")
    assert main(["fit", "--csv", str(tmp_path / "runs.csv"), "--bootstrap", "0"]) == 0
    err = capsys.readouterr().err
    assert "warning: C differs from 6ND by more than 3x in 3 of 9 rows (row 8:" in err
    assert main(["fit", "--csv", str(tmp_path / "runs.csv"), "--bootstrap", "0", "--holdout-largest"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --holdout-largest groups rows by budget, but C differs from 6ND") and "\n" not in err
