"""What a plan returns: typed, frozen rows and comparisons, assembled once from the scored candidates.

`score` (scaling/plan.py) scores every candidate; `make_plan` (scaling/planner.py) turns the scores into a `Plan`
that holds everything a report shows: the best rows with their intervals, the best configuration at each depth, the
edges of the space that bind, what planning by FLOPs alone would pick, the batch choice, and how width against depth
and the recipe (batch, learning rate) were decided. `Plan.to_dict` is the JSON `plan --json` prints and
`plan.json` holds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
from smallest_loss.configs.spaces import SearchSpace
from smallest_loss.scaling.budget import Budget
from smallest_loss.scaling.report import plan_markdown
from smallest_loss.timing.profile import DeviceProfile, Retiming

# Columns of a row in their JSON order; optional ones (None) are left out of `PlanRow.to_dict`.
_ROW_KEYS = (
    "d",
    "n",
    "h",
    "w",
    "s",
    "b",
    "params",
    "params_total",
    "experts",
    "top_k",
    "granularity",
    "tokens",
    "tokens_per_param",
    "loss",
    "aspect_ratio",
    "micro_batches",
    "lr",
    "effective_tokens",
    "b_crit",
    "step_seconds",
    "steps",
    "wall_clock",
    "flops_per_step",
    "memory_bytes",
    "loss_interval",
)


@dataclass(frozen=True)
class PlanRow:
    """One planned configuration: its shape (d, n, h, w, s, b), parameters, tokens and predicted loss; the
    learning rate, effective tokens and B_crit where the law has recipe laws; step time and steps where a device
    profile priced it; the loss's 95% interval where the law has bootstrap samples."""

    d: int
    n: int
    h: int
    w: int
    s: int
    b: int
    params: float
    tokens: float
    tokens_per_param: float
    loss: float
    aspect_ratio: float
    micro_batches: int
    lr: float | None = None
    effective_tokens: float | None = None
    b_crit: float | None = None
    step_seconds: float | None = None
    steps: int | None = None
    wall_clock: dict[str, float] | None = None  # the run's predicted seconds by term, where the budget pays for it all
    loss_interval: tuple[float, float] | None = None
    # Under a law with a `moe` section: the expert count (1: the dense MLP), top-k, granularity and all parameters
    # (`params` is then the active ones, what the law reads); in the MoE comparison also the step's FLOPs (router
    # and experts counted) and its peak training memory (all experts' weights, gradients and Adam moments).
    params_total: float | None = None
    experts: int | None = None
    top_k: int | None = None
    granularity: int | None = None
    flops_per_step: float | None = None
    memory_bytes: float | None = None

    @property
    def is_moe(self) -> bool:
        """A mixture of experts (more than one expert)."""
        return (self.experts or 1) > 1

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in _ROW_KEYS if getattr(self, k) is not None}
        if self.loss_interval is not None:
            out["loss_interval"] = list(self.loss_interval)
        return out

    def with_interval(self, span: np.ndarray | None) -> PlanRow:
        return self if span is None else dataclasses.replace(self, loss_interval=(float(span[0]), float(span[1])))


@dataclass(frozen=True)
class Edge:
    """An edge of the space the best configuration sits on, where one step beyond predicts a lower loss."""

    edge: str
    beyond: dict[str, int]
    beyond_params: float
    beyond_loss: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class FlopsRuleChoice:
    """For a time budget: the configuration planning by FLOPs alone (C = 6ND) would pick, its loss at the tokens
    the time budget buys it on this device, and the loss that costs against the time-optimal choice."""

    row: PlanRow
    flops: float
    loss_if_flops_were_time: float
    loss_cost: float

    def to_dict(self) -> dict[str, Any]:
        return dict(
            self.row.to_dict(),
            flops=self.flops,
            loss_if_flops_were_time=self.loss_if_flops_were_time,
            loss_cost=self.loss_cost,
        )


