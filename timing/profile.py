"""Device profiles (README, "File formats"): the step-time model a calibration chose, as JSON the planner reads.

A profile holds its format version, the device kind, the time model's id (its form: a model in
`timing.models.MODELS` whose features are analytic, so it predicts from hyperparameters alone) and
coefficients, the device's measured peak FLOP/s and bandwidth (roofline models) and cache size
(cache-aware model), the measured statistic it was fitted to, its cross-validated error on held-out
architectures, and optionally a price per device-hour and the device's memory. `dtype` is the compute
dtype of the records it was fitted to: its features count activation bytes at that dtype's size, and its
rates (FLOP/s, bytes/s) hold for that dtype only, so it predicts steps of that dtype and refuses others.
Version 2 added `statistic` and `cache_bytes`; version 3 prices activation bytes at `dtype` (versions 1
and 2 counted them at 4 bytes whatever the dtype: such files still load when their dtype is float32);
version 4 names models (`model`, the keys of `alternatives`) by their short ids, where versions 1 to 3 stored
their titles (`timing.models.LEGACY_NAMES`): a profile loads with its names turned into ids. Version 5 adds
`wall_clock` (timing/wallclock.py: the loop's host cost per step and the run's other terms, from the calibration's
probe runs); with it the profile predicts the training loop's steady step (compiled step + host cost). A profile
without it (versions 1 to 4, or external records) predicts the compiled step alone, as before. `bits` (optional,
any version; {} when absent) are the integer bits of quantised training (model/quant.py) the records ran at: a
profile is keyed by its precision, `dtype` plus `bits` (`precision`: `bfloat16+w4a4kv4`, `float8`), and its
features count the quantising work and the quantised weight copies of that precision (timing/counts.py).
Version 6 adds `anchors` (a few of the calibration's configurations with their measured step seconds: the
machine's speed is re-timed on them before a plan, timing/retime.py), `retimed` (set on a profile rescaled
to the speed the machine runs at now: the factor and each anchor's seconds then and now), `noise_floor` and
`ranges` (each shape hyperparameter's calibrated range: plans outside it say their step time is extrapolated).
`llc_cliff` (optional, any version; null when absent) is the working set, as a multiple of the last-level cache, at
which `exact-grouped-cliff` found the calibration's steps fall out of cache. `drift` (optional, any version; null
when absent) is how far the machine's speed moved between the calibration's timing rounds, and `created` its UTC
time (a date only before `drift` was kept): a plan that measures its best candidates weighs their measurements
against the profile's prices by them (scaling/preflight.py, `profile_weight`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.timing.counts import Precision
from smallest_loss.timing.models import LEGACY_NAMES, design_matrix, get_model, variant
from smallest_loss.timing.wallclock import WallClock

PROFILE_VERSION = 6
BIT_KINDS = ("weights", "activations", "kv")  # `bits`' keys: model.bits_weights, bits_activations, bits_kv


def profile_bits(precision: str) -> dict[str, int]:
    """A profile's `bits` from a precision label (timing.counts.Precision.label)."""
    p = Precision.parse(precision)
    return {k: b for k, b in zip(BIT_KINDS, p[1:], strict=True) if b}


READABLE_VERSIONS = (1, 2, 3, 4, 5, 6)
RANGE_NAMES = dict(d="width", n="depth", head_size="head size", mlp_ratio="MLP ratio", s="context", b="batch")


def calibrated_ranges(records: list[dict[str, Any]]) -> dict[str, list[float]]:
    """[low, high] of each shape hyperparameter (`RANGE_NAMES`) over the timed records (batch per device)."""
    ok = [r for r in records if r.get("status") == "ok" and {"d", "n", "h", "w", "s"} <= set(r.get("config", {}))]
    if not ok:
        return {}
    values = dict(
        d=[r["config"]["d"] for r in ok],
        n=[r["config"]["n"] for r in ok],
        head_size=[r["config"]["d"] / r["config"]["h"] for r in ok],
        mlp_ratio=[r["config"]["w"] / r["config"]["d"] for r in ok],
        s=[r["config"]["s"] for r in ok],
        b=[r["batch"] / r.get("device_count", 1) for r in ok],
    )
    return {k: [float(min(v)), float(max(v))] for k, v in values.items()}


