"""`--verify`: train a planned configuration with the law's recipe and check the plan against what training gives.

The loss is compared on the run's own final evaluation and, beside it, on one common validation sample
(`model.evaluate.COMMON_SAMPLE`), so plans at different batch sizes compare on the same tokens; the step time is
read from the run's metrics between host syncs that hold nothing but steps.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smallest_loss.configs.designs import SweepDesign
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.lazy import LazyModule
from smallest_loss.configs.schema import ModelConfig, RunConfig
from smallest_loss.configs.spaces import SearchSpace
from smallest_loss.model.data import corpus_load_seconds
from smallest_loss.model.runs import RunDir, steady_step_seconds, step_seconds_by_part
from smallest_loss.model.usage import usage_reading
from smallest_loss.scaling.laws import LawFile
from smallest_loss.scaling.plan_result import PlanRow
from smallest_loss.scaling.precision_law import UNQUANTISED_BITS
from smallest_loss.timing.wallclock import TERMS, Cadence

# The trainer (JAX, Flax, Orbax), loaded when a plan is verified: planning alone never imports it.
model_train = LazyModule("smallest_loss.model.train")
model_evaluate = LazyModule("smallest_loss.model.evaluate")


@dataclass(frozen=True)
class Verification:
    """A planned configuration trained: predicted against actual loss and step seconds."""

    run: str
    predicted_loss: float
    actual_loss: float
    predicted_step_seconds: float | None
    actual_step_seconds: float | None
    steps: int
    wall_seconds: float
    common_loss: float | None
    common_sequences: int
    predicted_wall_clock: dict[str, float] | None = None  # the plan's terms (timing.wallclock.TERMS and total)
    actual_wall_clock: dict[str, float] | None = None  # the run's (summary.json `wall_clock`)
    # Served quantised after training (`plan --serve-bits`): the width, and the rise quantising the run's weights to
    # it measured on the common sample (model/evaluate.py), included in `actual_loss`.
    serve_bits: int | None = None
    ptq_rise: float | None = None
    # The plan's profile re-timed to the machine's speed before planning (timing/retime.py): the factor its
    # predictions were multiplied by (None: not re-timed; 1.0: re-timed within the noise, priced as calibrated).
    retime_factor: float | None = None
    # The profile's price of the step where the plan priced it at a measurement made just before it (`plan --measure`,
    # scaling/preflight.py): `predicted_step_seconds` is then that measurement.
    profile_step_seconds: float | None = None
    # The step as measured before the run where the plan priced it at that measurement weighed against the profile's
    # price (`Preflight.weight`; None: `predicted_step_seconds` is the measurement itself, or no measurement).
    measured_step_seconds: float | None = None
    # Seconds a step in each quarter of the run (`model.runs.step_seconds_by_part`): how the machine's speed moved
    # while it trained (None: too few host syncs).
    part_step_seconds: list[float] | None = None
    # The step of `profile_step_seconds`'s measurement timed again the same way right after the run (`remeasure` of
    # `verify`; None where not): beside the price measured before, whether a miss was the machine's speed changing.
    after_step_seconds: float | None = None
    # What the process spent while the run's steps ran (summary.json `steps_usage`, model/usage.py): on a miss, whether
    # the process held the cores and how much CPU a step took.
    steps_usage: dict[str, float] | None = None
    # A run that ended on the clock (`train.end_within`, the plan's budget where it covers the whole run): its seconds
    # and the steps the plan gave it (`steps` is what the clock let it train; None: it trained the planned steps).
    end_within: float | None = None
    planned_steps: int | None = None
    # The plan's loss moved to the tokens a run on the clock trained (`trained_loss`; None: not on the clock, the
    # planned steps trained, or no law given).
    predicted_trained_loss: float | None = None

    @property
    def loss_error(self) -> float:
        """Actual over predicted loss, minus one."""
        return self.actual_loss / self.predicted_loss - 1

    @property
    def time_error(self) -> float | None:
        """Actual over predicted step seconds, minus one (None where either is unknown)."""
        if not self.predicted_step_seconds or self.actual_step_seconds is None:
            return None
        return self.actual_step_seconds / self.predicted_step_seconds - 1

    @property
    def calibrated_time_error(self) -> float | None:
        """The step-time error of the profile as calibrated: before re-timing, or where the plan priced the step at a
        measurement, the profile's price (None where neither)."""
        if self.time_error is None:
            return None
        if self.profile_step_seconds:
            return self.actual_step_seconds / self.profile_step_seconds - 1
        if self.retime_factor in (None, 1.0):
            return None
        return (1 + self.time_error) * self.retime_factor - 1

    @property
    def measured_time_error(self) -> float | None:
        """Actual over the step measured before the run, minus one, where the price weighed it against the
        profile's (None otherwise: `time_error` is that error)."""
        if self.time_error is None or not self.measured_step_seconds:
            return None
        return self.actual_step_seconds / self.measured_step_seconds - 1

    @property
    def after_error(self) -> float | None:
        """The step timed again after the run over its measurement before it, minus one (None where not timed
        again)."""
        before = self.measured_step_seconds or self.predicted_step_seconds
        if not self.after_step_seconds or not before:
            return None
        return self.after_step_seconds / before - 1

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verification:
        """A verification back from its `to_dict` (report.json), derived fields dropped."""
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["loss_error"] = self.loss_error
        if self.time_error is not None:
            out["time_error"] = self.time_error
        if self.calibrated_time_error is not None:
            out["calibrated_time_error"] = self.calibrated_time_error
        if self.measured_time_error is not None:
            out["measured_time_error"] = self.measured_time_error
        if self.after_error is not None:
            out["after_error"] = self.after_error
        return out


