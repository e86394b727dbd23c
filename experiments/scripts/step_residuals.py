"""Where a step-time model misses, over several calibrations of one grid: each configuration's held-out error in every
calibration (as `calibrate` cross-validates it), its mean and spread across them, and two named costs tested as the
cause.

    python experiments/scripts/step_residuals.py CALIBRATION ... [--model ID] [--matmuls] [--cold-warm OUT]

CALIBRATION: folders written by `calibrate --grid` (records.jsonl, device.json, noise.json), or .tar.gz files of
them (results/cpu/calibrations/); a residual that keeps its sign across calibrations is the model's, one that does
not is the machine's noise.

`--matmuls`: every configuration's matmuls (the dense layers' and attention's, forward and both gradients) timed one
by one in isolation on this machine, their seconds a step used as the model's matmul features in place of the counted
FLOPs (`exact-grouped-thrash` with measured matmuls): if kernels that run some shapes faster than others explain the
residual, this model predicts better.

The table also gives each configuration's error against the host's memory bandwidth as each calibration measured
it (`device.json`'s `bandwidth`: a shared host's co-tenants take some of it): a residual that moves with it is the
host's state, not the configuration's alone.

`--cold-warm OUT`: the first calibration's grid timed again as `calibrate` times it (interleaved rounds: each round of
a configuration runs right after another configuration's, its caches cold) and, right after each such round, once
more (its own data in cache, as in the training loop), both written to OUT and compared: if the switch between
configurations explains the residual, the warm times are the better predicted. Results: results/cpu/quickstart/README.md
(stop 47).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.experiments.scripts.refit_calibrations import calibration_folders
from smallest_loss.timing import models
from smallest_loss.timing.calibration import default_rounds, read_records, round_share
from smallest_loss.timing.retime import noise_floor_of

MATMUL_REPEATS = 7
KEY = ("v", "d", "n", "h", "w", "s")  # a configuration's fields in `config_key`, then its batch
FOLDS = 5  # timing.models.cross_validate's folds


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("calibrations", nargs="+", metavar="CALIBRATION", help="calibration folders or .tar.gz")
    parser.add_argument("--model", default="exact-grouped-thrash", help="the step-time model (timing/models.py id)")
    parser.add_argument("--matmuls", action="store_true", help="time each configuration's matmuls alone")
    parser.add_argument("--cold-warm", type=Path, metavar="OUT", help="time the grid cold and warm into OUT")
    return parser.parse_args(argv)


def load(folder: Path) -> tuple[list[dict[str, Any]], dict[str, Any], float]:
    """A calibration folder's ok records, its device rates and its noise floor (nan where it has none)."""
    if not (folder / "records.jsonl").exists() or not (folder / "device.json").exists():
        raise UserError(f"{folder}: not a calibration folder (records.jsonl and device.json)")
    records = [r for r in read_records(folder / "records.jsonl") if r.get("status") == "ok"]
    floor = noise_floor_of(folder)
    floor = float("nan") if floor is None else floor
    return records, json.loads((folder / "device.json").read_text()), floor


def config_key(record: dict[str, Any]) -> tuple[int, ...]:
    """(v, d, n, h, w, s, batch) of a record."""
    return (*(record["config"][k] for k in KEY), record["batch"])


def held_out_errors(model: Any, records: list[dict[str, Any]], device: dict[str, Any]) -> tuple[float, np.ndarray]:
    """The model's held-out mean error and each record's held-out error (predicted / measured - 1)."""
    cols = models.shape_columns(records)
    cv = models.cross_validate(model, cols, models.with_working_set_ratio(dict(device), cols))
    if "held_out" not in cv:  # e.g. a thrash model on a calibration that did not record its last-level cache
        raise UserError(f"{model.id}: {cv['error']}; choose another --model")
    return cv["held_out"]["mape"], cv["predicted"] / cols["time"] - 1


