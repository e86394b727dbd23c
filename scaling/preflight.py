"""Measure before choosing: the configurations a device profile ranks best under a time budget, timed on this
machine just before the plan is made, and the plan made again with their measured steps.

A profile prices every candidate from a step-time model fitted to a few dozen calibration configurations. On the
2-core CPU of results/cpu/quickstart that model held out at 11-16% mean error (up to 40-50% on one configuration),
and the shared machine's speed moves by 20-30% within minutes, so the step a plan priced was off by more than 10% in
most verified runs. The planner needs the model to search thousands of candidates; the few it ranks best can be
measured. `preflight` times the `k` best (the compiled step as the calibration times it, interleaved rounds of about
`SECONDS` in all, plus the profile's loop host cost where it has one), prices them at what they measured, and scores
the space again; where a configuration not yet measured now comes within the `k` best it is measured too, for at most
`MAX_ROUNDS` rounds; and while the best was measured once, it is timed again and priced at that second measurement
(`confirm`: the fastest of several measurements is biased fast), for longer (`confirm_seconds`), until the `k` best are
measured and the best is confirmed. The candidates not measured are priced at
the profile's price times the median ratio of measured to priced (the machine may run slower or faster now than at
calibration: without it, every measurement that came out slower would hand the first place to a candidate not
measured). A measurement is seconds of the machine's speed now, and the run's step its mean over the minutes after;
where the profile was calibrated within the hour on a machine whose speed drifts, its price (an average over the
calibration's rounds) is a second estimate of that mean, and each measured step is priced at the two weighed by
their errors (`profile_weight`; the median ratio above the same way). The plan then says each measured step against
its price (`Preflight.line`), and `--verify` reports the run's step against the price, the measurement and the
profile's.

Measuring needs the profile's device kind (`timing.retime.other_device`). With a folder the measurements are kept
(`measured-<profile digest>.json`, marked `finished` at the end), so a rerun (a verified run resumed after an
interrupt) measures nothing more and plans the same run; one interrupted while measuring goes on from what it kept.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

from smallest_loss.configs.errors import UserError
from smallest_loss.configs.lazy import LazyModule
from smallest_loss.configs.schema import ModelConfig
from smallest_loss.configs.spaces import SearchSpace
from smallest_loss.scaling.budget import Budget
from smallest_loss.scaling.laws import LawFile
from smallest_loss.scaling.plan import PlanInputs, Scores, candidate_keys, score
from smallest_loss.scaling.plan_result import MeasuredStep, Plan, Preflight, row_key
from smallest_loss.scaling.verify import row_model
from smallest_loss.timing.models import STATISTICS
from smallest_loss.timing.profile import DeviceProfile, profile_digest

# JAX is loaded only when something is measured: planning alone never imports it.
timing_measure = LazyModule("smallest_loss.timing.measure")
timing_retime = LazyModule("smallest_loss.timing.retime")

DEFAULT_K = 3  # configurations measured a round (`plan --verify` and the quickstart measure this many by default)
MAX_ROUNDS = 3  # rounds of measuring the best not yet measured
SECONDS = 1.0  # each configuration's timing, in all (after its compile)
ROUNDS = 5  # interleaved timing rounds (a slow spell of a shared machine touches one round of each)
# The best candidate's confirming timing, which prices the run: a twelfth of a time budget, between SECONDS and
# CONFIRM_SECONDS (`confirm_seconds`).
CONFIRM_SECONDS = 5.0
CONFIRM_SHARE = 1 / 12


def confirm_seconds(budget: Budget) -> float:
    """How long the best candidate is timed again before the run it prices: a twelfth of a time budget, at least
    `SECONDS` and at most `CONFIRM_SECONDS` (a money budget: `CONFIRM_SECONDS`). A run's step is its mean over the
    whole run, and a shared machine's speed wanders: on the 2-core CPU of results/cpu/quickstart, three traces of one
    step timed for 5 minutes (experiments/scripts/step_drift.py) priced the next 50 s, 8 s later, within 10% from 1 s
    of timing in 46%, 61% and 72% of their windows, from 5 s in 50%, 75% and 81%; the seconds are outside the run's
    budget."""
    if budget.kind != "seconds":
        return CONFIRM_SECONDS
    return min(CONFIRM_SECONDS, max(SECONDS, budget.value * CONFIRM_SHARE))


# The profile's price is weighed in (`profile_weight`) only where it was calibrated this long ago at most, and where
# the candidates measured now ran within this factor of its prices (their median ratio, either way).
WEIGHT_HOURS = 1.0
LEVEL_LIMIT = 1.5


def drift_weight(drift: float, held_out: float) -> float:
    """The profile's weight by the inverse variances of the two estimates (`profile_weight`): D^2 / (2 D^2 + h^2)."""
    return drift**2 / (2 * drift**2 + held_out**2)


