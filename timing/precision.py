"""Step times across precisions: how much faster one precision's steps are than another's on the device at hand.

A calibration (timing/calibration.py) is in one precision: a compute dtype, and the integer bits of quantised
training (model/quant.py). `step_ratio` compares two of them on one device: the ratio of this folder's measured
step times to another calibration's, over the configurations (architecture, batch, devices) both measured; where
they measured none in common (another grid), the other profile's predictions for this folder's configurations
stand in for its measurements, and the result says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.timing.measure import read_records
from smallest_loss.timing.models import DEFAULT_STATISTIC, STATISTICS, record_precision
from smallest_loss.timing.profile import DeviceProfile, load_profile


def shape_key(record: dict[str, Any]) -> str:
    """A record's configuration without its precision: architecture, batch and devices."""
    config = {k: v for k, v in record["config"].items() if not k.startswith("bits_")}
    return json.dumps(dict(config=config, batch=record["batch"], devices=record.get("device_count", 1)), sort_keys=True)


def _read_ok(path: Path) -> list[dict[str, Any]]:
    return [r for r in read_records(path) if r.get("status") == "ok"]


def _predicted(profile: DeviceProfile, records: list[dict[str, Any]]) -> np.ndarray:
    """The other profile's compiled-step seconds for these records' configurations (its own precision)."""
    c = {k: [r["config"][k] for r in records] for k in ("d", "n", "h", "w", "s", "v")}
    out = []
    for i, r in enumerate(records):
        arch = dict(
            activation=r["config"].get("activation", "gelu"),
            norm=r["config"].get("norm", "rmsnorm"),
            tied=r["config"].get("tied_embeddings", True),
        )
        shape = {k: c[k][i] for k in c} | dict(b=r["batch"], k=r.get("device_count", 1))
        out.append(float(profile.predict_with(profile.model, profile.coefficients, **arch, **shape)[0]))
    return np.asarray(out)


def step_ratio(
    records: list[dict[str, Any]], other_path: str | Path, statistic: str = DEFAULT_STATISTIC
) -> dict[str, Any]:
    """This calibration's step seconds (its `statistic`) over another precision's on the same device (see the module
    docstring): `ratio` the median (below 1: this precision is faster), `low`/`high` the range, `configurations` how
    many, `source` "measured" (both folders' records) or "predicted" (the other profile's model). It reads the records
    alone, not this folder's fit: a calibration cut short with too few records to fit a profile still gives it."""
    other = load_profile(other_path)
    ok = [r for r in records if r.get("status") == "ok"]
    if not ok:
        raise UserError(f"--compare {other_path}: no successful timing records here to compare")
    precisions = sorted({record_precision(r) for r in ok})
    if len(precisions) > 1:
        raise UserError(f"--compare {other_path}: the records here mix precisions ({', '.join(precisions)})")
    # the device of every record that names one (records written by `calibrate` do; hand-made ones may not)
    kinds = sorted({r["device_kind"] for r in ok if r.get("device_kind")}) or [other.device_kind]
    if kinds != [other.device_kind]:
        raise UserError(
            f"--compare {other_path}: calibrated on {other.device_kind}, this folder on {', '.join(kinds)}; "
            "a step-time ratio between precisions needs one device"
        )
    key = STATISTICS[statistic]
    theirs = {shape_key(r): r.get(key, r["step_seconds"]) for r in _read_ok(Path(other_path).parent / "records.jsonl")}
    both = [r for r in ok if shape_key(r) in theirs]
    if both:
        ratios = np.array([r.get(key, r["step_seconds"]) / theirs[shape_key(r)] for r in both])
        source = "measured"
    else:
        ratios = np.array([r.get(key, r["step_seconds"]) for r in ok]) / _predicted(other, ok)
        source = "predicted"
    return dict(
        here=precisions[0],
        other=other.precision,
        device_kind=kinds[0],
        ratio=float(np.median(ratios)),
        low=float(np.min(ratios)),
        high=float(np.max(ratios)),
        configurations=len(ratios),
        source=source,
    )


def ratio_line(result: dict[str, Any]) -> str:
    """One line for the calibration report."""
    where = (
        "configurations measured in both"
        if result["source"] == "measured"
        else f"configurations measured here, against the {result['other']} profile's predictions (no common ones)"
    )
    return (
        f"Step time {result['here']} / {result['other']} on {result['device_kind']}: {result['ratio']:.3g} median "
        f"({result['low']:.3g} to {result['high']:.3g}) over {result['configurations']} {where}."
    )
