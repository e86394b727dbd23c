"""Where one training step's time goes, op by op, on this backend: the compiled step (as `calibrate` compiles it) run
under JAX's profiler, each of XLA's ops (an HLO instruction of the step: a fusion, a dot, a copy) with its seconds a
step and its output shape, and the ops grouped by kind (the name without its number: `copy_bitcast_fusion`,
`ynn_fusion`, ...). For a step-time model's residual, the profile names the work that the counts price wrongly.

    python experiments/scripts/step_profile.py --set model.d=256 --set model.n=1 --set model.h=16 --set model.w=1024
    python experiments/scripts/step_profile.py --calibration FOLDER [--model ID]

`--calibration`: every configuration a calibration timed (a folder `calibrate` wrote), profiled, its ops sorted into
three classes by XLA's metadata (matmuls, the optimizer's update, the rest: element-wise work, reductions, copies)
and each class's seconds (scaled to the calibration's step) set against its count (the matmuls' FLOPs, the element-
wise elements, the parameters). Each class is then fitted alone, its time on its count, the layers and a constant
(three free rates a class, and the element-wise work also on the step-time model's two cache costs: eleven in all,
in sample), and the table gives each class's residual beside the step-time model's held-out error: where the model
misses and every class's own fit prices its ops, a cost between the classes is missing; where the classes' own fits
miss as much, the time does not follow the counts within the class.

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

import numpy as np

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


CLASSES = ("matmuls", "element-wise", "optimizer")
_METADATA = re.compile(r'op_name="([^"]*)"')
_OPCODE = re.compile(r"\s*(?:ROOT )?%?([\w.\-]+) = \S+ (\w+)\(")


def op_classes(hlo_text: str) -> dict[str, str]:
    """Each instruction of the entry computation -> its class: `matmuls` (XLA's `dot`s and the fusions of a
    `dot_general`), `optimizer` (the work after the gradient: an op named by JAX outside any `jvp`) or `element-wise`
    (the forward and backward passes' other work)."""
    classes: dict[str, str] = {}
    entry = hlo_text[hlo_text.find("ENTRY") :] if "ENTRY" in hlo_text else hlo_text
    for line in entry.splitlines():
        m = _OPCODE.match(line)
        if not m:
            continue
        meta = _METADATA.search(line)
        op = meta.group(1) if meta else ""
        if m.group(2) == "dot" or "dot_general" in op:
            cls = "matmuls"
        elif op and "jvp" not in op:
            cls = "optimizer"
        else:
            cls = "element-wise"
        classes.setdefault(m.group(1), cls)
    return classes


def class_seconds(seconds: dict[str, float], classes: dict[str, str], step: float) -> np.ndarray:
    """Seconds a step of each class (`CLASSES` order), the ops' own seconds scaled so that they add up to `step`
    (ops that run on several threads at once count whole in the profile)."""
    total = sum(seconds.values())
    out = np.zeros(len(CLASSES))
    for name, s in seconds.items():
        out[CLASSES.index(classes.get(name, "element-wise"))] += s
    return out * (step / total if total > 0 else 0.0)


def class_residuals(times: np.ndarray, features: list[np.ndarray], steps: np.ndarray) -> np.ndarray:
    """Each class's residual (fitted - measured seconds; configurations x classes), the class fitted alone on its
    features (`features[j]`: configurations x its features): non-negative rates minimising the errors relative to
    the step (a class's error counts as much as it moves the step)."""
    from smallest_loss.timing.models import fit_coefficients

    residuals = np.zeros_like(times)
    for j, X in enumerate(features):
        residuals[:, j] = X @ fit_coefficients(X, times[:, j], relative_to=steps) - times[:, j]
    return residuals


def profile(config: Any, steps: int, folder: Path) -> tuple[dict[str, float], dict[str, str], float, dict[str, str]]:
    """Profile `steps` compiled training steps of `config` into `folder`: (seconds a step of each op, the ops' output
    shapes, the step's wall-clock seconds, the ops' classes `op_classes`)."""
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
    hlo = compiled.as_text()
    shapes = output_shapes(hlo)
    return op_seconds(events, shapes, steps), shapes, step, op_classes(hlo)


def calibration_report(folder: Path, model_id: str, steps: int) -> list[str]:
    """`--calibration`: every configuration of a calibration profiled and its ops' classes set against their counts
    and the step-time model's held-out error (the module's docstring)."""
    from smallest_loss.configs.models import get_preset
    from smallest_loss.configs.overrides import apply_overrides
    from smallest_loss.experiments.scripts.step_residuals import held_out_errors, load
    from smallest_loss.timing import models
    from tqdm.auto import tqdm

    records, device, floor = load(folder)
    model = models.get_model(model_id)
    held_out, errors = held_out_errors(model, records, device)
    cols = models.shape_columns(records)
    counts = np.column_stack([
        models._dense_flops(cols, device) + models._attention_flops(cols, device),
        models._terms("width", "hidden", "scores", "logits")(cols, device),
        models._term("optimizer")(cols, device),
    ])  # fmt: skip
    times = np.zeros((len(records), len(CLASSES)))
    for i, record in enumerate(tqdm(records, desc="profiling", unit="configuration", leave=False)):
        c = record["config"]
        sets = [f"model.{k}={c[k]}" for k in ("v", "d", "n", "h", "w", "s")] + [f"train.batch_size={record['batch']}"]
        with tempfile.TemporaryDirectory() as scratch:
            seconds, _, step, classes = profile(apply_overrides(get_preset("tiny"), sets), steps, Path(scratch))
        times[i] = class_seconds(seconds, classes, cols["time"][i])
    tuned = models.fit_model(model, cols, models.with_working_set_ratio(dict(device), cols))[1]
    layers, ones = cols["n"].astype(float), np.ones(len(records))
    cache = [models._llc_cliff_bytes(cols, tuned), models._aliased_hidden_transpose(cols, tuned)]
    features = [np.column_stack([counts[:, j], layers, ones, *(cache if j == 1 else [])]) for j in range(3)]
    residuals = class_residuals(times, features, cols["time"])
    t = cols["time"][:, None]
    lines = [
        f"{folder.name}: {model.id} held out at {held_out:.1%} (noise floor {floor:.1%}); each class fitted alone on "
        f"its count, the layers and a constant (the element-wise work also on the model's cache costs) leaves "
        f"{np.mean(np.abs(residuals.sum(1) / cols['time'])):.1%} (in sample)",
        "",
        "| configuration | step ms | model held out | matmuls ms (ps a FLOP) | element-wise ms (ps an element) "
        "| optimizer ms (ps a parameter) | classes' own fits: matmuls | element-wise | optimizer | sum |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i in np.argsort(-np.abs(errors)):
        c = records[i]["config"]
        rates = " | ".join(f"{times[i, j] * 1e3:.2f} ({times[i, j] / counts[i, j] * 1e12:.1f})" for j in range(3))
        fits = " | ".join(f"{r:+.1%}" for r in residuals[i] / t[i])
        lines.append(
            f"| d{c['d']}-n{c['n']}-h{c['h']}-w{c['w']} | {t[i, 0] * 1e3:.2f} | {errors[i]:+.1%} | {rates} | {fits} "
            f"| {residuals[i].sum() / t[i, 0]:+.1%} |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--set", dest="overrides", action="append", metavar="SECTION.FIELD=VALUE")
    parser.add_argument("--steps", type=int, default=20, help="steps profiled (default 20)")
    parser.add_argument("--top", type=int, default=12, help="ops listed (default 12)")
    parser.add_argument("--out", help="keep the profiler's trace in this folder")
    parser.add_argument("--calibration", type=Path, help="profile every configuration of this calibration folder")
    parser.add_argument("--model", default="exact-grouped-alias", help="with --calibration: the step-time model")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.top < 1:
        parser.error("--steps and --top must be at least 1")
    if args.calibration and (args.overrides or args.out):
        parser.error("--calibration profiles the calibration's configurations: drop --set and --out")
    from smallest_loss.configs.models import get_preset
    from smallest_loss.configs.overrides import apply_overrides
    from smallest_loss.experiments.cli import prepare_process

    prepare_process()
    if args.calibration:
        print("\n".join(calibration_report(args.calibration, args.model, args.steps)))
        return
    config = apply_overrides(get_preset(args.preset), DEFAULT_SETS if args.overrides is None else args.overrides)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.out) if args.out else Path(scratch)
        seconds, shapes, step, _ = profile(config, args.steps, folder)
    print("\n".join(report(seconds, shapes, step, args.top)))


if __name__ == "__main__":
    main()
