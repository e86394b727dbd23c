"""A training run's wall-clock, term by term, predicted from counts:

    run seconds = start-up + compile + steps x loop step + evaluations + checkpoint saves

- loop step: the profile's step time (the compiled step alone) plus the loop's host cost per step
  (h0 + h1 x tokens per step: building and placing batches, dispatch, host syncs), measured as the loop's
  steady step minus the compiled step's time on the same configuration;
- compile: compiling the step and the evaluation, c0 + c1 x layers + c2 x parameters (millions), fitted to the
  calibration grid's compile times and scaled by what a run compiles besides the step (its evaluation); a run on
  the clock also pays its evaluation's first call there (`eval_first_call`, the one-time costs of the compiled
  evaluation's first call, and two batches: the first call's and one timed to price the evaluations ahead);
- evaluations: evaluations x eval batches x (e0 + forward seconds per sequence x sequences per eval batch), the
  forward pass costing `forward_fraction` of a training step per sequence and each batch `eval_batch` (e0) besides
  (building, placing and dispatching it: a small model's forward is short against it);
- saves: checkpoint saves x (s0 + s1 x state gigabytes + s2 x layers), the state being parameters and AdamW's two
  moments; the per-layer term is the checkpointer's cost per array (each layer adds a dozen arrays of parameters and
  moments), which on a CPU outweighs the bytes of small models (a d32 model's save took 127 ms at 1 layer and 472 ms
  at 8, a d256 one's 151 ms at 1 layer with 8 times the bytes; experiments/scripts/bench_saves.py);
- start-up: the run's set-up before its loop (folder, initial state), a0 + a1 x layers, plus the seconds loading its
  corpus (`Cadence.load_seconds`: the probes train on a few random tokens, a run on its corpus).

Every coefficient is fitted (non-negative least squares) to short real training runs made at calibration
(`timing/probes.py`); the compile model to the grid's records too. All functions here are pure numerics.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from smallest_loss.configs.lazy import optimize

TERMS = ("startup", "compile", "steps", "evals", "saves")  # the order every report prints them in
STATE_BYTES_PER_PARAM = 12.0  # float32 parameters and AdamW's two float32 moments


def fit_nonnegative(X: np.ndarray, y: np.ndarray) -> list[float]:
    """Non-negative least squares of y on the columns of X; with fewer rows than columns, the first column
    (the constant) alone, at the median of y (too few points to separate the terms)."""
    X, y = np.atleast_2d(np.asarray(X, float)), np.asarray(y, float)
    if len(y) == 0:
        return [0.0] * X.shape[1]
    if len(y) < X.shape[1]:
        return [max(float(np.median(y)), 0.0)] + [0.0] * (X.shape[1] - 1)
    return [float(c) for c in optimize.nnls(X, y)[0]]


@dataclass(frozen=True)
class Cadence:
    """What a run does besides its steps (its `TrainConfig` fields): evaluations and checkpoint saves."""

    eval_every: int = 100
    eval_points: int = 0
    eval_batches: int = 8
    eval_batch_size: int = 16  # 0: the training batch size
    checkpoint_every: int = 100
    # Seconds the run spends loading its corpus at start-up (model.data.corpus_load_seconds, measured where the plan
    # is made), added to the profile's start-up, whose probes load a few random tokens; 0: not priced.
    load_seconds: float = 0.0

    @classmethod
    def of(cls, train: Any, load_seconds: float = 0.0) -> Cadence:
        """A run's cadence from its `TrainConfig` (and the seconds loading its corpus)."""
        t = train
        return cls(t.eval_every, t.eval_points, t.eval_batches, t.eval_batch_size, t.checkpoint_every, load_seconds)

    def evals(self, steps: Any) -> np.ndarray:
        """Evaluations of a run of `steps` steps: one every `eval_every` steps or at `eval_points` evenly spaced
        steps (the more often of the two where both are set; their union is not counted), and one at the end."""
        steps = np.asarray(steps, float)
        periods = [np.full_like(steps, self.eval_every)] if self.eval_every else []
        if self.eval_points:
            periods.append(np.maximum(np.floor(steps / self.eval_points), 1))
        if not periods:
            return np.ones_like(steps)
        period = np.minimum.reduce(periods)
        return np.floor(steps / period) + (steps % period != 0)

    def saves(self, steps: Any) -> np.ndarray:
        """Checkpoint saves: every `checkpoint_every` steps and at the end."""
        steps = np.asarray(steps, float)
        if not self.checkpoint_every:
            return np.ones_like(steps)
        return np.ceil(steps / self.checkpoint_every)


