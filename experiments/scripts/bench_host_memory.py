"""The C allocator as it comes against `steady_host_memory` (model/host_memory.py), on this device: each way trains the
same short run in a fresh process, in interleaved rounds, and reports its steady step, page faults, CPU and system CPU a
step (summary.json `steps_usage`).

    python experiments/scripts/bench_host_memory.py 96,5,3,64,16 80,2,5,64,16 --steps 120 --rounds 3
    python experiments/scripts/bench_host_memory.py 56,4,7,64,16 96,5,3,64,16 32,2,2,64,16 64,3,2,64,16 --one-process

Each configuration is d,n,h,s,b (w = 4d, vocabulary 256, float32, the embedded corpus); the table gives the medians
over rounds and, last, the median over rounds of the steady step with the allocator set over without. With
`--one-process` each round's process trains every configuration in turn, as the quickstart's long process trains its
sweep and then its plan's run: how a step fares after larger ones. Results: results/cpu/quickstart/README.md (stops 43
and 44).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

CHILD = """
import json, sys, tempfile
from pathlib import Path
from smallest_loss.model.host_memory import steady_host_memory
steady_host_memory()
from smallest_loss.configs.schema import ModelConfig, RunConfig, TrainConfig
from smallest_loss.model.runs import RunDir, steady_step_seconds
from smallest_loss.model.train import train
steps, got = int(sys.argv[1]), []
for text in sys.argv[2:]:  # one after another in this process
    d, n, h, s, b = (int(x) for x in text.split(","))
    model = ModelConfig(v=256, d=d, n=n, h=h, w=4 * d, s=s)
    config = RunConfig(model=model, train=TrainConfig(steps=steps, batch_size=b, log_every=10, eval_every=0,
                                                      checkpoint_every=0))
    with tempfile.TemporaryDirectory() as folder:
        usage = train(config, Path(folder) / "run", progress=False)["steps_usage"]
        loop = steady_step_seconds(RunDir.open(Path(folder) / "run").read_metrics(), 0)
    cpu, faults, system = usage["cpu_user"] + usage["cpu_system"], usage["minor_faults"], usage["cpu_system"]
    got.append(dict(loop=loop, faults=faults / steps, cpu=cpu / steps, system=system / steps))
print(json.dumps(got))
"""
WAYS = {"as it comes": "default", "steady": ""}


def one(configs: list[str], steps: int, way: str) -> list[dict[str, float]]:
    """Train `configs` one after another in one fresh process, the allocator `way`; each one's figures a step."""
    env = dict(os.environ, SMALLEST_LOSS_MALLOC=WAYS[way])
    done = subprocess.run([sys.executable, "-c", CHILD, str(steps), *configs], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the training process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", metavar="D,N,H,S,B")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one-process", action="store_true", help="train every configuration in one process a round")
    args = parser.parse_args(argv)
    for text in args.configs:
        if len(text.split(",")) != 5 or not all(x.strip().isdigit() for x in text.split(",")):
            parser.error(f"a configuration is five whole numbers d,n,h,s,b, not {text!r}")
    groups = [args.configs] if args.one_process else [[text] for text in args.configs]
    print("| config | way | step (ms) | page faults a step | CPU a step (ms) | system CPU a step (ms) |")
    print("|---|---|---|---|---|---|")
    for group in groups:
        rounds: dict[str, list[list[dict[str, float]]]] = {way: [] for way in WAYS}
        for r in range(args.rounds):
            for way in list(WAYS) if r % 2 == 0 else list(WAYS)[::-1]:
                rounds[way].append(one(group, args.steps, way))
        for i, text in enumerate(group):
            _table(text, {way: [got[i] for got in done] for way, done in rounds.items()})


def _table(text: str, runs: dict[str, list[dict[str, float]]]) -> None:
    """One configuration's rows: each way's medians over rounds, then the median ratio of its steps."""
    for way, got in runs.items():
        med = {k: float(np.median([g[k] for g in got])) for k in got[0]}
        print(f"| {text} | {way} | {med['loop'] * 1e3:.2f} | {med['faults']:.0f} | {med['cpu'] * 1e3:.1f} | "
              f"{med['system'] * 1e3:.1f} |")  # fmt: skip
    ratio = np.median([s["loop"] / d["loop"] for s, d in zip(runs["steady"], runs["as it comes"], strict=True)])
    print(f"| {text} | steady over as it comes | x{ratio:.3f} | | | |", flush=True)


if __name__ == "__main__":
    main()