def profile_weight(profile: DeviceProfile, scale: float, now: datetime.datetime | None = None) -> float:
    """The profile's weight w in the price of a step measured before the run: measured^(1 - w) x priced^w.

    Both estimate the run's mean step. The measurement is a few seconds of the machine's speed now, so it errs by the
    machine's drift over the minute the run takes (D: the calibration's `drift`, the spread of its rounds' speeds);
    the profile's price is the calibration's median over its rounds, minutes long, and errs by its model's held-out
    error h as well as by that drift. Weighed by the inverse of their variances, w = D^2 / (2 D^2 + h^2): about 0 on
    a steady machine (an accelerator, a quiet host), up to 1/2 where the drift dwarfs the model's error. On the
    2-core CPU of results/cpu/quickstart, 104 fresh-clone quickstarts (their verify lines, stops 38-51:
    experiments/scripts/price_weight.py) put the run's step within 10% of the measurement in 75 and of the two
    weighed 0.75 and 0.25 in 83 (37 and 44 of the 48 since stop 45); the measured and the profile's errors
    correlated 0.30 (-0.16 since stop 45), and the best fixed weight was 0.30 (0.39). On the 37 of those whose
    calibrations are kept (results/cpu/calibrations) their drifts (0.6-20%) and held-out errors (3-11%) give weights
    of 0.01-0.48: the run's step within 10% of the price in 31 (30 of the measurement), mean error 5.8% (6.8%).

    0 (the measurement alone) where the profile does not say its drift or held-out error, was re-timed (its speed is
    then a few seconds' too), was calibrated more than `WEIGHT_HOURS` before `now` (or says only its day), or where
    the candidates measured now ran more than `LEVEL_LIMIT` times faster or slower than it priced them (`scale`,
    their median ratio): the machine is then in another state than the one calibrated. On this CPU the candidates
    measured minutes after their calibration ran 0.96-1.26 times their prices in the 13 quickstarts of stops 50-51
    (0.75 once at stop 42; at 1.23 the run's step came in between the two, -9.8% on the measurement, +8.5% on the
    profile), and 1.4 to 3.2 times those of a profile of another hour."""
    drift, held_out = profile.drift, profile.held_out.get("mape")
    if not drift or not held_out or profile.retimed is not None or scale <= 0:
        return 0.0
    try:
        created = datetime.datetime.fromisoformat(profile.created)
    except ValueError:
        return 0.0
    if created.tzinfo is None:  # a day only (profiles before `drift`), or no zone: not a time to measure age from
        return 0.0
    now = now if now is not None else datetime.datetime.now(datetime.UTC)
    if not datetime.timedelta(0) <= now - created <= datetime.timedelta(hours=WEIGHT_HOURS):
        return 0.0
    if abs(math.log(scale)) > math.log(LEVEL_LIMIT):
        return 0.0
    return drift_weight(drift, held_out)


def measure_count(k: int) -> int:
    """`--measure K` checked: a count of configurations, 0 turning measuring off."""
    if k < 0:
        raise UserError(f"--measure {k}: give a count of configurations (0 turns measuring off)")
    return k


def key_model(key: tuple[int, ...], space: SearchSpace, bits: dict[str, int] | None) -> ModelConfig:
    """The model a candidate key trains (the calibration's defaults for everything the key does not say)."""
    d, n, h, w, s, _, _, experts, top_k, granularity = key
    moe = (experts, top_k, granularity) if experts > 1 else None
    return row_model(ModelConfig(), space, bits, (d, n, h, w, s), moe)


Measure = Callable[[list[tuple[int, ...]], SearchSpace, DeviceProfile], list[float | None]]


