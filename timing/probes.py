"""Probe runs: a few short real training runs made at calibration, to measure what a run spends besides its compiled
steps (timing/wallclock.py) with the code that spends it (`model.train.train`: the same step, input pipeline, host
syncs, evaluations and checkpoint saves).

Each probe trains a configuration of the grid (smallest, middle, largest by parameters) for `PROBE_STEPS` steps on
random tokens, syncing every `PROBE_SYNC` steps, evaluating at each third (`PROBE_EVALS`) and saving halfway and at
the end. From its summary (`wall_clock`) and metrics: start-up, compile, the loop's steady step (between syncs that
hold only steps), the evaluations' seconds (the first, which holds the evaluation's first-call costs, apart from
the later ones) and one save's seconds; the loop's step is the median over the intervals between syncs (a slow
spell of the machine in one of them does not make a host cost). Just after it the compiled step alone is timed
again twice as the grid timed it (`bare_seconds`; after, not before: the run is the first thing its fresh process
compiles, as a user's run is): the median of those two and the grid's record is the step the loop's host cost
(loop minus bare) is read against, robust to one of the three caught in a slow spell of a shared machine. Then a
save of its configuration's training state is timed again at its depth and `SAVE_LAYERS` layers deeper
(`state_save_seconds`): the probes' own saves differ in depth and bytes together (the grid's smallest, middle and
largest by parameters), which cannot tell a save's seconds per layer from its seconds per byte apart. They are
kept in the calibration folder's `probes.jsonl`.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.schema import DataConfig, ModelConfig, RunConfig, TrainConfig
from smallest_loss.model.fresh import fresh_code, run_fresh
from smallest_loss.model.host_memory import steady_host_memory
from smallest_loss.model.params import count_params
from smallest_loss.model.runs import RunDir, checkpoint_manager, steady_step_seconds
from smallest_loss.model.sharding import make_mesh, resolve_mesh_shape
from smallest_loss.model.train import run_layout, train
from smallest_loss.timing.measure import cold, compile_step, time_compiled, unwritten
from smallest_loss.timing.models import STATISTICS
from smallest_loss.timing.wallclock import STATE_BYTES_PER_PARAM, WallClock, fit_nonnegative

PROBE_STEPS = 120  # 7 intervals between syncs that hold only steps: their median is the probe's loop step
PROBE_SYNC = 10  # train.log_every's default, the cadence of the runs a plan prices (verify syncs no more often)
PROBES = 3  # probe runs of a calibration (0: none; the profile then prices the steps only)
PROBE_EVALS = 3  # evaluations of a probe, evenly spaced: the first holds one-time costs, the later ones price the rest
SAVE_LAYERS = 3  # a probe's state is also saved this many layers deeper: the saves' seconds per layer
SAVE_REPEATS = 4  # saves of each state timed after a probe (their median)
SAVE_STATE_LIMIT = 2e9  # bytes: a larger state is not saved again (seconds a save; its own run's saves price it)


def pick_probes(records: list[dict[str, Any]], k: int = PROBES) -> list[dict[str, Any]]:
    """k `ok` records spread over the parameter counts (the smallest, the largest, and between)."""
    if k < 1:
        return []
    ok = sorted((r for r in records if r.get("status") == "ok"), key=lambda r: r["counts"]["params"])
    if not ok:
        return []
    picks = sorted({int(round(i)) for i in np.linspace(0, len(ok) - 1, min(k, len(ok)))})
    return [ok[i] for i in picks]


def probe_config(record: dict[str, Any], corpus: Path) -> RunConfig:
    """The run a probe trains: the record's model and batch, evaluated `PROBE_EVALS` times evenly and saved
    halfway and at the end."""
    half = PROBE_STEPS // 2
    train = cold(
        TrainConfig(
            steps=PROBE_STEPS,
            batch_size=record["batch"],
            warmup_steps=1,
            log_every=PROBE_SYNC,
            eval_every=PROBE_STEPS // PROBE_EVALS,
            checkpoint_every=half,
            mesh_data=record.get("device_count", 1),
        )
    )
    model = ModelConfig(**{**record["config"], "dtype": record["dtype"]})
    return RunConfig(model=model, train=train, data=DataConfig(corpus=str(corpus)))


def run_probe(record: dict[str, Any], folder: Path, statistic: str = "median") -> dict[str, Any]:
    """Train one probe in `folder` and return what it measured (see the module docstring)."""
    c, b = record["config"], record["batch"]
    corpus = folder / "tokens.npy"
    size = max(2**18, 8 * b * (c["s"] + 1))
    np.save(corpus, np.random.default_rng(0).integers(0, c["v"], size, dtype=np.int32))
    config = probe_config(record, corpus)
    seconds = PROBE_STEPS * record["step_seconds"]
    with unwritten():  # the process's first compiles, as in a user's run (`fresh_probe`): its start-up pays them
        summary = train(config, folder / "run", progress=False)
    lines = RunDir.open(folder / "run").read_metrics()
    clock = summary["wall_clock"]
    t = config.train
    evals, saves = PROBE_STEPS // t.eval_every, PROBE_STEPS // t.checkpoint_every
    loop = steady_step_seconds(lines, t.checkpoint_every, median=True)
    return dict(
        config=c,
        dtype=record["dtype"],
        batch=b,
        params=record["counts"]["params"],
        step_seconds=record.get(STATISTICS[statistic], record["step_seconds"]),
        bare_seconds=float(
            np.median(
                [*(bare_seconds(config.model, b, t.mesh_data, seconds) for _ in range(2)), record["step_seconds"]]
            )
        ),
        loop_seconds=loop,
        startup=clock["startup"],
        startup_init=clock.get("startup_init"),
        compile=clock["compile"],
        record_compile=record.get("compile_seconds"),
        eval_seconds=clock["evals"] / evals,
        eval_rows=t.eval_batches * t.eval_batch_size,
        eval_batches=t.eval_batches,
        eval_first=clock["evals_first"],
        eval_warm=(clock["evals"] - clock["evals_first"]) / (evals - 1),
        save_seconds=clock["saves"] / saves,
        state_saves=state_saves(config),
    )


def state_saves(config: RunConfig) -> list[dict[str, Any]]:
    """The probe's state saved again at its depth and `SAVE_LAYERS` deeper (`state_save_seconds`): each `n`,
    `params` and `seconds`; none where the deeper state passes `SAVE_STATE_LIMIT` bytes."""
    models = (config.model, dataclasses.replace(config.model, n=config.model.n + SAVE_LAYERS))
    if count_params(models[1]).total * STATE_BYTES_PER_PARAM > SAVE_STATE_LIMIT:
        return []
    return [dict(n=m.n, params=count_params(m).total, seconds=state_save_seconds(m, config.train)) for m in models]


def state_save_seconds(model: ModelConfig, train: TrainConfig, repeats: int = SAVE_REPEATS) -> float:
    """The median seconds of `repeats` checkpoint saves, as a run saves one (`model.runs.checkpoint_manager`), of a
    training state laid out as `model`'s is (`run_layout`) and holding random values (zeros would compress)."""
    config = RunConfig(model=model, train=train)
    _, _, abstract, shardings = run_layout(config, make_mesh(resolve_mesh_shape(train)))
    rng = np.random.default_rng(0)

    def values(a: jax.ShapeDtypeStruct, sharding: Any) -> jax.Array:
        return jax.device_put(rng.random(a.shape, np.float32).astype(a.dtype), sharding)

    state = jax.tree.map(values, abstract, shardings)
    seconds = []
    with tempfile.TemporaryDirectory() as folder:
        manager = checkpoint_manager(Path(folder) / "checkpoints")
        for k in range(repeats):
            began = time.perf_counter()
            manager.save(k, args=ocp.args.StandardSave(state), force=True)
            manager.wait_until_finished()
            seconds.append(time.perf_counter() - began)
        manager.close()
    return float(np.median(seconds))


