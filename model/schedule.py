"""Learning-rate schedules on the host, in numpy: the values `model.train.make_schedule` (optax, inside the
training step) gives at any steps, for curve fits, tables and predictions that must not start JAX or compile a
program per call."""

from __future__ import annotations

from typing import Any

import numpy as np
from smallest_loss.configs.schema import TrainConfig


def cooldown_steps(cfg: TrainConfig, total_steps: int) -> int:
    """Steps of a wsd schedule's cool-down: `cooldown_fraction` of the run, at least one when it is positive."""
    return max(round(cfg.cooldown_fraction * total_steps), 1) if cfg.cooldown_fraction > 0 else 0


def schedule_values(cfg: TrainConfig, total_steps: int, steps: np.ndarray) -> np.ndarray:
    """`make_schedule(cfg, total_steps)` at `steps` (0-based), in float64 numpy: optax's formulas for the same joined
    schedules, for the host (curve fits, tables, predictions), where each eager call of the optax schedule compiled
    its ops again (0.1 s a call)."""
    return schedule_at(cfg, total_steps, np.asarray(steps, dtype=np.float64), np)


def schedule_at(cfg: TrainConfig, total: Any, t: Any, xp: Any = np) -> Any:
    """The schedule of a run of `total` steps at steps `t`, in the array module `xp` (numpy, or jax.numpy inside a
    jitted step): `total` may be an array, the horizon of a run that ends on the clock (`train.end_within`, whose
    step reads it from the training state). At an integer `total` it is `make_schedule(cfg, total)`'s value."""
    warmup = xp.minimum(cfg.warmup_steps, total)
    rest = xp.maximum(total - warmup, 1)
    u = t - warmup
    if cfg.schedule == "cosine":
        cosine = 0.5 * (1 + xp.cos(np.pi * xp.minimum(u, rest) / rest))
        after = cfg.lr * ((1 - cfg.min_lr_ratio) * cosine + cfg.min_lr_ratio)
    elif cfg.schedule == "wsd":
        # cooldown_steps' count (Python's round and numpy's both round halves to even)
        cool = xp.maximum(xp.round(cfg.cooldown_fraction * total), 1) if cfg.cooldown_fraction > 0 else 0 * total
        stable, low = xp.maximum(rest - cool, 0), cfg.lr * cfg.min_lr_ratio
        x = xp.clip((u - stable) / xp.maximum(cool, 1), 0, 1)
        decayed = low + (cfg.lr - low) * (1 - (x if cfg.decay == "linear" else xp.sqrt(x)))
        after = xp.where(u < stable, cfg.lr, decayed)
    else:
        after = xp.full_like(t, cfg.lr)
    if cfg.warmup_steps == 0:
        return after
    return xp.where(t < warmup, cfg.lr * xp.clip(t, 0, warmup) / xp.maximum(warmup, 1), after)