@dataclass(frozen=True)
class NDChoice:
    """With a shape-aware law: what the law without its shape term picks, and its loss under the full law."""

    row: PlanRow
    loss_without_shape: float
    loss_cost: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.row.to_dict(), loss_without_shape=self.loss_without_shape, loss_cost=self.loss_cost)


@dataclass(frozen=True)
class ShapeDecision:
    """How width against depth was decided: by the law's aspect-ratio factor (`from_law`), or by the space's
    aspect-ratio bounds and tie rule (`note` says so)."""

    from_law: bool
    note: str = ""
    aspect_opt: float | None = None
    gamma: float | None = None
    aspect_range: tuple[float, float] | None = None
    aspect_opt_interval: tuple[float, float] | None = None
    nd_choice: NDChoice | None = None

    def to_dict(self) -> dict[str, Any]:
        if not self.from_law:
            return dict(from_law=False, note=self.note)
        return dict(
            from_law=True,
            aspect_opt=self.aspect_opt,
            gamma=self.gamma,
            aspect_range=list(self.aspect_range),
            aspect_opt_interval=None if self.aspect_opt_interval is None else list(self.aspect_opt_interval),
            nd_choice=None if self.nd_choice is None else self.nd_choice.to_dict(),
        )


@dataclass(frozen=True)
class RecipeDecision:
    """How the batch and learning rate were set: chosen by the law's recipe laws, or fixed (`note` says so)."""

    chosen: bool
    note: str = ""
    b_crit_tokens: float | None = None
    b_crit_interval: tuple[float, float] | None = None
    b_crit_loss_exponent: float | None = None
    b_crit_loss_ref: float | None = None
    batch_identified: bool | None = None
    reference_batch_tokens: float | None = None
    lr_law: dict[str, float] | None = None
    batch_range_tokens: tuple[float, float] | None = None
    schedule: dict[str, Any] | None = None
    fixed_batch: int | None = None  # `plan --batch`: the batch was fixed, not searched
    batch_form: str = "mccandlish"  # the recipe's batch form (scaling/recipe.py): mccandlish or optimal
    optimal_batch: dict[str, Any] | None = None  # the optimal-batch law, under that form

    def to_dict(self) -> dict[str, Any]:
        if not self.chosen:
            return dict(chosen=False, note=self.note)
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "note"}
        if self.fixed_batch is None:
            del out["fixed_batch"]
        if self.batch_form == "mccandlish":  # plans from older recipe sections read as before
            del out["batch_form"], out["optimal_batch"]
        out["batch_range_tokens"] = list(self.batch_range_tokens)
        return out


@dataclass(frozen=True)
class BatchOption:
    """A row of the batch comparison: the chosen batch, the largest feasible one, or the law's fixed batch."""

    choice: str
    row: PlanRow

    def to_dict(self) -> dict[str, Any]:
        return dict(self.row.to_dict(), choice=self.choice)


MOE_TIMING = {
    "given": "the MoE candidates' step times come from the given step-time function",
    "measured": "the MoE candidates' step times come from the profile's time model, whose records hold MoE "
    "configurations",
    "extrapolated": "the MoE candidates' step times are extrapolated by the counts (the profile's time model's "
    "features counted for each MoE: router, experts, routing, all expert weights), not measured: the profile's "
    "records hold no MoE configuration (calibrate the cpu-moe grid to measure some)",
}


