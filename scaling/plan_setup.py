"""What a plan searches and with what: the space (named, or chosen for the budget, the profile or the law) and the
planner's inputs from a device profile, a device table entry and the user's quantities, all checked before any
plan runs. One home for the CLI, the quickstart and the Python API.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from smallest_loss.configs.devices import Device, backend_of
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.spaces import FLOPS_SPACES, SPACES, SearchSpace, get_space
from smallest_loss.scaling.budget import Budget
from smallest_loss.scaling.laws import Law
from smallest_loss.scaling.plan import PlanInputs, compute_optimal_params, param_range
from smallest_loss.timing.profile import DeviceProfile
from smallest_loss.timing.wallclock import Cadence


def spaces_for(backend: str, dtype: str) -> list[str]:
    """The built-in spaces made for a backend and dtype (float8 models compute in bfloat16: its spaces)."""
    dtype = space_dtype(dtype)
    return [name for name, space in SPACES.items() if backend in space.backends and space.dtype == dtype]


def space_dtype(dtype: str) -> str:
    """The dtype of the spaces made for a compute dtype: bfloat16 for float8 (FP8 matmuls, bfloat16 around them)."""
    return "bfloat16" if dtype == "float8" else dtype


def at_profile_precision(space: SearchSpace, profile: DeviceProfile | None) -> SearchSpace:
    """A bfloat16 space searched with a float8 profile: the same architectures, planned (and verified) in float8."""
    if profile is not None and profile.dtype != space.dtype and space_dtype(profile.dtype) == space.dtype:
        return dataclasses.replace(space, dtype=profile.dtype)
    return space


def check_device_fits(space: SearchSpace, profile: DeviceProfile | None, device: Device | None) -> None:
    """Refuse a profile or device table entry made for other hardware or another dtype than the space's: its
    step times (or price and memory) would describe machines the space's models are not meant for."""
    if profile is not None:
        backend = backend_of(profile.device_kind)
        if backend not in space.backends or profile.dtype != space.dtype:
            fits = spaces_for(backend, profile.dtype)
            hint = f"use --space {' or '.join(fits)}" if fits else "calibrate on the space's device and dtype"
            raise UserError(
                f"the device profile was measured on {profile.device_kind} ({backend}, {profile.dtype}) "
                f"but space {space.name} is for {'/'.join(space.backends)} in {space.dtype}: {hint}"
            )
    if device is not None:
        backend = backend_of(device.kinds[0])
        if profile is not None and backend != backend_of(profile.device_kind):
            raise UserError(
                f"--device {device.name} is a {backend} but the profile was measured on {profile.device_kind}"
            )
        if backend not in space.backends:
            raise UserError(
                f"--device {device.name} is a {backend} but space {space.name} is for {'/'.join(space.backends)}"
            )


def build_plan_inputs(
    space: SearchSpace,
    profile: DeviceProfile | None = None,
    device: Device | None = None,
    price_per_hour: float | None = None,
    spot_discount: float = 0.0,
    flops: str = "6N",
    inference_tokens: float = 0.0,
    max_latency_ms: float | None = None,
    covers: str = "run",
    cadence: Cadence | None = None,
    moe_records: bool = False,
) -> PlanInputs:
    """The planner's inputs from a space, an optional device profile and device table entry, and the user's
    quantities. A MoE candidate's step seconds come from the profile's time model with the MoE's counts
    (`predict_step_seconds` with `moe=`): "measured" where its records hold MoE configurations (`moe_records`),
    else "extrapolated". The price comes from `price_per_hour`, else the device table, else the profile; the memory
    from the device table, else the profile. A time budget pays for the whole run (`covers` "run": the profile's
    wall-clock terms, with the run's `cadence` of evaluations and saves) or the steps alone ("steps"). Every
    quantity is checked (PlanInputs) before any plan runs."""
    check_device_fits(space, profile, device)
    price = next(
        (
            p
            for p in (price_per_hour, device and device.price_per_hour, profile and profile.price_per_hour)
            if p is not None
        ),
        None,
    )
    memory = (device.memory_bytes if device else None) or (profile.memory_bytes if profile else None)
    return PlanInputs(
        space=space,
        step_seconds=profile.predict_step_seconds if profile else None,
        memory_limit=memory,
        flops=flops,
        price_per_hour=price,
        spot_discount=spot_discount,
        inference_tokens=inference_tokens,
        max_latency_ms=max_latency_ms,
        covers=covers,
        clock=profile.clock if profile else None,
        cadence=cadence or Cadence(),
        moe_step_seconds=profile.predict_step_seconds if profile else None,
        moe_timing="measured" if moe_records else "extrapolated",
        moe_refused=f"the profile trains {profile.precision}, and the model refuses MoE with quantised or FP8 training"
        if profile and (profile.bits or profile.dtype == "float8")
        else None,
    )


def profile_has_moe(path: str | Path) -> bool:
    """Whether the calibration folder of a profile file (its records.jsonl beside it) holds a successful timing
    record of a mixture of experts: then the profile's time model was fitted on MoE steps too."""
    records = Path(path).parent / "records.jsonl"
    if not records.is_file():
        return False
    for line in records.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("status") == "ok" and (record.get("config") or {}).get("experts"):
            return True
    return False


def holding_space(N: float, names: list[str] | tuple[str, ...]) -> str | None:
    """The first named space whose parameter range holds N."""
    return next((name for name in names if param_range(SPACES[name])[0] < N < param_range(SPACES[name])[1]), None)


def choose_space(
    name: str | SearchSpace | None, budget: Budget, law: Law, profile: DeviceProfile | None = None
) -> tuple[SearchSpace, str]:
    """The space to search and why: the given one (a SearchSpace, a built-in name or a space file); else the one
    made for the profile's device and dtype; else, for a FLOPs budget, the first of FLOPS_SPACES whose parameter
    range holds the law's compute-optimal N (C = 6ND); else `cpu`."""
    if isinstance(name, SearchSpace):
        return name, f"space {name.name}"
    if name is not None:
        return get_space(name), f"space {name}"
    if profile is not None:
        backend = backend_of(profile.device_kind)
        fits = spaces_for(backend, profile.dtype)
        if not fits:
            raise UserError(f"no built-in space is made for a {backend} profile in {profile.dtype}: pass --space")
        return get_space(fits[0]), f"space {fits[0]} (the space for this profile's {backend} in {profile.dtype})"
    if budget.kind != "flops":
        return get_space("cpu"), "space cpu (the default)"
    N_opt = compute_optimal_params(law, budget.value)
    chosen = holding_space(N_opt, FLOPS_SPACES) or FLOPS_SPACES[-1]
    why = f"the law's compute-optimal N = {N_opt:.3g} (C = 6ND)"
    if chosen == FLOPS_SPACES[0]:
        return get_space(chosen), f"space {chosen} (the default; it holds {why})"
    reach = param_range(SPACES[FLOPS_SPACES[0]])[1]
    return get_space(chosen), (
        f"space {chosen}, chosen because space {FLOPS_SPACES[0]} reaches only N = "
        f"{reach:.3g} parameters and {why} lies in space {chosen}"
    )
