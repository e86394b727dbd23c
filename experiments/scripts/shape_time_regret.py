"""Width against depth at a wall-clock budget, train-free: leave one model (shape) out of a table of cooled-down runs
with measured step times (results/cpu/shape/gemstones_cool_end.csv, Gemstones on MI250X), fit a step-time model and
each loss law on the other models, let law + step-time model pick the model and token count at each budget among
all models (the held-out one included), and score the pick by its measured loss at that budget.

    python experiments/scripts/shape_time_regret.py [TABLE] [--budgets 83,117,166,235,333] [--terms ...]
        [--seq-len 2048] [--cpu results/cpu/shape/points.csv] [--out FILE.json]

- Step-time model (`--step-model`): node-seconds per step = c_dense 6 N b + c_attn 12 n d s b + c_sync N k
  + c_tok b (b tokens per step, s the sequence length, k nodes): the dense matmul FLOPs and the attention-score FLOPs
  priced apart, the data-parallel gradient all-reduce, N values through every node each step, and the per-token
  work outside the matmuls' FLOPs, memory-bound (the logits' softmax and cross-entropy over the vocabulary, the
  input pipeline) (`tokens`, the default: the lowest leave-one-model-out step-time error on Gemstones, 3.8% mean
  against 5.8%; `sync`: without the last term; `flops`: the first two alone). Non-negative coefficients fitted by
  relative-error least squares (`timing.models.fit_coefficients`, the step-time models' fit) to the other models'
  measured seconds per step x nodes. Each model is scored at its own node count, the one it was measured at.
  `measured`: each model's own measured step time (no step-time model: what the laws alone would pick).
- Laws: the N-D law (Chinchilla form, Approach 3) and the shape-aware law with each shape term
  (scaling/shape_terms.py), fitted to every cool-down point of the other models.
- At budget T node-seconds a model buys D = T / (predicted node-seconds per step) x b tokens; the law's pick is the
  model of lowest predicted loss at its D, among the models whose measured points span T (the others have no
  measured loss there). Its measured loss at T is read off its own cool-down points linearly in log node-seconds.
- Regret = measured loss of the pick / best measured loss at T - 1; per budget the mean (and worst) over the folds.
- `--loso`: each term's leave-one-shape-out error (scaling/holdout.py) on the table too; `--cpu`: on a second table;
  `--no-regret`: only the table's (then any fit CSV with columns d and n).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from smallest_loss.scaling.aspect import AspectPoints, fit_aspect, read_aspect_csv
from smallest_loss.scaling.holdout import leave_one_shape_out
from smallest_loss.scaling.shape_terms import TERMS
from smallest_loss.timing.models import fit_coefficients

TABLE = Path("results/cpu/shape/gemstones_cool_end.csv")
BUDGETS = (83.0, 117.0, 166.0, 235.0, 333.0)  # node-hours: 83 to 333 geometrically, where most models have points


@dataclass(frozen=True)
class Model:
    """One model's cool-down points: its counts, tokens per step, and loss against node-seconds."""

    name: str
    N: float
    d: float
    n: float
    tokens_per_step: float
    nodes: float
    node_seconds_per_step: float
    node_seconds: np.ndarray
    loss: np.ndarray

    def measured_loss(self, T: float) -> float | None:
        """The loss at T node-seconds, linear in log node-seconds between its points; None outside them."""
        t = np.log(self.node_seconds)
        if not t[0] <= np.log(T) <= t[-1]:
            return None
        return float(np.interp(np.log(T), t, self.loss))


def read_models(path: Path) -> list[Model]:
    """The table's rows grouped by run (columns run, N, D, loss, d, n, steps, nodes, seconds_per_step)."""
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    models = []
    for name in dict.fromkeys(r["run"] for r in rows):
        rs = sorted((r for r in rows if r["run"] == name), key=lambda r: float(r["D"]))
        first = rs[0]
        per_step = float(first["seconds_per_step"]) * float(first["nodes"])
        steps = np.array([float(r["steps"]) for r in rs])
        models.append(Model(name, float(first["N"]), float(first["d"]), float(first["n"]),
                            float(first["D"]) / float(first["steps"]), float(first["nodes"]), per_step,
                            steps * per_step,
                            np.array([float(r["loss"]) for r in rs])))  # fmt: skip
    return models


