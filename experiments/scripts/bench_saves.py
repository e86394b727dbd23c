"""A checkpoint save's seconds against a model's layers and bytes: short training runs that save every few steps,
each run's saves (its `wall_clock.saves`, what `train` measures) over their count, as the wall-clock model prices them
(`timing/wallclock.py`: s0 + s1 x state gigabytes + s2 x layers).

    python experiments/scripts/bench_saves.py 32,1 32,4 32,8 128,1 128,4 256,1 --saves 6

Each configuration is d,n (h = d/16, w = 4d, context 32, batch 2, vocabulary 256). Results: docs/methods.md (Saves).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", metavar="D,N")
    parser.add_argument("--saves", type=int, default=6, help="checkpoint saves a run makes (one every 5 steps)")
    return parser.parse_args(argv)


def save_seconds(d: int, n: int, saves: int) -> tuple[float, float]:
    """(parameters, seconds a save) of a short run of a d-wide, n-layer model that saves `saves` times."""
    from smallest_loss.configs.models import get_preset
    from smallest_loss.configs.overrides import apply_overrides
    from smallest_loss.model.train import train

    every = 5
    cfg = apply_overrides(
        get_preset("tiny"),
        [f"model.d={d}", f"model.n={n}", f"model.h={max(d // 16, 1)}", f"model.w={4 * d}", "model.s=32"]
        + ["train.batch_size=2", f"train.steps={every * saves}", f"train.checkpoint_every={every}"]
        + ["train.eval_every=0", f"train.log_every={every}"],
    )
    with tempfile.TemporaryDirectory() as folder:
        summary = train(cfg, Path(folder) / "run", progress=False)
    return summary["params"], summary["wall_clock"]["saves"] / saves


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    print("| d,n | parameters | state MB | a save (ms) |\n|---|---|---|---|")
    for spec in args.configs:
        d, n = (int(x) for x in spec.split(","))
        params, seconds = save_seconds(d, n, args.saves)
        print(f"| {d},{n} | {params:,} | {params * 12 / 1e6:.2f} | {seconds * 1e3:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
