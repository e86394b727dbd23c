"""Accelerators: vendor peak rates, memory and a default price per device-hour.

Peaks are the vendors' dense (no sparsity) figures; they are used only for MFU. Step-time models use the
peak and bandwidth measured on the device by `smallest-loss calibrate`. Prices are on-demand list prices
seen in 2025-2026 and vary by provider: override them with `--price-per-hour`.
"""

from __future__ import annotations

from dataclasses import dataclass

from smallest_loss.configs.errors import UserError


@dataclass(frozen=True)
class Device:
    name: str
    kinds: tuple[str, ...]  # device_kind strings as JAX reports them
    peak_bf16_flops: float | None  # dense, per device
    peak_fp32_flops: float | None
    bandwidth: float | None  # bytes/s
    memory_bytes: float | None
    price_per_hour: float | None  # US dollars per device-hour, on demand


DEVICES: dict[str, Device] = {
    d.name: d
    for d in (
        Device("h100-sxm", ("NVIDIA H100 80GB HBM3", "NVIDIA H100"), 989e12, 67e12, 3.35e12, 80e9, 2.5),
        Device("h100-pcie", ("NVIDIA H100 PCIe",), 756e12, 51e12, 2.0e12, 80e9, 2.0),
        Device("h200", ("NVIDIA H200",), 989e12, 67e12, 4.8e12, 141e9, 3.5),
        Device("a100-80gb", ("NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe"), 312e12, 19.5e12, 2.0e12, 80e9, 1.5),
        # NVIDIA Tesla V100 datasheet (SXM2 16GB): no bfloat16; the 16-bit field holds the fp16 tensor-core peak.
        Device("v100-sxm2-16gb", ("Tesla V100-SXM2-16GB",), 125e12, 15.7e12, 900e9, 16e9, None),
        Device("tpu-v5e", ("TPU v5 lite", "TPU v5e"), 197e12, None, 0.82e12, 16e9, 1.2),
        Device("tpu-v4", ("TPU v4",), 275e12, None, 1.2e12, 32e9, 3.2),
        Device("cpu", ("cpu",), None, None, None, None, None),
    )
}


def get_device(name: str) -> Device:
    """A device by table name (`h100-sxm`) or by JAX's device_kind string (`NVIDIA H100 80GB HBM3`)."""
    if name in DEVICES:
        return DEVICES[name]
    for device in DEVICES.values():
        if name in device.kinds or name.lower() in (k.lower() for k in device.kinds):
            return device
    raise UserError(f"unknown device {name!r}; known: {', '.join(DEVICES)}")


def backend_of(kind: str) -> str:
    """ "cpu", "tpu" or "gpu" for a JAX device_kind string ("cpu", "TPU v5 lite", "NVIDIA H100 80GB HBM3")."""
    lowered = kind.strip().lower()
    if lowered.startswith("cpu"):
        return "cpu"
    return "tpu" if lowered.startswith("tpu") else "gpu"


def find_device(kind: str) -> Device | None:
    """The table entry for a JAX device_kind, or None when the table does not know it."""
    try:
        return get_device(kind)
    except UserError:
        return None
