"""`smallest-loss measure`: time one configuration's training step and show XLA's counts beside ours."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from smallest_loss.experiments.args import add_config_args, require_positive, resolve_config
from smallest_loss.timing.measure import measure


def format_measurement(record: dict[str, Any]) -> str:
    """A timing record as a few readable lines: measured time, XLA's numbers, our and the paper's counts."""
    c, counts = record["config"], record["counts"]
    lines = [
        f"d={c['d']} n={c['n']} h={c['h']} w={c['w']} s={c['s']} v={c['v']} b={record['batch']} "
        f"{record['dtype']} on {record['device_kind']}: status {record['status']}"
    ]
    if record["status"] == "ok":
        lines.append(
            f"step: median {record['step_seconds'] * 1e3:.3f} ms (IQR {record['iqr_seconds'] * 1e3:.3f} ms, "
            f"min {record['min_seconds'] * 1e3:.3f} ms, fastest round {record['best_round_seconds'] * 1e3:.3f}"
            f" ms; {record['repeats']} repeats in {record['rounds']} rounds); "
            f"compile {record['compile_seconds']:.2f} s"
        )
    xla = record.get("xla", {})
    if xla:
        lines.append(
            f"XLA: {xla.get('flops', 0):.4g} flops, {xla.get('bytes_accessed', 0):.4g} bytes accessed, "
            f"peak memory {xla.get('peak_bytes', 0) / 2**20:.1f} MiB"
        )
    lines.append(
        f"ours: {counts['flops']:.4g} flops, {counts['bytes']:.4g} bytes, memory estimate "
        f"{counts['memory'] / 2**20:.1f} MiB, {counts['params']:,.0f} parameters"
    )
    lines.append(
        f"paper (per sequence): FLOPS {counts['paper_flops']:.4g}, MEMCPYS {counts['paper_memcpys']:.4g}, "
        f"PARAMS {counts['paper_params']:,.0f}"
    )
    if record["status"] == "ok" and xla.get("flops"):
        lines.append(f"achieved {xla['flops'] / record['step_seconds']:.3g} FLOP/s (XLA flops / median step time)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """`smallest-loss measure`: time one configuration and show its record; 1 when it could not be timed."""
    require_positive(min_seconds=args.min_seconds, rounds=args.rounds)
    config = resolve_config(args.preset, args.overrides)
    record = measure(config.model, config.train.batch_size, min_seconds=args.min_seconds, rounds=args.rounds)
    print(json.dumps(record, indent=2) if args.json else format_measurement(record))
    if record["status"] != "ok":
        what = "does not fit in memory" if record["status"] == "oom" else "could not be measured"
        print(f"error: this configuration {what} ({record['status']}): {record['message']}", file=sys.stderr)
        return 1
    return 0


def add_parser(p: argparse.ArgumentParser) -> None:
    """The `measure` command's arguments."""
    add_config_args(p)
    p.add_argument("--min-seconds", type=float, default=1.0, help="time repeats for at least this long")
    p.add_argument("--rounds", type=int, default=5, help="rounds the repeats are split into")
    p.add_argument("--json", action="store_true", help="print the timing record as JSON")
