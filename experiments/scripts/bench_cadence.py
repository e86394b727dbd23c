"""The compiled step against the training loop, on this device, in interleaved rounds: the step on one reused batch
synced after every step, the same at the loop's sync cadence (how `calibrate` times it), the loop fed fresh batches
by the input pipeline (`timing/loop.py`) without and with prefetch, and `train`'s own steady step (a short run).

    python experiments/scripts/bench_cadence.py 80,2,5,64,16 192,1,6,64,16 --steps 100 --rounds 6

Each configuration is d,n,h,s,b (w = 4d, vocabulary 256, the preset's dtype); every way is timed once a round and a
short run (twice `--steps` steps) trains after them, the rounds alternating the ways (a shared machine's slow spells
hit them all); the table gives the medians of the rounds and, last, the median over rounds of `train`'s step over
each way's. Results: results/cpu/quickstart/README.md (stop 41), results/h100/README.md.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", metavar="D,N,H,S,B")
    parser.add_argument("--steps", type=int, default=100, help="steps a way takes in one round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--sync-every", type=int, default=10, help="the loop's cadence (train.log_every)")
    return parser.parse_args(argv)


def rounds_of(cfg, b: int, steps: int, sync_every: int) -> Iterator[dict[str, float]]:
    """Seconds a step of each way, one round after another (compiled, allocated and warmed up once; each round's loops
    on fresh batches)."""
    import numpy as np
    from smallest_loss.configs.schema import TrainConfig
    from smallest_loss.model.data import batch
    from smallest_loss.model.sharding import batch_sharding, make_mesh, put_batch, resolve_mesh_shape
    from smallest_loss.timing.loop import loop_seconds
    from smallest_loss.timing.measure import compile_step, time_compiled

    compiled, inputs, _ = compile_step(cfg, b)
    state, tokens = inputs()
    corpus = np.random.default_rng(0).integers(0, cfg.v, 2**20, dtype=np.int32)
    sharding = batch_sharding(make_mesh(resolve_mesh_shape(TrainConfig(batch_size=b))))
    make, place = (lambda k: batch(corpus, 0, k, b, cfg.s)), (lambda x: put_batch(x, sharding))
    _, state = time_compiled(compiled, state, tokens, 0.0, 2 * sync_every, 2 * sync_every)  # warm-up
    for r in itertools.count():
        out: dict[str, float] = {}
        for key, every in (("synced every step", 1), ("at the cadence", sync_every)):
            times, state = time_compiled(compiled, state, tokens, 0.0, steps, steps, warmup=0, sync_every=every)
            out[key] = float(np.median(times))
        for key, prefetch in (("loop", False), ("loop, prefetch", True)):
            out[key], state = loop_seconds(compiled, state, make, place, steps, sync_every, prefetch, r * steps)
        yield out


def train_step(cfg, b: int, steps: int, sync_every: int) -> float:
    """`train`'s steady step (the median between syncs) over a run of `steps` steps on random tokens."""
    import numpy as np
    from smallest_loss.configs.schema import DataConfig, RunConfig, TrainConfig
    from smallest_loss.model.runs import RunDir, steady_step_seconds
    from smallest_loss.model.train import train

    with tempfile.TemporaryDirectory() as folder:
        corpus = Path(folder) / "tokens.npy"
        np.save(corpus, np.random.default_rng(0).integers(0, cfg.v, 2**20, dtype=np.int32))
        never = 10**9
        t = TrainConfig(
            steps=steps, batch_size=b, warmup_steps=1, log_every=sync_every, eval_every=never, checkpoint_every=never
        )
        train(RunConfig(model=cfg, train=t, data=DataConfig(corpus=str(corpus))), Path(folder) / "run", progress=False)
        return steady_step_seconds(RunDir.open(Path(folder) / "run").read_metrics(), never, median=True)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    import jax
    import numpy as np
    from smallest_loss.configs.schema import ModelConfig

    print(f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}); medians of {args.rounds} rounds, ms")
    print("| d, n, h, s, b | synced every step | at the cadence | loop | loop, prefetch | train | train / each |")
    print("|---|---|---|---|---|---|---|")
    for spec in args.configs:
        d, n, h, s, b = (int(x) for x in spec.split(","))
        cfg = ModelConfig(d=d, n=n, h=h, w=4 * d, s=s, v=256)
        ways: dict[str, list[float]] = {}
        rounds = rounds_of(cfg, b, args.steps, args.sync_every)
        for _ in range(args.rounds):  # one round of each way, then a short run: train's step beside them
            for key, seconds in next(rounds).items():
                ways.setdefault(key, []).append(seconds)
            ways.setdefault("train", []).append(train_step(cfg, b, 2 * args.steps, args.sync_every))
        rounds.close()
        trained = np.asarray(ways["train"])
        cells = " | ".join(f"{np.median(v) * 1e3:.2f}" for v in ways.values())
        ratios = ", ".join(f"{np.median(trained / np.asarray(v)):.3f}" for k, v in ways.items() if k != "train")
        print(f"| {spec} | {cells} | {ratios} |", flush=True)


if __name__ == "__main__":
    main()