def measure_keys(keys: list[tuple[int, ...]], space: SearchSpace, profile: DeviceProfile,
                 seconds: float | None = None) -> list[float | None]:  # fmt: skip
    """Each candidate's step on this machine: its compiled step timed as the calibration times it (interleaved
    rounds, `seconds` each in all, default `SECONDS`), at the profile's statistic, plus the profile's loop host cost;
    None where it failed (out of memory) or accumulates micro-batches (not timed: the profile's price stays)."""
    whole = [k for k in keys if k[6] == 1]  # a step that accumulates micro-batches is not timed here: priced
    points = [(key_model(k, space, profile.bits), k[5], 1) for k in whole]
    seconds = SECONDS if seconds is None else seconds
    records = timing_measure.measure_many(points, min_seconds=seconds, rounds=ROUNDS, min_repeats=ROUNDS)
    timed: dict[tuple[int, ...], float] = {}
    for key, record in zip(whole, records, strict=True):
        if record.get("status") == "ok":
            host = float(profile.clock.host_seconds(key[5], key[4])) if profile.clock is not None else 0.0
            timed[key] = float(record[STATISTICS[profile.statistic]]) + host
    return [timed.get(k) for k in keys]


def best_keys(scores: Scores, k: int) -> list[tuple[tuple[int, ...], float]]:
    """The `k` best candidates' keys, with the seconds each is priced at now."""
    rows = scores.order[:k]
    keys = candidate_keys(scores.candidates)[rows]
    return [(tuple(int(v) for v in key), float(scores.step_seconds[i])) for key, i in zip(keys, rows, strict=True)]


def _load(path: Path | None) -> tuple[dict[tuple[int, ...], MeasuredStep], bool, float | None]:
    """The steps kept in `path`, whether the measuring that wrote them finished (then a rerun measures nothing: it
    plans with them, the same run) and the profile's weight it priced them with (None: not kept)."""
    if path is None or not path.is_file():
        return {}, False, None
    try:
        data = json.loads(path.read_text())
        steps = [MeasuredStep.from_dict(m) for m in data["steps"]]
        weight = None if data.get("weight") is None else float(data["weight"])
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: unreadable measured steps ({e}); delete it to measure again") from e
    return {m.key: m for m in steps}, bool(data.get("finished")), weight


def _measured(found: dict[tuple[int, ...], MeasuredStep], k: int, rounds: int, profile: DeviceProfile,
              weight: float | None = None) -> Preflight:  # fmt: skip
    """What was measured so far, weighed against the profile by `weight` (None: `profile_weight` now)."""
    steps = tuple(found.values())
    if weight is None:
        weight = profile_weight(profile, Preflight(steps, k, rounds).scale)
    return Preflight(steps, k, rounds, weight, profile=profile)


def _save(path: Path | None, measured: Preflight, finished: bool = False) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = dict(measured.to_dict(), finished=finished)
        text = json.dumps(data, indent=2) + "\n"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)


def preflight(budget: Budget, law_file: LawFile, inputs: PlanInputs, profile: DeviceProfile | None,
              k: int = DEFAULT_K, folder: str | Path | None = None,
              measure: Measure | None = None) -> tuple[PlanInputs, Preflight]:  # fmt: skip
    """`inputs` with the `k` best candidates' steps measured on this machine (see the module docstring), and what
    was measured. `measure` times a list of candidate keys (default `measure_keys`: this machine, via JAX; the
    confirmation then for `confirm_seconds`)."""
    if profile is None:
        raise UserError("--measure times the candidates a device profile ranks best: give one (--profile)")
    if k < 1:
        raise UserError(f"--measure {k}: measure at least one configuration (0 turns measuring off)")
    if budget.kind == "flops":
        raise UserError("--measure prices steps for a time or money budget; a FLOPs budget does not use step times")
    if measure is None:
        if (why := timing_retime.other_device(profile)) is not None:
            raise UserError(
                f"--measure times candidates on this machine, but the profile cannot be measured here: {why}"
            )
        measure = measure_keys
    longer = confirm_seconds(budget) if measure is measure_keys else None  # a test's `measure` times as it does
    path = Path(folder) / f"measured-{profile_digest(profile)}.json" if folder is not None else None
    found, finished, kept_weight = _load(path)
    rounds = max((m.round for m in found.values()), default=0)
    for _ in range(0 if finished else 2 * MAX_ROUNDS):
        now = with_steps(inputs, _measured(found, k, rounds, profile))
        best = best_keys(score(budget, law_file, now), k)
        todo = [(key, seconds / now.measured_scale) for key, seconds in best if key not in found]  # the profile's price
        if todo and rounds < MAX_ROUNDS:
            rounds += 1
            _say(f"timing {len(todo)} of the best candidates on this machine before choosing (round {rounds})")
            timed = measure([key for key, _ in todo], inputs.space, profile)
            for (key, priced), seconds in zip(todo, timed, strict=True):
                found[key] = MeasuredStep(
                    key, priced, priced if seconds is None else seconds, rounds, seconds is not None
                )
        elif not confirm(found.get(best[0][0]), found, inputs.space, profile, measure, longer):
            break
        _save(path, _measured(found, k, rounds, profile))
    done = _measured(found, k, rounds, profile, kept_weight if finished else None)  # a rerun: as it was priced
    _save(path, done, finished=True)
    return with_steps(inputs, done), done


