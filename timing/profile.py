"""Device profiles (DESIGN.md section 4): the step-time model a calibration chose, as JSON the planner reads.

A profile holds the device kind, the model's name and coefficients, the device's measured peak FLOP/s
and bandwidth (for roofline models), the model's cross-validated error, and optionally a price per
device-hour and the device's memory.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from configs.errors import UserError
from timing.models import design_matrix, get_model

PROFILE_VERSION = 1


@dataclass(frozen=True)
class DeviceProfile:
    device_kind: str
    model: str  # a name in timing.models.MODELS whose features are analytic
    coefficients: tuple[float, ...]
    peak_flops: float
    bandwidth: float
    held_out: dict[str, float]  # cross-validated mape, max_ape, r2, spearman
    price_per_hour: float | None = None
    memory_bytes: float | None = None
    dtype: str = "float32"
    records: int = 0
    created: str = ""
    alternatives: dict[str, list[float]] = field(default_factory=dict)  # other analytic models' coefficients

    def __post_init__(self) -> None:
        model = get_model(self.model)
        if not model.analytic:
            raise UserError(f"time model {self.model!r} needs XLA counts; a profile needs an analytic model")
        if len(self.coefficients) != len(model.features) + 1:
            raise UserError(f"profile model {self.model!r} takes {len(model.features) + 1} coefficients, "
                            f"got {len(self.coefficients)}")

    def predict_with(self, model_name: str, coefficients: Any, **shape: Any) -> np.ndarray:
        shape.setdefault("k", 1)
        names = ("d", "n", "h", "w", "s", "v", "b", "k")
        cols = {k: np.atleast_1d(np.asarray(shape[k], dtype=np.float64)) for k in names}
        cols = dict(zip(cols, np.broadcast_arrays(*cols.values()), strict=True))
        device = dict(peak_flops=self.peak_flops, bandwidth=self.bandwidth)
        return design_matrix(get_model(model_name), cols, device) @ np.asarray(coefficients, dtype=np.float64)

    def predict_step_seconds(self, d: Any, n: Any, h: Any, w: Any, s: Any, v: Any, b: Any, k: Any = 1) -> np.ndarray:
        """Predicted seconds per training step of global batch b over k data-parallel devices; arrays
        broadcast (vectorised over candidates). Models fitted on one device count ignore k."""
        return self.predict_with(self.model, self.coefficients, d=d, n=n, h=h, w=w, s=s, v=v, b=b, k=k)

    def step_seconds_for(self, cfg: Any, b: int) -> float:
        """Predicted step seconds of one ModelConfig at batch b."""
        return float(self.predict_step_seconds(cfg.d, cfg.n, cfg.h, cfg.w, cfg.s, cfg.v, b)[0])


def save_profile(path: str | Path, profile: DeviceProfile) -> Path:
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
    if not isinstance(data, dict) or data.get("version") != PROFILE_VERSION:
        raise UserError(f"device profile {path}: expected a JSON object with version {PROFILE_VERSION}")
    data.pop("version")
    try:
        data["coefficients"] = tuple(float(c) for c in data["coefficients"])
        profile = DeviceProfile(**data)
    except (TypeError, KeyError, ValueError) as err:
        raise UserError(f"device profile {path} is malformed ({type(err).__name__}: {err})") from None
    except UserError as err:
        raise UserError(f"device profile {path}: {err}") from None
    if not (profile.peak_flops > 0 and profile.bandwidth > 0):
        raise UserError(f"device profile {path}: peak_flops and bandwidth must be positive")
    return profile
