"""Recipe laws: the learning rate and the batch size as levers, fitted from a recipe sweep's run folders.

A recipe sweep (configs/designs.py, `batch_sizes` x `lrs`) trains each (budget, shape) group at several batch
sizes B (tokens per step) and learning rates eta, all for the same tokens D. Two laws come out of it:

Learning rate. For each (group, B) cell, the optimal eta* is the vertex of a parabola of the final loss in
log eta (cells whose best eta is at an end of the swept range do not bracket the optimum and are left out).
Then  log eta* = c0 + cN log N + cB log B  by least squares. This is the form of Porian et al. (2024), who fit
the optimal learning rate and batch per model size, and of DeepSeek LLM (2024, section 3.1), who fit both as
power laws of compute; with IsoFLOP budgets, N and D are tied within a budget, so N and B are what a sweep of
this kind identifies. For Adam the optimal rate rises with the batch below the critical batch (square-root
scaling, Malladi et al. 2022), so cB > 0 is expected; cN < 0 is expected for standard parametrisation.

Batch size. McCandlish et al. (2018, arXiv 1812.06162, eq. 2.11): the examples needed to reach a loss grow as
E = E_min (1 + B / B_crit). A run of D tokens at batch B therefore reaches the loss a small-batch run reaches
with D_min = D / (1 + B/B_crit). Written into the data term of the Chinchilla form, each cell's best loss is
    L*(g, B) = a_g + K (D_g / (1 + B/B_crit))^(-beta)
with a per-group constant a_g (E + A/N^alpha for that shape), and K, beta, B_crit shared. For fixed (beta,
B_crit) the rest is linear, so the fit is a grid over (beta, log B_crit) with closed-form a_g and K, refined
by Nelder-Mead.

B_crit grows as the loss falls (Kaplan et al. 2020, section 5): B_crit(L) = B* / L^(1/alpha_B). The cells' best
losses span too narrow a range to identify that exponent, but the gradient noise scale B_simple (McCandlish et
al.'s predictor of B_crit) can be measured all along each run: a micro-batched run logs the squared gradient norms
on every line, and stretches of it give B_simple at each stretch's loss (model/noise.py `loss_windows`). The
exponent k = 1/alpha_B comes from the pooled least squares of log B_simple on log L over the stretches of all
runs, with intervals from resampling whole runs. It is used when its 95% interval excludes 0; then
B_crit(L) = B_crit(L_ref) (L / L_ref)^(-k), with L_ref the median of the cells' best losses, and the batch fit
applies it at each cell's loss. This matters for planning beyond the sweep: a plan's loss sits below the sweep's,
where a constant B_crit would overstate what a large batch costs. On the CPU recipe sweep k came out near 3.5
(Kaplan et al. found 1/alpha_B = 4.8 for their language models).

The planner uses the batch law relative to the batch the loss law was fitted at (`reference_batch`): a loss
law fitted at batch B0 sees D tokens at B0, so at batch B it sees D (1 + B0/B_crit) / (1 + B/B_crit).

When the losses do not pin B_crit down (its 95% interval spans more than a factor 100, or it sits at an end of
its search range) and the runs measured their gradient noise scale, B_crit is set from B_simple, McCandlish et
al.'s predictor of it (the B_simple-on-loss line at L_ref when it is used, else the runs' median B_simple), and
only beta, K and the group constants are fitted.

Intervals come from a residual bootstrap (the sweep is a designed experiment with fixed cells; resampling
cells would drop whole batch sizes). Held-out batch sizes check the batch form (`fit_recipe(holdout=...)`,
`holdout_batches` in scaling/holdout.py).
"""

from __future__ import annotations

import math
import typing
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.lazy import optimize, stats
from smallest_loss.configs.schema import Schedule

RECIPE_VERSION = 1
BETA_RANGE = (0.05, 1.5)
BCRIT_SPAN = 30.0  # B_crit is searched from (smallest batch)/30 to (largest batch) x 30
# A B_crit whose 95% interval spans more than this factor is not pinned down by the losses; then the runs' measured
# gradient noise scale, McCandlish et al.'s predictor of B_crit, sets it.
BCRIT_MAX_SPREAD = 100.0


@dataclass(frozen=True)
class RecipeRun:
    """One finished run of a recipe sweep."""

    name: str
    N: int
    D: int
    budget: float
    batch: int  # sequences per step
    seq_len: int
    lr: float
    loss: float  # final evaluation loss
    b_simple_tokens: float | None  # the run's gradient noise scale (model/noise.py), when it measured one
    schedule: dict[str, Any] = field(default_factory=dict)
    noise_windows: tuple[tuple[float, float], ...] = ()  # (train loss, B_simple tokens) along the run
    diverged: bool = False  # marked diverged or failed by its table's status (a non-finite loss is detected too)

    @property
    def batch_tokens(self) -> int:
        """Tokens per step: batch (sequences) times sequence length."""
        return self.batch * self.seq_len


