"""The planner: from a budget to the architectures with the smallest predicted loss.

Every candidate (d, n, h, w, s, b) of a search space is scored at once, in NumPy arrays:
  N      exact parameter count of our model (model/transformer.py),
  t      predicted step seconds from a device profile (timing/profile.py),
  D      tokens the budget buys: C / (6N) for a FLOPs budget (the convention of published laws), or
         C / (exact training FLOPs per token) with `flops="exact"`, or T / t * b * s for a time budget
         ("Time Matters", Inbar and Sernau 2024),
  loss   the loss law at (N, D), with an interval from the law's bootstrap samples for the best few.
Serving costs (Sardana et al., 2023) come out of the budget before training: M lifetime inference tokens
cost M * 2N FLOPs, or M * (per-token forward seconds), taken as a third of a training step's seconds per
token (a forward pass is about a third of forward + backward).

With a shape-aware law (scaling/aspect.py) the loss also carries the law's aspect-ratio factor, so width against
depth is decided by the law, and the candidates' d/n is kept inside the range the law was fitted on (the space's
aspect-ratio bounds apply only to a law in N and D).

Two rules on top of the scores:
  ties   a law in N and D cannot tell apart shapes of (nearly) equal N, so losses within TIE_TOLERANCE of
         the best tie, and ties go to the space's preferred aspect ratio d/n, then head size (`rank`);
  edges  when the best candidate sits on an edge of the space (its largest or smallest width, depth, batch,
         or an aspect-ratio bound) and one step beyond that edge would predict a lower loss, the optimum lies
         outside the space: `binding_edges` says so, for the report to name a space that holds it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.lazy import optimize
from smallest_loss.configs.spaces import SearchSpace
from smallest_loss.model.params import inactive_params, param_counts
from smallest_loss.scaling.aspect import AspectLaw
from smallest_loss.scaling.budget import Budget
from smallest_loss.scaling.chinchilla import ChinchillaLaw
from smallest_loss.scaling.intervals import calibrated_bounds, sample_log_loss, stored_calibration
from smallest_loss.scaling.kaplan import KaplanLaw
from smallest_loss.scaling.laws import Law, LawFile, tokens_for_time
from smallest_loss.scaling.moe_law import MoeLaw
from smallest_loss.scaling.plan_result import BatchOption, Edge, FlopsRuleChoice, MoeChoice, NDChoice, PlanRow
from smallest_loss.scaling.precision_law import UNQUANTISED_BITS
from smallest_loss.scaling.recipe import RecipeLaw
from smallest_loss.timing.counts import MoeSpec, bytes_per_element, train_memory_bytes, train_step_flops
from smallest_loss.timing.wallclock import Cadence, WallClock

# Callables of the shape arrays (d, n, h, w, s, v, b) and the space's architecture keywords (activation, norm,
# tied; step time also dtype, memory bytes_per), so a profile and the records it was fitted to agree on
# what a configuration is.
StepSeconds = Callable[..., np.ndarray]  # -> predicted step seconds (a device profile's predict_step_seconds)
MemoryBytes = Callable[..., np.ndarray]  # -> training memory in bytes
FlopsPerStep = Callable[..., np.ndarray]  # -> exact training FLOPs per step

# Relative loss difference below which two candidates tie: at a FLOPs budget under Chinchilla's law it spans
# shapes whose N lies within about 3% of the optimum (the loss is flat in N there), far inside any fitted
# law's bootstrap interval, so no law can rank them.
TIE_TOLERANCE = 1e-5
ASPECT_RTOL = 1e-9  # a candidate at a run's own d/n is inside the runs' range


@dataclass(frozen=True)
class Candidates:
    """Columns of every candidate architecture (one row each). Under a law with a `moe` section each also has an
    expert count E (1: the dense MLP), top-k and granularity G, and N counts its active parameters (what the law
    reads), N_total all of them; a dense law's candidates leave those columns None."""

    d: np.ndarray
    n: np.ndarray
    h: np.ndarray
    w: np.ndarray
    s: np.ndarray
    b: np.ndarray
    N: np.ndarray  # parameters (active ones for a mixture of experts)
    m: np.ndarray | None = None  # micro-batches a step accumulates over (None: 1 each), where b does not fit at once
    E: np.ndarray | None = None  # expert count (1: dense); None: all dense (a dense law's plan)
    top_k: np.ndarray | None = None
    G: np.ndarray | None = None  # expert granularity
    N_total: np.ndarray | None = None  # all parameters, the experts a token skips too

    def __post_init__(self) -> None:
        if self.m is None:
            object.__setattr__(self, "m", np.ones_like(self.d))

    def __len__(self) -> int:
        return len(self.d)

    @property
    def params_total(self) -> np.ndarray:
        """All parameters (N for dense candidates): what memory, checkpoints and the optimizer hold."""
        return self.N if self.N_total is None else self.N_total

    def shape_args(self, v: int, micro: bool = False) -> dict[str, np.ndarray]:
        """Shape columns for cost functions; `micro`: with b the micro-batch b/m (what one pass holds)."""
        b = self.b // self.m if micro else self.b
        return dict(d=self.d, n=self.n, h=self.h, w=self.w, s=self.s, v=np.full_like(self.d, v), b=b)

    def take(self, mask: np.ndarray) -> Candidates:
        columns = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return Candidates(**{k: None if v is None else v[mask] for k, v in columns.items()})

    def with_micro_batches(self, m: np.ndarray) -> Candidates:
        return dataclasses.replace(self, m=np.asarray(m, dtype=np.int64))

    def groups(self) -> list[tuple[np.ndarray | slice, dict[str, MoeSpec]]]:
        """(rows, keywords) per kind of MLP: the dense rows with no keywords, each MoE's rows with `moe=MoeSpec`
        (what the counts of timing/counts.py take); all rows at once for a dense law's candidates."""
        if self.E is None:
            return [(slice(None), {})]
        keys = np.stack([self.E, self.top_k, self.G], axis=1)
        out: list[tuple[np.ndarray | slice, dict[str, MoeSpec]]] = []
        for E, k, G in np.unique(keys, axis=0):
            rows = np.flatnonzero((keys == (E, k, G)).all(axis=1))
            out.append((rows, {} if E == 1 else dict(moe=MoeSpec(int(E), int(k), int(G)))))
        return out


def by_mlp(cands: Candidates, fn: Callable[[Any, dict[str, MoeSpec]], Any]) -> np.ndarray:
    """`fn(rows, moe_keywords)` of each kind of MLP (`Candidates.groups`), the values in the candidates' order; a
    dense law's candidates in one call, as before MoE candidates existed."""
    groups = cands.groups()
    if len(groups) == 1 and isinstance(groups[0][0], slice):
        return fn(slice(None), {})
    out = np.zeros(len(cands))
    for rows, moe in groups:
        out[rows] = fn(rows, moe)
    return out


