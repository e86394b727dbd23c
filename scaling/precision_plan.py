"""Plans at several precisions: one budget and law, one device profile per precision (`plan --profile A --profile B`).

Each profile (timing/profile.py) prices steps at its own precision, its compute dtype and the integer bits of
quantised training; the plan for each is `scaling.planner.make_plan` with that profile alone. What precision does
to the loss is the law's business: a law with a precision section (Kumar et al., 2025: training in low precision
shrinks the effective parameter count, scaling/precision_law.py) prices each precision's N as N_eff
(`profile_penalty`, `law_at_precision`), or, in its additive form, adds the loss quantised training costs, growing
with the tokens (`QuantisedLaw`); a law without one gives 1.0, so the plans differ by speed alone (a faster step buys
more tokens). The chosen precision is the one whose best plan predicts the lowest loss.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from smallest_loss.configs.devices import backend_of
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.spaces import SearchSpace
from smallest_loss.scaling.budget import parse_budget
from smallest_loss.scaling.chinchilla import ChinchillaLaw
from smallest_loss.scaling.laws import LawFile, load_law
from smallest_loss.scaling.plan_result import Plan
from smallest_loss.scaling.plan_setup import choose_space
from smallest_loss.scaling.planner import make_plan
from smallest_loss.scaling.points import ArrayLike
from smallest_loss.scaling.precision_law import precision_penalty as law_penalty
from smallest_loss.scaling.report import markdown_table
from smallest_loss.timing.profile import DeviceProfile, load_profile

# FP8 training (model.dtype = "float8") rounds the matmuls' inputs, weights and activations, to 8-bit floats; the
# precision law (fitted on integer widths) prices it as 8 bits for both, keys and values unquantised.
FP8_BITS = {"weights": 8, "activations": 8}


def training_bits(dtype: str, bits: dict[str, int] | None = None) -> dict[str, int]:
    """The bits of each quantised kind of tensor ({"weights", "activations", "kv"}) training at `dtype` with the
    integer `bits` of quantised training; float32 and bfloat16 compute alone quantise nothing."""
    return {**(FP8_BITS if dtype == "float8" else {}), **dict(bits or {})}


def profile_penalty(law_file: LawFile, dtype: str, bits: dict[str, int] | None = None) -> float:
    """The factor on N (N_eff / N, Kumar et al. 2025) of training at `dtype` with `bits` ({"weights": 4, ...})
    under the law's precision section (scaling/precision_law.py); 1.0 when the law has none."""
    b = training_bits(dtype, bits)
    factor = float(law_penalty(law_file, b.get("weights"), b.get("activations"), b.get("kv")))
    if not 0.0 < factor <= 1.0:
        raise UserError(f"the law's precision section gives a factor {factor} on N at {dtype}; expected (0, 1]")
    return factor


def law_at_precision(law_file: LawFile, factor: float) -> LawFile:
    """The law of training where N counts as `factor` N: A N_eff^-alpha = (A factor^-alpha) N^-alpha, so the
    Chinchilla law with A scaled (its bootstrap samples each by their own alpha), and every planner path (ranking,
    intervals, edges) prices the precision's loss. A factor of 1 returns the law file unchanged."""
    if factor == 1.0:
        return law_file
    law = law_file.law
    if not isinstance(law, ChinchillaLaw):
        raise UserError("a precision penalty needs a Chinchilla law (fit --form precision)")
    samples = law_file.samples
    if samples is not None and "A" in samples and "alpha" in samples:
        samples = {**samples, "A": np.asarray(samples["A"]) * factor ** -np.asarray(samples["alpha"])}
    scaled = dataclasses.replace(law, A=law.A * factor**-law.alpha)
    return dataclasses.replace(law_file, law=scaled, samples=samples, precision=None)


