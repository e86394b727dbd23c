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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.spaces import SearchSpace
from smallest_loss.model.transformer import param_counts
from smallest_loss.scaling.budget import Budget
from smallest_loss.scaling.laws import ChinchillaLaw, KaplanLaw, LawFile

StepSeconds = Callable[..., np.ndarray]  # (d, n, h, w, s, v, b) arrays -> predicted step seconds
MemoryBytes = Callable[..., np.ndarray]  # (d, n, h, w, s, v, b) arrays -> training memory in bytes
FlopsPerStep = Callable[..., np.ndarray]  # (d, n, h, w, s, v, b) arrays -> exact training FLOPs per step


@dataclass(frozen=True)
class Candidates:
    """Columns of every candidate architecture (one row each)."""

    d: np.ndarray
    n: np.ndarray
    h: np.ndarray
    w: np.ndarray
    s: np.ndarray
    b: np.ndarray
    N: np.ndarray  # parameters

    def __len__(self) -> int:
        return len(self.d)

    def shape_args(self, v: int) -> dict[str, np.ndarray]:
        return dict(d=self.d, n=self.n, h=self.h, w=self.w, s=self.s, v=np.full_like(self.d, v), b=self.b)

    def take(self, mask: np.ndarray) -> Candidates:
        return Candidates(**{k: getattr(self, k)[mask] for k in ("d", "n", "h", "w", "s", "b", "N")})


