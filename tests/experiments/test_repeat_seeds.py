"""experiments/scripts/repeat_seeds.py and evaluate_runs.py: a run repeated at another seed, both on one sample."""

from __future__ import annotations

import json

import numpy as np
from smallest_loss.experiments.scripts import repeat_seeds
from smallest_loss.model import evaluate as evaluate_runs
from smallest_loss.model.train import train

from tests.conftest import tiny_run


def test_a_run_repeats_at_another_seed_and_both_evaluate_on_one_sample(tmp_path, capsys):
    first = tmp_path / "run"
    train(tiny_run(steps=10, eval_every=0), first, progress=False)
    assert repeat_seeds.main([str(first), "--seeds", "1", "--out", str(tmp_path / "seeds")]) == 0
    again = tmp_path / "seeds" / "run-seed1"
    config = json.loads((again / "config.json").read_text())["config"]
    assert (
        config["train"]["seed"] == 1
        and config["model"] == json.loads((first / "config.json").read_text())["config"]["model"]
    )
    assert "final eval loss" in capsys.readouterr().out
    # Repeating again finds it finished and trains nothing.
    assert repeat_seeds.main([str(first), "--seeds", "1", "--out", str(tmp_path / "seeds")]) == 0
    steps, losses = zip(*(evaluate_runs.evaluate_run(str(f), 2, 4, 12345) for f in (first, again)), strict=True)
    assert steps == (10, 10) and np.all(np.isfinite(losses)) and losses[0] != losses[1]


def test_bad_seeds_are_one_line(tmp_path, capsys):
    assert repeat_seeds.main([str(tmp_path), "--seeds", "one", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().out.count("\n") == 1