def bare_seconds(cfg: ModelConfig, b: int, devices: int, seconds: float) -> float:
    """The compiled step's median seconds, timed alone as the grid times it (timing/measure.py) for about
    `seconds` and at least 20 repeats."""
    compiled, inputs, _ = compile_step(cfg, b, devices)
    state, tokens = inputs()
    times, _ = time_compiled(compiled, state, tokens, seconds, 20, 400)
    return float(np.median(times))


def probe_runs(out: Path, records: list[dict[str, Any]], k: int = PROBES) -> list[dict[str, Any]]:
    """The probes of a calibration folder: those `probes.jsonl` holds, and the rest of the k picked (`pick_probes`) run,
    each in a fresh process on a CPU (`fresh_probe`; on an accelerator in this process, which holds the device's
    memory) and a temporary folder and appended to the file as it ends, so that a calibration stopped during a probe
    keeps the probes before it and a rerun runs only those missing (none once the file holds k)."""
    path = out / "probes.jsonl"
    done = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    have = {_probe_key(p) for p in done}
    for record in pick_probes(records, k):
        if len(done) >= k:
            break
        if _probe_key(record) in have:
            continue
        probe = fresh_probe(record) if jax.default_backend() == "cpu" else _probe_here(record)
        with path.open("a") as f:
            f.write(json.dumps(probe) + "\n")
        done.append(probe)
    return done


