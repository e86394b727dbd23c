"""Architecture search spaces for the planner: which (d, n, h, w, s, b) it may recommend.

A loss law holds only for the training recipe it was fitted under, so a space fixes what the law does
not model (vocabulary, context, batch, MLP ratio) to the values of the sweep behind the law; the `cpu`
space matches the `cpu-isoflop` design. A space also names the backends and dtype it is meant for, so a
device profile measured elsewhere (a CPU profile with the `gpu` space) is refused rather than extrapolated.

A law L(N, D) cannot tell apart shapes of equal N, so each space states the shapes it prefers when
predicted losses tie (`preferred_aspect`, `preferred_head_size`, and where they come from).
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
    b: tuple[int, ...]  # the batch of the recipe a law was fitted under (a law without recipe laws plans at it)
    norm: Norm = "rmsnorm"
    activation: Activation = "gelu"
    tied: bool = True
    dtype: str = "float32"
    # Aspect ratios d/n to consider. A law L(N, D) ignores shape, which holds only near the shapes it was
    # fitted on (Kaplan et al., 2020, found loss nearly flat in d/n over a wide middle range, not at its
    # ends), so a space stays close to the shapes of the sweep behind its law.
    aspect_ratio: tuple[float, float] = (0.0, float("inf"))
    backends: tuple[str, ...] = ("cpu",)  # device backends (configs.devices.backend_of) it is meant for
    # The tie rule: among shapes whose predicted losses tie, prefer d/n inside this band, then this head size.
    preferred_aspect: tuple[float, float] = (20.0, 200.0)
    preferred_head_size: int = 64
    preferred_source: str = (
        "Kaplan et al. 2020, section 3.1 and figure 5: loss within a few percent of its "
        "minimum for d/n from about 20 to 200"
    )
    # Batch sizes the planner may choose when the law carries recipe laws (scaling/recipe.py), inside the batch
    # range they were fitted on; empty: the space's `b`.
    batch_choices: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for field in ("d", "n", "head_sizes", "mlp_ratios", "s", "b"):
            values = getattr(self, field)
            if not values or min(values) <= 0:
                raise UserError(f"search space {self.name}: {field} must be a non-empty list of positive integers")
        if not self.batch_choices:
            object.__setattr__(self, "batch_choices", self.b)
        for field in ("aspect_ratio", "preferred_aspect"):
            lo, hi = getattr(self, field)
            if not 0 <= lo < hi:
                raise UserError(f"search space {self.name}: {field}=({lo}, {hi}) needs 0 <= low < high")

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
    # Ties go to the sweep's own shapes: d/n 16 to 32, head size 32 for all but its smallest models.
    "cpu": SearchSpace(
        "cpu",
        v=256,
        d=_steps(16, 512, 8),
        n=_steps(1, 16, 1),
        head_sizes=(8, 16, 32, 64),
        mlp_ratios=(4,),
        s=(64,),
        b=(16,),
        aspect_ratio=(12.0, 48.0),
        preferred_aspect=(16.0, 32.0),
        preferred_head_size=32,
        preferred_source="the shapes of the cpu-isoflop sweep behind the law",
        batch_choices=(2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128),
    ),
    # GPT-style shapes for an accelerator, bf16, GPT-2 vocabulary and context (head size 64, as GPT-2's).
    "gpu": SearchSpace(
        "gpu",
        v=50304,
        d=_steps(256, 8192, 64),
        n=_steps(2, 96, 1),
        head_sizes=(64, 128),
        mlp_ratios=(4,),
        s=(1024,),
        b=(8, 16, 32, 64, 128, 256),
        dtype="bfloat16",
        batch_choices=(8, 16, 32, 64, 96, 128, 192, 256, 384, 512, 768, 1024),
        aspect_ratio=(16.0, 256.0),
        backends=("gpu", "tpu"),
    ),
    # The same shapes in float16 (V100-era and Megatron-LM mixed precision): for profiles of float16 timings
    # (`calibrate --records` of public tables), which predict float16 steps only.
    "gpu-fp16": SearchSpace(
        "gpu-fp16",
        v=50304,
        d=_steps(256, 8192, 64),
        n=_steps(2, 96, 1),
        head_sizes=(64, 128),
        mlp_ratios=(4,),
        s=(1024,),
        b=(8, 16, 32, 64, 128, 256),
        dtype="float16",
        batch_choices=(8, 16, 32, 64, 96, 128, 192, 256, 384, 512, 768, 1024),
        aspect_ratio=(16.0, 256.0),
        backends=("gpu", "tpu"),
    ),
    # Wide and dense, for FLOPs budgets with published laws: Chinchilla's 32k vocabulary, context 2048, bf16
    # and head size 128 (Hoffmann et al. 2022, table 4: Chinchilla's key/value size).
    "chinchilla": SearchSpace(
        "chinchilla",
        v=32000,
        d=_steps(128, 16384, 32),
        n=_steps(1, 160, 1),
        head_sizes=(64, 128),
        mlp_ratios=(4,),
        s=(2048,),
        b=(256,),
        dtype="bfloat16",
        backends=("gpu", "tpu"),
        preferred_head_size=128,
    ),
}
# For a FLOPs budget without a device profile and without --space: the first of these whose parameter range
# holds the law's compute-optimal N (the embedded recipe's space first, then Chinchilla's).
FLOPS_SPACES: tuple[str, ...] = ("cpu", "chinchilla")


def get_space(name: str) -> SearchSpace:
    try:
        return SPACES[name]
    except KeyError:
        raise UserError(f"unknown search space {name!r}; choose one of: {', '.join(SPACES)}") from None