def enumerate_candidates(space: SearchSpace) -> Candidates:
    """All (d, n, head size, MLP ratio, s, b) combinations whose head size divides d into an even head,
    within the space's aspect ratios d/n."""
    grids = np.meshgrid(np.array(space.d), np.array(space.n), np.array(space.head_sizes),
                        np.array(space.mlp_ratios), np.array(space.s), np.array(space.b), indexing="ij")
    d, n, k, ratio, s, b = (g.ravel().astype(np.int64) for g in grids)
    lo, hi = space.aspect_ratio
    ok = (d % k == 0) & (k % 2 == 0) & (d >= lo * n) & (d <= hi * n)
    d, n, k, ratio, s, b = d[ok], n[ok], k[ok], ratio[ok], s[ok], b[ok]
    w = ratio * d
    emb, non_emb = param_counts(space.v, d, n, w, norm=space.norm, activation=space.activation, tied=space.tied)
    return Candidates(d=d, n=n, h=d // k, w=w, s=s, b=b, N=(emb + non_emb).astype(np.float64))


@dataclass
class PlanInputs:
    """What a plan needs beyond the budget and the law."""

    space: SearchSpace
    step_seconds: StepSeconds | None = None  # from a device profile; needed for time and money budgets
    memory_bytes: MemoryBytes | None = None
    memory_limit: float | None = None  # bytes available on the device
    # The analytic estimate came out at 0.71-1.09x XLA's compiled peak on the 48 cpu-small configurations
    # (results/cpu/timing), so a candidate must fit with this factor to spare.
    memory_headroom: float = 1.4
    flops_per_step: FlopsPerStep | None = None  # for flops="exact"
    flops: str = "6N"
    price_per_hour: float | None = None
    spot_discount: float = 0.0
    inference_tokens: float = 0.0
    max_latency_ms: float | None = None


@dataclass
class Plan:
    budget: Budget
    candidates: Candidates  # the feasible ones
    tokens: np.ndarray
    loss: np.ndarray
    step_seconds: np.ndarray | None
    train_seconds: float | None  # for time budgets, after inference costs (per candidate when inference-aware)
    order: np.ndarray  # candidate indices, best first
    dropped: dict[str, int] = field(default_factory=dict)
    intervals: np.ndarray | None = None  # (top, 2) for the first rows of `order`

    def row(self, i: int) -> dict[str, Any]:
        c = self.candidates
        out = dict(d=int(c.d[i]), n=int(c.n[i]), h=int(c.h[i]), w=int(c.w[i]), s=int(c.s[i]), b=int(c.b[i]),
                   params=float(c.N[i]), tokens=float(self.tokens[i]), tokens_per_param=float(self.tokens[i] / c.N[i]),
                   loss=float(self.loss[i]), aspect_ratio=float(c.d[i] / c.n[i]))
        if self.step_seconds is not None:
            out["step_seconds"] = float(self.step_seconds[i])
            out["steps"] = int(self.tokens[i] // (c.b[i] * c.s[i]))
        return out


def _filter(cands: Candidates, keep: np.ndarray, reason: str, dropped: dict[str, int]) -> Candidates:
    if (~keep).any():
        dropped[reason] = dropped.get(reason, 0) + int((~keep).sum())
    return cands.take(keep)


def _tokens_for_flops(budget: Budget, cands: Candidates, inputs: PlanInputs) -> np.ndarray:
    C = budget.value - 2.0 * cands.N * inputs.inference_tokens  # serving costs 2N FLOPs per token
    if inputs.flops == "exact":
        if inputs.flops_per_step is None:
            raise UserError("--flops exact needs our exact FLOP counts (timing.counts)")
        per_token = inputs.flops_per_step(**cands.shape_args(inputs.space.v)) / (cands.b * cands.s)
    else:
        per_token = 6.0 * cands.N
    return np.maximum(C, 0.0) / per_token


def _tokens_for_time(budget: Budget, cands: Candidates, step_s: np.ndarray, inputs: PlanInputs) -> np.ndarray:
    T = budget.seconds(inputs.price_per_hour, inputs.spot_discount)
    forward_per_token = step_s / (3.0 * cands.b * cands.s)
    T_train = T - inputs.inference_tokens * forward_per_token
    steps = np.floor(np.maximum(T_train, 0.0) / step_s)
    return steps * cands.b * cands.s


def law_samples_loss(law_file: LawFile, N: np.ndarray, D: np.ndarray) -> np.ndarray | None:
    """(samples, len(N)) losses under each bootstrap sample of the law, or None without samples."""
    s = law_file.samples
    keys = ("E", "A", "B", "alpha", "beta")
    if not s or not isinstance(law_file.law, ChinchillaLaw) or not all(k in s for k in keys):
        return None
    E, A, B, alpha, beta = (np.asarray(s[k], float)[:, None] for k in ("E", "A", "B", "alpha", "beta"))
    return E + A / N[None, :] ** alpha + B / D[None, :] ** beta


def make_plan(budget: Budget, law_file: LawFile, inputs: PlanInputs, top: int = 10) -> Plan:
    """Score every candidate of the space under the budget; best first. See the module docstring."""
    cands, dropped = enumerate_candidates(inputs.space), {}
    args = cands.shape_args(inputs.space.v)
    if inputs.memory_bytes is not None and inputs.memory_limit:
        fits = inputs.memory_bytes(**args) * inputs.memory_headroom <= inputs.memory_limit
        cands = _filter(cands, fits, "memory", dropped)
        args = cands.shape_args(inputs.space.v)
    needs_time = budget.kind != "flops" or inputs.max_latency_ms is not None
    if needs_time and inputs.step_seconds is None:
        raise UserError(f"budget {budget.text} (or --max-latency-ms) needs a device profile: pass --profile FILE")
    step_s = inputs.step_seconds(**args) if inputs.step_seconds is not None else None
    if inputs.max_latency_ms is not None:
        latency_ms = step_s / (3.0 * cands.b * cands.s) * 1e3
        keep = latency_ms <= inputs.max_latency_ms
        cands, step_s = _filter(cands, keep, "latency", dropped), step_s[keep]
    if budget.kind == "flops":
        tokens = _tokens_for_flops(budget, cands, inputs)
    else:
        tokens = _tokens_for_time(budget, cands, step_s, inputs)
    keep = tokens >= cands.b * cands.s  # at least one full training step
    cands, tokens = _filter(cands, keep, "budget", dropped), tokens[keep]
    step_s = step_s[keep] if step_s is not None else None
    if len(cands) == 0:
        raise UserError(f"budget {budget.describe()} is too small to train any candidate of space "
                        f"{inputs.space.name} (dropped: {dropped}); raise the budget or use a smaller space")
    loss = np.asarray(law_file.law.loss(cands.N, tokens), float)
    order = np.argsort(loss, kind="stable")
    train_s = budget.seconds(inputs.price_per_hour, inputs.spot_discount) if budget.kind != "flops" else None
    plan = Plan(budget, cands, tokens, loss, step_s, train_s, order, dropped)
    best = order[:top]
    samples = law_samples_loss(law_file, cands.N[best], tokens[best])
    if samples is not None:
        plan.intervals = np.percentile(samples, [2.5, 97.5], axis=0).T
    return plan


def best_by_depth(plan: Plan) -> list[dict[str, Any]]:
    """The best candidate at each depth n: the width-vs-depth trade-off at this budget."""
    rows = []
    for n in np.unique(plan.candidates.n):
        idx = np.flatnonzero(plan.candidates.n == n)
        rows.append(plan.row(int(idx[np.argmin(plan.loss[idx])])))
    return rows


def flops_rule_choice(plan: Plan, law: ChinchillaLaw | KaplanLaw) -> dict[str, Any] | None:
    """For a time budget: what planning by FLOPs alone would pick, and the loss it would cost.

    The FLOPs rule takes the FLOPs the budget buys (those of the time-optimal choice, 6ND) and picks the
    candidate with the lowest loss under C = 6ND, ignoring that step times differ at equal FLOPs. Its real
    loss is then read at the tokens the time budget actually buys it on this device.
    """
    if plan.step_seconds is None or plan.budget.kind == "flops":
        return None
    c, best = plan.candidates, int(plan.order[0])
    C = 6.0 * c.N[best] * plan.tokens[best]
    flops_loss = np.asarray(law.loss(c.N, C / (6.0 * c.N)), float)
    pick = int(np.argmin(flops_loss))
    row = plan.row(pick)
    row.update(flops=C, loss_if_flops_were_time=float(flops_loss[pick]),
               loss_cost=float(plan.loss[pick] - plan.loss[best]))
    return row
