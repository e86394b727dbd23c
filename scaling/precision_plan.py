"""Plans at several precisions: one budget and law, one device profile per precision (`plan --profile A --profile B`).

Each profile (timing/profile.py) prices steps at its own precision, its compute dtype and the integer bits of
quantised training; the plan for each is `scaling.planner.make_plan` with that profile alone. What precision does
to the loss is the law's business: `precision_penalty` is the hook through which a law with a precision section
(Kumar et al., 2025: training in low precision shrinks the effective parameter count) will shrink N; a law without
one (every law today) gives 1.0, so the plans differ by speed alone: a faster step buys more tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.laws import LawFile, load_law
from smallest_loss.scaling.plan_result import Plan
from smallest_loss.scaling.planner import make_plan
from smallest_loss.scaling.report import markdown_table
from smallest_loss.timing.profile import DeviceProfile, load_profile


def precision_penalty(law_file: LawFile, dtype: str, bits: dict[str, int] | None = None) -> float:
    """The factor on N (effective parameters) of training at `dtype` with `bits` ({"weights": 4, ...}) under the
    law: 1.0 when the law has no precision section. A precision section is an object with
    `n_factor(dtype, bits) -> float` in (0, 1], attached to the LawFile as `precision`."""
    section = getattr(law_file, "precision", None)
    if section is None:
        return 1.0
    factor = float(section.n_factor(dtype, dict(bits or {})))
    if not 0.0 < factor <= 1.0:
        raise UserError(f"the law's precision section gives a factor {factor} on N at {dtype}; expected (0, 1]")
    return factor


@dataclass(frozen=True)
class PrecisionPlans:
    """One plan per profile, in the order given, and each profile's step seconds for the first plan's best
    configuration (`step_seconds`: the same architecture and batch priced at every precision)."""

    profiles: tuple[DeviceProfile, ...]
    plans: tuple[Plan, ...]
    step_seconds: tuple[float, ...]
    penalties: tuple[float, ...]

    @property
    def fastest(self) -> int:
        """The index of the profile whose step is fastest on the common configuration."""
        return min(range(len(self.step_seconds)), key=self.step_seconds.__getitem__)

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for profile, plan, seconds, penalty in zip(
            self.profiles, self.plans, self.step_seconds, self.penalties, strict=True
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
                )
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return dict(precisions=self.rows(), fastest_per_step=self.profiles[self.fastest].precision)

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
                )
                for r in rows
            ],
            ("precision", "best", "N", "D", "loss", "its step s", "common step s", "factor on N"),
        )
        fast, base = self.fastest, rows[0]
        shape = "d={d} n={n} h={h} b={b}".format(**base["best"])
        ratio = rows[fast]["common_step_seconds"] / base["common_step_seconds"]
        return "\n".join(
            [
                "# Plans by precision",
                "",
                table,
                "",
                f"Common step: {rows[0]['precision']}'s best configuration ({shape}) priced by every profile. "
                f"Faster per step: **{rows[fast]['precision']}** ({ratio:.3g} x the {rows[0]['precision']} step).",
                "Factor on N: the law's precision penalty (1 where the law has no precision section: the plans then "
                "differ by step speed alone).",
            ]
        )


def plan_precisions(
    budget: str, law: LawFile | str | Path, profiles: list[str | Path | DeviceProfile], **options: Any
) -> PrecisionPlans:
    """`make_plan` once per profile (options as its keywords), and every profile's step time for the first plan's
    best configuration."""
    law = load_law(law) if isinstance(law, str | Path) else law
    loaded = tuple(load_profile(p) if isinstance(p, str | Path) else p for p in profiles)
    plans = tuple(make_plan(budget, law, p, **options) for p in loaded)
    best, space = plans[0].best, plans[0].space
    arch = dict(activation=space.activation, norm=space.norm, tied=space.tied)
    seconds = tuple(
        float(p.predict_step_seconds(best.d, best.n, best.h, best.w, best.s, space.v, best.b, **arch)[0])
        for p in loaded
    )
    penalties = tuple(precision_penalty(law, p.dtype, p.bits) for p in loaded)
    return PrecisionPlans(loaded, plans, seconds, penalties)
