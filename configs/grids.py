"""Timing grids: named lists of (model configuration, batch size) that `smallest-loss calibrate` measures.

Each grid draws architectures (d, n, h, w, s) from ranges with a fixed seed, and measures each at two
batch sizes, so cross-validation can hold out whole architectures while the batch varies within one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.overrides import apply_overrides
from smallest_loss.configs.schema import DType, ModelConfig, RunConfig


class GridPoint(NamedTuple):
    """One measurement: a model, the global batch, and the devices it runs data-parallel over."""

    model: ModelConfig
    batch: int
    devices: int = 1


@dataclass(frozen=True)
class GridSpec:
    """Ranges to draw `architectures` shapes from; every shape is measured at `batches_per_arch` batches."""

    name: str
    architectures: int
    d: tuple[int, ...]
    n: tuple[int, ...]
    head_sizes: tuple[int, ...]
    mlp_ratios: tuple[int, ...]
    s: tuple[int, ...]
    b: tuple[int, ...]
    v: int = 256
    dtype: DType = "float32"
    max_tokens_per_step: int = 1 << 30
    batches_per_arch: int = 2
    seed: int = 0
    devices: tuple[int, ...] = (1,)  # device counts; the per-device batch stays b, the global batch is b x k
    # Mixture of experts (model/moe.py): each architecture draws `experts` (0: the dense MLP) and `granularity`;
    # grids that leave both at their default draw exactly the architectures they drew before these existed.
    experts: tuple[int, ...] = (0,)
    granularity: tuple[int, ...] = (1,)
    top_k: int = 1


def _draw_experts(spec: GridSpec, rng: np.random.Generator) -> tuple[int, int]:
    """(experts, granularity) of one architecture: drawn only when the grid has a mixture-of-experts axis."""
    if spec.experts == (0,) and spec.granularity == (1,):
        return 0, 1
    experts = int(rng.choice(spec.experts))
    granularity = int(rng.choice(spec.granularity))
    return experts, granularity if experts else 1


def _draw(spec: GridSpec) -> tuple[GridPoint, ...]:
    rng = np.random.default_rng(spec.seed)
    seen, out = set(), []
    for _ in range(100 * spec.architectures):
        if len(seen) == spec.architectures:
            break
        d, n, k, r, s = (int(rng.choice(x)) for x in (spec.d, spec.n, spec.head_sizes, spec.mlp_ratios, spec.s))
        experts, granularity = _draw_experts(spec, rng)
        key = (d, n, k, r, s) + ((experts, granularity) if experts else ())
        if d % k or key in seen or (r * d) % granularity:
            continue
        batches = [b for b in spec.b if b * s <= spec.max_tokens_per_step]
        if len(batches) < spec.batches_per_arch:
            continue
        seen.add(key)
        moe = dict(experts=experts, granularity=granularity, top_k=spec.top_k) if experts else {}
        cfg = ModelConfig(v=spec.v, d=d, n=n, h=d // k, w=r * d, s=s, dtype=spec.dtype, **moe)
        for b in rng.choice(batches, size=spec.batches_per_arch, replace=False):
            out += [GridPoint(cfg, int(b) * k, k) for k in spec.devices]
    return tuple(out)


SPECS: dict[str, GridSpec] = {
    s.name: s
    for s in (
        # 40 architectures x 2 batches = 80 configurations, about 5 minutes on 2 CPU cores.
        GridSpec(
            "cpu-small",
            40,
            d=(32, 64, 96, 128, 192, 256),
            n=(1, 2, 3, 4, 6),
            head_sizes=(16, 32),
            mlp_ratios=(2, 4),
            s=(32, 64, 128, 256),
            b=(2, 4, 8, 16),
            max_tokens_per_step=2048,
        ),
        # The quickstart's grid: 24 architectures timed as the quickstart's plans run (the `cpu` space: context 64,
        # batch 16) with the widths, depths and head sizes 16-32 of the other CPU grids. Plans keep to the head sizes
        # timed (scaling.planner.calibrated_space): head size 64 planned by extrapolation was priced 11% faster than
        # h2 where it ran 2-3% faster, and its loops ran 10-21% slower than priced; grids with head sizes 8-64 or
        # 16-64 held out at 15.6% and 16.3% mean error. On this CPU a step of batch 16 takes 2.5-2.8 times one of
        # batch 8 for widths of 128 up (its activations leave the cache), which a model linear in the counts cannot
        # follow: fitted over batches 2-16 (or 8 and 16) it under-priced the batch-16 records by 5-21% and the plans
        # there by up to 40% (2026-12-06). The seed (3) draws every width and depth 3-6 times in about the old
        # grid's time.
        GridSpec(
            "cpu-quick",
            24,
            d=(32, 64, 96, 128, 192, 256),
            n=(1, 2, 3, 4, 6),
            head_sizes=(16, 32),
            mlp_ratios=(2, 4),
            s=(64,),
            b=(16,),
            max_tokens_per_step=2048,
            batches_per_arch=1,
            seed=3,
        ),
        # 12 architectures x 2 batches, dense and mixtures of 4 or 8 experts (granularity 1 or 2, top-1): the
        # step-time models' fit across dense and MoE steps on a CPU, about as quick as cpu-quick.
        GridSpec(
            "cpu-moe",
            12,
            d=(32, 64, 96, 128),
            n=(1, 2, 3),
            head_sizes=(16, 32),
            mlp_ratios=(2, 4),
            s=(32, 64, 128),
            b=(2, 4, 8),
            max_tokens_per_step=1024,
            seed=2,
            experts=(0, 4, 8),
            granularity=(1, 2),
        ),
        # 10 configurations (5 architectures), for tests.
        GridSpec("tiny", 5, d=(32, 64), n=(1, 2), head_sizes=(16,), mlp_ratios=(2, 4), s=(16, 32), b=(2, 4)),
        # 6 architectures x 2 batches x 1, 2 and 4 devices (data parallel): fits the gradient-sync term.
        # On CPU it needs simulated devices: XLA_FLAGS=--xla_force_host_platform_device_count=4.
        GridSpec(
            "cpu-mesh",
            6,
            d=(64, 128, 256),
            n=(1, 2, 4),
            head_sizes=(32,),
            mlp_ratios=(4,),
            s=(64, 128),
            b=(2, 4, 8),
            max_tokens_per_step=1024,
            devices=(1, 2, 4),
        ),
        # 5 one-layer architectures on 1 and 2 devices: for tests of timing over a mesh (cheap to compile).
        GridSpec(
            "tiny-mesh",
            5,
            d=(32, 64),
            n=(1,),
            head_sizes=(16,),
            mlp_ratios=(2, 4),
            s=(16, 32),
            b=(2, 4),
            batches_per_arch=1,
            devices=(1, 2),
        ),
        # 32 architectures x 2 batches = 64 configurations for one H100 (bf16, GPT-2 vocabulary).
        GridSpec(
            "gpu",
            32,
            d=(512, 768, 1024, 1536, 2048),
            n=(4, 8, 12, 16, 24),
            head_sizes=(64, 128),
            mlp_ratios=(2, 4),
            s=(512, 1024, 2048),
            b=(4, 8, 16, 32),
            v=50304,
            dtype="bfloat16",
            max_tokens_per_step=32768,
        ),
    )
}


def get_grid(name: str) -> tuple[GridPoint, ...]:
    """The configurations of a named grid; an unknown name is a UserError listing the known ones."""
    if name not in SPECS:
        raise UserError(f"unknown timing grid {name!r}; choose one of: {', '.join(SPECS)}")
    return _draw(SPECS[name])


PRECISION_FIELDS = ("model.dtype", "model.bits_weights", "model.bits_activations", "model.bits_kv")


def at_precision(points: tuple[GridPoint, ...], assignments: tuple[str, ...]) -> tuple[GridPoint, ...]:
    """A grid's points at another precision: `--set model.dtype=float8`, `--set model.bits_weights=4`, ... applied to
    every model (`PRECISION_FIELDS` only: the architectures stay the grid's)."""
    for item in assignments:
        if item.partition("=")[0].strip() not in PRECISION_FIELDS:
            raise UserError(f"--set {item}: a calibration sets the precision only: {', '.join(PRECISION_FIELDS)}")
    if not assignments:
        return points
    return tuple(
        GridPoint(apply_overrides(RunConfig(model=p.model), assignments).model, p.batch, p.devices) for p in points
    )
