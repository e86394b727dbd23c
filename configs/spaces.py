"""Architecture search spaces for the planner: which (d, n, h, w, s, b) it may recommend.

A loss law holds only for the training recipe it was fitted under, so a space fixes what the law does
not model (vocabulary, context, batch, MLP ratio) to the values of the sweep behind the law; the `cpu`
space matches the `cpu-isoflop` design.
"""

from __future__ import annotations

from dataclasses import dataclass

from smallest_loss.configs.errors import UserError
from smallest_loss.configs.schema import Activation, Norm


@dataclass(frozen=True)
class SearchSpace:
    name: str
    v: int
    d: tuple[int, ...]
    n: tuple[int, ...]
    head_sizes: tuple[int, ...]  # allowed d/h
    mlp_ratios: tuple[int, ...]  # w = ratio * d
    s: tuple[int, ...]
    b: tuple[int, ...]
    norm: Norm = "rmsnorm"
    activation: Activation = "gelu"
    tied: bool = True
    dtype: str = "float32"
    # Aspect ratios d/n to consider. A law L(N, D) ignores shape, which holds only near the shapes it was
    # fitted on (Kaplan et al., 2020, found loss nearly flat in d/n over a wide middle range, not at its
    # ends), so a space stays close to the shapes of the sweep behind its law.
    aspect_ratio: tuple[float, float] = (0.0, float("inf"))

    def __post_init__(self) -> None:
        for field in ("d", "n", "head_sizes", "mlp_ratios", "s", "b"):
            values = getattr(self, field)
            if not values or min(values) <= 0:
                raise UserError(f"search space {self.name}: {field} must be a non-empty list of positive integers")

    @property
    def size(self) -> int:
        """Upper bound on candidates (before dropping widths that no head size divides)."""
        out = 1
        for field in ("d", "n", "head_sizes", "mlp_ratios", "s", "b"):
            out *= len(getattr(self, field))
        return out


def _steps(lo: int, hi: int, step: int) -> tuple[int, ...]:
    return tuple(range(lo, hi + 1, step))


SPACES: dict[str, SearchSpace] = {
    # The recipe of the cpu-isoflop sweep: bytes (v=256), s=64, b=16, w=4d.
    # Its shapes span d/n = 16 to 32, so the space allows 12 to 48.
    "cpu": SearchSpace("cpu", v=256, d=_steps(16, 512, 8), n=_steps(1, 16, 1), head_sizes=(8, 16, 32, 64),
                       mlp_ratios=(4,), s=(64,), b=(16,), aspect_ratio=(12.0, 48.0)),
    # GPT-style shapes for an accelerator, bf16, GPT-2 vocabulary and context.
    "gpu": SearchSpace("gpu", v=50304, d=_steps(256, 8192, 64), n=_steps(2, 96, 1), head_sizes=(64, 128),
                       mlp_ratios=(4,), s=(1024,), b=(8, 16, 32, 64, 128, 256), dtype="bfloat16",
                       aspect_ratio=(16.0, 256.0)),
    # Wide and dense, for FLOPs budgets with published laws (Chinchilla's 32k vocabulary).
    "chinchilla": SearchSpace("chinchilla", v=32000, d=_steps(128, 16384, 32), n=_steps(1, 160, 1),
                              head_sizes=(64, 128), mlp_ratios=(4,), s=(2048,), b=(256,)),
}


def get_space(name: str) -> SearchSpace:
    try:
        return SPACES[name]
    except KeyError:
        raise UserError(f"unknown search space {name!r}; choose one of: {', '.join(SPACES)}") from None
