"""Training throughput: tokens/s, step time and model FLOPs utilisation, median over repeats; and the training
loop's steady step (fresh batches, host syncs), with and without prefetch, against the compiled step alone.
The compiled step is timed synced after every step and at the loop's cadence (a sync every train.log_every steps,
as calibrate times it); throughput and MFU are the latter's.

    python experiments/scripts/bench_train.py --preset tiny [--set model.d=256 ...] [--repeats 20]
    python experiments/scripts/bench_train.py --preset tiny --devices 1,2,4,8      # scaling over a device mesh

FLOPs are our exact training-step count (timing/counts.py). MFU = FLOPs / step time / the device's dense
peak (configs/devices.py: bf16 peak for half-precision compute, fp32 otherwise); where no peak is known
(CPU) it prints the achieved FLOP/s. With --devices, each count runs data-parallel with the per-device
batch fixed (global batch = per-device batch x devices); on CPU the devices are simulated
(--xla_force_host_platform_device_count) and share the same cores, so the scaling says nothing about
real hardware, and the script says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    parser.add_argument("--repeats", type=int, default=20, help="timed steps (after 3 warm-up steps)")
    parser.add_argument("--devices", help="comma-separated device counts to compare, e.g. 1,2,4,8")
    return parser.parse_args(argv)


def _force_host_devices(counts: list[int]) -> None:
    """Simulate CPU devices; must happen before JAX is imported (and does nothing on accelerators)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={max(counts)}".strip()


def bench(config, devices: int, repeats: int) -> dict:
    """Median step time of the real (sharded) training step over `devices` devices."""
    import jax
    from smallest_loss.model.sharding import batch_sharding, make_mesh, put_batch, resolve_mesh_shape
    from smallest_loss.model.train import init_sharded_state, jit_sharded_step, make_optimizer
    from smallest_loss.timing.counts import train_step_flops
    from smallest_loss.timing.measure import time_compiled

    m, t = config.model, config.train
    optimizer = make_optimizer(t, 1000)
    mesh = make_mesh(resolve_mesh_shape(t, jax.device_count()))
    graphdef, state, shardings = init_sharded_state(m, optimizer, t.seed, mesh)
    step = jit_sharded_step(graphdef, optimizer, shardings, mesh)
    tokens = jax.random.randint(jax.random.key(0), (t.batch_size, m.s + 1), 0, m.v)
    tokens = put_batch(jax.device_get(tokens), batch_sharding(mesh))
    # The step synced after every step (3 warm-up steps first), then at the loop's cadence (a sync every
    # train.log_every steps), as calibrate times it.
    times, state = time_compiled(step, state, tokens, 0.0, repeats, repeats, warmup=3, sync_every=1)
    steps = max(repeats, 3 * t.log_every)
    bursts, state = time_compiled(step, state, tokens, 0.0, steps, steps, warmup=0, sync_every=t.log_every)
    seconds = statistics.median(bursts)
    loops, state = bench_loops(step, state, config, mesh, repeats)
    flops = float(
        train_step_flops(
            m.d, m.n, m.h, m.w, m.s, m.v, t.batch_size, activation=m.activation, norm=m.norm, tied=m.tied_embeddings
        )
    )
    return dict(
        devices=devices,
        batch=t.batch_size,
        step_seconds=seconds,
        synced_seconds=statistics.median(times),
        tokens_per_second=t.batch_size * m.s / seconds,
        flops_per_step=flops,
        flops_per_second=flops / seconds,
        spread=(min(times), max(times)),
        **loops,
    )


