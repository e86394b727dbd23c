"""The main job end to end at test scale: calibrate, sweep, fit, plan, verify, report; a rerun reuses it.

Training outcomes differ between CPUs (XLA's kernels differ), so the end-to-end test checks properties that
hold on any machine where the code is right, never one machine's losses.
"""

from __future__ import annotations

import json
import math

import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.experiments.quickstart import law_used_line, quickstart

# The tiny grid timed briefly, the 6-run tiny sweep, few bootstrap resamples: the method, not its accuracy.
TEST_SCALE = dict(budget="3s", grid="tiny", design="tiny-isoflop", space="cpu", n_boot=20, min_seconds=0.05, repeats=3)


def test_quickstart_end_to_end_and_rerun(tmp_path, capsys):
    out = tmp_path / "qs"
    report = quickstart(out, **TEST_SCALE)
    v, best = report["verify"], report["plan"]["best"][0]
    assert v["steps"] >= 1 and best["params"] > 0 and best["tokens"] > 0
    # Byte-level losses lie between 0 and the uniform distribution's ln 256; a law gone degenerate does not.
    for loss in (v["actual_loss"], v["predicted_loss"], v["common_loss"]):
        assert 0 < loss < math.log(256)
    assert v["common_sequences"] == 1024
    assert v["loss_error"] == pytest.approx(v["actual_loss"] / v["predicted_loss"] - 1)
    for name in (
        "report.md",
        "report.json",
        "law.json",
        "law.png",
        "calibration/profile.json",
        "calibration/comparison.md",
        "plan/plan.png",
        "plan/plan.md",
        "sweep/sweep.json",
    ):
        assert (out / name).exists(), name
    # Whatever the fit could identify on this machine's runs, the report says which law it used and why.
    used = report["law_used"]
    assert used["form"] in ("full", "fixed_E", "tied", "tied_fixed_E") and used["identified"] in (True, False)
    assert used["form"] == "full" or used["not_identified"]["full"]
    text = (out / "report.md").read_text()
    assert law_used_line(used) in text and "common validation sample" in text
    # The report opens with the answer: what to train and what training gave, before any table.
    answer = text.index("**Train** d=")
    assert answer < text.index("**Trained it:**") < text.index("|")
    capsys.readouterr()
    again = quickstart(out, **TEST_SCALE)
    assert again["verify"]["run"] == v["run"] and again["verify"]["actual_loss"] == v["actual_loss"]
    assert json.loads((out / "report.json").read_text())["budget"] == "3s"


def test_law_used_line_names_the_fallback_and_why():
    reduced = dict(
        form="fixed_E",
        identified=True,
        form_description="E fixed at 0.04; A, B, alpha, beta fitted",
        not_identified={"full": ["E ran to its lower bound"]},
    )
    line = law_used_line(reduced)
    assert "E fixed at 0.04" in line and "E ran to its lower bound" in line and "reduced form" in line
    full = dict(form="full", identified=True, form_description="all five constants fitted", not_identified={})
    assert "identified by the sweep" in law_used_line(full)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(budget="abc"), "budget"),
        (dict(budget="$5"), "price"),
        (dict(design="nope"), "unknown sweep design"),
        (dict(grid="nope"), "grid"),
        (dict(space="nope"), "unknown search space"),
        (dict(n_boot=1), "at least 2 resamples"),
    ],
)
def test_quickstart_refuses_bad_arguments_before_any_stage(tmp_path, kwargs, message):
    with pytest.raises(UserError, match=message):
        quickstart(tmp_path / "qs", **kwargs)
    assert not (tmp_path / "qs").exists()  # refused before the first stage wrote anything


def test_quickstart_refuses_an_output_folder_that_is_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        quickstart(tmp_path / "afile", **TEST_SCALE)