STEP_MODELS = ("tokens", "sync", "flops", "measured")  # measured: each model's own step time (the oracle)
STEP_COLUMNS = {"flops": 2, "sync": 3, "tokens": 4}


def step_features(models: list[Model], seq_len: int, step_model: str = "tokens") -> np.ndarray:
    """Per model: dense FLOPs 6 N b and attention FLOPs 12 n d s b of one step (b tokens per step), with `sync` the
    gradient all-reduce's N k (k nodes), and with `tokens` also b, the per-token work outside the matmuls' FLOPs
    (the logits' softmax and cross-entropy over the vocabulary, memory-bound; the input pipeline)."""
    X = [[6 * m.N * m.tokens_per_step, 12 * m.n * m.d * seq_len * m.tokens_per_step, m.N * m.nodes,
          m.tokens_per_step] for m in models]  # fmt: skip
    return np.array(X)[:, : STEP_COLUMNS[step_model]]


def fit_step_time(models: list[Model], seq_len: int, step_model: str = "tokens") -> np.ndarray:
    """Non-negative coefficients of node-seconds per step, relative-error least squares."""
    X = step_features(models, seq_len, step_model)
    return fit_coefficients(X, np.array([m.node_seconds_per_step for m in models]))


def step_time_loso(models: list[Model], seq_len: int, step_model: str) -> dict[str, float]:
    """Each model's step time predicted by the step-time model fitted to the others: mean and worst |relative error|
    (how the default step-time model was chosen)."""
    X, y = step_features(models, seq_len, step_model), np.array([m.node_seconds_per_step for m in models])
    errors = [abs(X[k] @ fit_coefficients(np.delete(X, k, 0), np.delete(y, k)) / y[k] - 1) for k in range(len(y))]
    return dict(mean=float(np.mean(errors)), worst=float(np.max(errors)))


def pick(models: list[Model], predict: Any, coef: np.ndarray, seq_len: int, T: float,
         step_model: str = "tokens") -> int | None:  # fmt: skip
    """Index of the model the law predicts lowest at T node-seconds among those with a measured loss there."""
    ok = [i for i, m in enumerate(models) if m.measured_loss(T) is not None]
    if not ok:
        return None
    if step_model == "measured":
        per_step = np.array([models[i].node_seconds_per_step for i in ok])
    else:
        per_step = step_features([models[i] for i in ok], seq_len, step_model) @ coef
    sub = [models[i] for i in ok]
    D = T / per_step * np.array([m.tokens_per_step for m in sub])
    N, d, n = (np.array([getattr(m, k) for m in sub]) for k in ("N", "d", "n"))
    return ok[int(np.argmin(predict(N, D, d, n)))]


def regret(models: list[Model], i: int | None, T: float) -> float:
    """Measured loss of model i at T over the best measured loss at T, minus 1."""
    best = min(loss for m in models if (loss := m.measured_loss(T)) is not None)
    return models[i].measured_loss(T) / best - 1


def fit_laws(points: AspectPoints, terms: tuple[str, ...]) -> dict[str, Any]:
    """Each law's prediction function (N, D, d, n) -> loss: the N-D law and the shape law of each term."""
    laws: dict[str, Any] = {}
    for term in terms:
        fit = fit_aspect(points, term=term)
        laws.setdefault("nd", lambda N, D, d, n, law=fit.setup.nd.law: np.asarray(law.loss(N, D), float))
        laws[term] = lambda N, D, d, n, f=fit: np.asarray(f.law.loss(N, D), float) * f.shape.factor(d, n, N)
    return laws