@dataclass(frozen=True)
class QuantisedLaw(ChinchillaLaw):
    """A Chinchilla law plus the additive precision form's penalty at one training precision:
    L = E + A N^-alpha + B D^-beta + k D^gamma_D / N^gamma_N, k = C sum_k exp(-P_k / gamma) at that precision's
    bits (scaling/precision_law.py). Its compute-optimal allocation is found numerically: in log N at fixed C every
    term is an exponential, so the loss is convex and its slope has one zero."""

    k: float
    gamma_D: float
    gamma_N: float

    def loss(self, N: ArrayLike, D: ArrayLike) -> ArrayLike:
        N, D = np.asarray(N, np.float64), np.asarray(D, np.float64)
        out = np.asarray(super().loss(N, D)) + self.k * D**self.gamma_D / N**self.gamma_N
        return float(out) if np.ndim(out) == 0 else out

    def optimal_allocation(self, C: ArrayLike) -> tuple[ArrayLike, ArrayLike]:
        """(N_opt, D_opt) minimising the loss under C = 6ND: bisection on the slope in log N, from a bracket of
        ten decades either side of the Chinchilla optimum."""
        N0, _ = ChinchillaLaw.optimal_allocation(self, C)
        lo, hi = np.log(np.asarray(N0, np.float64)) - 23.0, np.log(np.asarray(N0, np.float64)) + 23.0
        logc = np.log(np.asarray(C, np.float64) / 6.0)
        for _ in range(80):
            x = (lo + hi) / 2
            logD = logc - x
            penalty = self.k * np.exp(self.gamma_D * logD - self.gamma_N * x)
            slope = (-self.alpha * self.A * np.exp(-self.alpha * x) + self.beta * self.B * np.exp(-self.beta * logD)
                     - (self.gamma_D + self.gamma_N) * penalty)  # fmt: skip
            lo, hi = np.where(slope > 0, lo, x), np.where(slope > 0, x, hi)
        N = np.exp((lo + hi) / 2)
        D = np.exp(logc) / N
        return (float(N), float(D)) if N.ndim == 0 else (N, D)


def law_with_training_penalty(law_file: LawFile, dtype: str, bits: dict[str, int] | None = None) -> LawFile:
    """The law of training at `dtype` with `bits` under an additive precision section: a `QuantisedLaw` whose
    penalty strength is that precision's, with each bootstrap sample's own (`penalty_k`, ... in the samples, which
    the intervals read). Any other law file, and unquantised training, come back unchanged."""
    precision = getattr(law_file, "precision", None)
    b = training_bits(dtype, bits)
    if precision is None or precision.penalty is None or not b:
        return law_file
    kinds = (b.get("weights"), b.get("activations"), b.get("kv"))
    strength = float(precision.strength(*kinds))
    if strength == 0.0:
        return law_file
    law, pen = law_file.law, precision.penalty
    quantised = QuantisedLaw(law.E, law.A, law.B, law.alpha, law.beta, pen.C * strength, pen.gamma_D, pen.gamma_N)
    samples, draws = law_file.samples, precision.samples or {}
    if samples is not None and all(f"penalty_{k}" in draws for k in ("C", "gamma_D", "gamma_N")):
        per_sample = np.zeros_like(np.asarray(draws["penalty_C"], float))
        for kind, P in zip(("w", "a", "kv"), kinds, strict=True):
            if P is not None and f"gamma_{kind}" in draws:
                per_sample += np.exp(-P / np.asarray(draws[f"gamma_{kind}"], float))
        k = np.asarray(draws["penalty_C"], float) * per_sample
        samples = {**samples, "penalty_k": k, **{f"penalty_{c}": draws[f"penalty_{c}"] for c in ("gamma_D", "gamma_N")}}
    return dataclasses.replace(law_file, law=quantised, samples=samples, precision=None)


def precision_cost(law_file: LawFile, plan: Plan) -> float:
    """The loss the plan's precision adds at its best configuration: its predicted loss less the unquantised law's
    at the same parameters and tokens (0 under a law without a precision section)."""
    if getattr(law_file, "precision", None) is None:
        return 0.0
    best = law_file.law.loss(plan.best.params, plan.best.tokens)
    return float(plan.best.loss - best) if math.isfinite(plan.best.loss) else math.nan


