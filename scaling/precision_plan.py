"""Plans at several precisions: one budget and law, one device profile per precision (`plan --profile A --profile B`).

Each profile (timing/profile.py) prices steps at its own precision, its compute dtype and the integer bits of
quantised training; the plan for each is `scaling.planner.make_plan` with that profile alone. What precision does
to the loss is the law's business: a law with a precision section (Kumar et al., 2025: training in low precision
shrinks the effective parameter count, scaling/precision_law.py) prices each precision's N as N_eff, or, in its
additive form, adds the loss quantised training costs, growing with the tokens (scaling/precision_pricing.py, which
`make_plan` applies to any profile); a law without one gives 1.0, so the plans differ by speed alone (a faster step
buys more tokens). The chosen precision is the one whose best plan predicts the lowest loss.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smallest_loss.configs.devices import backend_of
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.spaces import SearchSpace
from smallest_loss.scaling.budget import parse_budget
from smallest_loss.scaling.laws import LawFile, load_law
from smallest_loss.scaling.plan_result import Plan
from smallest_loss.scaling.plan_setup import choose_space
from smallest_loss.scaling.planner import make_plan
from smallest_loss.scaling.precision_pricing import profile_penalty
from smallest_loss.scaling.report import markdown_table
from smallest_loss.timing.profile import DeviceProfile, load_profile


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
    """`make_plan` once per profile (options as its keywords; it prices each profile's precision under the law's
    precision section), and every profile's step time for the first plan's best configuration."""
    law = load_law(law) if isinstance(law, str | Path) else law
    loaded = tuple(load_profile(p) if isinstance(p, str | Path) else p for p in profiles)
    penalties = tuple(profile_penalty(law, p.dtype, p.bits) for p in loaded)
    base = common_space(options.pop("space", None), budget, law, loaded)
    plans = tuple(make_plan(budget, law, p, space=at_dtype(base, p), **options) for p in loaded)  # each priced
    best, space = plans[0].best, plans[0].space
    arch = dict(activation=space.activation, norm=space.norm, tied=space.tied)
    seconds = tuple(
        float(p.predict_step_seconds(best.d, best.n, best.h, best.w, best.s, space.v, best.b, **arch)[0])
        for p in loaded
    )
    return PrecisionPlans(loaded, plans, seconds, penalties, tuple(precision_cost(law, plan) for plan in plans))
