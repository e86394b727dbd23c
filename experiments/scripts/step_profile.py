"""Where one training step's time goes, op by op, on this backend: the compiled step (as `calibrate` compiles it) run
under JAX's profiler, each of XLA's ops (an HLO instruction of the step: a fusion, a dot, a copy) with its seconds a
step and its output shape, and the ops grouped by kind (the name without its number: `copy_bitcast_fusion`,
`ynn_fusion`, ...). For a step-time model's residual, the profile names the work that the counts price wrongly.

    python experiments/scripts/step_profile.py --set model.d=256 --set model.n=1 --set model.h=16 --set model.w=1024

The defaults profile the quickstart's usual pick on the CPU (d=64, n=2, h=4, context 64, batch 16). Seconds are the
ops' own, summed over the steps profiled and divided by them; ops that run at once on several threads each count
whole, so the kinds can add up to more than the step's wall-clock. `--out DIR` keeps the profiler's trace there.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

DEFAULT_SETS = ["model.d=64", "model.n=2", "model.h=4", "model.s=64", "train.batch_size=16"]
_INSTRUCTION = re.compile(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+) ")


def output_shapes(hlo_text: str) -> dict[str, str]:
    """Each HLO instruction's name -> its output shape, from a compiled program's text (the first definition wins:
    a fusion's name in the entry computation before any parameter of the same name inside a fused computation)."""
    shapes: dict[str, str] = {}
    for line in hlo_text.splitlines():
        m = _INSTRUCTION.match(line)
        if m:
            shapes.setdefault(m.group(1), m.group(2))
    return shapes


def kind_of(name: str) -> str:
    """An op's kind: its name without the trailing number (`copy_bitcast_fusion.13` -> `copy_bitcast_fusion`)."""
    return re.sub(r"\.\d+$", "", name)


def op_seconds(events: list[dict[str, Any]], shapes: dict[str, str], steps: int) -> dict[str, float]:
    """Seconds a step of each op: the complete events (`ph` X, microseconds) named after an HLO instruction of the
    step, summed and divided by `steps`; the profiler's other events (the executor, Python, the thread pool) left
    out."""
    total: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("ph") == "X" and event.get("name") in shapes:
            total[event["name"]] += event.get("dur", 0.0) * 1e-6 / steps
    return dict(total)


def report(seconds: dict[str, float], shapes: dict[str, str], step: float, top: int) -> list[str]:
    """The table's lines: the kinds by their seconds a step (those under 1% of the ops' total summed in one row), then
    the `top` ops with their shapes."""
    kinds: dict[str, list[float]] = defaultdict(list)
    for name, s in seconds.items():
        kinds[kind_of(name)].append(s)
    total = sum(seconds.values())
    lines = [f"step {step * 1e3:.2f} ms (wall-clock); the ops' own seconds add up to {total * 1e3:.2f} ms"]
    lines += ["", "| kind | ms a step | ops |", "|---|---|---|"]
    ranked = sorted(((sum(v), len(v), k) for k, v in kinds.items()), reverse=True)
    small = [(s, n) for s, n, _ in ranked if s < 0.01 * total]
    lines += [f"| {k} | {s * 1e3:.2f} | {n} |" for s, n, k in ranked if s >= 0.01 * total]
    if small:
        rest, count = sum(s for s, _ in small), sum(n for _, n in small)
        lines.append(f"| ({len(small)} other kinds) | {rest * 1e3:.2f} | {count} |")
    lines += ["", "| op | ms a step | output |", "|---|---|---|"]
    ops = sorted(seconds.items(), key=lambda x: -x[1])[:top]
    lines += [f"| {name} | {s * 1e3:.2f} | `{shapes.get(name, '?')}` |" for name, s in ops]
    return lines


def profile(config: Any, steps: int, folder: Path) -> tuple[dict[str, float], dict[str, str], float]:
    """Profile `steps` compiled training steps of `config` into `folder`: (seconds a step of each op, the ops' output
    shapes, the step's wall-clock seconds)."""
    import jax
    from smallest_loss.timing.measure import compile_step

    compiled, inputs, _ = compile_step(config.model, config.train.batch_size)
    state, batch = inputs()
    for _ in range(5):  # warm: the first calls allocate
        state = compiled(state, batch)[0]
    jax.block_until_ready(state)
    with jax.profiler.trace(str(folder), create_perfetto_trace=True):
        start = time.perf_counter()
        for _ in range(steps):
            state = compiled(state, batch)[0]
        jax.block_until_ready(state)
        step = (time.perf_counter() - start) / steps
    traces = sorted(folder.glob("**/perfetto_trace.json.gz"))
    if not traces:
        raise SystemExit(f"the profiler wrote no perfetto trace under {folder}")
    with gzip.open(traces[-1]) as trace:
        raw = json.load(trace)
    events = raw["traceEvents"] if isinstance(raw, dict) else raw
    shapes = output_shapes(compiled.as_text())
    return op_seconds(events, shapes, steps), shapes, step


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--set", dest="overrides", action="append", metavar="SECTION.FIELD=VALUE")
    parser.add_argument("--steps", type=int, default=20, help="steps profiled (default 20)")
    parser.add_argument("--top", type=int, default=12, help="ops listed (default 12)")
    parser.add_argument("--out", help="keep the profiler's trace in this folder")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.top < 1:
        parser.error("--steps and --top must be at least 1")
    from smallest_loss.configs.models import get_preset
    from smallest_loss.configs.overrides import apply_overrides
    from smallest_loss.experiments.cli import prepare_process

    prepare_process()
    config = apply_overrides(get_preset(args.preset), DEFAULT_SETS if args.overrides is None else args.overrides)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.out) if args.out else Path(scratch)
        seconds, shapes, step = profile(config, args.steps, folder)
    print("\n".join(report(seconds, shapes, step, args.top)))


if __name__ == "__main__":
    main()
