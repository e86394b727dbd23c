"""experiments/scripts/step_drift.py: how well a price timed before a gap predicts the run after it, on traces whose
answer is known, and a real (tiny) trace read back from its file."""

from __future__ import annotations

import numpy as np
import pytest
from smallest_loss.experiments.scripts.step_drift import BURST, main, window_errors


def _bursts(step_at) -> np.ndarray:
    """A trace of 200 s: bursts back to back, each `step_at(second)` seconds a step."""
    out, t = [], 0.0
    while t < 200:
        s = step_at(t)
        out.append((t, s))
        t += s * BURST
    return np.array(out)


def test_a_steady_machine_is_priced_exactly_and_a_jump_is_missed_by_its_size():
    steady = window_errors(_bursts(lambda t: 0.02), window=5, gap=8, run=50)
    assert steady.size > 100 and np.allclose(steady, 0)
    jump = window_errors(_bursts(lambda t: 0.02 if t < 100 else 0.03), window=5, gap=8, run=50)
    # a price timed wholly before the jump, with the run wholly after it, is 50% low
    assert jump.max() == pytest.approx(0.5) and jump.min() == pytest.approx(0)
    # longer timing before the run cannot see a change that comes after it: the worst miss stays
    assert window_errors(_bursts(lambda t: 0.02 if t < 100 else 0.03), 10, 8, 50).max() == pytest.approx(0.5)


def test_a_noisy_machine_is_priced_better_by_a_longer_timing():
    rng = np.random.default_rng(0)
    noise = rng.lognormal(0, 0.3, 20_000)  # each burst's own speed, independent of the others
    errors = {w: window_errors(_bursts(lambda t: 0.02 * noise[int(t * 50)]), w, 8, 50) for w in (1, 10)}
    assert np.sqrt(np.mean(errors[10] ** 2)) < 0.5 * np.sqrt(np.mean(errors[1] ** 2))


@pytest.mark.slow
def test_a_real_trace_is_kept_and_read_back(tmp_path, capsys):
    out = tmp_path / "trace.json"
    sets = ["model.d=32", "model.n=1", "model.h=2", "model.s=16", "train.batch_size=2"]
    main(["--seconds", "1", "--gap", "0.1", "--run", "0.3", "--out", str(out), *[f"--set={s}" for s in sets]])
    first = capsys.readouterr().out
    assert "bursts of 10 steps" in first and out.exists()
    main(["--trace", str(out), "--gap", "0.1", "--run", "0.3"])
    assert capsys.readouterr().out == first
