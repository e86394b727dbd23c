"""Schedule-aware loss curves: the loss at every step as a function of the learning rates so far.

Tissue et al. (2024, "Scaling Law with Learning Rate Annealing", arXiv 2408.11029, eq. 1):

    L(s) = L0 + A * S1(s)^(-alpha) - C * S2(s)
    S1(s) = sum_{i<=s} eta_i                          (forward area)
    S2(s) = sum_{i<=s} m_i,  m_i = lam * m_{i-1} + (eta_{i-1} - eta_i)   (annealing area with momentum)

with lam about 0.999. Fitted to whole curves of runs with any schedules (cosine, constant, cool-down branches),
the law predicts the loss at any step of any schedule from that schedule's learning rates alone.

Where we depart from the paper: (1) warmup's rising rates are not annealing, so a step where the rate rises adds
nothing to m (the paper fits after warmup and says the same); (2) a logged line's loss is measured before its
step's update, so S1 and S2 there sum the updates before it; (3) every run's curve is averaged over at most
`BINS` windows of consecutive steps (the noise of one batch's loss averages out) and weighted so every run
counts alike; (4) the fit is robust least squares (soft L1) in log loss from several starts; (5) train losses are
what every step logs, so the law is a train-loss law, and each shape's final evaluation loss is its predicted
final train loss times the mean ratio the fitted runs show (`eval_gap`, in logs). Runs trained with periodic
evaluations (`train.eval_points`) can instead be fitted on those (`on_evals`, `fit --curves --curve-loss eval`):
each evaluation after step s is one point at s updates, and the law is then one of the eval loss (no gap).

`form="multipower"` fits the multi-power law of Luo et al. (2025, arXiv 2503.12811; scaling/multipower.py) instead,
with the same conventions (1)-(5).

A law holds for one model shape (N), batch size and peak rate. The Chinchilla law across shapes fitted to what
the curve laws predict (laws from curves) is scaling/from_curves.py's. Not to be confused with
scaling/learning_curve.py, Kaplan et al.'s power law in steps extrapolating one run's curve.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.lazy import LazyModule, optimize
from smallest_loss.configs.schema import TrainConfig
from smallest_loss.model.params import count_params
from smallest_loss.model.schedule import schedule_values
from smallest_loss.scaling import multipower as mp
from smallest_loss.scaling.multipower import MultiPowerLaw, drops, fit_multipower, window_index

signal = LazyModule("scipy.signal")  # loaded on first use (scipy takes a second to import)
model_runs = LazyModule("smallest_loss.model.runs")  # the trainer's code (JAX, Flax), for run folders only

LAMBDA = 0.999  # Tissue et al.'s momentum of the annealing area
BINS = 100  # windows each curve is averaged over for fitting
PARAMS = ("L0", "A", "alpha", "C")
MIN_PREFIX = 4  # a prefix needs more fitted points (steps, or evaluations) than this
MIN_EVALS = 3  # evaluations after warmup a run needs to be fitted on its eval losses
TAIL = 0.05  # a run's final train loss: the mean over its last 5% of steps
MEAN_DRAWS = 10_000  # resamples of the runs for the interval of a mean prefix error
# Bounds of a Tissue fit's theta = (L0, log A, alpha, log C); L0's upper bound is the largest loss
LOWER = (0.0, -30.0, 1e-3, -40.0)
UPPER = (float("inf"), 30.0, 3.0, 10.0)


@dataclass(frozen=True)
class Curve:
    """One run's logged curve: learning rate and train loss at steps 1..T; the fitted steps are `first`..T
    (after warmup; for a cool-down branch, after its branch point: the parent's steps are the parent's)."""

    name: str
    N: int
    tokens_per_step: int
    lr: np.ndarray
    loss: np.ndarray
    first: int
    final_eval: float | None
    family: str  # the parent's name for a parent and its branches, else the run's own: runs sharing steps
    eval_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # steps evaluated (after update)
    eval_losses: np.ndarray = field(default_factory=lambda: np.zeros(0))
    fit_evals: bool = False  # a fit reads the evaluations (a law of the eval loss), not every step's train loss
    loss_kind: str = ""  # what a curve table's logged points are ("train" or "eval"); "" for a run folder's curve

    @property
    def steps(self) -> int:
        """Steps logged."""
        return len(self.lr)

    def fitted_evals(self) -> tuple[np.ndarray, np.ndarray]:
        """The evaluations in the fitted range: update counts t (an evaluation after step s sees t = s updates;
        a fit of train losses reads t = first - 1 on) and their losses."""
        keep = self.eval_steps >= max(self.first - 1, 1)
        return self.eval_steps[keep], self.eval_losses[keep]

    def fitted(self) -> int:
        """How many points a fit reads: steps from `first` on, or evaluations there (`fit_evals`)."""
        return len(self.fitted_evals()[0]) if self.fit_evals else self.steps - self.first + 1

    def prefix(self, cut: int) -> Curve:
        """The curve's first `cut` steps (and its evaluations among them), with no final eval loss."""
        keep = self.eval_steps <= cut
        return dataclasses.replace(
            self,
            lr=self.lr[:cut],
            loss=self.loss[:cut],
            final_eval=None,
            eval_steps=self.eval_steps[keep],
            eval_losses=self.eval_losses[keep],
        )


