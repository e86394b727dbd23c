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
    halves_by_bandwidth,
    main,
    matmul_seconds,
    measured_matmul_model,
    with_bandwidth,
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


def test_errors_against_the_measured_bandwidth(tmp_path, capsys):
    # Three copies of one calibration that measured 3, 4 and 6 GB/s: the same errors at every bandwidth, so no
    # configuration's error moves with it (no correlation), and the halves below and above the median agree.
    folders = []
    for k, rate in enumerate((3e9, 4e9, 6e9)):
        folder = tmp_path / f"c{k}"
        shutil.copytree(CALIBRATION, folder)
        device = json.loads((folder / "device.json").read_text())
        (folder / "device.json").write_text(json.dumps(dict(device, bandwidth=rate)))
        folders.append(str(folder))
    main(folders)
    out = capsys.readouterr().out
    assert "the calibrations measured 3.00-6.00 GB/s" in out and "0 of 24 configurations" in out
    assert all(row.split("|")[5].strip() == "n/a" for row in out.splitlines() if row.startswith("| ("))
    assert "below the median bandwidth and in those above it correlate at +1.00" in out


def test_with_bandwidth_reads_a_residual_that_moves_with_the_host():
    rates = np.array([3.0, 4.0, 5.0, 6.0])
    r, slope = with_bandwidth(list(zip(rates, 0.02 * (rates - 4.5), strict=True)))
    assert r == pytest.approx(1.0) and slope == pytest.approx(0.02)
    assert np.isnan(with_bandwidth([(3.0, 0.1), (4.0, 0.2)])[0])  # two calibrations: too few
    assert np.isnan(with_bandwidth([(4.0, 0.1), (4.0, 0.2), (4.0, 0.3)])[0])  # one bandwidth: nothing to read
    low, high = halves_by_bandwidth({(1,): [(3.0, -0.1), (6.0, 0.1)], (2,): [(3.0, 0.2), (6.0, -0.2)]}, 4.5)
    assert np.allclose(low, [-0.1, 0.2]) and np.allclose(high, [0.1, -0.2])


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