def with_bandwidth(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    """(correlation, slope per GB/s) of a configuration's errors against its calibrations' measured bandwidths
    (GB/s, error) pairs; nan where fewer than 3 calibrations measured one or they all measured the same."""
    x, y = np.array(pairs, dtype=float).reshape(-1, 2).T
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    return float(np.corrcoef(x, y)[0, 1]), float(np.polyfit(x, y, 1)[0])


def halves_by_bandwidth(
    by_bandwidth: dict[tuple[int, ...], list[tuple[float, float]]], median: float
) -> tuple[np.ndarray, np.ndarray]:
    """Each configuration's mean error over the calibrations below `median` GB/s and over those at or above it (the
    configurations timed in both)."""
    low, high = [], []
    for pairs in by_bandwidth.values():
        x, y = np.array(pairs, dtype=float).reshape(-1, 2).T
        if np.any(x < median) and np.any(x >= median):
            low.append(y[x < median].mean())
            high.append(y[x >= median].mean())
    return np.array(low), np.array(high)


def _timed(fn: Any, *args: Any) -> float:
    """Median seconds of a jitted call (bursts of calls long enough for the clock, `MATMUL_REPEATS` of them)."""
    import jax

    jax.block_until_ready(fn(*args))
    calls = 1
    while True:
        start = time.perf_counter()
        jax.block_until_ready([fn(*args) for _ in range(calls)])
        if time.perf_counter() - start > 0.05:
            break
        calls *= 2
    times = []
    for _ in range(MATMUL_REPEATS):
        start = time.perf_counter()
        jax.block_until_ready([fn(*args) for _ in range(calls)])
        times.append((time.perf_counter() - start) / calls)
    return float(np.median(times))


def matmul_seconds(key: tuple[int, ...], cache: dict[tuple, float]) -> tuple[float, float]:
    """(dense, attention) seconds of one training step's matmuls, each shape timed alone (forward and both
    gradients: x @ w, g @ w.T, x.T @ g; attention as XLA's causal dot-product attention and its vector-Jacobian
    product), the dense layers' times n and the output layer's once."""
    import jax
    import jax.numpy as jnp

    v, d, n, h, w, s, b = key
    m = b * s

    def dense(k: int, c: int) -> float:
        if ("dense", m, k, c) not in cache:
            x, W, g = jnp.full((m, k), 0.01), jnp.full((k, c), 0.01), jnp.ones((m, c))
            cache["dense", m, k, c] = _timed(jax.jit(lambda x, W, g: (x @ W, g @ W.T, x.T @ g)), x, W, g)
        return cache["dense", m, k, c]

    if ("attention", b, s, h, d) not in cache:
        q = jnp.full((b, s, h, d // h), 0.01)

        def attention(q: Any, k: Any, v: Any) -> Any:
            y, vjp = jax.vjp(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True), q, k, v)
            return y, vjp(jnp.ones_like(y))

        cache["attention", b, s, h, d] = _timed(jax.jit(attention), q, q, q)
    layer = dense(d, 3 * d) + dense(d, d) + dense(d, w) + dense(w, d)
    return n * layer + dense(d, v), n * cache["attention", b, s, h, d]


def measured_matmul_model(seconds: dict[tuple[int, ...], tuple[float, float]]) -> Any:
    """`exact-grouped-thrash` with its dense and attention matmul terms replaced by their measured seconds."""

    def feature(part: int) -> Any:
        def column(c: dict[str, np.ndarray], _: Any) -> np.ndarray:
            keys = zip(*(c[k].astype(int) for k in (*KEY, "b")), strict=True)
            return np.array([seconds[key][part] for key in keys])

        return column

    rest = models.get_model("exact-grouped-thrash").features[2:]  # element-wise, optimizer, layers, thrashed bytes
    return models.TimeModel("measured-matmuls", "matmuls timed alone", (feature(0), feature(1), *rest), True, "")


def cold_warm(folder: Path, out: Path, min_seconds: float = 0.5, repeats: int = 20, rounds: int | None = None) -> None:
    """Time `folder`'s configurations in interleaved rounds as the quickstart's `calibrate` does (cold; rounds: the
    device's default), and again right after each round (warm); write records_cold.jsonl and records_warm.jsonl (with
    device.json) to `out`."""
    import shutil
    from dataclasses import replace

    from smallest_loss.configs.schema import ModelConfig
    from smallest_loss.timing.measure import finish, prepare, time_compiled

    records, _, _ = load(folder)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(folder / "device.json", out / "device.json")
    items = [prepare(ModelConfig(**{**r["config"], "dtype": r["dtype"]}), r["batch"]) for r in records]
    times: dict[str, list[list[list[float]]]] = {"cold": [[] for _ in items], "warm": [[] for _ in items]}
    rounds = rounds or default_rounds()
    per_round, least = round_share(min_seconds, repeats, rounds)
    for _ in range(rounds):
        for i, item in enumerate(items):
            for kind in ("cold", "warm") if item.live else ():
                taken, item.state = time_compiled(
                    item.compiled, item.state, item.tokens, per_round, least, 1000, warmup=0, estimate=item.estimate
                )
                times[kind][i].append(taken)
    for kind, taken_of in times.items():
        with open(out / f"records_{kind}.jsonl", "w") as f:
            for item, taken in zip(items, taken_of, strict=True):
                f.write(json.dumps(finish(replace(item, record=dict(item.record), rounds=taken))) + "\n")


def report(args: argparse.Namespace, folders: list[Path]) -> None:
    model = models.get_model(args.model)
    loaded = [(folder, *load(folder)) for folder in folders]
    errors: dict[tuple[int, ...], list[float]] = {}
    by_bandwidth: dict[tuple[int, ...], list[tuple[float, float]]] = {}
    rows = []
    for folder, records, device, floor in loaded:
        mape, err = held_out_errors(model, records, device)
        rows.append((folder, mape, floor))
        for record, e in zip(records, err, strict=True):
            errors.setdefault(config_key(record), []).append(float(e))
            by_bandwidth.setdefault(config_key(record), []).append((device.get("bandwidth", np.nan) / 1e9, float(e)))
    mapes, floors = np.array([r[1] for r in rows]), np.array([r[2] for r in rows])
    print(f"{model.id}: held-out mean error over {len(rows)} calibrations, median {np.median(mapes):.1%}; within "
          f"twice the noise floor in {int(np.sum(mapes <= 2 * floors))}")  # fmt: skip
    bandwidth = {key: with_bandwidth(pairs) for key, pairs in by_bandwidth.items()}
    print("\n| configuration (d, n, h, w, s, batch) | calibrations | mean error | spread | correlation with bandwidth "
          "| error per GB/s |\n|---|---|---|---|---|---|")  # fmt: skip
    for key, e in sorted(errors.items(), key=lambda kv: -abs(np.mean(kv[1]))):
        r, slope = bandwidth[key]
        read = (f"{r:+.2f}", f"{slope * 100:+.1f} points") if np.isfinite(r) else ("n/a", "n/a")
        print(f"| {key[1:]} | {len(e)} | {np.mean(e):+.1%} | {np.std(e):.1%} | {read[0]} | {read[1]} |")
    means = np.array([np.mean(e) for e in errors.values()])
    print(f"\nroot mean square of the configurations' mean errors: {np.sqrt(np.mean(means**2)):.1%}")
    moving = [key for key, (r, _) in bandwidth.items() if abs(r) >= 0.5]  # either sign
    rates = np.array([device.get("bandwidth", np.nan) for _, _, device, _ in loaded]) / 1e9
    if np.isfinite(rates).sum() >= 3:
        print(f"the calibrations measured {np.nanmin(rates):.2f}-{np.nanmax(rates):.2f} GB/s; the errors of "
              f"{len(moving)} of {len(errors)} configurations correlate with it at 0.5 or more")  # fmt: skip
        low, high = halves_by_bandwidth(by_bandwidth, float(np.nanmedian(rates)))
        print(f"the configurations' mean errors in the calibrations below the median bandwidth and in those above "
              f"it correlate at {np.corrcoef(low, high)[0, 1]:+.2f} (root mean square {np.sqrt(np.mean(low**2)):.1%} "
              f"and {np.sqrt(np.mean(high**2)):.1%})")  # fmt: skip
    if args.matmuls:
        cache: dict[tuple, float] = {}
        seconds = {key: matmul_seconds(key, cache) for key in errors}
        measured = measured_matmul_model(seconds)
        with_matmuls = np.array([held_out_errors(measured, r, d)[0] for _, r, d, _ in loaded])
        print(f"\nmatmuls timed alone as features: held-out mean error median {np.median(with_matmuls):.1%} "
              f"(counted FLOPs: {np.median(mapes):.1%}); within twice the floor in "
              f"{int(np.sum(with_matmuls <= 2 * floors))} of {len(rows)}")  # fmt: skip


def compare_cold_warm(out: Path, model: str) -> None:
    """Print the model's held-out error on the cold and the warm records of `out`, and their steps' ratio."""
    device = json.loads((out / "device.json").read_text())
    seconds = {}
    for kind in ("cold", "warm"):
        records = [r for r in read_records(out / f"records_{kind}.jsonl") if r.get("status") == "ok"]
        seconds[kind] = {config_key(r): r["step_seconds"] for r in records}
        if len(records) >= 2 * FOLDS:  # what the cross-validation needs
            mape, _ = held_out_errors(models.get_model(model), records, device)
            print(f"{kind}: {model} held out {mape:.1%} over {len(records)} configurations")
    ratio = np.array([seconds["cold"][k] / seconds["warm"][k] for k in seconds["cold"] if k in seconds["warm"]])
    print(f"cold / warm step: median {np.median(ratio):.3f}, {ratio.min():.3f} to {ratio.max():.3f}; median "
          f"|difference| {np.median(np.abs(ratio - 1)):.1%}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    with tempfile.TemporaryDirectory() as scratch:
        folders = calibration_folders(args.calibrations, Path(scratch))
        if not folders:
            raise UserError(f"no calibration (records.jsonl) under {' '.join(args.calibrations)}")
        if args.cold_warm:
            cold_warm(folders[0], args.cold_warm)
            compare_cold_warm(args.cold_warm, args.model)
        report(args, folders)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