def confirm(step: MeasuredStep | None, found: dict[tuple[int, ...], MeasuredStep], space: SearchSpace,
            profile: DeviceProfile, measure: Measure, seconds: float | None = None) -> bool:  # fmt: skip
    """Time the best candidate (`step`) again and price it at the second measurement; False where there is nothing
    to confirm (not measured, not timed here, or confirmed already). Of several measured candidates the one whose
    measurement came out fastest wins, so its measurement is biased fast (on the shared CPU one came out 38% below
    its other measurements, and that run went 60% over its price); a second one, taken after the choice, is not.
    With `seconds` (`confirm_seconds`; `measure` is then `measure_keys`) it is timed that long, which the step keeps
    (`timed_for`)."""
    if step is None or not step.timed or step.first is not None:
        return False
    longer = f" for {seconds:.3g} s" if seconds is not None else ""
    _say(f"timing the best candidate again{longer} ({step.label}: {step.measured * 1e3:.3g} ms the first time)")
    keys = [step.key]
    (timed,) = measure(keys, space, profile) if seconds is None else measure_keys(keys, space, profile, seconds=seconds)
    if timed is None:  # not timed this time: the first measurement stays, confirmed no further
        seconds, timed = None, step.measured
    found[step.key] = dataclasses.replace(step, measured=timed, first=step.measured, timed_for=seconds)
    return True


def time_again(plan: Plan) -> Callable[[], float | None] | None:
    """A timer of the plan's best step as the plan priced it before choosing (`measure_keys`: its compiled step timed
    here as long as its price was, plus the profile's host cost), for `verify` to call right after the run: where a
    verified step missed its price, the same timing after the run says whether the machine changed speed in between
    (the step alone then runs as the run did) or the run's steps ran otherwise than the step alone (it times as
    priced). None where the best row's step was not priced at a measurement made here."""
    measured = plan.preflight
    if measured is None or measured.profile is None or plan.profile_step_seconds is None:
        return None
    key, space, profile = row_key(plan.best), plan.space, measured.profile
    step = next((m for m in measured.steps if m.key == key), None)
    seconds = step.timed_for if step is not None else None
    return lambda: measure_keys([key], space, profile, seconds=seconds)[0]


def _say(line: str) -> None:
    """A progress line on stderr (each timing takes a compile and about `SECONDS`: seconds on a CPU, up to a minute for
    a large model on an accelerator), so that `--json` output stays clean."""
    print(line, file=sys.stderr, flush=True)


def with_steps(inputs: PlanInputs, measured: Preflight) -> PlanInputs:
    """`inputs` pricing the measured candidates at their prices (`Preflight.price`) and the others at
    `Preflight.price_scale` times the profile's price. A run's other wall-clock terms keep the profile's price:
    scaled with the steps (as `--retime` scales them on a CPU) they followed a profile hours old on this CPU (a
    20-second plan +20% over its budget, -5% scaled), but one measurement in a slow spell scaled them out of every
    budget (a test's 20 s plan on a loaded machine: start-up and compile priced at 25.9 s), and in a fresh clone they
    came out further from the run. For a profile of another hour, `--retime`."""
    return dataclasses.replace(inputs, measured_steps=measured.seconds or None, measured_scale=measured.price_scale)