@dataclass(frozen=True)
class DeviceProfile:
    """A device's step-time model as the planner reads it (see the module docstring)."""

    device_kind: str
    model: str  # the id of a model in timing.models.MODELS whose features are analytic (a legacy name: its id)
    coefficients: tuple[float, ...]
    peak_flops: float
    bandwidth: float
    held_out: dict[str, float]  # cross-validated mape, max_ape, r2, spearman
    price_per_hour: float | None = None
    memory_bytes: float | None = None
    dtype: str = "float32"  # compute dtype of the records it was fitted to; it predicts this dtype only
    records: int = 0
    created: str = ""
    alternatives: dict[str, list[float]] = field(default_factory=dict)  # analytic models' coefficients, by id
    statistic: str = "median"  # the measured step time the model was fitted to (timing.models.STATISTICS)
    cache_bytes: float | None = None  # per-core cache (CPU), for the cache-aware model
    llc_bytes: float | None = None  # the last-level (L3) cache (CPU), for `exact-kinds-llc`; None: not known
    # XLA's compiled peak memory over `train_memory_bytes`, the median over the records
    # (timing.models.working_set_ratio), that the last-level-cache models scale a step's working set by; None: 1.
    working_set_ratio: float | None = None
    # The working set, as a multiple of `llc_bytes`, at which the calibration found its steps fall out of cache
    # (`exact-grouped-cliff`'s fitted `llc_cliff`); None: not fitted (that model then jumps at the cache's size).
    llc_cliff: float | None = None
    wall_clock: dict[str, Any] | None = None  # timing.wallclock.WallClock's fields (version 5; None: steps only)
    # Integer bits of the quantised kinds of tensor the records trained at ({"weights": 4, "activations": 8,
    # "kv": 4}; absent kinds and {}: not quantised). With `dtype` the profile's precision (`precision`).
    bits: dict[str, int] = field(default_factory=dict)
    # Calibration configurations to re-time the machine's speed on (timing/retime.py): each {"config": a timing
    # record's config, "batch", "devices", "step_seconds" measured}; () for profiles of external records.
    anchors: tuple[dict[str, Any], ...] = ()
    retimed: dict[str, Any] | None = None  # a profile rescaled to the speed measured now (`Retiming`)
    # The calibration's noise floor: its configurations timed twice differ by this around their common shift (the
    # machine's drift), timing/retime.py's `floor_from_noise` of noise.json.
    noise_floor: float | None = None
    # The range [low, high] of each shape hyperparameter over the calibration's timed records (`calibrated_ranges`):
    # a plan outside them is priced by extrapolation, and says so. {}: not recorded (profiles before version 6).
    ranges: dict[str, list[float]] = field(default_factory=dict)
    # How far the machine's speed moved between the calibration's timing rounds (`timing.retime.machine_drift`, a log
    # standard deviation); None: not measured (external records, profiles before it was kept).
    drift: float | None = None

    def __post_init__(self) -> None:
        model = get_model(self.model)
        object.__setattr__(self, "model", model.id)  # a name of profile versions 1 to 3: its id
        alternatives = {LEGACY_NAMES.get(name, name): c for name, c in self.alternatives.items()}
        object.__setattr__(self, "alternatives", alternatives)
        object.__setattr__(self, "anchors", tuple(self.anchors))
        if self.wall_clock is not None:
            WallClock.from_dict(self.wall_clock)  # a malformed section is refused when the profile loads
        if set(self.bits) - set(BIT_KINDS) or not all(isinstance(b, int) and 2 <= b <= 16 for b in self.bits.values()):
            raise UserError(f"bits {self.bits!r}: expected integers 2..16 keyed by {', '.join(BIT_KINDS)}")
        if not model.analytic:
            raise UserError(f"time model {self.model!r} needs XLA counts; a profile needs an analytic model")
        if len(self.coefficients) != len(model.features) + 1:
            raise UserError(
                f"profile model {self.model!r} takes {len(model.features) + 1} coefficients, "
                f"got {len(self.coefficients)}"
            )

    def predict_with(
        self,
        model_id: str,
        coefficients: Any,
        activation: str = "gelu",
        norm: str = "rmsnorm",
        tied: bool = True,
        dtype: str | None = None,
        moe: Any = None,
        **shape: Any,
    ) -> np.ndarray:
        """Step seconds of any analytic model in `timing.models.MODELS` (its id) with the given coefficients; `moe`
        (a timing.counts.MoeSpec): a mixture of experts' step, its features counted through its variant label."""
        dtype = self._check_dtype(dtype)
        shape.setdefault("k", 1)
        names = ("d", "n", "h", "w", "s", "v", "b", "k")
        arrays = np.broadcast_arrays(*(np.atleast_1d(np.asarray(shape[k], dtype=np.float64)) for k in names))
        cols = dict(zip(names, (a.ravel() for a in arrays), strict=True))  # features are columns: flatten
        cols["variant"] = np.full(cols["d"].shape, variant(activation, norm, tied, self.precision, moe), dtype=object)
        device = dict(
            peak_flops=self.peak_flops,
            bandwidth=self.bandwidth,
            cache_bytes=self.cache_bytes,
            llc_bytes=self.llc_bytes,
            working_set_ratio=self.working_set_ratio,
            llc_cliff=self.llc_cliff,
        )
        seconds = design_matrix(get_model(model_id), cols, device) @ np.asarray(coefficients, dtype=np.float64)
        return seconds.reshape(arrays[0].shape)

    def _check_dtype(self, dtype: str | None) -> str:
        """The dtype to predict (the profile's when None); another dtype's rates were never measured."""
        if dtype is not None and dtype != self.dtype:
            raise UserError(
                f"this device profile was calibrated in {self.dtype} and cannot predict {dtype} steps; "
                f"calibrate a grid in {dtype} (or plan in {self.dtype})"
            )
        return self.dtype

    def predict_step_seconds(
        self,
        d: Any,
        n: Any,
        h: Any,
        w: Any,
        s: Any,
        v: Any,
        b: Any,
        k: Any = 1,
        activation: str = "gelu",
        norm: str = "rmsnorm",
        tied: bool = True,
        dtype: str | None = None,
        moe: Any = None,
    ) -> np.ndarray:
        """Predicted seconds per training step of global batch b over k data-parallel devices.

        Vectorised: d..b (and k) are numbers or arrays that broadcast, so the planner scores a million
        candidates in one call. `activation`, `norm`, `tied` (tied embeddings) and `dtype` (compute dtype:
        the profile's own when None, any other is a UserError) apply to all of them. Models fitted on one
        device count ignore k. With `wall_clock` terms the time is the training loop's steady step: the
        compiled step plus the loop's host cost per step. `moe` (a timing.counts.MoeSpec): a mixture of experts'
        step (its features through the variant label, as a calibration counts its MoE records).
        """
        step = self.predict_with(
            self.model, self.coefficients, activation, norm, tied, dtype, moe, d=d, n=n, h=h, w=w, s=s, v=v, b=b, k=k
        )
        return step + self.clock.host_seconds(b, s) if self.clock is not None else step

    @property
    def precision(self) -> str:
        """The precision it was calibrated in: its dtype, with the bits of its quantised kinds (`float8`,
        `bfloat16+w4a4kv4`; timing.counts.Precision.label)."""
        return Precision(self.dtype, *(self.bits.get(k) for k in BIT_KINDS)).label

    def outside_ranges(self, **shape: float) -> list[str]:
        """The hyperparameters of a shape (`RANGE_NAMES`' keys) outside the calibrated ranges, each as text."""
        out = []
        for key, value in shape.items():
            lo, hi = self.ranges.get(key, (value, value))
            if not lo <= value <= hi:
                out.append(f"{RANGE_NAMES[key]} {value:g} (calibrated {lo:g}-{hi:g})")
        return out

    @property
    def retiming(self) -> Retiming | None:
        """How the profile was rescaled to the machine's speed at planning time (None: as calibrated)."""
        return Retiming.from_dict(self.retimed) if self.retimed is not None else None

    @property
    def clock(self) -> WallClock | None:
        """The wall-clock terms' model (timing/wallclock.py), or None (a profile that prices steps only)."""
        return WallClock.from_dict(self.wall_clock) if self.wall_clock is not None else None

    def step_seconds_for(self, cfg: Any, b: int) -> float:
        """Predicted step seconds of one ModelConfig at batch b."""
        return float(
            self.predict_step_seconds(
                cfg.d,
                cfg.n,
                cfg.h,
                cfg.w,
                cfg.s,
                cfg.v,
                b,
                activation=cfg.activation,
                norm=cfg.norm,
                tied=cfg.tied_embeddings,
                dtype=cfg.dtype,
            )[0]
        )