@dataclass(frozen=True)
class MoeChoice:
    """Under a law with a `moe` section: the best dense configuration beside the best mixture of experts at the
    same budget, which wins and by how much (`difference`: the MoE's loss minus the dense one's, negative where
    the MoE wins), with the 95% interval of the difference from the moe section's paired bootstrap samples; how
    the MoE step times were priced (`step_times`), and why a side is missing (`note`)."""

    dense: PlanRow | None
    moe: PlanRow | None
    difference: float | None = None
    difference_interval: tuple[float, float] | None = None
    step_times: str | None = None  # None (a FLOPs budget), "given", "measured" or "extrapolated"
    note: str = ""

    @property
    def winner(self) -> str | None:
        """ "moe", "dense", or None where a side is missing or they tie."""
        if self.difference is None or self.difference == 0:
            return None
        return "moe" if self.difference < 0 else "dense"

    @property
    def step_times_line(self) -> str | None:
        """Where the MoE candidates' step times come from, in one line (None for a FLOPs budget)."""
        return None if self.step_times is None else MOE_TIMING[self.step_times]

    @property
    def significant(self) -> bool | None:
        """Whether the interval of the difference excludes 0 (None without an interval)."""
        if self.difference_interval is None:
            return None
        lo, hi = self.difference_interval
        return hi < 0 or lo > 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(
            dense=None if self.dense is None else self.dense.to_dict(),
            moe=None if self.moe is None else self.moe.to_dict(),
            winner=self.winner,
            difference=self.difference,
        )
        if self.difference_interval is not None:
            out["difference_interval"] = list(self.difference_interval)
            out["significant"] = self.significant
        if self.step_times is not None:
            out["step_times"] = self.step_times
        if self.note:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class Serving:
    """How the planned model is served: quantised after training to `bits` (None: unquantised, in bfloat16), the loss
    that adds at the best configuration (Kumar et al.'s delta_PTQ, included in every row's predicted loss), the best
    configuration's served weights in bytes, and the memory they had to fit in (`--serve-memory`; None: no limit)."""

    bits: int | None
    ptq_loss: float
    weight_bytes: float
    memory_limit: float | None = None

    @property
    def label(self) -> str:
        return f"{self.bits} bits" if self.bits is not None else "unquantised (bfloat16)"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def line(self) -> str:
        """One line for the report."""
        limit = f" (limit {self.memory_limit:.3g} B)" if self.memory_limit is not None else ""
        added = f"; post-training quantisation adds {self.ptq_loss:+.4f} to its loss (included)" if self.bits else ""
        return f"**Served** {self.label}: weights {self.weight_bytes:.3g} B{limit}{added}."


@dataclass(frozen=True)
class MeasuredStep:
    """One candidate's step: the profile's price and what it measured on this machine."""

    key: tuple[int, ...]  # scaling.plan.candidate_keys: d, n, h, w, s, b, micro-batches, experts, top-k, granularity
    priced: float  # the profile's seconds per step (the loop's, where the profile has a host cost)
    measured: float  # the compiled step timed here, plus the profile's host cost (`priced` where not `timed`)
    round: int  # 1 for the first measured
    timed: bool = True  # False: it could not be timed here (out of memory, or micro-batches), so priced
    # The measurement that made it the best, where it was then timed again to confirm (`measured` is the second: the
    # first was chosen for being fast, so it is biased fast; the second is not).
    first: float | None = None
    # The seconds of timing behind `measured` where it is a confirmation timed on this machine (for longer than the
    # first: `scaling.preflight.confirm_seconds`), so that the step timed again after a verified run is timed as long.
    timed_for: float | None = None

    @property
    def label(self) -> str:
        d, n, h, w, s, b, _, experts, top_k, _ = self.key
        moe = f" E{experts}k{top_k}" if experts > 1 else ""
        return f"d{d} n{n} h{h} w{w}{moe} s{s} b{b}"

    @property
    def error(self) -> float:
        """The price against the measurement: priced / measured - 1."""
        return self.priced / self.measured - 1

    def to_dict(self) -> dict[str, Any]:
        return dict(config=self.label, key=list(self.key), priced=self.priced, measured=self.measured, round=self.round,
                    timed=self.timed, first=self.first, timed_for=self.timed_for)  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MeasuredStep:
        key = tuple(int(v) for v in data["key"])
        first, timed_for = (None if data.get(k) is None else float(data[k]) for k in ("first", "timed_for"))
        return cls(key, float(data["priced"]), float(data["measured"]), int(data["round"]), bool(data.get("timed", 1)),
                   first, timed_for)  # fmt: skip

    def describe(self) -> str:
        """Its measurement against its price, in a few words."""
        if not self.timed:
            return f"{self.label} not timed here (priced {self.priced * 1e3:.3g} ms)"
        timed = f" over {self.timed_for:.3g} s" if self.timed_for is not None else ""
        again = f", confirmed{timed} after {self.first * 1e3:.3g} ms first" if self.first is not None else ""
        price = f"priced {self.priced * 1e3:.3g} ms, {self.error:+.0%}"
        return f"{self.label} {self.measured * 1e3:.3g} ms{again} ({price})"


