"""From proposed runs (N, D) to a sweep design a `sweep --design FILE` trains: each N as the nearest shape of a search
space, each run as an IsoFLOP budget 6 N_shape D (so the sweep trains it for D tokens), written as a design file
(configs/designs.py's `load_design_file` reads it)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.spaces import SearchSpace
from smallest_loss.scaling.design import RunDesign
from smallest_loss.scaling.plan import enumerate_candidates


@dataclass(frozen=True)
class ShapedRun:
    """A proposed run as the space builds it: shape (d, n, h), its parameter count, the tokens and the budget."""

    N_wanted: float
    shape: tuple[int, int, int]
    N: int
    D: float
    budget: float


def nearest_shape(space: SearchSpace, N: float) -> tuple[tuple[int, int, int], int]:
    """The space's shape whose parameter count is nearest N in log, preferring the space's preferred aspect ratios
    and head size (its tie rule) among shapes within 5% of the nearest."""
    c = enumerate_candidates(space)
    gap = np.abs(np.log(c.N / N))
    near = gap <= gap.min() + math.log(1.05)
    aspect = c.d / c.n
    lo, hi = space.preferred_aspect
    outside = np.where(aspect < lo, lo / aspect, np.where(aspect > hi, aspect / hi, 1.0))
    score = np.where(near, 0.0, np.inf) + np.log(outside) + 0.01 * (c.d // c.h != space.preferred_head_size) + gap
    i = int(np.argmin(score))
    return (int(c.d[i]), int(c.n[i]), int(c.h[i])), int(c.N[i])


def shaped_runs(design: RunDesign, space: SearchSpace) -> list[ShapedRun]:
    """Each proposed run at the nearest shape of `space`, trained for its D tokens."""
    out = []
    for run in design.runs:
        shape, N = nearest_shape(space, run.N)
        out.append(ShapedRun(run.N, shape, N, run.D, float(f"{6.0 * N * run.D:.4g}")))
    return out


def design_toml(runs: list[ShapedRun], name: str, base: str, lines: list[str], space: SearchSpace) -> str:
    """A sweep design file (TOML) training each run as an IsoFLOP budget of one shape, at the space's vocabulary,
    context and (first) batch size on the built-in design `base`'s recipe; `lines` go in as comments."""
    if not runs:
        raise UserError("no run to write: the design proposes none")
    budgets = ", ".join(f"{r.budget:.4g}" for r in runs)
    shapes = ", ".join(f"[[{r.shape[0]}, {r.shape[1]}, {r.shape[2]}]]" for r in runs)
    head = [f"# {line}" for line in lines]
    head += [f"# run {i + 1}: N {r.N_wanted:.3g} wanted -> d={r.shape[0]} n={r.shape[1]} h={r.shape[2]} "
             f"(N {r.N:,}), D {r.D:.3g} tokens" for i, r in enumerate(runs)]  # fmt: skip
    body = [f'name = "{name}"', 'kind = "isoflop"', f'base = "{base}"', f"budgets = [{budgets}]",
            f"shapes = [{shapes}]", "", "[set]", f'"model.v" = {space.v}', f'"model.s" = {space.s[0]}',
            f'"train.batch_size" = {space.b[0]}']  # fmt: skip
    return "\n".join(head + body) + "\n"


def write_design(text: str, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