def leave_one_model_out(models: list[Model], points: AspectPoints, budgets_s: list[float], terms: tuple[str, ...],
                        seq_len: int, step_model: str = "tokens") -> dict[str, np.ndarray]:  # fmt: skip
    """Per law, regrets (folds, budgets): model k left out of both fits in fold k; NaN where no model has a point."""
    names = np.array([m.name for m in models])
    runs = np.asarray(points.points.group)
    out: dict[str, list[list[float]]] = {}
    for k in range(len(models)):
        rest = [m for j, m in enumerate(models) if j != k]
        coef = fit_step_time(rest, seq_len, step_model)
        laws = fit_laws(points.take(runs != names[k]), terms)
        for law, predict in laws.items():
            picks = [pick(models, predict, coef, seq_len, T, step_model) for T in budgets_s]
            out.setdefault(law, []).append([np.nan if i is None else regret(models, i, T)
                                            for i, T in zip(picks, budgets_s, strict=True)])  # fmt: skip
        print(f"fold {k + 1}/{len(models)} ({names[k]}) done", file=sys.stderr, flush=True)
    return {law: np.array(rows) for law, rows in out.items()}


def loso_errors(points: AspectPoints, terms: tuple[str, ...]) -> dict[str, float]:
    """Each term's leave-one-shape-out mean relative error (and the N-D law's) on a table."""
    out = {}
    for term in terms:
        h = leave_one_shape_out(points, term=term)
        out[term] = h["shape_law"]["mean_abs_rel_error"]
        out["nd"] = h["nd_law"]["mean_abs_rel_error"]
    return out


def table(regrets: dict[str, np.ndarray], budgets: list[float]) -> list[str]:
    """Markdown: per law, the mean (worst) regret over folds at each budget, and the mean over budgets."""
    head = "| law | " + " | ".join(f"{b:g} node-h" for b in budgets) + " | mean | worst |"
    lines = [head, "|" + "---|" * (len(budgets) + 3)]
    for law, r in regrets.items():
        cells = [f"{np.nanmean(c):.2%} ({np.nanmax(c):.2%})" for c in r.T]
        lines.append(f"| {law} | " + " | ".join(cells) + f" | {np.nanmean(r):.2%} | {np.nanmax(r):.2%} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("table", nargs="?", type=Path, default=TABLE)
    p.add_argument("--budgets", default=",".join(f"{b:g}" for b in BUDGETS), help="node-hours, comma-separated")
    p.add_argument("--terms", default=",".join(TERMS), help="shape terms to compare, comma-separated")
    p.add_argument("--seq-len", type=int, default=2048, help="sequence length of the table's runs")
    p.add_argument("--cpu", type=Path, help="a second table (N, D, loss, d, n) for the leave-one-shape-out errors")
    p.add_argument("--out", type=Path, help="write the results (JSON) here")
    p.add_argument("--step-model", choices=STEP_MODELS, default="tokens", help="the step-time model (above)")
    p.add_argument("--no-regret", action="store_true", help="only the leave-one-shape-out errors (any fit CSV)")
    p.add_argument("--loso", action="store_true", help="also the leave-one-shape-out errors on the table")
    args = p.parse_args(argv)
    budgets, terms = [float(b) for b in args.budgets.split(",")], tuple(args.terms.split(","))
    result: dict[str, Any] = {"budgets_node_hours": budgets}
    lines = []
    if not args.no_regret:
        models, points = read_models(args.table), read_aspect_csv(args.table)
        regrets = leave_one_model_out(models, points, [b * 3600 for b in budgets], terms, args.seq_len,
                                      args.step_model)  # fmt: skip
        lines = ["train-free regret, mean (worst) over the folds:", *table(regrets, budgets)]
        if args.step_model != "measured":
            loso = step_time_loso(models, args.seq_len, args.step_model)
            result["step_time_loso"] = loso
            lines.append(f"step-time model {args.step_model}, each model left out: {loso['mean']:.1%} mean error, "
                         f"{loso['worst']:.1%} worst")  # fmt: skip
        result["regret"] = {k: v.tolist() for k, v in regrets.items()}
    for name, path in (("table", args.table if args.loso or args.no_regret else None), ("cpu", args.cpu)):
        if path is not None:
            errors = loso_errors(read_aspect_csv(path), terms)
            result[f"loso_{name}"] = errors
            lines.append(f"leave-one-shape-out mean relative error on {path}: "
                         + ", ".join(f"{k} {v:.2%}" for k, v in errors.items()))  # fmt: skip
    print("\n".join(lines))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