@dataclass(frozen=True)
class WallClock:
    """The fitted coefficients of the wall-clock terms (see the module docstring) and the loop's held-out error."""

    host: tuple[float, float]  # h0 seconds, h1 seconds per token of a step
    compile: tuple[float, float, float]  # c0, c1 per layer, c2 per million parameters
    forward_fraction: float  # an evaluation's seconds per sequence over a training step's
    save: tuple[float, float]  # s0, s1 per gigabyte of state
    startup: tuple[float, float]  # a0, a1 per layer
    loop_held_out: dict[str, float]  # the loop's steady step predicted on held-out probes: mape, max_ape, probes
    save_per_layer: float = 0.0  # s2, a save's seconds per layer (0 in profiles written before it was fitted)
    eval_batch: float = 0.0  # e0, an evaluation batch's seconds besides its forward pass (0 in older profiles)
    eval_first_call: float = 0.0  # the evaluation's first call's one-time seconds (0 in older profiles)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WallClock:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def scaled(self, factor: float) -> WallClock:
        """Every term's seconds multiplied by `factor` (a machine running that much slower; evaluations follow the
        step they are priced from)."""
        return dataclasses.replace(
            self,
            host=tuple(c * factor for c in self.host),
            compile=tuple(c * factor for c in self.compile),
            save=tuple(c * factor for c in self.save),
            startup=tuple(c * factor for c in self.startup),
            save_per_layer=self.save_per_layer * factor,
            eval_batch=self.eval_batch * factor,
            eval_first_call=self.eval_first_call * factor,
        )

    def describe(self) -> str:
        """The terms' coefficients and the loop's held-out error, in one line."""
        held = self.loop_held_out
        host = f"host cost {self.host[0] * 1e3:.3g} ms + {self.host[1] * 1e9:.3g} ns per token a step"
        if "mape_without_host" in held and not any(self.host):
            host = (
                f"no host cost (a fitted one held out worse: {held['mape_with_host']:.1%} against "
                f"{held['mape_without_host']:.1%} without)"
            )
        return (
            f"training loop: {host}; "
            f"the loop's steady step held out at {held['mape']:.1%} mean error ({held['max_ape']:.1%} max, "
            f"{held['probes']} probe runs); compile {self.compile[0]:.3g} s + {self.compile[1]:.3g} s per layer + "
            f"{self.compile[2]:.3g} s per million parameters; evaluation {self.forward_fraction:.2f} of a step per "
            f"sequence + {self.eval_batch * 1e3:.3g} ms a batch (first call {self.eval_first_call * 1e3:.3g} ms); "
            f"save {self.save[0]:.3g} s + {self.save[1]:.3g} s/GB + {self.save_per_layer:.3g} s per layer; "
            f"start-up {self.startup[0]:.3g} s + {self.startup[1]:.3g} s per layer"
        )

    def host_seconds(self, b: Any, s: Any) -> np.ndarray:
        """The loop's host seconds per step of b sequences of s tokens."""
        return self.host[0] + self.host[1] * np.asarray(b, float) * (np.asarray(s, float) + 1)

    def compile_seconds(self, n: Any, params: Any) -> np.ndarray:
        c0, c1, c2 = self.compile
        return c0 + c1 * np.asarray(n, float) + c2 * np.asarray(params, float) / 1e6

    def save_seconds(self, params: Any, n: Any) -> np.ndarray:
        gigabytes = np.asarray(params, float) * STATE_BYTES_PER_PARAM / 1e9
        return self.save[0] + self.save[1] * gigabytes + self.save_per_layer * np.asarray(n, float)

    def startup_seconds(self, n: Any) -> np.ndarray:
        return self.startup[0] + self.startup[1] * np.asarray(n, float)

    def eval_batch_seconds(self, step_seconds: Any, b: Any, cadence: Cadence) -> np.ndarray:
        """One evaluation batch's seconds, from the (compiled) step seconds of a training step of b sequences."""
        rows = cadence.eval_batch_size or np.asarray(b, float)
        per_sequence = self.forward_fraction * np.asarray(step_seconds, float) / np.asarray(b, float)
        return self.eval_batch + rows * per_sequence

    def eval_seconds(self, step_seconds: Any, b: Any, cadence: Cadence) -> np.ndarray:
        """One evaluation's seconds (after the first call), from the compiled step seconds of a step of b sequences."""
        return cadence.eval_batches * self.eval_batch_seconds(step_seconds, b, cadence)

    def compile_on_the_clock(self, n: Any, params: Any, step_seconds: Any, b: Any, cadence: Cadence) -> np.ndarray:
        """The compile term of a run that ends on the clock (what every plan these terms price trains): the step's
        and evaluation's compilation, the evaluation's first call and the batch timed after it (`model/train.py`)."""
        first = self.eval_first_call + 2 * self.eval_batch_seconds(step_seconds, b, cadence)
        return self.compile_seconds(n, params) + first

    def terms(
        self, steps: Any, loop_step: Any, b: Any, s: Any, n: Any, params: Any, cadence: Cadence
    ) -> dict[str, np.ndarray]:
        """Each term's seconds (`TERMS`) of runs of `steps` steps whose loop step takes `loop_step` seconds, and
        their sum `total`; where the cadence prices the corpus's loading, also `corpus_load`, the start-up's share of
        it."""
        bare = np.asarray(loop_step, float) - self.host_seconds(b, s)
        out = dict(
            startup=self.startup_seconds(n) + cadence.load_seconds,
            compile=self.compile_on_the_clock(n, params, bare, b, cadence),
            steps=np.asarray(steps, float) * loop_step,
            evals=cadence.evals(steps) * self.eval_seconds(bare, b, cadence),
            saves=cadence.saves(steps) * self.save_seconds(params, n),
        )
        out["total"] = sum(out[k] for k in TERMS)
        if cadence.load_seconds:
            out["corpus_load"] = np.full_like(out["total"], cadence.load_seconds)  # start-up's share, not a term
        return out

    def steps_within(
        self, seconds: Any, loop_step: Any, b: Any, s: Any, n: Any, params: Any, cadence: Cadence
    ) -> np.ndarray:
        """The whole steps a run can take in `seconds` of wall-clock: what start-up, compile, the evaluations and
        the saves leave, at the loop step plus each step's share of the periodic evaluations and saves (the
        evenly spaced evaluations and the last save and evaluation are counted once). Zero where none fit."""
        loop_step = np.asarray(loop_step, float)
        bare = loop_step - self.host_seconds(b, s)
        eval_s = self.eval_seconds(bare, b, cadence)
        save_s = self.save_seconds(params, n)
        fixed = self.startup_seconds(n) + cadence.load_seconds + self.compile_on_the_clock(n, params, bare, b, cadence)
        fixed = fixed + save_s + eval_s * (1 + cadence.eval_points)
        per_step = loop_step.copy()
        if cadence.checkpoint_every:
            per_step = per_step + save_s / cadence.checkpoint_every
        if cadence.eval_every:
            per_step = per_step + eval_s / cadence.eval_every
        return np.maximum(np.floor((np.asarray(seconds, float) - fixed) / per_step), 0.0)