def bench_loops(step, state, config, mesh, repeats: int, rounds: int = 3) -> tuple[dict, object]:
    """The training loop's steady step (timing/loop.py) on fresh batches of a random corpus, with and without
    prefetch, alternated over `rounds` rounds of `repeats` steps (a shared machine's drift hits both); medians."""
    import numpy as np
    from smallest_loss.model.data import batch
    from smallest_loss.model.sharding import batch_sharding, put_batch
    from smallest_loss.timing.loop import loop_seconds

    m, t = config.model, config.train
    corpus = np.random.default_rng(0).integers(0, m.v, 2**20, dtype=np.int32)
    sharding = batch_sharding(mesh)
    out: dict[str, list[float]] = {"loop_seconds": [], "loop_plain_seconds": []}
    for r in range(rounds):
        for key, prefetch in (("loop_plain_seconds", False), ("loop_seconds", True)):
            seconds, state = loop_seconds(
                step,
                state,
                lambda k: batch(corpus, t.seed, k, t.batch_size, m.s),
                lambda x: put_batch(x, sharding),
                repeats,
                sync_every=t.log_every,
                prefetch=prefetch,
                start=r * repeats,
            )
            out[key].append(seconds)
    return {key: statistics.median(values) for key, values in out.items()}, state


def _peak(dtype: str) -> tuple[float | None, str]:
    import jax
    from smallest_loss.configs.devices import find_device

    device = find_device(jax.devices()[0].device_kind)
    if device is None:
        return None, jax.devices()[0].device_kind
    half = dtype in ("bfloat16", "float16")
    return (device.peak_bf16_flops if half else device.peak_fp32_flops), device.name


def _report(row: dict, peak: float | None, name: str) -> str:
    line = (
        f"devices {row['devices']}: batch {row['batch']}, step {row['step_seconds'] * 1e3:.2f} ms median at the "
        f"loop's cadence (synced after every step: {row['synced_seconds'] * 1e3:.2f} ms, min "
        f"{row['spread'][0] * 1e3:.2f}, max {row['spread'][1] * 1e3:.2f}), "
        f"{row['tokens_per_second']:,.0f} tokens/s, {row['flops_per_second']:.3g} FLOP/s"
    )
    if peak:
        line += f", MFU {row['flops_per_second'] / (peak * row['devices']):.1%} of {name} peak {peak:.3g}"
    bare, plain, fed = row["step_seconds"], row["loop_plain_seconds"], row["loop_seconds"]
    line += (
        "\n  training loop (fresh batches, a host sync every train.log_every steps): "
        f"{plain * 1e3:.2f} ms a step without prefetch ({plain / bare - 1:+.1%} against the compiled step at that "
        "cadence), "
        f"{fed * 1e3:.2f} ms with prefetch ({fed / bare - 1:+.1%}); prefetch gains {1 - fed / plain:.1%}"
    )
    return line


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    counts = [int(x) for x in args.devices.split(",")] if args.devices else [1]
    if args.devices:
        _force_host_devices(counts)
    import jax
    from smallest_loss.configs.models import get_preset
    from smallest_loss.configs.overrides import apply_overrides

    config = apply_overrides(get_preset(args.preset), args.overrides)
    peak, name = _peak(config.model.dtype)
    m = config.model
    print(
        f"preset {args.preset}: d={m.d} n={m.n} h={m.h} w={m.w} s={m.s} v={m.v} {m.dtype}; "
        f"backend {jax.default_backend()}, {jax.device_count()} devices ({jax.devices()[0].device_kind})"
    )
    if jax.default_backend() == "cpu" and args.devices:
        print("note: these CPU devices are simulated and share the same cores; scaling here is not hardware scaling")
    base = None
    for k in counts:
        if k > jax.device_count():
            print(f"devices {k}: skipped, only {jax.device_count()} present")
            continue
        train = dataclasses.replace(config.train, batch_size=config.train.batch_size * k, mesh_data=k, mesh_fsdp=1)
        row = bench(dataclasses.replace(config, train=train), k, args.repeats)
        base = base or row
        print(
            _report(row, peak, name)
            + (
                f"; throughput x{row['tokens_per_second'] / base['tokens_per_second']:.2f}"
                f" vs {base['devices']} device(s)"
                if args.devices
                else ""
            )
        )


if __name__ == "__main__":
    main()