# A run whose loss exceeds its cell's best by this factor, at a rate above the best run's, is counted as diverged
# (an exploding loss), like a run whose loss is not finite or whose status says so.
EXPLODE_FACTOR = 1.5


def exploded(lrs: np.ndarray, losses: np.ndarray) -> np.ndarray:
    """Runs of one cell that diverged: a non-finite loss, or a loss above EXPLODE_FACTOR times the cell's best
    finite loss at a rate above the best run's (a too-small rate can also train badly; that is not divergence)."""
    bad = ~np.isfinite(losses)
    if bad.all():
        return bad
    best = int(np.flatnonzero(~bad)[np.argmin(losses[~bad])])
    with np.errstate(invalid="ignore"):
        return bad | ((losses > EXPLODE_FACTOR * losses[best]) & (lrs > lrs[best]))


def lr_optimum(
    lrs: np.ndarray, losses: np.ndarray, diverged: np.ndarray | None = None, noise: float = 0.0
) -> tuple[float, float, bool]:
    """(eta*, loss at eta*, bracketed) of one cell, from the best run and its two neighbours in log eta.

    Diverged runs (`diverged`, or detected by `exploded`) are left out. The vertex of the parabola through the
    best run and its neighbours gives eta* (inside their span) and its loss, never below the best trained run's
    loss by more than `noise` (the runs' own scatter): a parabola through three noisy runs can dip far below any
    run. Not bracketed when the best run sits at the low end of the rates that trained, or at the top with no
    diverged run above it, or the three runs do not open upwards: then the best run's rate and loss. A best run
    just below a diverged one counts as bracketed at its own rate (the optimum lies at the edge of stability)."""
    lrs, losses = np.asarray(lrs, float), np.asarray(losses, float)
    out = exploded(lrs, losses) if diverged is None else (np.asarray(diverged, bool) | exploded(lrs, losses))
    ok = np.flatnonzero(~out)
    if not len(ok):
        return math.nan, math.nan, False
    order = ok[np.argsort(lrs[ok])]
    x, y = np.log(lrs[order]), losses[order]
    best = int(np.argmin(y))
    if best == len(x) - 1:
        edge = bool(np.any(out & (lrs > lrs[order[best]]))) and len(x) > 1
        return float(math.exp(x[best])), float(y[best]), edge
    if best == 0:
        return float(math.exp(x[best])), float(y[best]), False
    c2, c1, c0 = np.polyfit(x[best - 1 : best + 2], y[best - 1 : best + 2], 2)
    if c2 <= 0:
        return float(math.exp(x[best])), float(y[best]), False
    vertex = min(max(-c1 / (2 * c2), x[best - 1]), x[best + 1])
    loss = max(float(np.polyval([c2, c1, c0], vertex)), float(y[best]) - noise)
    return float(math.exp(vertex)), min(loss, float(y[best])), True


