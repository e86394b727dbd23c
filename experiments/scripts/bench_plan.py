"""Planner throughput: candidates scored per second (enumeration, parameter counts, step time, tokens, loss).

    python experiments/scripts/bench_plan.py [--profile PROFILE.json] [--repeats 5]

Without a profile, step times come from the paper's memory-copy form with fixed illustrative coefficients
(the arithmetic is the same as a fitted profile's). Prints the median rate over repeats.
"""

from __future__ import annotations

import argparse
import statistics
import time

from smallest_loss.configs.spaces import SearchSpace
from smallest_loss.scaling.budget import parse_budget
from smallest_loss.scaling.laws import CHINCHILLA_PUBLISHED, LawFile
from smallest_loss.scaling.plan import PlanInputs
from smallest_loss.scaling.planner import plan_with_inputs
from smallest_loss.timing.counts import FLOPS, MEMCPYS

BIG = SearchSpace(
    "bench",
    v=50304,
    d=tuple(range(64, 16384 + 1, 64)),
    n=tuple(range(1, 257)),
    head_sizes=(64, 128),
    mlp_ratios=(2, 4, 8),
    s=(1024,),
    b=(16, 32, 64, 128),
)


def paper_step_seconds(d, n, h, w, s, v, b, **arch):
    """TIME = c1*MEMCPYS + c2*FLOPS + c3 per sequence, times b (Inbar and Sernau, 2024); the paper's counts
    take no activation, norm or tying, so `arch` is ignored."""
    return b * (4e-12 * MEMCPYS(d, n, s, v, w, h) + 2e-15 * FLOPS(d, n, s, v, w, h)) + 2e-3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", help="a device profile JSON from `smallest-loss calibrate`")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    step_seconds = paper_step_seconds
    if args.profile:
        from smallest_loss.timing.profile import load_profile

        step_seconds = load_profile(args.profile).predict_step_seconds
    inputs = PlanInputs(BIG, step_seconds=step_seconds)
    budget, law = parse_budget("24h"), LawFile(CHINCHILLA_PUBLISHED)
    seconds, count = [], 0
    for _ in range(args.repeats):
        start = time.perf_counter()
        plan = plan_with_inputs(budget, law, inputs)
        seconds.append(time.perf_counter() - start)
        count = plan.candidates + sum(plan.dropped.values())
    median = statistics.median(seconds)
    print(
        f"space: {count:,} candidates (d {BIG.d[0]}..{BIG.d[-1]}, n 1..{BIG.n[-1]}, 2 head sizes, "
        "3 MLP ratios, 4 batch sizes)"
    )
    print(f"time per plan: median {median:.3f}s over {args.repeats} repeats (min {min(seconds):.3f}s)")
    print(f"rate: {count / median:,.0f} candidates per second (target: at least 1,000,000)")


if __name__ == "__main__":
    main()
