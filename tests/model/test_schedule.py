"""The host's learning-rate schedule (numpy), and the same formula in jax.numpy at a horizon (a run that ends on the
clock), give the values of the optax schedule the training step uses."""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
from smallest_loss.configs.schema import TrainConfig
from smallest_loss.model.schedule import schedule_at, schedule_values
from smallest_loss.model.train import make_schedule


def test_schedule_values_match_the_optax_schedule_of_every_kind():
    wsd = itertools.product(("wsd",), ("linear", "1-sqrt"), (0.0, 0.1, 0.5))  # cool-down shapes and lengths
    kinds = [*wsd, ("cosine", "linear", 0.0), ("constant", "linear", 0.0)]
    for (schedule, decay, cooldown), warmup, total in itertools.product(kinds, (0, 7), (1, 37, 200)):
        cfg = TrainConfig(
            lr=3e-3, warmup_steps=warmup, schedule=schedule, decay=decay, cooldown_fraction=cooldown, min_lr_ratio=0.1
        )
        steps = np.arange(total + 3)  # past the end too: the schedule holds its last value
        want = np.asarray(make_schedule(cfg, total)(steps), dtype=np.float64)
        np.testing.assert_allclose(schedule_values(cfg, total, steps), want, rtol=0, atol=3e-3 * 1e-6)
        # in jax.numpy at a horizon in the state, as a run that ends on the clock computes it (test_clock.py)
        got = schedule_at(cfg, jnp.float32(total), jnp.asarray(steps, jnp.float32), jnp)
        np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=2e-6, atol=3e-9)