def fresh_probe(record: dict[str, Any]) -> dict[str, Any]:
    """`run_probe` in a fresh process (`model/fresh.py`), as a user's run starts: in the process that timed the grid,
    a probe's start-up and compile ran 30-70% and 25% longer than in a process of its own."""
    with tempfile.TemporaryDirectory() as folder:
        given, kept = Path(folder) / "record.json", Path(folder) / "probe.json"
        given.write_text(json.dumps(record))
        code = fresh_code("smallest_loss.timing.probes", "probe_process")
        returncode = run_fresh(code, [str(given), folder, str(kept)])
        if returncode != 0 or not kept.is_file():
            raise UserError(f"a probe run's process failed (exit {returncode}, above); rerun the command to resume")
        return json.loads(kept.read_text())


def _probe_here(record: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        return run_probe(record, Path(folder))


def probe_process(record: str, folder: str, out: str) -> None:
    """The child of `fresh_probe`: the probe of the record in file `record` trained in `folder`, its measurements
    written to file `out`; the host's allocator set first, as every command sets it (`model/host_memory.py`)."""
    steady_host_memory()
    probe = run_probe(json.loads(Path(record).read_text()), Path(folder))
    Path(out).write_text(json.dumps(probe))


def _probe_key(p: dict[str, Any]) -> str:
    """What a probe trained (its configuration, dtype and batch), the same in its record and in `probes.jsonl`."""
    return json.dumps([p["config"], p.get("dtype"), p["batch"]], sort_keys=True)


def _loop_held_out(probes: list[dict[str, Any]], held_out_step: list[float], host: bool = True) -> dict[str, float]:
    """The loop's steady step of each probe predicted without it: the time model's held-out step (a fit that never
    saw its architecture) plus the host cost fitted to the other probes (`host`; else none)."""
    errors = []
    for i, p in enumerate(probes):
        others = [q for j, q in enumerate(probes) if j != i]
        h0, h1 = _host_fit(others) if others and host else (0.0, 0.0)
        predicted = held_out_step[i] + h0 + h1 * p["batch"] * (p["config"]["s"] + 1)
        errors.append(abs(predicted / p["loop_seconds"] - 1))
    return dict(mape=float(np.mean(errors)), max_ape=float(np.max(errors)), probes=len(probes))


def host_term(probes: list[dict[str, Any]], held_out_step: list[float]) -> tuple[list[float], dict[str, float]]:
    """The loop's host cost (`_host_fit`) and the loop's held-out error, or no host cost where the fitted one predicts
    the held-out probes' loops worse than none: on a shared 2-core CPU the loop and the compiled step timed beside it
    differ by +-15% from one minute to the next, so three probes can fit a host cost of several milliseconds of
    either sign that is the machine's noise, not the loop's. `loop_held_out` keeps both errors (`mape_with_host`,
    `mape_without_host`)."""
    with_host, without = _loop_held_out(probes, held_out_step), _loop_held_out(probes, held_out_step, host=False)
    both = dict(mape_with_host=with_host["mape"], mape_without_host=without["mape"])
    if len(probes) > 1 and without["mape"] < with_host["mape"]:
        return [0.0, 0.0], dict(without, **both)
    return _host_fit(probes), dict(with_host, **both)


def _bare(probe: dict[str, Any]) -> float:
    """A probe's compiled step seconds: timed just after its run, or (older probes) the grid's record."""
    return probe.get("bare_seconds", probe["step_seconds"])


def _host_fit(probes: list[dict[str, Any]]) -> list[float]:
    """The loop's host seconds per step, h0 + h1 x tokens per step, from each probe's loop step minus its compiled
    step timed just after it (`bare_seconds`; the grid's record in probes of an older calibration). Signed: a loop
    that dispatches ahead can beat the step timed with a wait after every call. The per-token term is fitted from
    4 probes up; with fewer, the median host cost alone (robust to one disturbed probe)."""
    tokens = np.array([p["batch"] * (p["config"]["s"] + 1) for p in probes], float)
    host = np.array([p["loop_seconds"] - _bare(p) for p in probes], float)
    if len(probes) < 4:
        return [float(np.median(host)), 0.0]
    return [float(c) for c in np.linalg.lstsq(np.column_stack([np.ones_like(tokens), tokens]), host, rcond=None)[0]]


def fit_wall_clock(
    probes: list[dict[str, Any]], records: list[dict[str, Any]], held_out_step: list[float]
) -> WallClock | None:
    """The wall-clock terms' coefficients from the probes (and the grid's compile times); `held_out_step` is the
    profile's held-out prediction of each probe's compiled step. None without probes whose loop was timed."""
    probes = [p for p in probes if p.get("loop_seconds")]
    if not probes:
        return None
    ok = [r for r in records if r.get("status") == "ok" and r.get("compile_seconds")]
    layers = np.array([r["config"]["n"] for r in ok], float)
    X = np.column_stack([np.ones_like(layers), layers, [r["counts"]["params"] / 1e6 for r in ok]])
    grid_compile = np.array(fit_nonnegative(X, [r["compile_seconds"] for r in ok]))
    ratios = [p["compile"] / p["record_compile"] for p in probes if p.get("record_compile")]
    n = np.array([p["config"]["n"] for p in probes], float)
    forward, eval_batch, first_call = eval_terms(probes)
    host, held_out = host_term(probes, held_out_step)
    save = save_terms(probes)
    return WallClock(
        host=tuple(host),
        compile=tuple(grid_compile * (float(np.median(ratios)) if ratios else 1.0)),
        forward_fraction=forward,
        save=save[:2],
        startup=tuple(fit_nonnegative(np.column_stack([np.ones_like(n), n]), [p["startup"] for p in probes])),
        loop_held_out=held_out,
        save_per_layer=save[2],
        eval_batch=eval_batch,
        eval_first_call=first_call,
    )


def save_terms(probes: list[dict[str, Any]]) -> tuple[float, float, float]:
    """A save's seconds (s0, s1 per gigabyte of state, s2 per layer; `WallClock.save_seconds`), fitted (non-negative
    least squares) to the probes' saves in their runs and to their states' saves timed after them at two depths
    (`state_saves`), which part the seconds per layer (the checkpointer writes each array apart: on a CPU the arrays,
    not the bytes, price a small model's save) from those per byte. Probes written before `state_saves`: their own
    saves alone, the layer term only where three or more differ in depth."""
    rows = [(p["params"], p["config"]["n"], p["save_seconds"]) for p in probes]
    rows += [(s["params"], s["n"], s["seconds"]) for p in probes for s in p.get("state_saves", ())]
    params, n, seconds = (np.array(column, float) for column in zip(*rows, strict=True))
    gigabytes = params * STATE_BYTES_PER_PARAM / 1e9
    if len(rows) >= 3 and len(set(n)) > 1:
        return tuple(fit_nonnegative(np.column_stack([np.ones_like(n), gigabytes, n]), seconds))
    return (*fit_nonnegative(np.column_stack([np.ones_like(n), gigabytes]), seconds), 0.0)


def eval_terms(probes: list[dict[str, Any]]) -> tuple[float, float, float]:
    """(forward fraction, seconds a batch besides, the first call's one-time seconds) of the evaluation
    (`WallClock.eval_seconds`). A probe's later evaluations (`eval_warm`) price an evaluation; its first
    (`eval_first`) holds the compiled evaluation's first-call costs, which a run on the clock pays at compile. The
    seconds a batch are fitted (non-negative least squares) as e0 + f x (the forward's share of a step's seconds),
    the batch's rows over the step's rows: the three probes' steps differ by tens of times, and a small model's
    evaluation batch costs more than its forward (on this CPU, a d32 model's evaluation took 0.5 of a training step
    per sequence, a d256 one's 0.2). Probes written before the first evaluation was kept apart: the fraction alone,
    the median of their evaluations' over their steps' seconds per sequence, none besides."""
    step = np.array([p.get("bare_seconds", p["step_seconds"]) / p["batch"] for p in probes], float)
    if not all("eval_warm" in p for p in probes):
        per_sequence = np.array([p["eval_seconds"] / p["eval_rows"] for p in probes], float)
        return float(np.median(per_sequence / step)), 0.0, 0.0
    batches = np.array([p["eval_batches"] for p in probes], float)
    rows = np.array([p["eval_rows"] for p in probes], float) / batches
    per_batch = np.array([p["eval_warm"] for p in probes], float) / batches
    first_call = float(np.median([max(p["eval_first"] - p["eval_warm"], 0.0) for p in probes]))
    x = rows * step
    if len(probes) < 2 or np.ptp(x) <= 0.1 * np.max(x):  # steps too alike to part the batch's cost from the forward's
        return float(np.median(per_batch / x)), 0.0, first_call
    e0, f = fit_nonnegative(np.column_stack([np.ones_like(x), x]), per_batch)
    return f, e0, first_call