def _at(columns: dict[str, np.ndarray], rows: Any, moe: dict[str, MoeSpec] | None = None) -> dict[str, np.ndarray]:
    """The columns at `rows`; for a MoE's counts in float64 (train_memory_bytes adds its MoE activations in place,
    which integer columns refuse)."""
    return {k: v[rows].astype(np.float64) if moe else v[rows] for k, v in columns.items()}


def _candidates(space: SearchSpace, d: Any, n: Any, k: Any, ratio: Any, s: Any, b: Any) -> Candidates:
    """Candidates from columns of width, depth, head size k = d/h, MLP ratio, context and batch."""
    d, n, k, ratio, s, b = (np.atleast_1d(np.asarray(x, dtype=np.int64)) for x in (d, n, k, ratio, s, b))
    w = ratio * d
    emb, non_emb = param_counts(space.v, d, n, w, norm=space.norm, activation=space.activation, tied=space.tied)
    return Candidates(d=d, n=n, h=d // k, w=w, s=s, b=b, N=(emb + non_emb).astype(np.float64))


def enumerate_candidates(
    space: SearchSpace, batches: tuple[int, ...] | None = None, aspect: tuple[float, float] | None = None
) -> Candidates:
    """All (d, n, head size, MLP ratio, s, b) combinations whose head size divides d into an even head,
    within the aspect ratios d/n `aspect` (default: the space's); b from `batches` (default: the space's fixed
    batch sizes)."""
    grids = np.meshgrid(
        np.array(space.d),
        np.array(space.n),
        np.array(space.head_sizes),
        np.array(space.mlp_ratios),
        np.array(space.s),
        np.array(batches or space.b),
        indexing="ij",
    )
    d, n, k, ratio, s, b = (g.ravel().astype(np.int64) for g in grids)
    lo, hi = aspect or space.aspect_ratio
    ok = (d % k == 0) & (k % 2 == 0) & (d >= lo * n) & (d <= hi * n)
    return _candidates(space, d[ok], n[ok], k[ok], ratio[ok], s[ok], b[ok])


Specs = tuple[tuple[int, int, int], ...]  # (experts, top_k, granularity) of each kind of MLP; experts 1: dense
DEFAULT_EXPERTS = (1, 4, 8)  # a MoE law's expert counts where neither the space nor the law's fitted range names any


def moe_specs(space: SearchSpace, moe: MoeLaw | None, fitted: dict[str, list[float]] | None = None) -> Specs:
    """The (experts, top_k, granularity) to plan with under a law with a `moe` section (none under a dense law):
    the space's `experts`, `top_k` and `granularity`, else 1 (dense) plus the powers of two within the expert
    counts the law was fitted on (its fitted range's E) and the largest of them, top-1, granularity 1. A top-k above
    an expert count is skipped; experts 1 is the dense MLP (once). FP8 training of a MoE is refused by the model
    (model/moe.py), so a float8 space plans dense shapes only."""
    if moe is None or space.dtype == "float8":
        return ((1, 1, 1),) if moe is not None else ()
    experts = space.experts or _fitted_experts((fitted or {}).get("E"))
    specs = [(1, 1, 1)] if 1 in experts else []
    for E in sorted(set(experts) - {1}):
        specs += [(E, k, G) for k in space.top_k or (1,) for G in space.granularity or (1,) if k <= E]
    return tuple(specs)


def _fitted_experts(span: list[float] | None) -> tuple[int, ...]:
    if not span or span[1] < 2:
        return DEFAULT_EXPERTS
    lo, hi = max(2, math.ceil(span[0])), int(span[1])
    return (1, *sorted({2**i for i in range(1, hi.bit_length()) if lo <= 2**i <= hi} | {hi}))


def with_experts(space: SearchSpace, cands: Candidates, specs: Specs) -> Candidates:
    """Each candidate once per (experts, top_k, granularity) of `specs` (`moe_specs`), with its active parameters
    N (ParamCounts.active: the total less the routed experts a token skips) and total parameters N_total; experts 1 is
    the dense shape itself. A granularity must divide the MLP width w."""
    parts = []
    arch = dict(norm=space.norm, activation=space.activation, tied=space.tied)
    for E, k, G in specs:
        c = cands.take(cands.w % G == 0)
        total, active = c.N, c.N
        if E > 1:
            moe = dict(experts=E, top_k=k, granularity=G)
            total = sum(param_counts(space.v, c.d, c.n, c.w, **arch, **moe)).astype(np.float64)
            active = total - inactive_params(c.d, c.n, c.w, activation=space.activation, **moe)
        ones = np.ones_like(c.d)
        parts.append(dataclasses.replace(c, N=active, N_total=total, E=E * ones, top_k=k * ones, G=G * ones))
    columns = [f.name for f in dataclasses.fields(Candidates) if f.name != "m"]
    return Candidates(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in columns})


def aspect_bounds(
    space: SearchSpace, shape: AspectLaw | None, fitted: dict[str, Any] | None = None
) -> tuple[float, float]:
    """The d/n the planner may choose: with a shape-aware law, the range it was fitted on (its safety net: no
    extrapolation in shape); without, the space's bounds, held to the d/n of the law's runs where the law file records
    them (`fitted["aspect"]`: a law in N and D alone says nothing of other shapes, whose losses on a CPU differ by
    several percent at one N) and they overlap the space's."""
    if shape is not None:
        return shape.aspect_range
    lo, hi = space.aspect_ratio
    runs = (fitted or {}).get("aspect")
    if runs and max(lo, runs[0]) <= min(hi, runs[1]) * (1 + ASPECT_RTOL):
        return max(lo, runs[0] * (1 - ASPECT_RTOL)), min(hi, runs[1] * (1 + ASPECT_RTOL))
    return lo, hi


@functools.lru_cache(maxsize=16)
def param_range(space: SearchSpace) -> tuple[float, float]:
    """The smallest and largest parameter count among the space's candidates."""
    N = enumerate_candidates(space).N
    return float(N.min()), float(N.max())


def compute_optimal_params(law: Law, C: float) -> float:
    """The N that minimises the law's loss under C = 6ND (Hoffmann et al. 2022, eq. 3), found numerically so
    that any law form works; for the Chinchilla form it is the closed form G (C/6)^(beta/(alpha+beta)).
    The loss along C = 6ND is convex in log N for both forms, so a bounded scalar search finds it."""
    result = optimize.minimize_scalar(
        lambda x: float(law.loss(math.exp(x), C / (6.0 * math.exp(x)))),
        bounds=(math.log(1.0), math.log(C / 6.0)),
        method="bounded",
        options=dict(xatol=1e-7),
    )
    return math.exp(result.x)


