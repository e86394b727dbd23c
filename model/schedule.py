"""Learning-rate schedules on the host, in numpy: the values `model.train.make_schedule` (optax, inside the
training step) gives at any steps, for curve fits, tables and predictions that must not start JAX or compile a
program per call."""

from __future__ import annotations

import numpy as np
from smallest_loss.configs.schema import TrainConfig


def cooldown_steps(cfg: TrainConfig, total_steps: int) -> int:
    """Steps of a wsd schedule's cool-down: `cooldown_fraction` of the run, at least one when it is positive."""
    return max(round(cfg.cooldown_fraction * total_steps), 1) if cfg.cooldown_fraction > 0 else 0


def schedule_values(cfg: TrainConfig, total_steps: int, steps: np.ndarray) -> np.ndarray:
    """`make_schedule(cfg, total_steps)` at `steps` (0-based), in float64 numpy: optax's formulas for the same joined
    schedules, for the host (curve fits, tables, predictions), where each eager call of the optax schedule compiled
    its ops again (0.1 s a call)."""
    t = np.asarray(steps, dtype=np.float64)
    warmup = min(cfg.warmup_steps, total_steps)
    rest = max(total_steps - warmup, 1)
    u = t - warmup
    if cfg.schedule == "cosine":
        cosine = 0.5 * (1 + np.cos(np.pi * np.minimum(u, rest) / rest))
        after = cfg.lr * ((1 - cfg.min_lr_ratio) * cosine + cfg.min_lr_ratio)
    elif cfg.schedule == "wsd":
        cool = cooldown_steps(cfg, total_steps)
        stable, low = max(rest - cool, 0), cfg.lr * cfg.min_lr_ratio
        x = np.clip((u - stable) / max(cool, 1), 0, 1)
        decayed = low + (cfg.lr - low) * (1 - (x if cfg.decay == "linear" else np.sqrt(x)))
        after = np.where(u < stable, cfg.lr, decayed)
    else:
        after = np.full_like(t, cfg.lr)
    if warmup == 0:
        return after
    return np.where(t < warmup, cfg.lr * np.clip(t, 0, warmup) / warmup, after)
