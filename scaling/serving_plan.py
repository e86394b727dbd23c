"""Plans at several serving widths (`plan --serve-bits 16 8 4`): one budget, law and profile; the trained model served
quantised after training to each width, its weights within `--serve-memory` bytes where given.

Quantising after training costs loss, the more the more tokens per parameter the model saw (Kumar et al., ICLR
2025: delta_PTQ = C_T D^gamma_D / N^gamma_N exp(-P / gamma_post), the law's PTQ penalty fitted from `smallest-loss
ptq` measurements), and saves memory: P bits a weight instead of 16. Under a serving memory limit, fewer bits admit a
larger model. Each width's plan is `make_plan` with `serve_bits`: its candidates ranked by the loss they would serve
at that width; the chosen width is the one whose best plan predicts the lowest served loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.laws import LawFile, load_law
from smallest_loss.scaling.plan import ServingMemoryRefused
from smallest_loss.scaling.plan_result import Plan
from smallest_loss.scaling.planner import make_plan
from smallest_loss.scaling.report import markdown_table
from smallest_loss.timing.profile import DeviceProfile


@dataclass(frozen=True)
class ServingPlans:
    """One plan per serving width, in the order given (None where no candidate fits the serving memory at that
    width, with `refused` saying why)."""

    widths: tuple[int, ...]
    plans: tuple[Plan | None, ...]
    refused: tuple[str | None, ...]

    @property
    def chosen(self) -> int:
        """The index of the width whose best plan predicts the lowest served loss."""
        return min((i for i, p in enumerate(self.plans) if p is not None), key=lambda i: self.plans[i].best.loss)

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for bits, plan, why in zip(self.widths, self.plans, self.refused, strict=True):
            if plan is None:
                out.append(dict(serve_bits=bits, refused=why))
                continue
            best, serving = plan.best, plan.serving
            out.append(dict(serve_bits=bits, best=dict(d=best.d, n=best.n, h=best.h, w=best.w, s=best.s, b=best.b),
                            params=best.params, tokens=best.tokens, tokens_per_param=best.tokens_per_param,
                            loss=best.loss, ptq_loss=serving.ptq_loss, weight_bytes=serving.weight_bytes))  # fmt: skip
        return out

    def to_dict(self) -> dict[str, Any]:
        return dict(widths=self.rows(), chosen=self.widths[self.chosen])

    def to_markdown(self) -> str:
        rows = self.rows()
        cells = [(r["serve_bits"], "d={d} n={n} h={h} b={b}".format(**r["best"]), f"{r['params']:.3g}",
                  f"{r['tokens']:.3g}", f"{r['tokens_per_param']:.3g}", f"{r['loss']:.4f}", f"{r['ptq_loss']:+.4f}",
                  f"{r['weight_bytes']:.3g}") if "best" in r else (r["serve_bits"], r["refused"], *("-",) * 6)
                 for r in rows]  # fmt: skip
        table = markdown_table(cells, ("serve bits", "best", "N", "D", "D/N", "served loss", "from PTQ", "weights B"))
        chosen = rows[self.chosen]
        others = [r for i, r in enumerate(rows) if i != self.chosen and "best" in r]
        runner = min(others, key=lambda r: r["loss"]) if others else None
        versus = f", {chosen['loss'] / runner['loss'] - 1:+.2%} against {runner['serve_bits']} bits" if runner else ""
        limit = self.plans[self.chosen].serving.memory_limit
        return "\n".join([
            "# Plans by serving width",
            "",
            f"**Serve at {chosen['serve_bits']} bits**: predicted served loss {chosen['loss']:.4f}{versus} (each "
            "width's best plan, ranked by the loss after post-training quantisation to that width; 16: unquantised, "
            "bfloat16"
            + (f"; weights within {limit:.3g} bytes" if limit is not None else "") + ").",
            "",
            table,
            "",
            "From PTQ: the loss quantising the best plan's weights after training adds (the law's post-training "
            "quantisation penalty, Kumar et al. 2025), included in its served loss.",
        ])  # fmt: skip


def plan_serving(budget: str, law: LawFile | str | Path, profile: DeviceProfile | str | Path | None,
                 widths: list[int], **options: Any) -> ServingPlans:  # fmt: skip
    """`make_plan` once per serving width (options as its keywords, `serve_memory` among them)."""
    if len(set(widths)) != len(widths):
        raise UserError(f"--serve-bits {' '.join(map(str, widths))}: give each width once")
    law = load_law(law) if isinstance(law, str | Path) else law
    plans: list[Plan | None] = []
    refused: list[str | None] = []
    for bits in widths:
        try:
            plans.append(make_plan(budget, law, profile, serve_bits=bits, **options))
            refused.append(None)
        except ServingMemoryRefused as err:
            plans.append(None)
            refused.append(str(err))
    if all(p is None for p in plans):
        raise UserError(f"no candidate's weights fit --serve-memory {options['serve_memory']:g} bytes at any width")
    return ServingPlans(tuple(widths), tuple(plans), tuple(refused))