@dataclass(frozen=True)
class Preflight:
    """The candidates measured before the plan was made, in the order measured."""

    steps: tuple[MeasuredStep, ...]
    k: int
    rounds: int
    # The profile's weight in the price of each step timed here: measured^(1 - weight) x priced^weight
    # (`scaling.preflight.profile_weight`; 0: the measurement alone).
    weight: float = 0.0
    # The device profile the measurements were priced with (its host cost is in each `measured`), so the best step can
    # be timed again the same way after a verified run (`scaling.preflight.time_again`); not part of the plan's data.
    profile: DeviceProfile | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def scale(self) -> float:
        """The median of measured over priced seconds of the steps timed here (1 where none was): what the
        candidates not measured are priced at, times their profile price, so that a machine slower or faster now than
        at calibration does not favour the candidates left unmeasured."""
        ratios = [m.measured / m.priced for m in self.steps if m.timed and m.priced > 0]
        return float(np.median(ratios)) if ratios else 1.0

    @property
    def price_scale(self) -> float:
        """What the candidates not measured are priced at, times their profile price: `scale` weighed against the
        profile's own speed as the measured steps are (scale^(1 - weight))."""
        return self.scale ** (1 - self.weight)

    def price(self, step: MeasuredStep) -> float:
        """The seconds a measured step is priced at: its measurement weighed against the profile's price."""
        if not step.timed:
            return step.measured
        return step.measured ** (1 - self.weight) * step.priced**self.weight

    @property
    def seconds(self) -> dict[tuple[int, ...], float]:
        """The measured candidates' prices by key (what `PlanInputs.measured_steps` takes)."""
        return {m.key: self.price(m) for m in self.steps}

    def _timed(self, row: PlanRow) -> MeasuredStep | None:
        key = row_key(row)
        return next((m for m in self.steps if m.key == key and m.timed), None)

    def priced(self, row: PlanRow) -> float | None:
        """The profile's price of a planned row's step where it was measured (None: priced by the profile)."""
        return step.priced if (step := self._timed(row)) is not None else None

    def measured(self, row: PlanRow) -> float | None:
        """A planned row's step as measured here (None: not measured)."""
        return step.measured if (step := self._timed(row)) is not None else None

    def to_dict(self) -> dict[str, Any]:
        return dict(k=self.k, rounds=self.rounds, scale=self.scale, weight=self.weight,
                    steps=[m.to_dict() for m in self.steps])  # fmt: skip

    def line(self) -> str:
        """The measurements in one line, for plans and reports."""
        each = "; ".join(m.describe() for m in self.steps)
        rounds = f"{self.rounds} rounds" if self.rounds != 1 else "1 round"
        if self.weight:
            how = (
                f"their measured steps weighed {1 - self.weight:.2f} against the profile's prices {self.weight:.2f} "
                f"price them, the candidates not measured priced x{self.price_scale:.3f} (the median ratio "
                f"x{self.scale:.3f}, so weighed)"
            )
        else:
            how = "their measured steps price them, "
            how += f"the candidates not measured priced x{self.scale:.3f}, the median ratio"
        return f"measured here before choosing (the {self.k} best by the profile, {rounds}; {how}): {each}"


def row_key(row: PlanRow) -> tuple[int, ...]:
    """A planned row's key, as `candidate_keys` gives a candidate's."""
    moe = (row.experts, row.top_k or 1, row.granularity or 1) if row.is_moe else (1, 1, 1)
    return (row.d, row.n, row.h, row.w, row.s, row.b, row.micro_batches, *moe)


