"""experiments/scripts/step_residuals.py: a model's held-out errors by configuration over calibrations, and the two
named costs it tests (matmuls timed alone, cold against warm rounds), on the committed calibration and tiny models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.experiments.scripts.step_residuals import (
    cold_warm,
    compare_cold_warm,
    main,
    matmul_seconds,
    measured_matmul_model,
)
from smallest_loss.timing import models

CALIBRATION = Path(__file__).resolve().parents[2] / "results/cpu/quickstart/calibration"


def test_every_configuration_gets_a_row_of_its_errors_over_the_calibrations(capsys):
    main([str(CALIBRATION), str(CALIBRATION)])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| (")]
    assert len(rows) == 24 and all(row.split("|")[2].strip() == "2" for row in rows)
    assert all(row.split("|")[4].strip() == "0.0%" for row in rows)  # one calibration twice: no spread
    assert "over 2 calibrations" in out


def test_a_folder_without_calibrations_is_refused(tmp_path):
    with pytest.raises(UserError, match="no calibration"):
        main([str(tmp_path)])
    (tmp_path / "records.jsonl").write_text("")
    with pytest.raises(UserError, match="not a calibration folder"):
        main([str(tmp_path)])


def test_a_model_whose_features_the_records_lack_is_refused_in_one_line(tmp_path):
    shutil.copy(CALIBRATION / "device.json", tmp_path)
    records = [json.loads(line) for line in (CALIBRATION / "records.jsonl").read_text().splitlines()]
    (tmp_path / "records.jsonl").write_text("".join(json.dumps({**r, "xla": {}}) + "\n" for r in records))
    with pytest.raises(UserError, match="xla: features missing.*choose another --model"):
        main([str(tmp_path), "--model", "xla"])


def test_matmul_seconds_grow_with_depth_and_feed_a_model():
    cache: dict = {}
    one, two = matmul_seconds((256, 32, 1, 2, 64, 16, 2), cache), matmul_seconds((256, 32, 2, 2, 64, 16, 2), cache)
    assert all(s > 0 for s in one) and two[1] == pytest.approx(2 * one[1]) and two[0] > one[0]
    records = [json.loads(line) for line in (CALIBRATION / "records.jsonl").read_text().splitlines()]
    seconds = {tuple(r["config"][k] for k in ("v", "d", "n", "h", "w", "s")) + (r["batch"],): (1e-3, 1e-3)
               for r in records}  # fmt: skip
    device = json.loads((CALIBRATION / "device.json").read_text())
    X = models.design_matrix(measured_matmul_model(seconds), models.shape_columns(records), device)
    assert X.shape == (24, 7) and np.allclose(X[:, :2], 1e-3)


@pytest.mark.slow
def test_cold_and_warm_rounds_are_both_recorded(tmp_path, capsys):
    folder = tmp_path / "calibration"
    folder.mkdir()
    shutil.copy(CALIBRATION / "device.json", folder)
    records = sorted(
        (json.loads(line) for line in (CALIBRATION / "records.jsonl").read_text().splitlines()),
        key=lambda r: r["step_seconds"],
    )[:2]
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    cold_warm(folder, tmp_path / "out", min_seconds=0.02, repeats=2, rounds=2)
    for kind in ("cold", "warm"):
        timed = [json.loads(line) for line in (tmp_path / "out" / f"records_{kind}.jsonl").read_text().splitlines()]
        assert [r["config"] for r in timed] == [r["config"] for r in records]
        assert all(r["status"] == "ok" and r["rounds"] == 2 and r["step_seconds"] > 0 for r in timed)
    compare_cold_warm(tmp_path / "out", "exact")
    assert "cold / warm step: median" in capsys.readouterr().out