def verify_config(
    row: PlanRow, space: SearchSpace, recipe: SweepDesign, bits: dict[str, int] | None = None,
    end_within: float | None = None,
) -> RunConfig:  # fmt: skip
    """The run that trains a planned row: its shape (a mixture of experts' experts, top-k and granularity with it)
    and steps in the space's architecture, with the profile's quantised training `bits` ({"weights": 4, ...}:
    the precision its steps were priced at), everything else (optimizer, schedule and its warm-up fraction, data)
    from the recipe the law was fitted under. With `end_within` (seconds) the run ends on the clock."""
    base = recipe.base
    moe = (row.experts, row.top_k or 1, row.granularity or 1) if row.is_moe else None
    model = row_model(base.model, space, bits, (row.d, row.n, row.h, row.w, row.s), moe)
    steps = int(row.tokens // (row.b * row.s))
    if steps < 1:
        raise UserError("the recommended configuration gets less than one step; raise the budget")
    # Host syncs about ten times a run, so the step time can be read between them (`steady_step_seconds`). The
    # learning rate and micro-batches are the plan's where its law chose them; the noise scale is not measured.
    train = dataclasses.replace(
        base.train,
        batch_size=row.b,
        steps=steps,
        tokens=None,
        eval_every=0,
        warmup_steps=max(1, round(recipe.warmup_fraction * steps)),
        log_every=max(1, min(base.train.log_every, steps // 10)),
        lr=row.lr if row.lr is not None else base.train.lr,
        micro_batches=row.micro_batches,
        noise_every=0,
        end_within=end_within or 0.0,
    )
    return dataclasses.replace(base, model=model, train=train)


def row_model(base: ModelConfig, space: SearchSpace, bits: dict[str, int] | None, shape: tuple[int, ...],
              moe: tuple[int, int, int] | None = None) -> ModelConfig:  # fmt: skip
    """The model of a planned shape (d, n, h, w, s) in the space's architecture at the quantised training `bits`,
    a mixture of experts where `moe` (experts, top-k, granularity) gives one, the rest of `base`."""
    d, n, h, w, s = shape
    return dataclasses.replace(
        base,
        v=space.v,
        d=d,
        n=n,
        h=h,
        w=w,
        s=s,
        dtype=space.dtype,
        activation=space.activation,
        norm=space.norm,
        tied_embeddings=space.tied,
        # A mixture of experts trains as one (a dense row, or a law without a `moe` section: the dense MLP).
        experts=moe[0] if moe else 0,
        top_k=moe[1] if moe else base.top_k,
        granularity=moe[2] if moe else base.granularity,
        **{f"bits_{kind}": (bits or {}).get(kind) for kind in ("weights", "activations", "kv")},
    )


def verify(
    row: PlanRow,
    space: SearchSpace,
    recipe: SweepDesign,
    out: str | Path,
    bits: dict[str, int] | None = None,
    serve_bits: int | None = None,
    retime_factor: float | None = None,
    profile_step_seconds: float | None = None,
    remeasure: Callable[[], float | None] | None = None,
    end_within: float | None = None,
    law: LawFile | None = None,
    measured_step_seconds: float | None = None,
) -> Verification:
    """Train the recommended configuration with the law's recipe and compare its loss and step time with the
    prediction. Beside the run's own final evaluation (its batch size and seed choose its validation tokens) the
    loss on one common sample (`model.evaluate.COMMON_SAMPLE`), so plans at different batch sizes compare on the
    same tokens. With `serve_bits` the plan predicted the served loss: the trained weights are quantised to that
    width after training and the rise this measures is added to the run's loss. `retime_factor`: the plan's profile
    was re-timed by it (`Plan.retiming`), so the report gives the error of the profile as calibrated too;
    `profile_step_seconds`: the profile's price of the step the plan priced at a measurement (`Plan.preflight`),
    `measured_step_seconds` that measurement where the price weighed the two (`Plan.measured_step_seconds`);
    `remeasure`: that measurement made again (`scaling.preflight.time_again`), called once the run has trained and
    kept in the run's folder (`AFTER_FILE`), so a rerun reports the same. `end_within`: the run's whole wall-clock
    budget in seconds (`run_clock`): it ends on the clock, the end of its schedule moved to the steps the time left
    buys (model/train.py), so its wall-clock holds the budget whatever the machine's speed while it trains; with the
    plan's `law`, the loss predicted for the steps it trained is given too (`trained_loss`)."""
    config = verify_config(row, space, recipe, bits, end_within)
    out = Path(out) / run_name(config, row.lr is not None)
    summary = model_train.train(config, out, resume=(out / "config.json").exists(), progress=True)
    metrics = RunDir(out, config, {}).read_metrics()
    per_step = steady_step_seconds(metrics, config.train.checkpoint_every)
    after = timed_after(out, remeasure)  # before the evaluations below: as near the run's end as it can be
    rise = None
    if serve_bits is not None and serve_bits < UNQUANTISED_BITS:
        rise = model_evaluate.post_training_losses(out, [serve_bits]).rise(serve_bits)
    return Verification(
        run=str(out),
        predicted_loss=row.loss,
        actual_loss=summary["final_eval_loss"] + (rise or 0.0),
        serve_bits=serve_bits if rise is not None else None,
        ptq_rise=rise,
        predicted_step_seconds=row.step_seconds,
        actual_step_seconds=per_step,
        steps=int(summary["steps"]),
        wall_seconds=summary["wall_seconds"],
        common_loss=model_evaluate.evaluate_run(str(out), *model_evaluate.COMMON_SAMPLE)[1],
        common_sequences=model_evaluate.COMMON_SAMPLE[0] * model_evaluate.COMMON_SAMPLE[1],
        predicted_wall_clock=row.wall_clock,
        actual_wall_clock=summary.get("wall_clock"),
        retime_factor=retime_factor,
        profile_step_seconds=profile_step_seconds,
        measured_step_seconds=measured_step_seconds,
        part_step_seconds=step_seconds_by_part(metrics, config.train.checkpoint_every),
        after_step_seconds=after,
        steps_usage=summary.get("steps_usage"),
        end_within=end_within or None,
        planned_steps=config.total_steps if end_within else None,
        predicted_trained_loss=trained_loss(row, law, summary["tokens"]) if end_within and law else None,
    )


def trained_loss(row: PlanRow, law: LawFile, tokens: float) -> float | None:
    """The row's predicted loss moved from its planned tokens to `tokens` (a run that ended on the clock): plus the
    law's change in loss between the two at the row's N (a mixture of experts' through its MoE law; tokens counted at
    the row's data efficiency where its recipe laws set one). None where it trained the planned tokens."""
    if not tokens or abs(tokens - row.tokens) < 0.5 * row.b * row.s:
        return None
    efficiency = row.effective_tokens / row.tokens if row.effective_tokens else 1.0

    def at(D: float) -> float:
        if law.moe is not None and row.experts:
            return float(law.moe.loss(row.params, D * efficiency, row.experts, row.granularity or 1))
        return float(law.law.loss(row.params, D * efficiency))

    return row.loss + at(tokens) - at(row.tokens)


def run_clock(plan: Any) -> float | None:
    """The seconds a plan's verified run may take, so that it ends on the clock: the budget where it is time or money
    and covers the whole run (`--budget-covers run`); None where it covers the steps alone or is FLOPs."""
    return plan.seconds if plan.budget_covers == "run" and plan.seconds else None


def run_name(config: RunConfig, chosen_lr: bool) -> str:
    """The verified run's folder: one per configuration, so a rerun resumes this run and a new plan never reuses
    another's (its learning rate named where the plan's law chose it, its clock where it ends on one)."""
    m, t = config.model, config.train
    lr = f"-lr{t.lr:.3g}" if chosen_lr else ""
    moe = f"-e{m.experts}-k{m.top_k}-g{m.granularity}" if m.experts else ""
    quant = "".join(
        f"-{k}{b}" for k, b in (("qw", m.bits_weights), ("qa", m.bits_activations), ("qkv", m.bits_kv)) if b
    )
    clock = f"-within{t.end_within:g}s" if t.end_within else ""
    return f"d{m.d}-n{m.n}-h{m.h}-w{m.w}{moe}{quant}-s{m.s}-b{t.batch_size}{lr}-steps{config.total_steps}{clock}"


AFTER_FILE = "step_after.json"  # in the verified run's folder: its step timed again after it trained


def kept_seconds(path: Path | None, measure: Callable[[], float | None], **fields: Any) -> float | None:
    """Seconds `measure` gives, kept in `path` as JSON (`seconds`, with `fields`) and read from there on a rerun, so
    that a rerun reports and plans the same; measured afresh without a path; None where `measure` gave none."""
    if path is not None:
        try:
            return float(json.loads(path.read_text())["seconds"])
        except (OSError, ValueError, KeyError, TypeError):  # none yet, or unreadable: measure it (again)
            pass
    seconds = measure()
    if seconds is not None and path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dict(fields, seconds=seconds)) + "\n")
    return seconds


def timed_after(out: Path, remeasure: Callable[[], float | None] | None) -> float | None:
    """The step timed again after the run (`remeasure`), kept in `out`/`AFTER_FILE` and read from there on a
    rerun; None without `remeasure` or where it could not time the step."""
    return None if remeasure is None else kept_seconds(out / AFTER_FILE, remeasure)


LOAD_FILE = "corpus_load.json"  # in a plan's folder: the seconds loading the priced run's corpus, measured once


def corpus_load(
    recipe: SweepDesign, folder: str | Path | None = None, budget_kind: str = "time", covers: str = "run"
) -> float:
    """Seconds the run a plan prices spends loading the recipe's corpus (`model.data.corpus_load_seconds`),
    measured here where the budget (`budget_kind`, what it `covers`) pays for the whole run, else 0; kept in
    `folder`/`LOAD_FILE` and read from there on a rerun, so that a rerun of the plan prices the same start-up and
    plans the same steps."""
    if covers != "run" or budget_kind == "flops":
        return 0.0
    path = Path(folder) / LOAD_FILE if folder is not None else None
    data = recipe.base.data
    return kept_seconds(path, lambda: corpus_load_seconds(data), corpus=data.corpus)


def verify_cadence(recipe: SweepDesign, load_seconds: float = 0.0) -> Cadence:
    """The evaluations and saves of the run `verify` trains (`verify_config`), and the seconds loading its corpus
    (`model.data.corpus_load_seconds` of the recipe's data, measured by the caller), for the plan to price."""
    return Cadence.of(dataclasses.replace(recipe.base.train, eval_every=0), load_seconds)


def wall_clock_line(v: Verification) -> str | None:
    """Each wall-clock term of the verified run, predicted against measured, in one line (None where the plan did
    not price the whole run or the run recorded no terms)."""
    if not v.predicted_wall_clock or not v.actual_wall_clock:
        return None
    parts = []
    for term in (*TERMS, "total"):
        want, got = v.predicted_wall_clock[term], v.actual_wall_clock[term]
        error = f" ({got / want - 1:+.0%})" if want > 0 else ""
        parts.append(f"{term} {got:.2f} s vs {want:.2f} s{error}")
    return "verify wall-clock, measured vs predicted: " + "; ".join(parts)


MISS = 0.10  # a step off its price by more than this is a miss (the check: within 10%)


def after_reading(v: Verification) -> str | None:
    """What the step timed again after the run says of a miss (None where the step came within `MISS` of its price,
    or the timings do not tell): the machine's speed changed (the step alone, after the run, ran as the run did and
    off its price), or the run's steps ran otherwise than the step alone (it timed as priced, the run did not)."""
    drift = v.after_error
    if v.time_error is None or drift is None or abs(v.time_error) <= MISS:
        return None
    error = v.measured_time_error if v.measured_time_error is not None else v.time_error  # the run on the measurement
    run_vs_after = v.actual_step_seconds / v.after_step_seconds - 1
    if abs(run_vs_after) <= MISS < abs(drift) and drift * error > 0:
        change = "slowed" if drift > 0 else "sped up"
        return f"the machine {change} after the price was measured: the step alone, timed again, ran as the run did"
    if abs(drift) <= MISS:
        pace = "slower" if error > 0 else "faster"
        return f"the step alone timed as priced before and after the run: the run's own steps ran {pace}"
    return None


def verify_line(v: Verification) -> str:
    """The verification result in one line."""
    served = f" served at {v.serve_bits} bits (quantising added {v.ptq_rise:+.4f})" if v.serve_bits else ""
    clock, trained = "", ""
    if v.end_within and v.planned_steps:
        share = v.steps / v.planned_steps - 1
        clock = f" (planned {v.planned_steps}, {share:+.1%}: it ended on its {v.end_within:g} s clock)"
    if v.predicted_trained_loss:
        error = v.actual_loss / v.predicted_trained_loss - 1
        trained = f"; {v.predicted_trained_loss:.4f} for the steps it trained, {error:+.1%}"
    line = (
        f"verify: trained {v.steps} steps{clock} in {v.run}: loss{served} {v.actual_loss:.4f} vs predicted "
        f"{v.predicted_loss:.4f} ({v.loss_error:+.1%}{trained})"
    )
    if v.actual_step_seconds is not None:
        line += f"; step {v.actual_step_seconds * 1e3:.2f} ms"
    if v.time_error is not None:
        line += f" vs predicted {v.predicted_step_seconds * 1e3:.2f} ms ({v.time_error:+.1%})"
    if v.measured_time_error is not None and v.calibrated_time_error is not None:
        line += (
            f" (measured before the run {v.measured_step_seconds * 1e3:.2f} ms, {v.measured_time_error:+.1%}, "
            f"weighed with the profile's {v.profile_step_seconds * 1e3:.2f} ms, {v.calibrated_time_error:+.1%})"
        )
    elif v.calibrated_time_error is not None and v.profile_step_seconds:
        line += (
            f" (measured before the run; the profile priced {v.profile_step_seconds * 1e3:.2f} ms, "
            f"{v.calibrated_time_error:+.1%})"
        )
    elif v.calibrated_time_error is not None:
        calibrated = v.predicted_step_seconds / v.retime_factor * 1e3
        line += f" (re-timed x{v.retime_factor:.3f}; as calibrated {calibrated:.2f} ms, {v.calibrated_time_error:+.1%})"
    if v.part_step_seconds:
        low, high = min(v.part_step_seconds), max(v.part_step_seconds)
        line += f"; its quarters ran {low * 1e3:.2f}-{high * 1e3:.2f} ms a step"
        if v.time_error is not None and abs(v.time_error) > MISS and low <= v.predicted_step_seconds <= high:
            line += " (the machine's speed moved across the prediction during the run)"
    if v.after_error is not None:
        against = "on the measurement" if v.measured_step_seconds else "on the price"
        line += f"; timed again after the run {v.after_step_seconds * 1e3:.2f} ms ({v.after_error:+.1%} {against})"
        if reading := after_reading(v):
            line += f" ({reading})"
    if v.time_error is not None and abs(v.time_error) > MISS and (spent := usage_reading(v.steps_usage, v.steps)):
        line += f"; while it trained {spent}"
    if v.common_loss is not None:
        line += f"; loss on the common validation sample ({v.common_sequences:,} sequences) {v.common_loss:.4f}"
    terms = wall_clock_line(v)
    return line + ("\n" + terms if terms else "")