@dataclass
class PlanInputs:
    """What a plan needs beyond the budget and the law (validated: every quantity a user gives is checked)."""

    space: SearchSpace
    step_seconds: StepSeconds | None = None  # from a device profile; needed for time and money budgets
    memory_bytes: MemoryBytes = train_memory_bytes
    memory_limit: float | None = None  # bytes available on the device
    # The analytic estimate came out at 0.71-1.09x XLA's compiled peak on the 48 cpu-small configurations
    # (results/cpu/timing), so a candidate must fit with this factor to spare.
    memory_headroom: float = 1.4
    flops_per_step: FlopsPerStep = train_step_flops  # for flops="exact"
    flops: str = "6N"
    price_per_hour: float | None = None
    spot_discount: float = 0.0
    inference_tokens: float = 0.0
    max_latency_ms: float | None = None
    fixed_batch: int | None = None  # plan at this batch only (`plan --batch`), for comparison
    # What a time or money budget pays for: "run", the whole run's wall-clock (start-up, compile, steps,
    # evaluations, saves; needs `clock`, the profile's wall-clock terms), or "steps", the training steps alone.
    covers: str = "run"
    clock: WallClock | None = None
    cadence: Cadence = field(default_factory=Cadence)  # the run's evaluations and saves (its TrainConfig)
    # Under a law with a `moe` section: the MoE candidates' step seconds, called as `step_seconds` with `moe=`
    # (a timing.counts.MoeSpec; None: `step_seconds` itself is called so), and where they come from: "given" (the
    # caller's function), "measured" (a profile whose records hold MoE configurations) or "extrapolated" (a
    # dense-only profile: its time model's features counted for the MoE).
    moe_step_seconds: StepSeconds | None = None
    moe_timing: str = "given"
    moe_refused: str | None = None  # why no MoE shape is searched (a quantised profile: the model refuses MoE there)
    # Serving: the width the trained model is served at after post-training quantisation (None: unquantised, in
    # bfloat16) and the memory its weights must fit in (bytes; None: no limit).
    serve_bits: int | None = None
    serve_memory: float | None = None
    # Step seconds measured on this machine for some candidates (scaling/preflight.py), keyed by `candidate_keys`'
    # row: they replace the profile's price of those candidates, and the others' prices are multiplied by
    # `measured_scale` (the median of measured over priced: the machine's speed now against the profile's).
    measured_steps: dict[tuple[int, ...], float] | None = None
    measured_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.covers not in ("run", "steps"):
            raise UserError(f"--budget-covers {self.covers!r}: use run or steps")
        if self.fixed_batch is not None and self.fixed_batch < 1:
            raise UserError(f"--batch {self.fixed_batch}: the batch size must be a positive number of sequences")
        if self.flops not in ("6N", "exact"):
            raise UserError(f"--flops {self.flops!r}: use 6N or exact")
        positive = dict(
            price_per_hour=("--price-per-hour", "a price per device-hour"),
            max_latency_ms=("--max-latency-ms", "the latency limit"),
            memory_limit=("device memory", "the device memory"),
            serve_memory=("--serve-memory", "the serving memory (bytes)"),
        )
        for name, (flag, what) in positive.items():
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise UserError(f"{flag} {value:g}: {what} must be a positive number")
        if not (math.isfinite(self.inference_tokens) and self.inference_tokens >= 0):
            raise UserError(f"--inference-tokens {self.inference_tokens:g}: the tokens to serve must be 0 or more")
        if not 0.0 <= self.spot_discount < 1.0:
            raise UserError(f"--spot-discount {self.spot_discount:g} must lie in [0, 1)")

    @property
    def whole_run(self) -> bool:
        """Whether a time budget pays for the whole run (`covers` "run" with a profile's wall-clock terms)."""
        return self.covers == "run" and self.clock is not None

    @property
    def arch(self) -> dict[str, Any]:
        """The space's architecture keywords, passed to every cost function with the shapes."""
        return dict(activation=self.space.activation, norm=self.space.norm, tied=self.space.tied)