@dataclass(frozen=True)
class Retiming:
    """The anchors timed again: each one's step seconds at calibration and now, the ratio they give, and the factor
    applied: the ratio where every anchor moved the same way beyond what the machine's noise explains (`threshold`),
    else 1."""

    measured: float  # the median of now / then over the anchors
    anchors: tuple[tuple[str, float, float], ...]  # (label, seconds at calibration, seconds now)
    whole_run: bool  # every wall-clock term scaled (CPU backend), or the device's step alone
    at: str  # when it was measured (ISO time, UTC)
    threshold: float = 0.0  # the relative change the machine's noise explains (twice its noise floor)

    @property
    def factor(self) -> float:
        """What predictions are multiplied by: the measured ratio where every anchor moved the same way by more than
        `threshold` (a change of the whole machine's speed shows in every anchor; a spell caught by the few seconds
        of one does not), else 1."""
        bound = math.log1p(self.threshold)
        logs = [math.log(now / then) for _, then, now in self.anchors]
        agree = all(x > bound for x in logs) or all(x < -bound for x in logs)
        return self.measured if logs and agree else 1.0

    def to_dict(self) -> dict[str, Any]:
        return dict(
            factor=self.factor,
            measured=self.measured,
            threshold=self.threshold,
            anchors=[dict(config=a, then=t0, now=t1) for a, t0, t1 in self.anchors],
            whole_run=self.whole_run,
            at=self.at,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Retiming:
        anchors = tuple((a["config"], float(a["then"]), float(a["now"])) for a in data["anchors"])
        measured = float(data.get("measured", data["factor"]))
        return cls(measured, anchors, bool(data["whole_run"]), str(data["at"]), float(data.get("threshold", 0.0)))

    def line(self) -> str:
        """The re-timing in one line, for plans and reports."""
        each = ", ".join(f"{a} {t0 * 1e3:.3g} -> {t1 * 1e3:.3g} ms" for a, t0, t1 in self.anchors)
        head = f"re-timed now: the calibration's anchor steps take {self.measured:.3f} times their calibrated seconds"
        if self.factor == 1.0:
            return (
                f"{head} ({each}), not every anchor beyond what the machine's noise explains (+-{self.threshold:.0%}, "
                "twice its noise floor), so the profile prices its calibrated speed"
            )
        scope = "every wall-clock term" if self.whole_run else "the device's step"
        return (
            f"{head} ({each}), beyond the machine's noise (+-{self.threshold:.0%}): {scope} priced x{self.factor:.3f}"
        )


def rescaled(profile: DeviceProfile, retiming: Retiming) -> DeviceProfile:
    """The profile with its predictions multiplied by the re-timing's factor (its step model's coefficients and the
    alternatives'; the wall-clock terms too where `whole_run`, else the loop's host cost stays)."""
    f, clock = retiming.factor, profile.clock
    clock = clock.scaled(f) if clock is not None and retiming.whole_run else clock
    return dataclasses.replace(
        profile,
        coefficients=tuple(c * f for c in profile.coefficients),
        alternatives={k: [c * f for c in v] for k, v in profile.alternatives.items()},
        wall_clock=clock.to_dict() if clock is not None else None,
        retimed=retiming.to_dict(),
    )


def profile_digest(profile: DeviceProfile) -> str:
    """A short digest of everything the profile holds: files kept for it (a re-timing, measured steps) name it."""
    return hashlib.sha256(json.dumps(asdict(profile), sort_keys=True, default=str).encode()).hexdigest()[:12]


def save_profile(path: str | Path, profile: DeviceProfile) -> Path:
    """Write a profile as JSON (this version's format); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = dict(version=PROFILE_VERSION, **asdict(profile))
    data["coefficients"] = list(profile.coefficients)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def load_profile(path: str | Path) -> DeviceProfile:
    """Read a profile; a missing or malformed file is a UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"device profile {path} does not exist; make one with smallest-loss calibrate")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"device profile {path} is not valid JSON: {err}") from None
    if not isinstance(data, dict) or data.get("version") not in READABLE_VERSIONS:
        raise UserError(f"device profile {path}: expected a JSON object with version {PROFILE_VERSION}")
    version = data.pop("version")
    try:
        data["coefficients"] = tuple(float(c) for c in data["coefficients"])
        profile = DeviceProfile(**data)
    except (TypeError, KeyError, ValueError) as err:
        raise UserError(f"device profile {path} is malformed ({type(err).__name__}: {err})") from None
    except UserError as err:
        raise UserError(f"device profile {path}: {err}") from None
    if not (profile.peak_flops > 0 and profile.bandwidth > 0):
        raise UserError(f"device profile {path}: peak_flops and bandwidth must be positive")
    if version < 3 and profile.dtype != "float32":
        raise UserError(
            f"device profile {path} (version {version}) counted {profile.dtype} activations at 4 bytes; "
            "refit it: smallest-loss calibrate --fit-only --out FOLDER"
        )
    return profile
