"""How well a short timing of the training step prices the run that follows it, on this machine: the compiled step
timed in bursts of ten (the loop's sync cadence) for a few minutes; then, for each window length w, the median burst
over the w seconds before a gap against the mean step over the `--run` seconds after it. A shared machine's speed
wanders, and a run's step is its mean over the whole run: this says how much of a verified run's step error a longer
timing before it removes (scaling/preflight.py, `confirm_seconds`) and how much no timing before the run can.

    python experiments/scripts/step_drift.py --seconds 300 --out trace.json   # time, then the table
    python experiments/scripts/step_drift.py --trace trace.json               # the table of a kept trace

The defaults time the quickstart's usual pick on the CPU (d=64, n=2, h=4, context 64, batch 16); the gap (8 s) is a
verify process's start-up and compile on that machine, the run (50 s) the steps of its one-minute run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

DEFAULT_SETS = ["model.d=64", "model.n=2", "model.h=4", "model.s=64", "train.batch_size=16"]
WINDOWS = (1.0, 2.0, 5.0, 10.0)
BURST = 10  # steps between host syncs, as the training loop logs


def trace(config, seconds: float) -> np.ndarray:
    """(start second, mean step seconds) of each burst of `BURST` steps over `seconds` of timing, after a warm-up."""
    import jax
    from smallest_loss.model.sharding import make_mesh, resolve_mesh_shape
    from smallest_loss.model.train import init_sharded_state, jit_sharded_step, make_optimizer

    m, t = config.model, config.train
    optimizer = make_optimizer(t, 1000)
    mesh = make_mesh(resolve_mesh_shape(t, jax.device_count()))
    graphdef, state, shardings = init_sharded_state(m, optimizer, t.seed, mesh)
    step = jit_sharded_step(graphdef, optimizer, shardings, mesh)
    tokens = np.random.default_rng(0).integers(0, m.v, (t.batch_size, m.s + 1), dtype=np.int32)
    for _ in range(5):
        state, _ = step(state, tokens)
    jax.block_until_ready(state)
    bursts, t0 = [], time.perf_counter()
    while (start := time.perf_counter()) - t0 < seconds:
        for _ in range(BURST):
            state, _ = step(state, tokens)
        jax.block_until_ready(state)
        bursts.append((start - t0, (time.perf_counter() - start) / BURST))
    return np.array(bursts)


def window_errors(bursts: np.ndarray, window: float, gap: float, run: float, skip: float = 10.0) -> np.ndarray:
    """For each whole second `a` (after `skip`), the mean step over [a + gap, a + gap + run] over the median burst in
    [a - window, a], less 1: the error of a price timed for `window` seconds, `gap` seconds before the run."""
    start, step = bursts[:, 0], bursts[:, 1]
    end = start + step * BURST

    def inside(lo: float, hi: float) -> np.ndarray:
        return step[(start >= lo) & (end <= hi)]

    errors = []
    for a in np.arange(skip + window, start[-1] - gap - run, 1.0):
        before, after = inside(a - window, a), inside(a + gap, a + gap + run)
        if before.size and after.size:
            errors.append(after.mean() / np.median(before) - 1)
    return np.array(errors)


def table(bursts: np.ndarray, gap: float, run: float) -> list[str]:
    rows = ["| timed before (s) | windows | within 10% | rms error | mean error |", "|---|---|---|---|---|"]
    for w in WINDOWS:
        e = window_errors(bursts, w, gap, run)
        if e.size:
            rows.append(f"| {w:g} | {e.size} | {np.mean(np.abs(e) <= 0.1):.0%} | {np.sqrt(np.mean(e**2)):.1%} | "
                        f"{e.mean():+.1%} |")  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="timing length (default 300)")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--set", dest="overrides", action="append", default=None, metavar="SECTION.FIELD=VALUE")
    parser.add_argument("--gap", type=float, default=8.0, help="seconds between the price and the run (default 8)")
    parser.add_argument("--run", type=float, default=50.0, help="the run's seconds of steps (default 50)")
    parser.add_argument("--out", help="keep the trace here (JSON)")
    parser.add_argument("--trace", help="read a kept trace instead of timing")
    args = parser.parse_args(argv)
    if args.trace:
        bursts = np.array(json.loads(Path(args.trace).read_text())["bursts"])
    else:
        from smallest_loss.configs.models import get_preset
        from smallest_loss.configs.overrides import apply_overrides

        sets = DEFAULT_SETS if args.overrides is None else args.overrides
        bursts = trace(apply_overrides(get_preset(args.preset), sets), args.seconds)
        if args.out:
            Path(args.out).write_text(json.dumps(dict(preset=args.preset, sets=sets, bursts=bursts.tolist())) + "\n")
    tens = [
        float(np.mean(bursts[(bursts[:, 0] >= a) & (bursts[:, 0] < a + 10), 1]))
        for a in range(0, int(bursts[-1, 0]) - 9, 10)
    ]
    print(f"{len(bursts)} bursts of {BURST} steps, median {np.median(bursts[:, 1]) * 1e3:.2f} ms a step; "
          f"each 10 s: {' '.join(f'{x * 1e3:.1f}' for x in tens)} ms")  # fmt: skip
    print(f"a price timed before a gap of {args.gap:g} s against the mean step of the next {args.run:g} s:")
    print("\n".join(table(bursts, args.gap, args.run)))


if __name__ == "__main__":
    main()