@dataclass(frozen=True)
class Scores:
    """Every feasible candidate scored: tokens, predicted loss and step seconds, with the ranking (`order`, best
    first) and what was dropped and why. `make_plan` (scaling/planner.py) turns it into a typed `Plan`."""

    budget: Budget
    space: SearchSpace
    candidates: Candidates  # the feasible ones
    tokens: np.ndarray
    loss: np.ndarray
    step_seconds: np.ndarray | None
    train_seconds: float | None  # for time budgets, after inference costs (per candidate when inference-aware)
    order: np.ndarray  # candidate indices, best first (`rank`)
    dropped: dict[str, int] = field(default_factory=dict)
    recipe: RecipeLaw | None = None  # the law's recipe laws: the batch was chosen and the rate comes from them
    clock: tuple[WallClock, Cadence] | None = None  # where the budget pays for the whole run: its terms' model
    moe: MoeLaw | None = None  # the law's `moe` section, whose candidates carry expert counts

    def wall_clock(self, i: int) -> dict[str, float] | None:
        """Candidate i's run wall-clock, term by term (timing.wallclock.TERMS) and `total`; None unless the budget
        pays for the whole run."""
        if self.clock is None or self.step_seconds is None:
            return None
        c, (clock, cadence) = self.candidates, self.clock
        steps = self.tokens[i] // (c.b[i] * c.s[i])
        terms = clock.terms(steps, self.step_seconds[i], c.b[i], c.s[i], c.n[i], c.params_total[i], cadence)
        return {k: float(v) for k, v in terms.items()}

    def row(self, i: int) -> PlanRow:
        """Candidate i as a plan row."""
        c = self.candidates
        extra: dict[str, Any] = {}
        if self.recipe is not None:
            extra["lr"] = float(self.recipe.lr_at(c.N[i], c.b[i] * c.s[i], self.tokens[i]))
            extra["effective_tokens"] = float(self.tokens[i] * self.recipe.data_factor(c.b[i] * c.s[i], self.loss[i]))
            extra["b_crit"] = float(self.recipe.batch.b_crit_at(self.loss[i]))
        if self.step_seconds is not None:
            extra["step_seconds"] = float(self.step_seconds[i])
            extra["steps"] = int(self.tokens[i] // (c.b[i] * c.s[i]))
            extra["wall_clock"] = self.wall_clock(i)
        if c.E is not None:
            extra.update(experts=int(c.E[i]), top_k=int(c.top_k[i]), granularity=int(c.G[i]))
            extra["params_total"] = float(c.N_total[i])
        return PlanRow(
            d=int(c.d[i]),
            n=int(c.n[i]),
            h=int(c.h[i]),
            w=int(c.w[i]),
            s=int(c.s[i]),
            b=int(c.b[i]),
            params=float(c.N[i]),
            tokens=float(self.tokens[i]),
            tokens_per_param=float(self.tokens[i] / c.N[i]),
            loss=float(self.loss[i]),
            aspect_ratio=float(c.d[i] / c.n[i]),
            micro_batches=int(c.m[i]),
            **extra,
        )

    @property
    def best(self) -> int:
        """The index of the best candidate."""
        return int(self.order[0])


class ServingMemoryRefused(UserError):
    """No candidate's served weights fit `--serve-memory` at the width asked for (a plan over several widths skips
    that width)."""


def serving_bytes(bits: int | None) -> float:
    """Bytes per served weight: `bits` / 8 for a model quantised after training, 2 (bfloat16) unquantised (None or
    `UNQUANTISED_BITS` and more)."""
    return (bits if bits is not None and bits < UNQUANTISED_BITS else UNQUANTISED_BITS) / 8.0


def _filter(cands: Candidates, keep: np.ndarray, reason: str, dropped: dict[str, int]) -> Candidates:
    if (~keep).any():
        dropped[reason] = dropped.get(reason, 0) + int((~keep).sum())
    return cands.take(keep)


def _tokens_for_flops(budget: Budget, cands: Candidates, inputs: PlanInputs) -> np.ndarray:
    C = budget.value - 2.0 * cands.N * inputs.inference_tokens  # serving costs 2N (active) FLOPs per token
    if inputs.flops == "exact":
        args = cands.shape_args(inputs.space.v)
        flops = by_mlp(cands, lambda rows, moe: inputs.flops_per_step(**_at(args, rows, moe), **inputs.arch, **moe))
        per_token = flops / (cands.b * cands.s)
    else:
        per_token = 6.0 * cands.N
    return np.maximum(C, 0.0) / per_token


def _tokens_in_time(budget: Budget, cands: Candidates, step_s: np.ndarray, inputs: PlanInputs) -> np.ndarray:
    """Tokens of the whole steps that the time left after serving buys (zero where serving takes it all)."""
    T = budget.seconds(inputs.price_per_hour, inputs.spot_discount)
    per_step = cands.b * cands.s
    T_train = T - inputs.inference_tokens * step_s / (3.0 * per_step)
    if inputs.whole_run:  # start-up, compile, evaluations and saves come out of the budget too
        steps = inputs.clock.steps_within(
            T_train, step_s, cands.b, cands.s, cands.n, cands.params_total, inputs.cadence
        )
        return steps * per_step
    tokens = np.zeros(len(cands))
    ok = T_train > 0
    if ok.any():
        tokens[ok] = tokens_for_time(T_train[ok], step_s[ok], cands.b[ok], cands.s[ok])
    return np.floor(tokens / per_step) * per_step


def micro_batch_options(b: np.ndarray) -> np.ndarray:
    """(len(b), k) micro-batch counts to try for each batch: 1, 2, 4, ... while they divide b (0 pads)."""
    powers = 2 ** np.arange(int(np.log2(max(int(b.max()), 1))) + 1)
    return np.where(b[:, None] % powers[None, :] == 0, powers[None, :], 0)


def _memory(inputs: PlanInputs, columns: dict[str, np.ndarray], bytes_per: int, rows: Any, moe: dict) -> np.ndarray:
    return inputs.memory_bytes(**_at(columns, rows, moe), **inputs.arch, bytes_per=bytes_per, **moe)


def _fit_memory(cands: Candidates, inputs: PlanInputs, dropped: dict[str, int]) -> Candidates:
    """Each candidate with the fewest micro-batches (gradient accumulation) whose memory fits the device; those
    that fit at no micro-batch count are dropped."""
    space = inputs.space
    args, bytes_per = cands.shape_args(space.v), bytes_per_element(space.dtype)
    options = micro_batch_options(cands.b)
    fits = np.zeros(options.shape, dtype=bool)
    for j in range(options.shape[1]):
        if j and fits.any(axis=1).all():
            break  # every candidate fits with fewer micro-batches
        columns = args | (dict(micro_batches=np.maximum(options[:, j], 1)) if j else {})
        needed = by_mlp(cands, functools.partial(_memory, inputs, columns, bytes_per))
        fits[:, j] = (options[:, j] > 0) & (needed * inputs.memory_headroom <= inputs.memory_limit)
    ok = fits.any(axis=1)
    m = options[np.arange(len(cands)), np.argmax(fits, axis=1)]
    return _filter(cands.with_micro_batches(np.where(ok, m, 1)), ok, "memory", dropped)


def _step_seconds(cands: Candidates, inputs: PlanInputs) -> np.ndarray:
    """Predicted seconds per optimizer step: m passes of the micro-batch b/m (gradient accumulation)."""
    space, args = inputs.space, cands.shape_args(inputs.space.v, micro=True)

    def seconds(rows: Any, moe: dict[str, MoeSpec]) -> np.ndarray:
        fn = (inputs.moe_step_seconds or inputs.step_seconds) if moe else inputs.step_seconds
        return np.asarray(fn(**_at(args, rows, moe), **inputs.arch, dtype=space.dtype, **moe), float)

    step_s = by_mlp(cands, seconds) * cands.m
    if not inputs.measured_steps:
        return step_s
    return with_measured(step_s, cands, inputs.measured_steps, inputs.measured_scale)


def candidate_keys(cands: Candidates) -> np.ndarray:
    """(len, 10) integer key of each candidate's step: d, n, h, w, s, b, micro-batches, experts, top-k, granularity
    (1, 1, 1 for a dense MLP)."""
    dense = np.ones_like(cands.d)
    E = dense if cands.E is None else cands.E
    moe = E > 1
    k = np.where(moe, cands.top_k, 1) if cands.top_k is not None else dense
    G = np.where(moe, cands.G, 1) if cands.G is not None else dense
    return np.stack([cands.d, cands.n, cands.h, cands.w, cands.s, cands.b, cands.m, E, k, G], axis=1).astype(np.int64)


def with_measured(step_s: np.ndarray, cands: Candidates, measured: dict[tuple[int, ...], float],
                  scale: float = 1.0) -> np.ndarray:  # fmt: skip
    """`step_s` with the candidates whose key (`candidate_keys`) was measured priced at their measured seconds, the
    others at `scale` times their price."""
    keys, out = candidate_keys(cands), np.array(step_s, dtype=float) * scale
    for key, seconds in measured.items():
        out[(keys == np.asarray(key, dtype=np.int64)).all(axis=1)] = seconds
    return out


def effective_tokens(
    tokens: np.ndarray, cands: Candidates, recipe: RecipeLaw | None, loss: np.ndarray | None = None
) -> np.ndarray:
    """The tokens the loss law sees: all of them at the batch it was fitted at, fewer at larger batches
    (McCandlish et al. 2018, scaling/recipe.py), with B_crit at `loss` where it follows the loss; unchanged
    without recipe laws."""
    if recipe is None:
        return tokens
    return tokens * recipe.data_factor(cands.b * cands.s, loss)


def batch_loss_factor(tokens: np.ndarray, cands: Candidates, recipe: RecipeLaw | None) -> np.ndarray:
    """L(batch) / L(the loss law's batch) under an optimal-batch recipe law (scaling/recipe.py `OptimalBatchLaw`);
    1 under McCandlish's form (which counts tokens instead, `effective_tokens`) or without recipe laws."""
    if recipe is None:
        return np.ones(len(tokens))
    return np.asarray(recipe.loss_factor(cands.b * cands.s, cands.N, tokens), float).reshape(-1)


# B_crit(L) depends on the loss it helps predict: the planner's loss is the fixed point L = f(L), found by bisection
# in log L. f is monotone in L (B_crit falls as L grows, which lowers the data factor of batches above the
# reference batch and raises it below), so f(L) stays between its values at L -> 0 (B_crit -> infinity: no batch
# cost) and L -> infinity (B_crit -> 0), and the root lies between them. 60 halvings of that bracket leave it
# narrower than 1e-12 relative; simple iteration converges too slowly where f's slope nears 1.
FIXED_POINT_HALVINGS = 60


def b_crit_fixed_point(f: Callable[[np.ndarray], np.ndarray], size: int) -> np.ndarray:
    """The losses L (one per candidate) with L = f(L), for f monotone in L (see FIXED_POINT_HALVINGS)."""
    ends = np.stack([f(np.full(size, 1e-9)), f(np.full(size, 1e9))])
    lo, hi = np.log(ends.min(0)), np.log(ends.max(0))
    for _ in range(FIXED_POINT_HALVINGS):
        mid = (lo + hi) / 2
        above = f(np.exp(mid)) > np.exp(mid)  # the root lies above mid
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    return np.exp((lo + hi) / 2)


def _score(
    cands: Candidates, budget: Budget, law_file: LawFile, inputs: PlanInputs, dropped: dict[str, int]
) -> tuple[Candidates, np.ndarray, np.ndarray, np.ndarray | None]:
    """The feasible candidates with their tokens, predicted loss and step seconds; counts what it drops. With
    recipe laws the tokens count at the batch's data efficiency; with a shape section the loss carries the law's
    aspect-ratio factor."""
    if inputs.memory_limit is not None:
        cands = _fit_memory(cands, inputs, dropped)
    if inputs.serve_memory is not None:
        keep = cands.params_total * serving_bytes(inputs.serve_bits) <= inputs.serve_memory
        cands = _filter(cands, keep, "serving memory", dropped)
    step_s = None
    if inputs.step_seconds is not None:
        step_s = _step_seconds(cands, inputs)
        keep = np.isfinite(step_s) & (step_s > 0)  # a linear time model can go negative far from its data
        cands, step_s = _filter(cands, keep, "step time", dropped), step_s[keep]
    if inputs.max_latency_ms is not None:
        keep = step_s / (3.0 * cands.b * cands.s) * 1e3 <= inputs.max_latency_ms
        cands, step_s = _filter(cands, keep, "latency", dropped), step_s[keep]
    if budget.kind == "flops":
        tokens = _tokens_for_flops(budget, cands, inputs)
    else:
        tokens = _tokens_in_time(budget, cands, step_s, inputs)
    keep = tokens >= cands.b * cands.s  # at least one full training step
    cands, tokens = _filter(cands, keep, "budget", dropped), tokens[keep]
    step_s = step_s[keep] if step_s is not None else None

    def predict(loss: np.ndarray | None) -> np.ndarray:
        eff = effective_tokens(tokens, cands, law_file.recipe, loss)
        out = np.asarray(law_loss(law_file.law, law_file.moe, cands, eff), float).reshape(-1)
        out = out * batch_loss_factor(tokens, cands, recipe)
        return out * law_file.shape.factor(cands.d, cands.n, cands.N) if law_file.shape is not None else out

    recipe = law_file.recipe
    if recipe is not None and recipe.batch_form == "mccandlish" and recipe.batch.loss_exponent:
        return cands, tokens, b_crit_fixed_point(predict, len(tokens)), step_s
    return cands, tokens, predict(None), step_s


def law_loss(law: Law, moe: MoeLaw | None, cands: Candidates, D: np.ndarray) -> np.ndarray:
    """The loss law at the candidates' N and D tokens: under a `moe` section the MoE law at their active parameters,
    expert counts and granularities (dense candidates at E = 1, the law's dense restriction)."""
    if moe is None or cands.E is None:
        return law.loss(cands.N, D)
    return moe.loss(cands.N, D, cands.E, cands.G)


def moe_samples_loss(moe: MoeLaw, cands: Candidates, D: np.ndarray) -> np.ndarray | None:
    """(samples, len(cands)) losses under each bootstrap sample of the `moe` section (None without samples); a
    sample outside the law's constraints is left out."""
    names = [k for k in moe.constants if k in (moe.samples or {})]
    if not moe.samples or len(names) < len(moe.constants):
        return None
    columns = np.stack([np.asarray(moe.samples[k], float).ravel() for k in names], axis=1)
    out = []
    for row in columns:
        try:
            law = dataclasses.replace(moe, intervals=None, samples=None, **dict(zip(names, row, strict=True)))
            out.append(np.asarray(law.loss(cands.N, D, cands.E, cands.G), float).reshape(-1))
        except UserError:
            continue
    return np.array(out) if out else None


def law_samples_loss(
    law_file: LawFile, N: np.ndarray, D: np.ndarray, d: np.ndarray | None = None, n: np.ndarray | None = None
) -> np.ndarray | None:
    """(samples, len(N)) losses under each bootstrap sample of the law, or None without samples; with a shape
    section, each sample's aspect-ratio factor at widths d and depths n (its samples pair with the law's)."""
    s = law_file.samples
    keys = ("E", "A", "B", "alpha", "beta")
    if not s or not isinstance(law_file.law, ChinchillaLaw) or not all(k in s for k in keys):
        return None
    loss = np.exp(sample_log_loss(s, np.asarray(N, float), np.asarray(D, float)))  # with a precision penalty's draws
    shape = law_file.shape
    if shape is None:
        return loss
    if not shape.samples or d is None or n is None:
        return None  # the law's samples alone would give intervals without the shape term's spread
    factors = shape.sample_factors(d, n, N)
    return None if factors is None else loss * factors


def tie_rule(space: SearchSpace) -> str:
    """The tie rule of `rank`, in words, for the report."""
    lo, hi = space.preferred_aspect
    return (
        f"losses within {TIE_TOLERANCE:.0e} (relative) of the best tie, since a law in N and D cannot tell "
        f"shapes of equal N apart; ties go to aspect ratio d/n in [{lo:g}, {hi:g}] ({space.preferred_source}), "
        f"then to head size {space.preferred_head_size}, then to the lower loss"
    )


def rank(loss: np.ndarray, cands: Candidates, space: SearchSpace) -> np.ndarray:
    """Candidate indices, best first: by predicted loss, with ties (`TIE_TOLERANCE`) broken by `tie_rule`."""
    best = loss.min()
    tied = loss <= best + TIE_TOLERANCE * abs(best)
    idx = np.flatnonzero(tied)
    aspect = cands.d[idx] / cands.n[idx]
    lo, hi = space.preferred_aspect
    with np.errstate(divide="ignore"):
        aspect_miss = np.maximum(0.0, np.maximum(np.log(lo / aspect), np.log(aspect / hi)))
    head_miss = np.abs(np.log(cands.d[idx] / cands.h[idx] / space.preferred_head_size))
    first = idx[np.lexsort((loss[idx], head_miss, aspect_miss))]
    rest = np.flatnonzero(~tied)
    return np.concatenate([first, rest[np.argsort(loss[rest], kind="stable")]])


def planner_batches(space: SearchSpace, recipe: RecipeLaw | None) -> tuple[int, ...]:
    """The batch sizes to search: with recipe laws, the space's `batch_choices` inside the batch range the laws
    were fitted on (the laws' safety net: no extrapolation in batch); without them, the space's fixed batch."""
    if recipe is None:
        return space.b
    lo, hi = recipe.batch.batch_range
    lr_lo, lr_hi = recipe.lr.batch_range
    ok = tuple(b for b in space.batch_choices if all(max(lo, lr_lo) <= b * s <= min(hi, lr_hi) for s in space.s))
    if not ok:
        raise UserError(
            f"none of space {space.name}'s batch sizes {list(space.batch_choices)} lies in the batch range "
            f"the law's recipe was fitted on ({lo:g}-{hi:g} tokens per step)"
        )
    return ok


def score(budget: Budget, law_file: LawFile, inputs: PlanInputs) -> Scores:
    """Score every candidate of the space under the budget, best first. See the module docstring."""
    needs_time = budget.kind != "flops" or inputs.max_latency_ms is not None
    if needs_time and inputs.step_seconds is None:
        raise UserError(f"budget {budget.text} (or --max-latency-ms) needs a device profile: pass --profile FILE")
    dropped: dict[str, int] = {}
    batches = (inputs.fixed_batch,) if inputs.fixed_batch else planner_batches(inputs.space, law_file.recipe)
    bounds = aspect_bounds(inputs.space, law_file.shape, law_file.fitted_range)
    candidates = enumerate_candidates(inputs.space, batches, bounds)
    if law_file.moe is not None:
        specs = moe_specs(inputs.space, law_file.moe, law_file.fitted_range) if not inputs.moe_refused else ((1, 1, 1),)
        candidates = with_experts(inputs.space, candidates, specs)
    cands, tokens, loss, step_s = _score(candidates, budget, law_file, inputs, dropped)
    if len(cands) == 0 and dropped.get("serving memory") == len(candidates):
        raise ServingMemoryRefused(
            f"no candidate of space {inputs.space.name} fits --serve-memory {inputs.serve_memory:g} bytes at "
            f"{inputs.serve_bits or UNQUANTISED_BITS} bits a weight; raise it or serve at fewer bits"
        )
    if len(cands) == 0:
        raise UserError(
            f"budget {budget.describe()} is too small to train any candidate of space "
            f"{inputs.space.name} (dropped: {dropped}); raise the budget or use a smaller space"
            + (_fixed_cost_hint(candidates, inputs) if inputs.whole_run and budget.kind != "flops" else "")
        )
    order = rank(loss, cands, inputs.space)
    train_s = budget.seconds(inputs.price_per_hour, inputs.spot_discount) if budget.kind != "flops" else None
    clock = (inputs.clock, inputs.cadence) if inputs.whole_run and budget.kind != "flops" else None
    return Scores(
        budget,
        inputs.space,
        cands,
        tokens,
        loss,
        step_s,
        train_s,
        order,
        dropped,
        recipe=law_file.recipe,
        clock=clock,
        moe=law_file.moe,
    )


def _fixed_cost_hint(cands: Candidates, inputs: PlanInputs) -> str:
    """What a whole run's start-up and compile take at least on this device, for a budget that buys no step."""
    clock = inputs.clock
    least = float(np.min(clock.startup_seconds(cands.n) + clock.compile_seconds(cands.n, cands.N)))
    least += inputs.cadence.load_seconds
    return (
        f"; a run's start-up and compile alone take {least:.3g} s or more on this device (the profile's wall-clock "
        "terms): to price the training steps alone, pass --budget-covers steps"
    )


def sample_losses(scores: Scores, law_file: LawFile, rows: np.ndarray) -> np.ndarray | None:
    """(samples, len(rows)) losses of candidates `rows` under the law's bootstrap samples (the `moe` section's under
    a MoE law), or None without samples."""
    c = scores.candidates.take(rows)
    eff = effective_tokens(scores.tokens[rows], c, scores.recipe, scores.loss[rows])
    if law_file.moe is not None and c.E is not None:
        # a shape section's samples do not pair with the moe section's: no interval under both
        samples = moe_samples_loss(law_file.moe, c, eff) if law_file.shape is None else None
    else:
        samples = law_samples_loss(law_file, c.N, eff, c.d, c.n)
    if samples is None:
        return None
    return samples * batch_loss_factor(scores.tokens[rows], c, scores.recipe)[None, :]


def loss_intervals(scores: Scores, law_file: LawFile, rows: np.ndarray) -> np.ndarray | None:
    """(len(rows), 2) 95% intervals of the loss of candidates `rows` from the law's bootstrap samples: with the law
    file's calibration, the calibrated prediction interval of a new run (scaling/intervals.py); in law files
    written before it, the samples' percentile interval."""
    samples = sample_losses(scores, law_file, rows)
    if samples is None:
        return None
    calibration = stored_calibration(law_file)
    if calibration is None:
        return np.percentile(samples, [2.5, 97.5], axis=0).T
    _, new = calibrated_bounds(np.log(scores.loss[rows]), np.log(samples), calibration)
    return np.exp(new).T


# Losses this close (relative) are one plan's, where two candidates differ in their batch alone (`distinct_best`).
SAME_PLAN_LOSS = 1e-4


def distinct_best(scores: Scores, top: int) -> np.ndarray:
    """The `top` best-ranked candidates, leaving out any that differs from a better-ranked one in its batch alone
    with the same tokens (to a step of the larger batch) and loss (within `SAME_PLAN_LOSS`): under a law without a
    batch term and a step time proportional to the batch, a 24-hour plan on the public A100 profile listed one shape
    at batches 16 to 256 as its top five, one plan five times. The table lists distinct plans; the recipe line says
    the batch was not chosen."""
    c, kept = scores.candidates, []
    columns = [x for x in (c.d, c.n, c.h, c.w, c.s, c.E, c.top_k, c.G) if x is not None]
    for i in scores.order:
        if not any(
            all(x[i] == x[j] for x in columns)
            and abs(scores.tokens[i] - scores.tokens[j]) <= max(c.b[i], c.b[j]) * c.s[i]
            and abs(scores.loss[i] / scores.loss[j] - 1) <= SAME_PLAN_LOSS
            for j in kept
        ):
            kept.append(int(i))
            if len(kept) == top:
                break
    return np.array(kept, dtype=np.int64)


def top_rows(scores: Scores, law_file: LawFile, top: int) -> tuple[PlanRow, ...]:
    """The `top` best distinct candidates as rows (`distinct_best`), each with its loss interval where the law has
    bootstrap samples."""
    best = distinct_best(scores, top)
    spans = loss_intervals(scores, law_file, best)
    return tuple(scores.row(int(i)).with_interval(None if spans is None else spans[k]) for k, i in enumerate(best))


def nd_choice(scores: Scores, law_file: LawFile, inputs: PlanInputs) -> NDChoice:
    """What the law without its shape term would pick (within the space's aspect-ratio bounds, as a law in N and D
    plans), and its loss under the shape-aware law: the cost of deciding shape without the shape term."""
    nd = score(scores.budget, dataclasses.replace(law_file, shape=None), inputs)
    row = nd.row(nd.best)
    loss = row.loss * law_file.shape.factor(row.d, row.n, row.params)
    return NDChoice(dataclasses.replace(row, loss=float(loss)), row.loss, float(loss - scores.loss[scores.best]))


def _head_size(d: int, k: int) -> int | None:
    """The largest even head size up to k that divides d (None when d is odd)."""
    return next((x for x in range(min(k, d), 1, -1) if x % 2 == 0 and d % x == 0), None)


def _edge_probes(space: SearchSpace, row: PlanRow, aspect: tuple[float, float]) -> list[tuple[str, dict[str, int]]]:
    """The edges of the space that a candidate sits on, each with the shape one step beyond it.

    Width moves by the spacing of the space's widths (keeping the head size where it divides), depth by one
    layer, batch and context by the space's ratio between neighbouring values; batch and context count only
    where the space offers several.
    """
    d, n, k, b, s = row.d, row.n, row.d // row.h, row.b, row.s
    lo, hi = aspect
    step = space.d[1] - space.d[0] if len(space.d) > 1 else d
    wider = [x for x in space.d if x > d and x % k == 0 and x <= hi * n]
    narrower = [x for x in space.d if x < d and x % k == 0 and x >= lo * n]
    probes = []
    if not wider:
        probes.append(
            (f"largest width d={d}" if d == max(space.d) else f"aspect-ratio bound d/n <= {hi:g}", dict(d=d + step))
        )
    if not narrower and d > step:
        probes.append(
            (f"smallest width d={d}" if d == min(space.d) else f"aspect-ratio bound d/n >= {lo:g}", dict(d=d - step))
        )
    if not [x for x in space.n if x > n and d >= lo * x]:
        probes.append(
            (f"largest depth n={n}" if n == max(space.n) else f"aspect-ratio bound d/n >= {lo:g}", dict(n=n + 1))
        )
    if not [x for x in space.n if x < n and d <= hi * x] and n > 1:
        probes.append(
            (f"smallest depth n={n}" if n == min(space.n) else f"aspect-ratio bound d/n <= {hi:g}", dict(n=n - 1))
        )
    for name, value, grid in (("batch", b, sorted(space.b)), ("context", s, sorted(space.s))):
        if len(grid) > 1 and value == grid[-1]:
            probes.append((f"largest {name} {name[0]}={value}", {name[0]: value * grid[-1] // grid[-2]}))
        if len(grid) > 1 and value == grid[0] and value > 1:
            probes.append((f"smallest {name} {name[0]}={value}", {name[0]: max(1, value * grid[0] // grid[1])}))
    return probes


def binding_edges(scores: Scores, law_file: LawFile, inputs: PlanInputs) -> tuple[Edge, ...]:
    """The edges of the space the best candidate sits on where one step beyond would predict a lower loss
    (beyond the tie tolerance): there the optimum lies outside the space.

    A law without a shape term cannot rank shapes of one N: a step past the space's aspect-ratio bound buys a
    faster step (on CPUs, shallow and wide) at a loss the law never saw the price of (the CPU shape sweep measured
    3-8% more at d/n 32-64 than at 8-16). Those bounds decide width against depth by design (the plan's shape
    line says so), so they are not reported as an optimum outside the space; a shape-aware law's fitted range is."""
    best = scores.row(scores.best)
    edges = []
    for edge, change in _edge_probes(scores.space, best, aspect_bounds(scores.space, law_file.shape,
                                                                      law_file.fitted_range)):  # fmt: skip
        if law_file.shape is None and edge.startswith("aspect-ratio bound"):
            continue
        shape = {"d": best.d, "n": best.n, "s": best.s, "b": best.b, **change}
        k = _head_size(shape["d"], best.d // best.h)
        if k is None:
            continue
        probe = _candidates(scores.space, shape["d"], shape["n"], k, best.w // best.d, shape["s"], shape["b"])
        if best.experts is not None:
            probe = with_experts(scores.space, probe, ((best.experts, best.top_k, best.granularity),))
        cands, _, loss, _ = _score(probe, scores.budget, law_file, inputs, {})
        if len(cands) and loss[0] < best.loss * (1 - TIE_TOLERANCE):
            beyond = dict(d=int(cands.d[0]), n=int(cands.n[0]), b=int(cands.b[0]), s=int(cands.s[0]))
            edges.append(Edge(edge, beyond, float(cands.N[0]), float(loss[0])))
    return tuple(edges)


def _best_at(scores: Scores, mask: np.ndarray) -> int | None:
    """The best-ranked candidate among `mask` (None when none)."""
    position = np.empty(len(scores.order), dtype=np.int64)
    position[scores.order] = np.arange(len(scores.order))
    idx = np.flatnonzero(mask)
    return int(idx[np.argmin(position[idx])]) if len(idx) else None


def batch_choice(scores: Scores) -> tuple[BatchOption, ...] | None:
    """With recipe laws: the best plan at the chosen batch beside the best plan at the largest feasible batch and
    at the batch the loss law was fitted at (each with its own best shape), so the report shows what the batch's
    data-efficiency cost changes. None without recipe laws (the batch was not chosen)."""
    if scores.recipe is None:
        return None
    c, best = scores.candidates, scores.best
    chosen, options = "chosen", []
    reference = scores.recipe.reference_batch_tokens
    for label, mask in (
        ("largest feasible batch", c.b == c.b.max()),
        ("the loss law's fixed batch", c.b * c.s == reference),
    ):
        i = _best_at(scores, mask)
        if i is not None and i != best:
            options.append(BatchOption(label, scores.row(i)))
        elif i == best:
            chosen += f" (also the {label.removeprefix('the ')})"
    return (BatchOption(chosen, scores.row(best)), *options)


def best_by_depth(scores: Scores, law_file: LawFile | None = None) -> tuple[PlanRow, ...]:
    """The best candidate at each depth n (by the ranking): the width-vs-depth trade-off; with `law_file`, each
    with the 95% interval of its predicted loss (`loss_interval`) where the law has bootstrap samples."""
    best = [_best_at(scores, scores.candidates.n == n) for n in np.unique(scores.candidates.n)]
    spans = loss_intervals(scores, law_file, np.array(best)) if law_file is not None and best else None
    return tuple(scores.row(i).with_interval(None if spans is None else spans[k]) for k, i in enumerate(best))


def flops_rule_choice(scores: Scores, law: ChinchillaLaw | KaplanLaw) -> FlopsRuleChoice | None:
    """For a time budget: what planning by FLOPs alone would pick, and the loss it would cost.

    The FLOPs rule takes the FLOPs the budget buys (those of the time-optimal choice, 6ND) and picks the
    candidate with the lowest loss under C = 6ND (ties by `tie_rule`), ignoring that step times differ at equal
    FLOPs. Its real loss is then read at the tokens the time budget actually buys it on this device.
    """
    if scores.step_seconds is None or scores.budget.kind == "flops":
        return None
    c, best = scores.candidates, scores.best
    C = 6.0 * c.N[best] * scores.tokens[best]
    flops_loss = np.asarray(law_loss(law, scores.moe, c, C / (6.0 * c.N)), float)
    pick = int(rank(flops_loss, c, scores.space)[0])  # the shapes it cannot tell apart go by the same tie rule
    cost = float(scores.loss[pick] - scores.loss[best])
    return FlopsRuleChoice(scores.row(pick), float(C), float(flops_loss[pick]), cost)


def moe_choice(scores: Scores, law_file: LawFile, inputs: PlanInputs) -> MoeChoice | None:
    """Under a law with a `moe` section: the best dense candidate (E = 1) beside the best mixture of experts at the
    plan's budget, each with its FLOPs per step and training memory, and the MoE's loss minus the dense one's with
    the 95% interval of that difference over the moe section's bootstrap samples (each sample predicts both, so the
    interval is of the paired difference). None under a dense law."""
    if scores.moe is None:
        return None
    c = scores.candidates
    picks = [_best_at(scores, c.E == 1), _best_at(scores, c.E > 1)]
    found = np.array([i for i in picks if i is not None])
    spans = loss_intervals(scores, law_file, found) if len(found) else None
    rows = [
        None if i is None else _costed_row(scores, inputs, i, None if spans is None else spans[list(found).index(i)])
        for i in picks
    ]
    difference = interval = None
    if None not in picks:
        difference = float(scores.loss[picks[1]] - scores.loss[picks[0]])
        samples = sample_losses(scores, law_file, np.array(picks))
        if samples is not None:
            lo, hi = np.percentile(samples[:, 1] - samples[:, 0], [2.5, 97.5])
            interval = (float(lo), float(hi))
    step_times = None if scores.step_seconds is None else inputs.moe_timing
    note = f"no MoE shape searched: {inputs.moe_refused}" if inputs.moe_refused else ""
    note = note or _missing_side(scores, law_file, picks)
    return MoeChoice(rows[0], rows[1], difference, interval, step_times, note)


def _missing_side(scores: Scores, law_file: LawFile, picks: list[int | None]) -> str:
    """Why the comparison lacks a side ("" when it has both)."""
    specs = moe_specs(scores.space, law_file.moe, law_file.fitted_range)
    dropped = f" (dropped: {scores.dropped})" if scores.dropped else ""
    if picks[1] is None and not any(E > 1 for E, _, _ in specs):
        why = "FP8 training of a MoE is refused" if scores.space.dtype == "float8" else "the space's experts are 1"
        return f"no MoE shape searched: {why}"
    if picks[1] is None:
        return f"no MoE candidate is feasible: the device memory, step time or budget dropped them all{dropped}"
    if picks[0] is None and (1, 1, 1) not in specs:
        return "no dense shape searched: the space's experts leave out 1"
    return "" if picks[0] is not None else f"no dense candidate is feasible{dropped}"


def _costed_row(scores: Scores, inputs: PlanInputs, i: int, span: np.ndarray | None) -> PlanRow:
    """Candidate i's row with its loss interval, FLOPs per step (router and experts counted) and peak training
    memory (all experts' weights, gradients and Adam moments; with its micro-batches)."""
    c = scores.candidates.take(np.array([i]))
    moe = c.groups()[0][1]
    args = _at(c.shape_args(inputs.space.v), slice(None), moe)
    flops = inputs.flops_per_step(**args, **inputs.arch, **moe)
    micro = _at(dict(micro_batches=c.m), slice(None), moe) if c.m[0] > 1 else {}
    bytes_per = bytes_per_element(inputs.space.dtype)
    memory = inputs.memory_bytes(**args, **inputs.arch, bytes_per=bytes_per, **micro, **moe)
    row = scores.row(i).with_interval(span)
    return dataclasses.replace(row, flops_per_step=float(np.ravel(flops)[0]), memory_bytes=float(np.ravel(memory)[0]))
