"""The machine's speed now: re-time a few of the calibration's configurations and rescale the profile by it.

A profile prices steps at the speed the machine ran during its calibration. A shared machine's speed moves
with its neighbours' load: on the 2-core VM of results/cpu/quickstart the same configurations measured minutes
apart differed by 6% median and up to 30%, so a run verified minutes after its calibration met a machine
15-30% faster or slower than the one priced. The step-time model's shape (what one configuration costs
against another) holds across such drift; its scale does not. So a profile keeps `anchors` (three of its
calibration's configurations, chosen at calibration at the quartiles of their step times, never by a plan) and
`retime_profile` times them again now, as the calibration timed them (compiled step, interleaved rounds), and
rescales the profile by the median ratio of their step seconds now to then, where every anchor moved the same way
by more than twice the calibration's noise floor (`Retiming.factor`). On a CPU backend the host is the device, so
every wall-clock term (start-up, compile, the loop's host cost, saves) scales with it; on an accelerator only the
device's step does. It is opt-in (`plan --retime`): on that VM seconds of anchors caught the machine's spells in
all three runs it was applied to (each then ran further from its price than the calibrated speed put it), so it
is for a profile older than the machine's present state, not for one calibrated minutes before.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.schema import ModelConfig
from smallest_loss.timing.measure import measure_many, read_records
from smallest_loss.timing.models import STATISTICS
from smallest_loss.timing.profile import (
    DeviceProfile,
    Retiming,
    calibrated_ranges,
    load_profile,
    profile_digest,
    rescaled,
    save_profile,
)

ANCHOR_QUANTILES = (0.25, 0.5, 0.75)  # which of the calibration's configurations, by step time, are re-timed
DEFAULT_NOISE_FLOOR = 0.05  # a profile that does not say its calibration's noise floor (external records, version 5)


def pick_anchors(records: list[dict[str, Any]], statistic: str) -> tuple[dict[str, Any], ...]:
    """The calibration configurations a profile is re-timed on: of the timed records on the fewest devices, those
    at `ANCHOR_QUANTILES` of the step times (distinct; fewer when there are fewer records)."""
    key = STATISTICS[statistic]
    ok = [r for r in records if r.get("status") == "ok" and r.get("source") != "records" and key in r]
    if not ok:
        return ()
    fewest = min(r.get("device_count", 1) for r in ok)
    ok = sorted((r for r in ok if r.get("device_count", 1) == fewest), key=lambda r: r[key])
    picks = sorted({min(int(q * len(ok)), len(ok) - 1) for q in ANCHOR_QUANTILES})
    return tuple(
        dict(config=ok[i]["config"], batch=ok[i]["batch"], devices=fewest, step_seconds=ok[i][key]) for i in picks
    )


SPREAD_MIN_CONFIGURATIONS = 3  # re-timed configurations needed to tell their common shift from their spread


def noise_shift_and_spread(diffs: Any) -> tuple[float, float | None]:
    """(shift, spread) of the relative differences of configurations timed again after the grid: the shift is their
    median (the machine's speed when they were timed again against its speed during the grid, common to all of them:
    drift, which a calibration's interleaved rounds spread over every configuration alike, so no model error comes of
    it), the spread the median |log ratio - log(1 + shift)| around it (how far one configuration's time moves against
    the others': the noise a model's held-out error is compared with). The spread is None with fewer than
    `SPREAD_MIN_CONFIGURATIONS`, where the two cannot be told apart. On 59 calibrations of 2 shared EPYC cores the
    median |difference| was 1.1-47.7% and mostly shift (-14.7% to +47.7%); the spread 0.8-11.8%, 1-5% in most."""
    logs = np.log1p(np.asarray(diffs, float))
    shift = float(np.median(logs))
    spread = float(np.median(np.abs(logs - shift))) if len(logs) >= SPREAD_MIN_CONFIGURATIONS else None
    return float(np.expm1(shift)), spread


def floor_from_noise(noise: dict[str, Any]) -> float:
    """The noise floor of a calibration's `noise.json`: the configurations' spread around their common shift
    (`noise_shift_and_spread`), or their median |difference| where too few were timed again to tell the two apart
    (or only the median was kept)."""
    diffs = noise.get("diffs")
    spread = noise_shift_and_spread(diffs)[1] if diffs else None
    return float(noise["median_abs"]) if spread is None else spread


def noise_floor_of(folder: Path) -> float | None:
    """A calibration folder's noise floor (`floor_from_noise` of its `noise.json`), or None where none was measured."""
    path = folder / "noise.json"
    return floor_from_noise(json.loads(path.read_text())) if path.is_file() else None


DRIFT_MIN_ROUNDS = 3  # timing rounds (and configurations) needed to read the machine's drift from a calibration


