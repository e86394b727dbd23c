"""experiments/scripts/step_profile.py: the ops of a compiled step and their seconds, from a synthetic trace whose
answer is known and from a real (tiny) profile."""

from __future__ import annotations

import pytest
from smallest_loss.experiments.scripts.step_profile import kind_of, main, op_seconds, output_shapes, report

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
