"""The schedule-aware curve law (Tissue et al. 2024) on synthetic curves with known constants, and its one-line
refusals of curves it cannot fit."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.schema import TrainConfig
from smallest_loss.scaling.curve_law import (
    Curve,
    TissueLaw,
    at_bounds,
    curve_law_from_dict,
    fit_curve_law_of_shape,
    read_curve,
    schedule_lrs,
    shape_peaks,
)
from smallest_loss.scaling.from_curves import chinchilla_points

TRUE = dict(L0=1.5, A=0.8, alpha=0.5, C=0.3)
LAM = 0.999


def schedule(steps: int, kind: str, peak: float = 3e-3, warmup: int = 10) -> np.ndarray:
    t = np.arange(steps, dtype=float)
    lr = np.where(t < warmup, peak * t / warmup, peak)
    if kind == "cosine":
        lr = np.where(t < warmup, lr, peak * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * (t - warmup) / (steps - warmup)))))
    if kind == "wsd":
        cool = steps // 5
        lr = np.where(t >= steps - cool, peak * (1 - np.sqrt(np.clip((t - steps + cool) / cool, 0, 1))) + 1e-5, lr)
    return lr


def reference_loss(lr: np.ndarray) -> np.ndarray:
    """The law written out step by step (the loss at step s sees the updates before it)."""
    S1 = S2 = m = 0.0
    out = []
    for i, eta in enumerate(lr):
        out.append(TRUE["L0"] + TRUE["A"] * S1 ** -TRUE["alpha"] - TRUE["C"] * S2 if S1 > 0 else np.inf)
        m = LAM * m + (max(lr[i - 1] - eta, 0.0) if i else 0.0)
        S1, S2 = S1 + eta, S2 + m
    return np.array(out)


def curve(name: str, lr: np.ndarray, noise: float = 0.0, seed: int = 0) -> Curve:
    loss = reference_loss(lr) * np.exp(np.random.default_rng(seed).normal(0, noise, len(lr)))
    return Curve(name, 1000, 1024, lr, loss, 12, None, name)


def test_recovers_known_constants():
    curves = [
        curve("c1", schedule(2000, "cosine")),
        curve("c2", schedule(600, "cosine")),
        curve("w", schedule(1500, "wsd")),
    ]
    law, rms = fit_curve_law_of_shape(curves, LAM)
    assert (law.L0, law.A, law.alpha, law.C) == pytest.approx(tuple(TRUE.values()), rel=2e-3)
    assert rms < 1e-4


def test_predicts_an_unseen_schedule_within_noise():
    curves = [curve(f"c{k}", schedule(n, "cosine"), 0.01, k) for k, n in enumerate((500, 1500))]
    law, _ = fit_curve_law_of_shape(curves, LAM)
    lr = schedule(3000, "wsd")
    assert law.curve(lr)[-1] == pytest.approx(reference_loss(lr)[-1], rel=0.01)


@pytest.mark.slow
def test_laws_from_curves_use_each_shapes_own_peak_rate():
    """A tuned sweep trains each shape at its own peak rate: each shape's predicted cosine finals are at that rate,
    not at the first run's."""
    train = TrainConfig(lr=1.0, batch_size=16, steps=1)
    slow, fast = (
        dataclasses.replace(curve(n, schedule(400, "cosine", peak)), N=N)
        for n, peak, N in (("slow", 2e-3, 1000), ("fast", 8e-3, 4000))
    )
    peaks = shape_peaks([slow, fast])
    assert peaks == pytest.approx({1000: 2e-3, 4000: 8e-3})
    law = TissueLaw(N=1000, **TRUE, eval_gap=0.0)
    points = chinchilla_points(
        [dataclasses.replace(law, N=1000), dataclasses.replace(law, N=4000)],
        {1000: [200, 400, 800], 4000: [200, 400, 800]},
        train,
        1024,
        peaks,
    )
    for k, peak in enumerate((2e-3, 2e-3, 2e-3, 8e-3, 8e-3, 8e-3)):
        steps = (200, 400, 800)[k % 3]
        assert points.loss[k] == pytest.approx(law.final_eval(schedule_lrs(dataclasses.replace(train, lr=peak), steps)))
    assert np.all(points.loss[3:] < points.loss[:3])  # the faster rate's larger area: lower predicted losses
    mixed = dataclasses.replace(fast, name="mixed", N=1000)
    assert "peak learning rates" in shape_peaks([slow, mixed])


def test_parameters_at_a_bound_are_named():
    from smallest_loss.scaling.multipower import MultiPowerLaw

    law = MultiPowerLaw(N=1000, L0=0.0, A=1.0, alpha=0.5, B=10.0, C=0.1, beta=1e-3, gamma=2.0, eval_gap=0.0)
    assert at_bounds(law) == ["L0 (lower)", "beta (lower)", "gamma (upper)"]
    assert at_bounds(dataclasses.replace(law, L0=1.0, beta=0.5, gamma=0.5)) == []
    assert at_bounds(TissueLaw(N=1000, **dict(TRUE, alpha=3.0), eval_gap=0.0)) == ["alpha (upper)"]


def test_law_from_its_dict():
    """A law's dict names its form; a dict written before forms existed (no key) is Tissue's."""
    law = TissueLaw(1000, *TRUE.values(), eval_gap=0.01, lam=LAM)
    row = dict(law.to_dict(), runs=["c1"], rms_log_error=0.02)
    assert row["form"] == "tissue" and curve_law_from_dict(row) == law
    assert curve_law_from_dict({k: v for k, v in row.items() if k != "form"}) == law


@pytest.fixture
def run_copy(tmp_path):
    """A finished run folder written by hand (metrics with lr, summary), to damage."""
    folder = tmp_path / "run"
    from tests.conftest import tiny_run

    folder.mkdir()
    record = dict(schema_version=1, config=tiny_run(steps=20).to_dict(), corpus={}, eval_sets={})
    (folder / "config.json").write_text(json.dumps(record))
    lines = [dict(step=s, tokens=s * 256, wall_seconds=0.1, train_loss=5.0 / s**0.3, lr=1e-3) for s in range(1, 21)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (folder / "summary.json").write_text(json.dumps(dict(status="completed", steps=20, final_eval_loss=2.5)))
    return folder, lines


def _rewrite(folder, lines):
    (folder / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_reads_a_good_curve(run_copy):
    c = read_curve(run_copy[0])
    assert c.steps == 20 and c.final_eval == 2.5 and c.first == 4


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda ls: [{k: v for k, v in x.items() if k != "lr"} for x in ls], "no learning-rate record"),
        (lambda ls: ls[:9] + ls[10:], "gap"),
        (lambda ls: ls[:5] + [dict(ls[5], train_loss=None)] + ls[6:], "step 6 is not a positive finite"),
    ],
)
def test_bad_curves_are_one_line(run_copy, damage, message):
    folder, lines = run_copy
    _rewrite(folder, damage(lines))
    with pytest.raises(UserError, match=message):
        read_curve(folder)


def test_branch_without_parent_is_refused(run_copy, tmp_path):
    folder, _ = run_copy
    record = json.loads((folder / "config.json").read_text())
    record["branch"] = dict(parent="../gone", step=10)
    (folder / "config.json").write_text(json.dumps(record))
    with pytest.raises(UserError, match="parent run .* is missing"):
        read_curve(folder)
    shutil.rmtree(folder)