def machine_drift(records: list[dict[str, Any]]) -> float | None:
    """How far the machine's speed moved between a calibration's timing rounds: the standard deviation, over the
    rounds, of the median over configurations of each configuration's round median against its own median (log
    ratios). The rounds interleave every configuration, so a round's median is the machine's speed in that stretch
    of the calibration, whatever the configurations' model error (on accelerators, where the grid times one
    configuration at a time, a round is not one stretch for all of them and the spread reads low: the measurement
    then weighs more). None with fewer than `DRIFT_MIN_ROUNDS` timed configurations or rounds (external records keep
    no rounds). On the 2-core EPYC VM of results/cpu/quickstart: 0.6% in a quiet hour, 2-10% in most, 20% where two
    rounds met 50% slow spells; `scaling.preflight` weighs a run's measured price against the profile's by it."""
    rounds = [np.asarray(r["round_medians"], float) for r in records
              if r.get("status") == "ok" and len(r.get("round_medians") or ()) >= DRIFT_MIN_ROUNDS]  # fmt: skip
    if len(rounds) < DRIFT_MIN_ROUNDS:
        return None
    common = min(map(len, rounds))
    logs = np.log(np.stack([r[:common] for r in rounds]))
    levels = np.median(logs - np.median(logs, axis=1, keepdims=True), axis=0)
    return float(np.std(levels, ddof=1))


def anchor_label(anchor: dict[str, Any]) -> str:
    """An anchor's configuration in a few characters: d64-n2-s64-b8."""
    c = anchor["config"]
    return f"d{c['d']}-n{c['n']}-s{c['s']}-b{anchor['batch']}"


def other_device(profile: DeviceProfile) -> str | None:
    """Why this machine cannot time what the profile priced (None: it runs the profile's device kind)."""
    here = jax.devices()[0].device_kind
    if here != profile.device_kind:
        return f"it was calibrated on {profile.device_kind} and this machine runs {here}"
    return None


def check_retimable(profile: DeviceProfile) -> str | None:
    """Why this profile cannot be re-timed on this machine (None: it can)."""
    if profile.retimed is not None:
        return "it was re-timed already (rescale the calibration's profile instead)"
    if not profile.anchors:
        return "it keeps no anchor configurations (external records, or a calibration fitted before version 6)"
    other = other_device(profile)
    if other is not None:
        return other
    fewest = min(a["devices"] for a in profile.anchors)
    if fewest > jax.device_count():
        return f"its anchors need {fewest} devices, {jax.device_count()} present"
    return None


def retime_profile(profile: DeviceProfile, min_seconds: float = 1.0, rounds: int = 5) -> DeviceProfile:
    """The profile rescaled to the speed this machine runs at now (see the module docstring): its anchors timed
    again, each for about `min_seconds` in `rounds` interleaved rounds. The ratio is applied where every anchor moved
    the same way beyond twice the calibration's noise floor (`DEFAULT_NOISE_FLOOR` where unknown): otherwise the
    calibration's minutes of interleaved rounds say more of the machine's speed over a run than seconds of anchors.
    A UserError where it cannot be (`check_retimable`)."""
    why = check_retimable(profile)
    if why is not None:
        raise UserError(f"the device profile cannot be re-timed: {why}")
    anchors = [a for a in profile.anchors if a["devices"] <= jax.device_count()]
    points = [(ModelConfig(**{**a["config"], "dtype": profile.dtype}), a["batch"], a["devices"]) for a in anchors]
    again = measure_many(points, min_seconds=min_seconds, rounds=rounds, min_repeats=rounds)
    key = STATISTICS[profile.statistic]
    timed = [
        (anchor_label(a), float(a["step_seconds"]), float(r[key]))
        for a, r in zip(anchors, again, strict=True)
        if r.get("status") == "ok"
    ]
    if not timed:
        raise UserError("none of the profile's anchor configurations could be timed again on this machine")
    factor = float(np.median([now / then for _, then, now in timed]))
    at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    threshold = 2 * (profile.noise_floor if profile.noise_floor is not None else DEFAULT_NOISE_FLOOR)
    return rescaled(profile, Retiming(factor, tuple(timed), jax.default_backend() == "cpu", at, threshold))


def retime_once(profile: DeviceProfile, folder: str | Path) -> DeviceProfile:
    """`retime_profile`, kept in `folder` (`retimed-<digest of the profile>.json`): a rerun (a verified run resumed
    after an interrupt) plans at the speed measured the first time, so it plans the same run and resumes it."""
    path = Path(folder) / f"retimed-{profile_digest(profile)}.json"
    if path.exists():
        return load_profile(path)
    return load_profile(save_profile(path, retime_profile(profile)))


def with_anchors(profile: DeviceProfile, path: str | Path) -> DeviceProfile:
    """A profile read from `path`, with what a profile calibrated before version 6 does not keep taken from the
    calibration folder beside it: anchors and calibrated ranges from `records.jsonl`, the noise floor from
    `noise.json`."""
    folder = Path(path).parent
    if profile.noise_floor is None:
        profile = dataclasses.replace(profile, noise_floor=noise_floor_of(folder))
    lines = read_records(folder / "records.jsonl")
    if (profile.anchors and profile.ranges) or not lines:
        return profile
    anchors = profile.anchors or pick_anchors(lines, profile.statistic)
    return dataclasses.replace(profile, anchors=anchors, ranges=profile.ranges or calibrated_ranges(lines))