@dataclass(frozen=True)
class Plan:
    """A plan: the best configurations for a budget and everything behind the choice. `best` is the answer."""

    budget: Budget
    space: SearchSpace
    space_choice: str
    candidates: int
    dropped: dict[str, int]
    rows: tuple[PlanRow, ...]
    by_depth: tuple[PlanRow, ...]
    tie_rule: str
    edges: tuple[Edge, ...]
    recipe: RecipeDecision
    shape: ShapeDecision
    warning: str | None = None
    extrapolation: str | None = None  # where the best configuration lies outside what the law (or recipe) was fitted on
    seconds: float | None = None  # device seconds the budget buys for training (time and money budgets)
    budget_covers: str | None = None  # time and money budgets: "run" (the whole run's wall-clock) or "steps"
    flops_rule: FlopsRuleChoice | None = None
    batch_choice: tuple[BatchOption, ...] | None = None
    interval_kind: str = "law bootstrap"  # what the rows' loss intervals are (docs/methods.md)
    moe_choice: MoeChoice | None = None  # a law with a `moe` section: the best dense and the best MoE plan
    bits: dict[str, int] | None = None  # the profile's quantised training bits: the precision priced, and verified
    serving: Serving | None = None  # how the model is served (`plan --serve-bits`, `--serve-memory`)
    retiming: Retiming | None = None  # the profile rescaled to the machine's speed at planning (`plan --retime`)
    preflight: Preflight | None = None  # the best candidates' steps measured before choosing (`plan --measure`)
    scores: Any = dataclasses.field(default=None, compare=False, repr=False)  # scaling.plan.Scores, for plots

    @property
    def best(self) -> PlanRow:
        return self.rows[0]

    @property
    def retime_factor(self) -> float | None:
        """What the re-timed profile multiplied its prices by (None: the profile was not re-timed)."""
        return self.retiming.factor if self.retiming is not None else None

    @property
    def profile_step_seconds(self) -> float | None:
        """The profile's price of the best row's step where the plan priced it at a measurement (`preflight`)."""
        return self.preflight.priced(self.best) if self.preflight is not None else None

    @property
    def measured_step_seconds(self) -> float | None:
        """The best row's step as measured before choosing, where the plan priced it at a measurement weighed
        against the profile's price (`Preflight.weight` above 0; None otherwise: the row's price is the measurement)."""
        if self.preflight is None or not self.preflight.weight:
            return None
        return self.preflight.measured(self.best)

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data (what `plan --json` prints and `plan.json` holds)."""
        out: dict[str, Any] = dict(
            budget=self.budget.text,
            budget_kind=self.budget.kind,
            space=self.space.name,
            space_choice=self.space_choice,
            candidates=self.candidates,
            dropped=dict(self.dropped),
            best=[r.to_dict() for r in self.rows],
            by_depth=[r.to_dict() for r in self.by_depth],
            tie_rule=self.tie_rule,
            edges=[e.to_dict() for e in self.edges],
        )
        if self.warning:
            out["warning"] = self.warning
        if self.extrapolation:
            out["extrapolation"] = self.extrapolation
        if self.bits:
            out["bits"] = dict(self.bits)
        if self.serving is not None:
            out["serving"] = self.serving.to_dict()
        if self.retiming is not None:
            out["retimed"] = self.retiming.to_dict()
        if self.preflight is not None:
            out["measured"] = self.preflight.to_dict()
        if self.seconds is not None:
            out["seconds"] = self.seconds
            out["budget_covers"] = self.budget_covers
        if self.flops_rule is not None:
            out["flops_rule"] = self.flops_rule.to_dict()
        out["recipe"] = self.recipe.to_dict()
        out["shape"] = self.shape.to_dict()
        if self.batch_choice:
            out["batch_choice"] = [b.to_dict() for b in self.batch_choice]
        out["interval_kind"] = self.interval_kind
        if self.moe_choice is not None:
            out["moe_choice"] = self.moe_choice.to_dict()
        return out

    def to_markdown(self) -> str:
        """The plan's report in markdown: the answer first, then the tables and comparisons."""
        return plan_markdown(self)