def areas(lr: np.ndarray, lam: float = LAMBDA) -> tuple[np.ndarray, np.ndarray]:
    """S1 and S2 of Tissue et al. (2024) after each update: element k sums updates 1..k+1 (k = 0, 1, ...)."""
    momentum = signal.lfilter([1.0], [1.0, -lam], drops(lr))  # rising (warmup) rates: no annealing
    return np.cumsum(np.asarray(lr, dtype=np.float64)), np.cumsum(momentum)


def _before(lr: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """S1, S2 as seen by the loss logged at steps 1..T: the areas of the updates before each step."""
    S1, S2 = areas(lr, lam)
    return np.concatenate([[0.0], S1[:-1]]), np.concatenate([[0.0], S2[:-1]])


@dataclass(frozen=True)
class TissueLaw:
    """Tissue et al.'s law L(s) = L0 + A S1^-alpha - C S2 for one model shape; `eval_gap` = mean log(final eval /
    final law)."""

    N: int
    L0: float
    A: float
    alpha: float
    C: float
    eval_gap: float
    lam: float = LAMBDA
    form: ClassVar[str] = "tissue"
    params: ClassVar[tuple[str, ...]] = PARAMS

    def curve(self, lr: np.ndarray) -> np.ndarray:
        """The train loss logged at each step of a schedule with these learning rates (step 1 is undefined:
        no update yet, S1 = 0; it is returned as inf)."""
        S1, S2 = _before(lr, self.lam)
        with np.errstate(divide="ignore"):
            return self.L0 + self.A * S1 ** (-self.alpha) - self.C * S2

    def final_eval(self, lr: np.ndarray) -> float:
        """The evaluation loss after the last update of the schedule."""
        S1, S2 = areas(lr, self.lam)
        return float((self.L0 + self.A * S1[-1] ** (-self.alpha) - self.C * S2[-1]) * np.exp(self.eval_gap))

    def theta(self) -> np.ndarray:
        """The law in a fit's parameters (LOWER, UPPER)."""
        return np.array([self.L0, np.log(self.A), self.alpha, np.log(max(self.C, 1e-300))])

    def to_dict(self) -> dict[str, float | str]:
        """The law's constants and its form, as a curve-law file's shape row holds them."""
        return dict(dataclasses.asdict(self), form=self.form)


CurveLaw = TissueLaw | MultiPowerLaw
FORMS: dict[str, tuple[type[TissueLaw] | type[MultiPowerLaw], str, str]] = {
    "tissue": (
        TissueLaw,
        "tissue2024",
        "L(s) = L0 + A*S1^(-alpha) - C*S2 (Tissue et al. 2024, arXiv 2408.11029); eval = L * exp(eval_gap)",
    ),
    "multipower": (
        MultiPowerLaw,
        "multipower2025",
        "L(t) = L0 + A*S1^(-alpha) - LD(t), LD(t) = B*sum_k "
        "(eta_{k-1} - eta_k)*(1 - (C*eta_k^(-gamma)*S_k(t) + 1)^(-beta)) (Luo et al. 2025, arXiv "
        "2503.12811); eval = L * exp(eval_gap)",
    ),
}


def _check_form(form: str) -> None:
    if form not in FORMS:
        raise UserError(f"unknown curve-law form {form!r}; choose one of: {', '.join(FORMS)}")


def curve_law_from_dict(row: dict[str, Any]) -> CurveLaw:
    """The law a `to_dict()` (or a row of `fit_curve_laws`'s shapes) describes; its form key picks the class (no
    key: Tissue's, as written before forms existed)."""
    form = row.get("form", "tissue")
    _check_form(form)
    cls = FORMS[form][0]
    return cls(**{f.name: row[f.name] for f in dataclasses.fields(cls) if f.name in row})


def _binned(curve: Curve, lam: float) -> tuple[np.ndarray, ...]:
    """S1 and S2 of every fitted step, each step's window (at most BINS windows of consecutive steps) and the
    mean log loss of each window."""
    if curve.fit_evals:
        t, loss = curve.fitted_evals()
        S1, S2 = areas(curve.lr, lam)
        return S1[t - 1], S2[t - 1], np.arange(len(t)), np.log(loss)
    S1, S2 = _before(curve.lr, lam)
    fitted = np.arange(curve.first - 1, curve.steps)
    window = window_index(len(fitted), BINS)
    logL = np.bincount(window, np.log(curve.loss[fitted])) / np.bincount(window)
    return S1[fitted], S2[fitted], window, logL


def _residuals(
    theta: np.ndarray, S1: np.ndarray, S2: np.ndarray, window: np.ndarray, logL: np.ndarray, w: np.ndarray
) -> np.ndarray:
    """Weighted log(law) - log(loss), each averaged over a window of steps (the law at every step, then
    averaged: the law is not linear in S1 within a window)."""
    L0, log_A, alpha, log_C = theta
    pred = L0 + np.exp(log_A - alpha * np.log(S1)) - np.exp(log_C) * S2
    log_pred = np.log(np.maximum(pred, 1e-9))
    return w * (np.bincount(window, log_pred) / np.bincount(window) - logL)


def _fit_arrays(curves: Sequence[Curve], lam: float) -> tuple[np.ndarray, ...]:
    """The curves' `_binned` arrays joined (windows numbered on), and weights that make every run count alike."""
    S1, S2, windows, logL, weights, offset = [], [], [], [], [], 0
    for c in curves:
        s1, s2, window, log_l = _binned(c, lam)
        S1.append(s1), S2.append(s2), windows.append(window + offset), logL.append(log_l)
        weights.append(np.full(len(log_l), 1 / np.sqrt(len(log_l))))
        offset += len(log_l)
    return tuple(np.concatenate(x) for x in (S1, S2, windows, logL, weights))


def _starts(S1: np.ndarray, logL: np.ndarray, L_min: float) -> list[np.ndarray]:
    """Starting points over L0, alpha and C; A puts the curve through the first point."""
    starts = []
    for frac, alpha, C in itertools.product((0.3, 0.7, 0.9), (0.3, 0.7, 1.5), (1e-3, 0.1, 1.0)):
        L0 = frac * L_min
        log_A = np.log(max(np.exp(logL[0]) - L0, 1e-6)) + alpha * np.log(S1[0])
        starts.append(np.array([L0, log_A, alpha, np.log(C)]))
    return starts


def fit_curve_law_of_shape(
    curves: Sequence[Curve], lam: float = LAMBDA, start: CurveLaw | None = None, form: str = "tissue"
) -> tuple[CurveLaw, float]:
    """Fit one shape's law of the given form to its runs' curves; returns the law and the rms of log(law / loss)
    on the windows. `start` alone starts the fit (a bootstrap resample starts from the full fit); `lam` is
    Tissue's. The eval gap: the mean log ratio of final eval loss to the law's last logged loss."""
    _check_form(form)
    if len({c.N for c in curves}) != 1:
        raise UserError("a curve law is fitted to runs of one model shape at a time")
    law, rms = fit_multipower(curves, BINS, start) if form == "multipower" else _fit_tissue(curves, lam, start)
    gaps = [np.log(c.final_eval / law.curve(c.lr)[-1]) for c in curves if c.final_eval and not c.fit_evals]
    return dataclasses.replace(law, eval_gap=float(np.mean(gaps)) if gaps else 0.0), rms


def _fit_tissue(curves: Sequence[Curve], lam: float, start: TissueLaw | None) -> tuple[TissueLaw, float]:
    """Tissue et al.'s law fitted (eval_gap 0). Bounds: 0 <= L0 <= max loss (annealing takes the loss below L0),
    0 < alpha <= 3, C >= 0 (as exp(log C)); 27 starts, or `start` alone."""
    S1, S2, window, logL, w = _fit_arrays(curves, lam)
    L_min = float(np.exp(logL.min()))
    lower, upper = list(LOWER), [float(np.exp(logL.max())), *UPPER[1:]]
    best = None
    starts = (
        _starts(S1, logL, L_min)
        if start is None
        else [np.maximum(start.theta(), [-np.inf, -np.inf, -np.inf, np.log(1e-17)])]
    )
    for x0 in starts:
        x0 = np.clip(x0, lower, np.array(upper) - 1e-9)
        res = optimize.least_squares(
            _residuals,
            x0,
            bounds=(lower, upper),
            loss="soft_l1",
            f_scale=0.01,
            args=(S1, S2, window, logL, w),
            x_scale="jac",
            xtol=1e-12,
            ftol=1e-12,
            gtol=1e-12,
            max_nfev=2000,
        )
        if best is None or res.cost < best.cost:
            best = res
    L0, log_A, alpha, log_C = best.x
    law = TissueLaw(curves[0].N, float(L0), float(np.exp(log_A)), float(alpha), float(np.exp(log_C)), 0.0, lam)
    rms = float(np.sqrt(np.sum(_residuals(best.x, S1, S2, window, logL, np.ones_like(w)) ** 2 * w**2) / np.sum(w**2)))
    return law, rms


def bootstrap_draws(curves: Sequence[Curve], full: CurveLaw, n_boot: int, seed: int = 0) -> list[CurveLaw]:
    """Refits (from the full fit `full`, of its form) to runs resampled with replacement."""
    rng, lam, draws = np.random.default_rng(seed), getattr(full, "lam", LAMBDA), []
    for _ in range(n_boot):
        sample = [curves[i] for i in rng.integers(0, len(curves), len(curves))]
        draws.append(fit_curve_law_of_shape(sample, lam, start=full, form=full.form)[0])
    return draws


def bootstrap_curve_law(
    curves: Sequence[Curve],
    full: CurveLaw,
    n_boot: int,
    seed: int = 0,
    level: float = 0.95,
    draws: Sequence[CurveLaw] | None = None,
) -> dict[str, list[float]]:
    """Percentile intervals of the law's parameters and eval_gap over `bootstrap_draws` (made here unless given)."""
    draws = bootstrap_draws(curves, full, n_boot, seed) if draws is None else draws
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    return {k: [float(v) for v in np.percentile([getattr(d, k) for d in draws], q)]
            for k in (*full.params, "eval_gap")}  # fmt: skip


def at_bounds(law: CurveLaw, tol: float = 1e-4) -> list[str]:
    """The law's parameters that sit at a bound of their fit (the runs did not pin them: the fit would have moved
    them further), as "name (lower)" or "name (upper)"; L0 is bounded below by 0 (a law with no floor)."""
    lower, upper = (mp.LOWER, mp.UPPER) if law.form == "multipower" else (LOWER, UPPER)
    out = []
    for name, x, lo, hi in zip(law.params, law.theta(), lower, upper, strict=True):
        if x <= lo + tol * max(1.0, abs(lo)):
            out.append(f"{name} (lower)")
        elif x >= hi - tol * max(1.0, abs(hi)):
            out.append(f"{name} (upper)")
    return out


def on_evals(curves: Sequence[Curve]) -> list[Curve]:
    """The curves to be fitted on their periodic evaluation losses (`fit_evals`: a law of the eval loss itself, no
    eval gap), refused in one line where a run has fewer than MIN_EVALS evaluations after warmup."""
    for c in curves:
        n = len(c.fitted_evals()[0])
        if not np.all(np.isfinite(c.eval_losses) & (c.eval_losses > 0)):
            raise UserError(f"{c.name}: an evaluation loss is not a positive finite number")
        if n < MIN_EVALS:
            raise UserError(
                f"{c.name}: {n} evaluation(s) after warmup (or its branch point); a law of eval losses "
                f"needs at least {MIN_EVALS} per run: train with periodic evaluations (--set "
                "train.eval_points=32, or train.eval_every)"
            )
    return [dataclasses.replace(c, fit_evals=True) for c in curves]


def by_shape(curves: Sequence[Curve]) -> dict[int, list[Curve]]:
    """The curves grouped by model shape (N), in increasing N."""
    groups: dict[int, list[Curve]] = {}
    for c in curves:
        groups.setdefault(c.N, []).append(c)
    return dict(sorted(groups.items()))


def final_train_loss(curve: Curve, predicted: np.ndarray | None = None) -> float:
    """Mean train loss over the last TAIL of the steps (measured, or `predicted` for each step)."""
    values = curve.loss if predicted is None else predicted
    return float(np.mean(values[-max(1, round(TAIL * curve.steps)) :]))


def fit_from_prefix(
    curve: Curve, cut: int, others: Sequence[Curve], lam: float = LAMBDA, form: str = "tissue"
) -> CurveLaw:
    """The law of `curve`'s shape fitted to its first `cut` steps and the whole curves of `others` (runs of its
    shape that share no steps with it); its own final eval loss never enters (the eval gap is the others')."""
    return fit_curve_law_of_shape([curve.prefix(cut), *others], lam, form=form)[0]


def prefix_errors(
    curves: Sequence[Curve], fraction: float, lam: float = LAMBDA, form: str = "tissue"
) -> list[dict[str, Any]]:
    """For each run: the law fitted to the first `fraction` of its steps together with the whole curves of its
    shape's runs of other families (never the runs sharing its steps), predicting its final train loss (and eval
    loss) from its schedule: the other runs show what its schedule's later steps do."""
    rows = []
    for shape_curves in by_shape(curves).values():
        for c in shape_curves:
            others = [o for o in shape_curves if o.family != c.family]
            cut = int(fraction * c.steps)
            if c.prefix(cut).fitted() <= MIN_PREFIX:
                continue
            law = fit_from_prefix(c, cut, others, lam, form)
            row: dict[str, Any] = dict(name=c.name, fraction=fraction)
            if not c.fit_evals:  # a law of eval losses says nothing of the train loss
                predicted, actual = final_train_loss(c, law.curve(c.lr)), final_train_loss(c)
                row.update(predicted=predicted, actual=actual, rel_error=predicted / actual - 1)
            if c.final_eval:
                row.update(
                    eval_predicted=law.final_eval(c.lr),
                    eval_actual=c.final_eval,
                    eval_rel_error=law.final_eval(c.lr) / c.final_eval - 1,
                )
            rows.append(row)
    return rows


def prefix_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """`prefix_errors`' rows with the mean and largest errors, and a 95% interval of the mean eval-loss error
    over runs resampled with replacement; an error when no shape has runs of two families."""
    if not rows:
        return dict(runs=[], error="no shape has runs of two families (runs that share no steps)")
    out: dict[str, Any] = dict(runs=rows)
    errors = np.abs([r["rel_error"] for r in rows if "rel_error" in r])  # none for laws of eval losses
    if len(errors):
        out.update(mean_abs_rel_error=float(errors.mean()), max_abs_rel_error=float(errors.max()))
    evals = np.abs([r["eval_rel_error"] for r in rows if "eval_rel_error" in r])
    if len(evals):
        means = np.random.default_rng(0).choice(evals, (MEAN_DRAWS, len(evals))).mean(axis=1)
        out.update(
            eval_runs=int(len(evals)),
            eval_mean_abs_rel_error=float(evals.mean()),
            eval_max_abs_rel_error=float(evals.max()),
            eval_mean_interval=[float(v) for v in np.percentile(means, [2.5, 97.5])],
        )
    return out


def schedule_lrs(
    train: TrainConfig, steps: int, warmup_fraction: float = 0.05, schedule: str = "cosine", **fields: Any
) -> np.ndarray:
    """Learning rates of a run of `steps` steps with `train`'s peak rate (warmup a fraction of it): cosine, or
    another schedule with other `fields` of TrainConfig (a wsd run's cooldown_fraction and decay)."""
    cfg = dataclasses.replace(
        train,
        steps=steps,
        tokens=None,
        schedule=schedule,
        warmup_steps=max(1, round(warmup_fraction * steps)),
        **fields,
    )
    return schedule_values(cfg, steps, np.arange(steps))


PEAK_TOLERANCE = 0.01  # runs whose peak rates differ by at most this share count as one peak rate


def same_peak(a: float, b: float) -> bool:
    """Whether two peak learning rates count as one (within `PEAK_TOLERANCE`)."""
    return max(a, b) <= (1 + PEAK_TOLERANCE) * min(a, b)


def shape_peaks(curves: Sequence[Curve]) -> dict[int, float] | str:
    """Each shape's peak learning rate (a curve law holds for one), or why there is none: runs of one shape
    trained at peak rates more than 1% apart."""
    peaks = {}
    for N, group in by_shape(curves).items():
        tops = [float(c.lr.max()) for c in group]
        if not same_peak(max(tops), min(tops)):
            return (
                f"the runs of the {N}-parameter shape have peak learning rates {min(tops):.3g} to {max(tops):.3g}; "
                "a curve law holds for one peak rate, so fit runs of one rate per shape"
            )
        peaks[N] = max(tops)
    return peaks


def read_curve(folder: Path, partial: bool = False) -> Curve:
    """A finished run's curve, refused with one line when it cannot be fitted: unfinished, no learning-rate
    record, a gap or a non-finite loss, or a cool-down branch whose parent run is missing. `partial`: a run still
    training or stopped early is read as far as its whole lines go (its final eval loss is then None)."""
    run = model_runs.RunDir.open(folder)
    summary = run.read_summary()
    done = bool(summary) and summary["status"] == "completed"
    if not done and (not partial or (summary and summary["status"] == "diverged")):
        raise UserError(f"{folder}: {run.status()}; a curve law needs finished runs")
    lines, damage = run.check_metrics()
    if done and (damage or len(lines) != summary["steps"]):
        why = damage or f"{len(lines)} of {summary['steps']} steps logged"
        raise UserError(f"{folder}: its curve has a gap ({why})")
    if not lines:
        raise UserError(f"{folder}: no steps logged yet")
    if any("lr" not in line for line in lines):
        raise UserError(
            f"{folder}: metrics.jsonl has no learning-rate record ('lr'); the curve law needs the "
            "schedule of every step"
        )
    loss = np.array([line["train_loss"] if line["train_loss"] is not None else np.nan for line in lines], float)
    if not np.all(np.isfinite(loss)) or not np.all(loss > 0):
        bad = int(np.flatnonzero(~(np.isfinite(loss) & (loss > 0)))[0]) + 1
        raise UserError(f"{folder}: the train loss at step {bad} is not a positive finite number")
    first, family = run.config.train.warmup_steps + 2, folder.name
    if run.branch:
        parent, step = run.branch
        if not (parent / "config.json").is_file():
            raise UserError(f"{folder}: a cool-down branch whose parent run {parent} is missing")
        first, family = step + 1, parent.name
    cfg = run.config
    evals = [line for line in lines if line.get("eval_loss") is not None]
    return Curve(
        folder.name,
        count_params(cfg.model).total,
        cfg.train.batch_size * cfg.model.s,
        np.array([line["lr"] for line in lines], float),
        loss,
        min(first, len(lines)),
        summary.get("final_eval_loss") if done else None,
        family,
        np.array([line["step"] for line in evals], np.int64),
        np.array([line["eval_loss"] for line in evals]),
    )


def fit_curve_laws(curves: Sequence[Curve], n_boot: int, lam: float = LAMBDA, form: str = "tissue") -> dict[str, Any]:
    """One law of the form per shape, with bootstrap intervals over runs where a shape has two or more runs; the
    result names the form and its formula (and Tissue's lambda), and the loss fitted (`curve_loss`: "eval" for
    curves fitted on their evaluations, `on_evals`)."""
    _check_form(form)
    start, shapes = time.perf_counter(), []
    kinds = {c.loss_kind for c in curves if c.loss_kind}
    curve_loss = kinds.pop() if len(kinds) == 1 else "eval" if any(c.fit_evals for c in curves) else "train"
    for group in by_shape(curves).values():
        law, rms = fit_curve_law_of_shape(group, lam, form=form)
        row = dict(
            law.to_dict(),
            runs=[c.name for c in group],
            rms_log_error=rms,
            at_bounds=at_bounds(law),
            peak_lr=max(float(c.lr.max()) for c in group),
            tokens_per_step=group[0].tokens_per_step,
            steps_range=[min(c.steps for c in group), max(c.steps for c in group)],  # the run lengths fitted
        )
        row["intervals"] = row["draws"] = None
        if n_boot and len(group) > 1:  # the draws pair across shapes for the laws from curves' intervals
            draws = bootstrap_draws(group, law, n_boot)
            row["intervals"] = bootstrap_curve_law(group, law, n_boot, draws=draws)
            row["draws"] = [d.to_dict() for d in draws]
        shapes.append(row)
    _, name, formula = FORMS[form]
    return dict(
        form=name,
        formula=formula,
        **(dict(lam=lam) if form == "tissue" else {}),
        curve_loss=curve_loss,
        shapes=shapes,
        seconds=time.perf_counter() - start,
    )
