"""The main job end to end at test scale: calibrate, sweep, fit, plan, verify, report; a rerun reuses it."""

from __future__ import annotations

import json

from smallest_loss.experiments.quickstart import quickstart


def test_quickstart_end_to_end_and_rerun(tmp_path, capsys):
    out = tmp_path / "qs"
    report = quickstart(out, budget="3s", grid="tiny", design="tiny-isoflop", space="cpu", n_boot=20)
    v = report["verify"]
    assert v["steps"] >= 1 and v["actual_loss"] > 0 and v["predicted_step_seconds"] > 0
    for name in ("report.md", "report.json", "law.json", "law.png", "calibration/profile.json",
                 "calibration/comparison.md", "plan/plan.png", "plan/plan.md", "sweep/sweep.json"):
        assert (out / name).exists(), name
    assert "## 5. Verification" in (out / "report.md").read_text()
    capsys.readouterr()
    again = quickstart(out, budget="3s", grid="tiny", design="tiny-isoflop", space="cpu", n_boot=20)
    assert again["verify"]["run"] == v["run"] and again["verify"]["actual_loss"] == v["actual_loss"]
    assert json.loads((out / "report.json").read_text())["budget"] == "3s"
