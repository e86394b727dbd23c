"""experiments/scripts/step_profile.py: the ops of a compiled step and their seconds, from a synthetic trace whose
answer is known and from a real (tiny) profile."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from smallest_loss.experiments.scripts.step_profile import (
    class_residuals,
    class_seconds,
    kind_of,
    main,
    op_classes,
    op_seconds,
    output_shapes,
    report,
)

CALIBRATION = Path(__file__).resolve().parents[2] / "results/cpu/quickstart/calibration"

HLO = """HloModule step
%fused_computation.1 (param_0: f32[4,8]) -> f32[8,4] {
  %param_0 = f32[4,8]{1,0} parameter(0)
  ROOT %transpose.1 = f32[8,4]{1,0} transpose(%param_0), dimensions={1,0}
}
ENTRY %main (p: f32[4,8]) -> f32[8,4] {
  %p = f32[4,8]{1,0} parameter(0)
  %copy_fusion.2 = f32[8,4]{1,0} fusion(%p), kind=kLoop, calls=%fused_computation.1
  ROOT %dot.3 = f32[8,8]{1,0} dot(%copy_fusion.2, %copy_fusion.2)
}
"""


def test_ops_are_the_step_s_instructions_timed_per_step_and_grouped_by_kind():
    shapes = output_shapes(HLO)
    assert shapes["copy_fusion.2"] == "f32[8,4]{1,0}" and shapes["dot.3"] == "f32[8,8]{1,0}"
    events = [
        dict(ph="X", name="copy_fusion.2", dur=300.0),
        dict(ph="X", name="copy_fusion.2", dur=100.0),
        dict(ph="X", name="dot.3", dur=1000.0),
        dict(ph="X", name="ThunkExecutor::Execute", dur=5000.0),  # the executor, not an op of the step
        dict(ph="i", name="dot.3"),  # not a complete event
    ]
    seconds = op_seconds(events, shapes, steps=2)
    assert seconds == {"copy_fusion.2": pytest.approx(2e-4), "dot.3": pytest.approx(5e-4)}
    assert kind_of("copy_bitcast_fusion.13") == "copy_bitcast_fusion" and kind_of("dot") == "dot"
    lines = report(seconds, shapes, step=1e-3, top=1)
    assert "| dot | 0.50 | 1 |" in lines and "| copy_fusion | 0.20 | 1 |" in lines
    assert lines[-1] == "| dot.3 | 0.50 | `f32[8,8]{1,0}` |"


def test_a_tiny_step_is_profiled_on_this_backend(capsys, tmp_path):
    sets = ["model.d=32", "model.n=1", "model.h=2", "model.w=64", "model.s=16", "train.batch_size=2"]
    main([*(f"--set={s}" for s in sets), "--steps", "3", "--top", "3", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert out.startswith("step ") and "| kind | ms a step | ops |" in out and "| op | ms a step | output |" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) == 3 and all("[" in row for row in rows)  # three ops, each with its output shape
    assert list(tmp_path.glob("**/perfetto_trace.json.gz"))


CLASSED = """HloModule step
ENTRY %main (p: f32[4,8]) -> f32[8] {
  %p = f32[4,8]{1,0} parameter(0)
  %ynn_fusion.1 = f32[4,4]{1,0} fusion(%p, %p), kind=kCustom, calls=%f, metadata={op_name="jit(step)/jvp()/dot_general"}
  %dot.2 = f32[8,8]{1,0} dot(%p, %p), metadata={op_name="jit(step)/transpose(jvp())/transpose"}
  %tanh_fusion.3 = f32[4,8]{1,0} fusion(%p), kind=kLoop, calls=%g, metadata={op_name="jit(step)/jvp()/tanh"}
  ROOT %multiply_add_fusion.4 = f32[8]{0} fusion(%p), kind=kLoop, calls=%h, metadata={op_name="jit(step)/add"}
}
"""


def test_ops_fall_into_matmuls_element_wise_work_and_the_optimizer_by_xla_s_metadata():
    classes = op_classes(CLASSED)
    assert classes == {
        "p": "element-wise", "ynn_fusion.1": "matmuls", "dot.2": "matmuls", "tanh_fusion.3": "element-wise",
        "multiply_add_fusion.4": "optimizer",
    }  # fmt: skip
    seconds = {"ynn_fusion.1": 1.0, "dot.2": 1.0, "tanh_fusion.3": 1.0, "multiply_add_fusion.4": 1.0}
    assert class_seconds(seconds, classes, step=2.0) == pytest.approx([1.0, 0.5, 0.5])  # scaled to the step


def test_a_class_whose_time_follows_its_features_leaves_no_residual():
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.uniform(1, 5, 12), rng.integers(1, 6, 12), np.ones(12)])
    times = np.column_stack([X @ [2.0, 0.5, 0.1], X @ [1.0, 0.0, 0.3]])
    residuals = class_residuals(times, [X, X], times.sum(1))
    assert np.allclose(residuals, 0.0, atol=1e-9)
    bumped = times.copy()
    bumped[3, 0] *= 1.5  # one configuration's matmuls slower than their counts
    residuals = class_residuals(bumped, [X, X], bumped.sum(1))
    assert residuals[3, 0] < 0 and np.allclose(residuals[:, 1], 0.0, atol=1e-9)  # each class is fitted alone


@pytest.mark.slow
def test_a_calibration_s_configurations_are_profiled_by_class(capsys, tmp_path):
    shutil.copy(CALIBRATION / "device.json", tmp_path)
    records = [json.loads(line) for line in (CALIBRATION / "records.jsonl").read_text().splitlines()][:6]
    tiny = [{**r, "batch": 2, "config": {**r["config"], "d": 16 * (1 + i % 3), "h": 1 + i % 2, "w": 64, "s": 16}}
            for i, r in enumerate(records)]  # fmt: skip
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in tiny))
    main(["--calibration", str(tmp_path), "--steps", "2"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| d")]
    assert len(rows) == 6 and out.startswith(f"{tmp_path.name}: exact-grouped-alias held out at ")
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        step, classes = float(cells[1]), [float(c.split()[0]) for c in cells[3:6]]
        assert sum(classes) == pytest.approx(step, abs=0.021) and classes[0] > 0 and classes[1] > 0
    with pytest.raises(SystemExit):
        main(["--calibration", str(tmp_path), "--set", "model.d=32"])