def neighbourhood_noise(cells: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> float:
    """The runs' own scatter in loss: the pooled rms residual of parabolas (in log eta) through the five runs
    around each cell's best (as centred as the trained rates allow; four where only four trained), over the cells
    (lrs, losses, diverged); 0 without any. A parabola that does not fit the curve's shape counts its misfit as
    noise, so this errs large."""
    sse, dof = 0.0, 0
    for lrs, losses, diverged in cells:
        ok = np.flatnonzero(~(np.asarray(diverged, bool) | exploded(lrs, losses)))
        order = ok[np.argsort(lrs[ok])]
        x, y = np.log(lrs[order]), losses[order]
        if len(x) < 4:
            continue
        start = min(max(int(np.argmin(y)) - 2, 0), max(len(x) - 5, 0))
        xs, ys = x[start : start + 5], y[start : start + 5]
        sse += float(np.sum((ys - np.polyval(np.polyfit(xs, ys, 2), xs)) ** 2))
        dof += len(xs) - 3
    return math.sqrt(sse / dof) if dof else 0.0


@dataclass(frozen=True)
class Cell:
    """The runs of one (budget, shape, batch size), at their best learning rate."""

    group: int  # index of the (budget, shape) group
    N: float
    D: float  # tokens (the mean over the cell's runs: they differ by less than one step)
    batch_tokens: float
    lr_star: float
    loss_star: float
    bracketed: bool
    diverged: int = 0  # runs of the cell left out as diverged (marked, or detected by `exploded`)
    best_trained: float = math.nan  # the loss of the cell's best run that trained


def cell_runs(runs: list[RecipeRun]) -> list[tuple[int, tuple[float, float], float, list[RecipeRun]]]:
    """(group, (budget, N), batch tokens, runs) of every cell, in a stable order."""
    keys = sorted({(r.budget, r.N) for r in runs})
    out = []
    for g, key in enumerate(keys):
        members = [r for r in runs if (r.budget, r.N) == key]
        for bt in sorted({r.batch_tokens for r in members}):
            out.append((g, key, float(bt), [r for r in members if r.batch_tokens == bt]))
    return out


def _arrays(cell: list[RecipeRun]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.array([r.lr for r in cell]), np.array([r.loss for r in cell]), np.array([r.diverged for r in cell])


def make_cells(runs: list[RecipeRun]) -> tuple[list[Cell], list[str]]:
    """Cells of the sweep and the (budget, shape) group names, in a stable order; each cell's best rate from its
    best run's neighbourhood (`lr_optimum`), diverged runs out. A cell where every run diverged is dropped."""
    raw = cell_runs(runs)
    names = [f"budget {b:.3g}, N={N}" for b, N in sorted({(r.budget, r.N) for r in runs})]
    noise = neighbourhood_noise([_arrays(cell) for *_, cell in raw])
    cells = []
    for g, key, bt, cell in raw:
        lrs, losses, marked = _arrays(cell)
        lr, loss, ok = lr_optimum(lrs, losses, marked, noise)
        out = int(np.sum(marked | exploded(lrs, losses)))
        if math.isfinite(lr):
            D = float(np.mean([r.D for r in cell]))
            cells.append(Cell(g, float(key[1]), D, bt, lr, loss, ok, out, float(np.nanmin(losses[~marked]))))
    return cells, names


@dataclass(frozen=True)
class LRLaw:
    """log eta* = c0 + n_exponent log N + batch_exponent log B (B in tokens per step)."""

    c0: float
    n_exponent: float
    batch_exponent: float
    N_range: tuple[float, float]
    batch_range: tuple[float, float]  # tokens per step
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    residual_rms: float = 0.0  # in log eta
    # "N,B" (above) or "N,D": log eta* = c0 + n_exponent log N + d_exponent log D (Li et al. 2025), batch_exponent 0
    form: str = "N,B"
    d_exponent: float = 0.0

    def lr(self, N: Any, batch_tokens: Any, tokens: Any = None) -> np.ndarray:
        """The optimal learning rate at N parameters, `batch_tokens` per step and `tokens` (the form "N,D" needs
        them; "N,B" ignores them)."""
        if self.form == "N,D":
            if tokens is None:
                raise ValueError("the learning-rate law in N and D needs the tokens")
            return np.exp(self.c0 + self.n_exponent * np.log(N) + self.d_exponent * np.log(tokens))
        return np.exp(self.c0 + self.n_exponent * np.log(N) + self.batch_exponent * np.log(batch_tokens))


@dataclass(frozen=True)
class OptimalBatchLaw:
    """A best batch that grows with the tokens, the loss rising on both sides of it:
    L(B) = L(B_opt) exp(gamma log(B / B_opt)^2),  B_opt(N, D) = exp(log_b0) D^d_exponent N^n_exponent  (tokens).
    The symmetric factor is the form the shape law uses for d/n; the growth with D follows Li et al. (2025) and
    Bergsma et al. (2025), who find the best and the critical batch grow with the tokens, not the model size."""

    log_b0: float
    d_exponent: float
    n_exponent: float
    gamma: float
    batch_range: tuple[float, float]
    residual_rms: float = 0.0  # in log loss

    def b_opt(self, N: Any, tokens: Any) -> np.ndarray:
        """The best batch (tokens per step) at N parameters and `tokens`."""
        return np.exp(self.log_b0 + self.d_exponent * np.log(tokens) + self.n_exponent * np.log(N))

    def factor(self, batch_tokens: Any, N: Any, tokens: Any) -> np.ndarray:
        """L(B) / L(B_opt) at N and `tokens`."""
        return np.exp(self.gamma * np.log(np.asarray(batch_tokens, float) / self.b_opt(N, tokens)) ** 2)


@dataclass(frozen=True)
class BatchLaw:
    """Tokens needed grow as D_min (1 + B/B_crit) (McCandlish et al. 2018); B and B_crit in tokens per step."""

    b_crit: float
    beta: float
    K: float
    batch_range: tuple[float, float]
    # False when the sweep measured no batch cost: the law beats per-group constants by no more than noise
    # (F-test p >= 0.05), or B_crit sits at the top of its search range. The planner then charges no cost.
    identified: bool = True
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    p_value: float = 0.0  # F-test of the batch law against no batch cost (per-group constants)
    source: str = "fit"  # where B_crit comes from: "fit" (the losses) or "noise scale" (B_simple, measured)
    # B_crit(L) = b_crit (L / loss_ref)^(-loss_exponent): B_crit grows as the loss falls (0: a constant B_crit)
    loss_exponent: float = 0.0
    loss_ref: float = 1.0

    def b_crit_at(self, loss: Any = None) -> np.ndarray:
        """B_crit (tokens) at a loss; the constant b_crit without a loss or without a loss exponent."""
        if loss is None or not self.loss_exponent:
            return np.asarray(self.b_crit, float)
        return self.b_crit * (np.asarray(loss, float) / self.loss_ref) ** (-self.loss_exponent)

    def data_factor(self, batch_tokens: Any, reference_tokens: float, loss: Any = None) -> np.ndarray:
        """D_eff / D at batch B for a loss law fitted at `reference_tokens` per step, with B_crit at `loss` (the
        constant b_crit when None); 1 when not identified."""
        B = np.asarray(batch_tokens, float)
        if not self.identified:
            return np.ones(np.broadcast(B, np.asarray(loss if loss is not None else 0.0)).shape)
        bc = self.b_crit_at(loss)
        return (1.0 + reference_tokens / bc) / (1.0 + B / bc)


@dataclass(frozen=True)
class RecipeLaw:
    """The recipe section of a law file: learning-rate and batch laws, the schedule they were fitted under,
    the batch the loss law was fitted at, and the evidence (hold-out, noise scale)."""

    lr: LRLaw
    batch: BatchLaw
    reference_batch_tokens: float
    schedule: dict[str, Any]
    seq_len: int
    evidence: dict[str, Any] = field(default_factory=dict)
    # the batch form the planner uses: "mccandlish" (`batch`, a data factor) or "optimal" (`optimal_batch`, a loss
    # factor); files written before the optimal form have "mccandlish"
    batch_form: str = "mccandlish"
    optimal_batch: OptimalBatchLaw | None = None

    def data_factor(self, batch_tokens: Any, loss: Any = None) -> np.ndarray:
        """D_eff / D at batch B for the loss law's reference batch (`BatchLaw.data_factor`); 1 under the optimal
        form, which charges the batch through `loss_factor`."""
        if self.batch_form == "optimal":
            return np.ones(np.shape(batch_tokens))
        return self.batch.data_factor(batch_tokens, self.reference_batch_tokens, loss)

    def loss_factor(self, batch_tokens: Any, N: Any, tokens: Any) -> np.ndarray:
        """L(B) / L(reference batch) at N and `tokens` under the optimal form; 1 under McCandlish's."""
        if self.batch_form != "optimal" or self.optimal_batch is None:
            return np.ones(np.broadcast(np.asarray(batch_tokens), np.asarray(N), np.asarray(tokens)).shape)
        law = self.optimal_batch
        return law.factor(batch_tokens, N, tokens) / law.factor(self.reference_batch_tokens, N, tokens)

    def lr_at(self, N: Any, batch_tokens: Any, tokens: Any) -> np.ndarray:
        """The learning rate the law gives at N, batch and tokens (either form)."""
        return self.lr.lr(N, batch_tokens, tokens)


def _ols(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.linalg.lstsq(X, y, rcond=None)[0]


def fit_lr_law(cells: list[Cell], n_boot: int = 1000, seed: int = 0) -> LRLaw:
    """Least squares of log eta* on log N and log B over the bracketed cells, residual-bootstrap intervals."""
    use = [c for c in cells if c.bracketed]
    if len(use) < 4:
        raise UserError(
            f"only {len(use)} of {len(cells)} (shape, batch) cells have their best learning rate inside "
            "the swept rates; widen the design's lrs so that the optimum is bracketed"
        )
    X = np.column_stack([np.ones(len(use)), np.log([c.N for c in use]), np.log([c.batch_tokens for c in use])])
    if np.linalg.matrix_rank(X) < 3:
        raise UserError("the learning-rate law needs cells at two or more model sizes and two or more batch sizes")
    y = np.log([c.lr_star for c in use])
    coef = _ols(X, y)
    resid = y - X @ coef
    rng = np.random.default_rng(seed)
    boots = np.array([_ols(X, X @ coef + rng.choice(resid, len(resid))) for _ in range(n_boot)])
    lo, hi = np.percentile(boots, [2.5, 97.5], axis=0) if n_boot else (coef, coef)
    names = ("c0", "n_exponent", "batch_exponent")
    return LRLaw(
        *map(float, coef),
        N_range=(min(c.N for c in use), max(c.N for c in use)),
        batch_range=(min(c.batch_tokens for c in use), max(c.batch_tokens for c in use)),
        intervals={k: (float(a), float(b)) for k, a, b in zip(names, lo, hi, strict=True)},
        residual_rms=float(np.sqrt(np.mean(resid**2))),
    )


def _profile(
    beta: np.ndarray,
    log_bc: np.ndarray,
    groups: np.ndarray,
    D: np.ndarray,
    B: np.ndarray,
    L: np.ndarray,
    scale: np.ndarray | float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each (beta, log B_crit) pair (arrays of equal shape), the closed-form K and a_g and the sum of squared
    residuals of L = a_g + K x, x = (D / (1 + B/B_crit))^-beta, B_crit times `scale` at each point (its loss
    dependence). K <= 0 scores infinity."""
    bc = np.exp(log_bc)[..., None] * scale
    x = (D / (1.0 + B / bc)) ** (-beta[..., None])
    G = groups.max() + 1
    onehot = np.eye(G)[groups]  # (points, G)
    count = onehot.sum(0)
    xm = (x @ onehot) / count
    Lm = (L @ onehot) / count
    xc, Lc = x - xm @ onehot.T, L - Lm @ onehot.T
    K = np.sum(xc * Lc, -1) / np.maximum(np.sum(xc * xc, -1), 1e-300)
    a = Lm - K[..., None] * xm
    sse = np.sum((L - a @ onehot.T - K[..., None] * x) ** 2, -1)
    return np.where(K > 0, sse, np.inf), K, a


def _fit_batch_once(
    groups: np.ndarray, D: np.ndarray, B: np.ndarray, L: np.ndarray, box: np.ndarray, scale: np.ndarray | float = 1.0
) -> tuple[float, float, float]:
    """(beta, log B_crit, K) minimising the squared error: a grid, then Nelder-Mead inside the box."""
    beta_grid, bc_grid = np.meshgrid(np.linspace(*box[0], 30), np.linspace(*box[1], 40), indexing="ij")
    sse = _profile(beta_grid, bc_grid, groups, D, B, L, scale)[0]
    i = np.unravel_index(np.argmin(sse), sse.shape)
    start = np.array([beta_grid[i], bc_grid[i]])

    def objective(z: np.ndarray) -> float:
        z = np.clip(z, box[:, 0], box[:, 1])
        return float(_profile(np.array(z[0]), np.array(z[1]), groups, D, B, L, scale)[0])

    z = np.clip(
        optimize.minimize(objective, start, method="Nelder-Mead", options=dict(xatol=1e-4, fatol=1e-12)).x,
        box[:, 0],
        box[:, 1],
    )
    K = float(_profile(np.array(z[0]), np.array(z[1]), groups, D, B, L, scale)[1])
    return float(z[0]), float(z[1]), K


def _batch_arrays(cells: list[Cell]) -> tuple[np.ndarray, ...]:
    groups = np.unique([c.group for c in cells], return_inverse=True)[1]
    return (
        groups,
        np.array([c.D for c in cells]),
        np.array([c.batch_tokens for c in cells]),
        np.array([c.loss_star for c in cells]),
    )


def _scale(cells: list[Cell], loss_law: tuple[float, float]) -> np.ndarray:
    """B_crit(L) / B_crit(L_ref) at each cell's best loss, for loss_law = (exponent, L_ref)."""
    k, ref = loss_law
    return (np.array([c.loss_star for c in cells]) / ref) ** (-k)


def batch_predict(
    cells: list[Cell], fitted_on: list[Cell], beta: float, log_bc: float, loss_law: tuple[float, float] = (0.0, 1.0)
) -> np.ndarray:
    """Best losses of `cells` under the batch law with (beta, B_crit), a_g and K refitted on `fitted_on`; B_crit
    follows the loss as loss_law = (exponent, L_ref) says, at each cell's measured best loss."""
    groups, D, B, L = _batch_arrays(fitted_on)
    _, K, a = _profile(np.array(beta), np.array(log_bc), groups, D, B, L, _scale(fitted_on, loss_law))
    ids = {g: i for i, g in enumerate(np.unique([c.group for c in fitted_on]))}
    bc = math.exp(log_bc) * _scale(cells, loss_law)
    x = (np.array([c.D for c in cells]) / (1 + np.array([c.batch_tokens for c in cells]) / bc)) ** -beta
    return np.array([a[ids[c.group]] for c in cells]) + float(K) * x


def fit_batch_law(
    cells: list[Cell],
    n_boot: int = 1000,
    seed: int = 0,
    b_crit: float | None = None,
    loss_law: tuple[float, float] = (0.0, 1.0),
) -> BatchLaw:
    """The McCandlish batch law on the cells' best losses (see the module docstring); with `b_crit` given (the
    measured noise scale, at L_ref), only beta, K and the group constants are fitted. `loss_law` = (exponent,
    L_ref) of B_crit(L); (0, 1) for a constant B_crit."""
    batches = sorted({c.batch_tokens for c in cells})
    per_group = {}
    for c in cells:
        per_group.setdefault(c.group, set()).add(c.batch_tokens)
    if len(batches) < 3 or max(len(v) for v in per_group.values()) < 3:
        raise UserError("the batch law needs groups trained at three or more batch sizes")
    groups, D, B, L = _batch_arrays(cells)
    box = np.array([BETA_RANGE, (math.log(batches[0] / BCRIT_SPAN), math.log(batches[-1] * BCRIT_SPAN))])
    if b_crit is not None:
        box[1] = math.log(b_crit)
    scale = _scale(cells, loss_law)
    beta, log_bc, K = _fit_batch_once(groups, D, B, L, box, scale)
    fitted = batch_predict(cells, cells, beta, log_bc, loss_law)
    resid = L - fitted
    rng = np.random.default_rng(seed)
    boots = np.array(
        [_fit_batch_once(groups, D, B, fitted + rng.choice(resid, len(resid)), box, scale)[:2] for _ in range(n_boot)]
    )
    intervals = {}
    if n_boot:
        (b_lo, bc_lo), (b_hi, bc_hi) = np.percentile(boots, [2.5, 97.5], axis=0)
        intervals = dict(beta=(float(b_lo), float(b_hi)))
        if b_crit is None:  # a B_crit set from the noise scale has no interval of its own here
            intervals["b_crit"] = (math.exp(bc_lo), math.exp(bc_hi))
    p_value = _f_test(L, groups, resid, extra=3 if b_crit is None else 2)
    identified = (b_crit is not None or log_bc < box[1, 1] - 1e-3) and p_value < 0.05
    return BatchLaw(
        math.exp(log_bc),
        beta,
        K,
        (batches[0], batches[-1]),
        bool(identified),
        intervals,
        p_value,
        source="fit" if b_crit is None else "noise scale",
        loss_exponent=loss_law[0],
        loss_ref=loss_law[1],
    )


def pinned_by_losses(law: BatchLaw) -> bool:
    """Whether the sweep's losses pin B_crit down: its 95% interval spans less than BCRIT_MAX_SPREAD and it is
    not at an end of its search range (a law fitted without intervals counts as pinned)."""
    lo, hi = law.intervals.get("b_crit", (law.b_crit, law.b_crit))
    span = (law.batch_range[0] / BCRIT_SPAN * 1.01, law.batch_range[1] * BCRIT_SPAN / 1.01)
    return hi / lo < BCRIT_MAX_SPREAD and span[0] < law.b_crit < span[1]


def _f_test(L: np.ndarray, groups: np.ndarray, resid: np.ndarray, extra: int) -> float:
    """p-value of the F-test of a law with `extra` parameters beyond per-group constants against those constants."""
    sse0 = sum(float(np.sum((L[groups == g] - L[groups == g].mean()) ** 2)) for g in np.unique(groups))
    sse1 = float(np.sum(resid**2))
    dof = len(L) - (groups.max() + 1) - extra
    if dof <= 0 or sse1 <= 0:
        return 0.0 if sse1 < sse0 else 1.0
    F = max(sse0 - sse1, 0.0) / extra / (sse1 / dof)
    return float(stats.f.sf(F, extra, dof))


def noise_summary(runs: list[RecipeRun]) -> dict[str, Any] | None:
    """The runs' gradient noise scales B_simple (tokens): median and range, or None when none measured one."""
    values = np.array([r.b_simple_tokens for r in runs if r.b_simple_tokens is not None and r.b_simple_tokens > 0])
    if not len(values):
        return None
    return dict(
        runs=int(len(values)),
        median_tokens=float(np.median(values)),
        range_tokens=[float(values.min()), float(values.max())],
    )


def fit_noise_loss(runs: list[RecipeRun], n_boot: int = 1000, seed: int = 0) -> dict[str, Any] | None:
    """log B_simple = c - k log L over the stretches of every run that logged them (`noise_windows`): the exponent
    k of B_crit(L) (Kaplan et al.'s 1/alpha_B), with a 95% interval from resampling whole runs. None with stretches
    from fewer than 3 runs or a loss range under 5%."""
    per_run = [np.array(r.noise_windows, float) for r in runs if len(r.noise_windows) >= 2]
    if len(per_run) < 3:
        return None
    pts = np.concatenate(per_run)
    x, y = np.log(pts[:, 0]), np.log(pts[:, 1])
    if x.max() - x.min() < math.log(1.05):
        return None
    slope, c = np.polyfit(x, y, 1)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        sample = np.concatenate([per_run[i] for i in rng.integers(len(per_run), size=len(per_run))])
        if np.ptp(np.log(sample[:, 0])) > 0:
            boots.append(-np.polyfit(np.log(sample[:, 0]), np.log(sample[:, 1]), 1)[0])
    lo, hi = np.percentile(boots, [2.5, 97.5]) if boots else (-slope, -slope)
    return dict(
        exponent=float(-slope),
        intercept=float(c),
        exponent_interval=[float(lo), float(hi)],
        runs=len(per_run),
        windows=int(len(pts)),
        r=float(np.corrcoef(x, y)[0, 1]),
        loss_range=[float(pts[:, 0].min()), float(pts[:, 0].max())],
    )


def fit_recipe(
    runs: list[RecipeRun],
    reference_batch_tokens: float,
    holdout: tuple[float, ...] = (),
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[RecipeLaw, list[Cell], list[str]]:
    """Both recipe laws from a recipe sweep's runs, with the evidence: cells, hold-out, noise scale."""
    from smallest_loss.scaling.holdout import holdout_batches  # holdout.py imports this module: not at the top

    if len({r.seq_len for r in runs}) != 1:
        raise UserError("the recipe runs use several context lengths; fit each context length on its own")
    cells, names = make_cells(runs)
    lr_law = fit_lr_law(cells, n_boot, seed)
    noise = noise_summary(runs)
    along = fit_noise_loss(runs, n_boot, seed)
    evidence: dict[str, Any] = dict(
        runs=len(runs), cells=len(cells), groups=names, unbracketed_cells=sum(not c.bracketed for c in cells)
    )
    loss_law = (0.0, 1.0)
    if along is not None:
        evidence["noise_along_runs"] = along
        if along["exponent_interval"][0] > 0:  # B_crit grows as the loss falls, beyond the runs' scatter
            loss_law = (along["exponent"], float(np.median([c.loss_star for c in cells])))
    batch_law = fit_batch_law(cells, n_boot, seed, loss_law=loss_law)
    b_crit = None
    if noise and not pinned_by_losses(batch_law):
        evidence["b_crit_from_losses"] = dict(b_crit=batch_law.b_crit, intervals=batch_law.intervals)
        b_crit = noise["median_tokens"]
        if loss_law[0]:  # the B_simple-on-loss line at L_ref
            b_crit = math.exp(along["intercept"]) * loss_law[1] ** (-loss_law[0])
        batch_law = fit_batch_law(cells, n_boot, seed, b_crit=b_crit, loss_law=loss_law)
    if holdout:
        evidence["holdout"] = holdout_batches(cells, holdout, b_crit, loss_law)
        if loss_law[0]:  # the same check with a constant B_crit, for comparison
            constant = None if b_crit is None else noise["median_tokens"]
            evidence["holdout_constant_b_crit"] = holdout_batches(cells, holdout, constant)
    if noise:
        evidence["noise_scale"] = noise
    schedule = {k: v for k, v in runs[0].schedule.items() if k != "warmup_fraction"}
    if all("warmup_fraction" in r.schedule for r in runs):  # a table may not say
        schedule["warmup_fraction"] = round(float(np.median([r.schedule["warmup_fraction"] for r in runs])), 4)
    law = RecipeLaw(lr_law, batch_law, float(reference_batch_tokens), schedule, runs[0].seq_len, evidence)
    return law, cells, names


# ---------------------------------------------------------------------------------------------------
# The law file's "recipe" section (README, "File formats").


def recipe_to_dict(law: RecipeLaw) -> dict[str, Any]:
    """The law file's recipe section: the recipe laws as a dict, with the section's version."""
    out = asdict(law)
    out["version"] = RECIPE_VERSION
    return out


def _numbers(raw: dict[str, Any], keys: tuple[str, ...], where: str) -> dict[str, float]:
    out = {}
    for key in keys:
        value = raw.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise UserError(f"{where}: {key}={value!r} must be a finite number")
        out[key] = float(value)
    return out


SCHEDULE_NAMES = typing.get_args(Schedule)  # the schedules a recipe section may name


def _pair(raw: Any, where: str) -> tuple[float, float]:
    ok = (
        isinstance(raw, list | tuple)
        and len(raw) == 2
        and all(isinstance(x, int | float) and not isinstance(x, bool) and x > 0 for x in raw)
    )
    if not ok:
        raise UserError(f"{where} must be [low, high] positive numbers")
    if raw[0] > raw[1]:
        raise UserError(f"{where} = {list(raw)} is reversed: give [low, high]")
    return float(raw[0]), float(raw[1])


def _intervals(raw: Any, where: str) -> dict[str, tuple[float, float]]:
    if not isinstance(raw, dict):
        raise UserError(f"{where}.intervals must be an object")
    out = {}
    for k, v in raw.items():
        if not (isinstance(v, list | tuple) and len(v) == 2 and all(isinstance(x, int | float) for x in v)):
            raise UserError(f"{where}.intervals.{k} must be [low, high]")
        out[k] = (float(v[0]), float(v[1]))
    return out


def recipe_from_dict(raw: Any, source: str = "law") -> RecipeLaw:
    """Parse a law file's recipe section; anything malformed is one UserError naming the field."""
    where = f"{source}: recipe"
    if not isinstance(raw, dict) or not isinstance(raw.get("lr"), dict) or not isinstance(raw.get("batch"), dict):
        raise UserError(f"{where} must be an object with 'lr' and 'batch' sections")
    if raw.get("version", RECIPE_VERSION) != RECIPE_VERSION:
        raise UserError(f"{where}: version {raw.get('version')!r} is not supported (expected {RECIPE_VERSION})")
    lr_raw, batch_raw = raw["lr"], raw["batch"]
    lr = _lr_from_dict(lr_raw, f"{where}.lr")
    numbers = _numbers(batch_raw, ("b_crit", "beta", "K"), f"{where}.batch")
    if numbers["b_crit"] <= 0:
        raise UserError(f"{where}.batch: b_crit={numbers['b_crit']!r} must be positive (tokens per step)")
    extra = {k: batch_raw[k] for k in ("loss_exponent", "loss_ref") if k in batch_raw}  # absent in version-1 files
    numbers.update(_numbers(extra, tuple(extra), f"{where}.batch"))
    if numbers.get("loss_ref", 1.0) <= 0:
        raise UserError(f"{where}.batch: loss_ref={numbers['loss_ref']!r} must be positive")
    batch = BatchLaw(
        **numbers,
        batch_range=_pair(batch_raw.get("batch_range"), f"{where}.batch.batch_range"),
        identified=bool(batch_raw.get("identified", True)),
        p_value=float(batch_raw.get("p_value", 0.0)),
        source=str(batch_raw.get("source", "fit")),
        intervals=_intervals(batch_raw.get("intervals", {}), f"{where}.batch"),
    )
    top = _numbers(raw, ("reference_batch_tokens", "seq_len"), where)
    if top["reference_batch_tokens"] <= 0 or top["seq_len"] < 1:
        raise UserError(f"{where}: reference_batch_tokens and seq_len must be positive")
    schedule = raw.get("schedule", {})
    if not isinstance(schedule, dict):
        raise UserError(f"{where}.schedule must be an object")
    if schedule.get("schedule", "cosine") not in SCHEDULE_NAMES:
        raise UserError(f"{where}.schedule.schedule = {schedule['schedule']!r}: use one of {', '.join(SCHEDULE_NAMES)}")
    form = raw.get("batch_form", "mccandlish")
    if form not in ("mccandlish", "optimal"):
        raise UserError(f"{where}.batch_form = {form!r}: use mccandlish or optimal")
    optimal = _optimal_from_dict(raw.get("optimal_batch"), f"{where}.optimal_batch")
    if form == "optimal" and optimal is None:
        raise UserError(f"{where}: batch_form is optimal but the section has no optimal_batch")
    evidence = raw.get("evidence", {}) if isinstance(raw.get("evidence"), dict) else {}
    return RecipeLaw(lr, batch, top["reference_batch_tokens"], schedule, int(top["seq_len"]), evidence, form, optimal)


def _lr_from_dict(lr_raw: dict[str, Any], where: str) -> LRLaw:
    """The learning-rate law; files written before the N,D form have neither `form` nor `d_exponent`."""
    form = lr_raw.get("form", "N,B")
    if form not in ("N,B", "N,D"):
        raise UserError(f"{where}.form = {form!r}: use N,B or N,D")
    extra = {k: lr_raw[k] for k in ("d_exponent",) if k in lr_raw}
    return LRLaw(
        **_numbers(lr_raw, ("c0", "n_exponent", "batch_exponent", "residual_rms"), where),
        N_range=_pair(lr_raw.get("N_range"), f"{where}.N_range"),
        batch_range=_pair(lr_raw.get("batch_range"), f"{where}.batch_range"),
        intervals=_intervals(lr_raw.get("intervals", {}), where),
        form=form,
        **_numbers(extra, tuple(extra), where),
    )


def _optimal_from_dict(raw: Any, where: str) -> OptimalBatchLaw | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise UserError(f"{where} must be an object")
    numbers = _numbers(raw, ("log_b0", "d_exponent", "n_exponent", "gamma", "residual_rms"), where)
    if numbers["gamma"] <= 0:
        raise UserError(f"{where}: gamma={numbers['gamma']!r} must be positive (the loss rises on both sides)")
    return OptimalBatchLaw(**numbers, batch_range=_pair(raw.get("batch_range"), f"{where}.batch_range"))
