"""Training-sweep designs: IsoFLOP (Hoffmann et al., 2022, Approach 2) and IsoTime ("Time Matters").

An IsoFLOP design trains, for each FLOP budget C, several model shapes, each for the tokens that C buys:
D = C / (6N) by the convention of published laws, or by our exact training-step FLOP count. An IsoTime
design trains several shapes for the same wall-clock budget T: each for the steps that T buys on a
device profile's predicted step time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from smallest_loss.configs.errors import UserError
from smallest_loss.configs.schema import ModelConfig, RunConfig, TrainConfig

Shape = tuple[int, int, int]  # (d, n, h); w = mlp_ratio * d


@dataclass(frozen=True)
class SweepDesign:
    """A named set of training runs. `shapes[i]` are the shapes trained at `budgets[i]`."""

    name: str
    kind: Literal["isoflop", "isotime"]
    budgets: tuple[float, ...]  # FLOPs (isoflop) or seconds (isotime)
    shapes: tuple[tuple[Shape, ...], ...]
    base: RunConfig = field(default_factory=RunConfig)
    flops: Literal["6N", "exact"] = "6N"  # how an isoflop budget converts to tokens
    warmup_fraction: float = 0.05
    min_steps: int = 20

    def __post_init__(self) -> None:
        if len(self.budgets) != len(self.shapes):
            raise UserError(f"design {self.name}: {len(self.budgets)} budgets but {len(self.shapes)} shape lists")
        if any(b <= 0 for b in self.budgets):
            raise UserError(f"design {self.name}: budgets must be positive")

    def model(self, shape: Shape) -> ModelConfig:
        d, n, h = shape
        return dataclasses.replace(self.base.model, d=d, n=n, h=h, w=None)  # w derived from d


def _shapes(*idx: int) -> tuple[Shape, ...]:
    return tuple(_CPU_SHAPES[i] for i in idx)


# Small byte-level models, ~7k to ~0.8M parameters; each budget takes five shapes around its expected
# optimum. A first sweep at these budgets with 33k-2.7M-parameter models found every budget's best loss
# at its smallest model (about 30 tokens per parameter or more), so the shapes reach down to 7k.
_CPU_SHAPES: tuple[Shape, ...] = (
    (16, 1, 2), (24, 1, 2), (32, 1, 2), (32, 2, 2), (48, 2, 2), (64, 3, 2), (96, 3, 3), (128, 4, 4),
)
_CPU_BASE = RunConfig(
    model=ModelConfig(v=256, s=64),
    train=TrainConfig(batch_size=16, steps=1, lr=3e-3, eval_every=0, eval_batches=16, checkpoint_every=250,
                      log_every=25),
)

_GPU_SHAPES: tuple[Shape, ...] = (
    (256, 4, 4), (384, 6, 6), (512, 8, 8), (640, 10, 10), (768, 12, 12), (1024, 16, 16), (1280, 20, 20),
)
_GPU_BASE = RunConfig(
    model=ModelConfig(v=256, s=512, dtype="bfloat16"),
    train=TrainConfig(batch_size=64, steps=1, lr=1e-3, eval_every=0, eval_batches=16, checkpoint_every=500,
                      log_every=50),
)

DESIGNS: dict[str, SweepDesign] = {
    "cpu-isoflop": SweepDesign(
        name="cpu-isoflop", kind="isoflop", budgets=(1e11, 3e11, 9e11, 2.7e12),
        shapes=(_shapes(0, 1, 2, 3, 4), _shapes(1, 2, 3, 4, 5), _shapes(2, 3, 4, 5, 6), _shapes(3, 4, 5, 6, 7)),
        base=_CPU_BASE,
    ),
    # The quickstart's sweep: three budgets within the two smaller ones of cpu-isoflop and its shapes around
    # their optima, 15 runs (a third of cpu-isoflop's FLOPs; about 4 minutes on 2 CPU cores).
    "quick-isoflop": SweepDesign(
        name="quick-isoflop", kind="isoflop", budgets=(1e11, 2e11, 4e11),
        shapes=(_shapes(0, 1, 2, 3, 4), _shapes(1, 2, 3, 4, 5), _shapes(1, 2, 3, 4, 5)), base=_CPU_BASE,
    ),
    # A few seconds of CPU per run, six runs (the fewest a fit takes): for tests and a first look.
    "tiny-isoflop": SweepDesign(
        name="tiny-isoflop", kind="isoflop", budgets=(2e9, 6e9),
        shapes=(((16, 1, 2), (32, 1, 2), (32, 2, 2)),) * 2, base=_CPU_BASE, min_steps=8,
    ),
    "cpu-isotime": SweepDesign(
        name="cpu-isotime", kind="isotime", budgets=(60.0,),
        shapes=(((64, 8, 2), (96, 4, 3), (128, 2, 4), (192, 1, 6), (256, 1, 8)),), base=_CPU_BASE,
    ),
    "gpu-isoflop": SweepDesign(
        name="gpu-isoflop", kind="isoflop", budgets=(3e15, 1e16, 3e16),
        shapes=(tuple(_GPU_SHAPES[0:5]), tuple(_GPU_SHAPES[1:6]), tuple(_GPU_SHAPES[2:7])), base=_GPU_BASE,
        min_steps=200,
    ),
}


def get_design(name: str) -> SweepDesign:
    try:
        return DESIGNS[name]
    except KeyError:
        raise UserError(f"unknown sweep design {name!r}; choose one of: {', '.join(DESIGNS)}") from None
