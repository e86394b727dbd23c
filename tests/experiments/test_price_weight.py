"""experiments/scripts/price_weight.py: the verify lines' step errors read from a README's tables (fresh clones
only), weighed as the plan weighs them, and matched with kept calibrations by stop and order."""

from __future__ import annotations

import json

import numpy as np
import pytest
from smallest_loss.experiments.scripts.price_weight import Row, main, read_rows, weighed

README = """## 2026-12-06 (stop 44): something

| when (UTC) | best model held out (floor) | step vs measured | step vs the profile | wall-clock |
|---|---|---|---|---|
| 19:04 | `exact-grouped-cliff` 8.8% (3.1%) | **+7.0%** (20.1 ms) | -8.8% | 60.0 s |
| 19:14 | `exact-grouped-cliff` 9.1% (2.0%) | -3.9% | -7.8% | 60.1 s |
| 19:20 | `plan --budget 2min` on the committed profile | +4.0% | +50.0% | 120.0 s |

A table without the profile's column is not read:

| when | step vs measured |
|---|---|
| 19:30 | +30.0% |
"""


def test_rows_are_the_fresh_clones_of_tables_with_both_columns(tmp_path):
    path = tmp_path / "README.md"
    path.write_text(README)
    rows = read_rows(path)
    want = [Row(44, "19:04", 0.07, -0.088, 0.088), Row(44, "19:14", -0.039, -0.078, 0.091)]
    assert [(r.stop, r.when) for r in rows] == [(r.stop, r.when) for r in want]
    for got, row in zip(rows, want, strict=True):
        assert (got.measured, got.profile, got.held_out) == pytest.approx((row.measured, row.profile, row.held_out))
    errors = weighed(rows, np.array([0.0, 0.5]))
    assert errors[0] == pytest.approx(0.07) and errors[1] == pytest.approx(np.sqrt(0.961 * 0.922) - 1)


def test_kept_calibrations_are_weighed_by_their_drift(tmp_path, capsys):
    (tmp_path / "README.md").write_text(README)
    speed = [1.0, 1.2, 1.0, 0.9]  # the machine's speed over the rounds: a drift of about 12%
    for name in ("fc44a", "fc44b"):
        folder = tmp_path / "cal" / name
        folder.mkdir(parents=True)
        records = [dict(status="ok", step_seconds=t, round_medians=[t * f for f in speed]) for t in (0.01, 0.02, 0.04)]
        (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["--readme", str(tmp_path / "README.md"), "--calibrations", str(tmp_path / "cal")]) == 0
    printed = capsys.readouterr().out
    assert "2 fresh clones' verify lines (0 since stop 45)" in printed
    assert "| 0.00 | 2/2 within 10%, mean |error| 5.5% | none |" in printed
    assert "2 rows with their calibration" in printed and "| fc44a | 19:04 |" in printed
    assert "| fc44b | 19:14 |" in printed and "measurement alone: 2/2 within 10%" in printed