@dataclass(frozen=True)
class PrecisionPlans:
    """One plan per profile, in the order given, and each profile's step seconds for the first plan's best
    configuration (`step_seconds`: the same architecture and batch priced at every precision)."""

    profiles: tuple[DeviceProfile, ...]
    plans: tuple[Plan, ...]
    step_seconds: tuple[float, ...]
    penalties: tuple[float, ...]
    costs: tuple[float, ...] = ()  # the loss each precision adds at its best configuration (`precision_cost`)

    @property
    def chosen(self) -> int:
        """The index of the profile whose best plan predicts the lowest loss: the precision to train in."""
        return min(range(len(self.plans)), key=lambda i: self.plans[i].best.loss)

    @property
    def fastest(self) -> int:
        """The index of the profile whose step is fastest on the common configuration."""
        return min(range(len(self.step_seconds)), key=self.step_seconds.__getitem__)

    def rows(self) -> list[dict[str, Any]]:
        out = []
        costs = self.costs or (0.0,) * len(self.plans)
        for profile, plan, seconds, penalty, cost in zip(
            self.profiles, self.plans, self.step_seconds, self.penalties, costs, strict=True
        ):
            best = plan.best
            out.append(
                dict(
                    precision=profile.precision,
                    device_kind=profile.device_kind,
                    best=dict(d=best.d, n=best.n, h=best.h, w=best.w, s=best.s, b=best.b),
                    params=best.params,
                    tokens=best.tokens,
                    loss=best.loss,
                    step_seconds=best.step_seconds,
                    common_step_seconds=seconds,
                    n_factor=penalty,
                    precision_loss=cost,
                )
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return dict(
            precisions=self.rows(),
            chosen=self.profiles[self.chosen].precision,
            fastest_per_step=self.profiles[self.fastest].precision,
        )

    def to_markdown(self) -> str:
        rows = self.rows()
        table = markdown_table(
            [
                (
                    r["precision"],
                    "d={d} n={n} h={h} b={b}".format(**r["best"]),
                    f"{r['params']:.3g}",
                    f"{r['tokens']:.3g}",
                    f"{r['loss']:.4f}",
                    f"{r['step_seconds']:.3g}" if r["step_seconds"] is not None else "-",
                    f"{r['common_step_seconds']:.3g}",
                    f"{r['n_factor']:.3g}",
                    f"{r['precision_loss']:+.4f}",
                )
                for r in rows
            ],
            ("precision", "best", "N", "D", "loss", "its step s", "common step s", "factor on N", "loss from bits"),
        )
        fast, base = self.fastest, rows[0]
        shape = "d={d} n={n} h={h} b={b}".format(**base["best"])
        ratio = rows[fast]["common_step_seconds"] / base["common_step_seconds"]
        chosen = rows[self.chosen]
        others = [r for i, r in enumerate(rows) if i != self.chosen]
        runner = min(others, key=lambda r: r["loss"]) if others else None
        versus = (
            f", {chosen['loss'] / runner['loss'] - 1:+.2%} against {runner['precision']}'s {runner['loss']:.4f}"
            if runner
            else ""
        )
        return "\n".join(
            [
                "# Plans by precision",
                "",
                f"**Train in {chosen['precision']}**: predicted loss {chosen['loss']:.4f}{versus} (each precision's "
                "best plan: its step time from its own profile, its loss priced by the law's precision section).",
                "",
                table,
                "",
                f"Common step: {rows[0]['precision']}'s best configuration ({shape}) priced by every profile. "
                f"Faster per step: **{rows[fast]['precision']}** ({ratio:.3g} x the {rows[0]['precision']} step).",
                "Factor on N: N_eff / N under Kumar et al.'s form; loss from bits: what the precision adds to the "
                "best plan's loss against unquantised training of the same N and D (both 1 and 0 where the law has "
                "no precision section: the plans then differ by step speed alone).",
            ]
        )


def common_space(
    space: str | SearchSpace | None, budget: str, law: LawFile, profiles: tuple[DeviceProfile, ...]
) -> SearchSpace:
    """The one space every precision searches (the same architectures, each at its profile's precision): the given
    one, else the built-in space of the first profile whose device and dtype have one."""
    if space is not None:
        return choose_space(space, parse_budget(budget), law.law)[0]
    for profile in profiles:
        try:
            return choose_space(None, parse_budget(budget), law.law, profile)[0]
        except UserError:
            continue
    kinds = ", ".join(f"{p.device_kind} in {p.precision}" for p in profiles)
    raise UserError(f"no built-in space is made for any of these profiles ({kinds}): pass --space")


def at_dtype(space: SearchSpace, profile: DeviceProfile) -> SearchSpace:
    """The space's architectures at the profile's compute dtype (the profile prices them in it), where the profile's
    device is one the space is made for; else the space unchanged (the planner then says why it refuses)."""
    if backend_of(profile.device_kind) in space.backends and profile.dtype != space.dtype:
        return dataclasses.replace(space, dtype=profile.dtype)
    return space


def plan_precisions(
    budget: str, law: LawFile | str | Path, profiles: list[str | Path | DeviceProfile], **options: Any
) -> PrecisionPlans:
    """`make_plan` once per profile (options as its keywords), and every profile's step time for the first plan's
    best configuration."""
    law = load_law(law) if isinstance(law, str | Path) else law
    loaded = tuple(load_profile(p) if isinstance(p, str | Path) else p for p in profiles)
    penalties = tuple(profile_penalty(law, p.dtype, p.bits) for p in loaded)
    base = common_space(options.pop("space", None), budget, law, loaded)
    plans = tuple(
        make_plan(
            budget,
            law_at_precision(law_with_training_penalty(law, p.dtype, p.bits), f),
            p,
            space=at_dtype(base, p),
            **options,
        )  # fmt: skip
        for p, f in zip(loaded, penalties, strict=True)
    )
    best, space = plans[0].best, plans[0].space
    arch = dict(activation=space.activation, norm=space.norm, tied=space.tied)
    seconds = tuple(
        float(p.predict_step_seconds(best.d, best.n, best.h, best.w, best.s, space.v, best.b, **arch)[0])
        for p in loaded
    )
    return PrecisionPlans(loaded, plans, seconds, penalties, tuple(precision_cost(law, plan) for plan in plans))
