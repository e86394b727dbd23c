"""What this process spent while a run's steps ran: CPU seconds (user and system), page faults, context switches and
Python's garbage collections, from `getrusage` and `gc.callbacks`.

A verified run that misses its step price while the step alone, timed before and after it, does not (scaling/verify.py)
ran slower for a reason of its own or of the machine's: its CPU seconds over its wall seconds tell the two apart. With
every core busy on XLA's threads the process holds about one CPU second per core per second; far less, and it waited
(descheduled by the host or blocked); as much, but more CPU per step than usual, and the steps themselves ran slower
(system time, page faults and collections say where). Where `resource` is missing (Windows) only the collections are
counted.
"""

from __future__ import annotations

import gc
import time
from typing import Any

try:
    import resource
except ImportError:  # pragma: no cover - not on Linux or macOS
    resource = None  # type: ignore[assignment]

_RUSAGE = ("ru_utime", "ru_stime", "ru_minflt", "ru_majflt", "ru_nvcsw", "ru_nivcsw")
FIELDS = ("cpu_user", "cpu_system", "minor_faults", "major_faults", "voluntary_switches", "involuntary_switches")


def _rusage() -> tuple[float, ...] | None:
    if resource is None:
        return None
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return tuple(float(getattr(usage, name)) for name in _RUSAGE)


class Usage:
    """A context manager: on exit, `fields()` gives what the process spent inside it (all its threads)."""

    def __init__(self) -> None:
        self.gc_seconds, self.gc_collections = 0.0, 0
        self._gc_began: float | None = None
        self.wall = 0.0
        self.before = self.after = None

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_began = time.perf_counter()
        elif self._gc_began is not None:
            self.gc_seconds += time.perf_counter() - self._gc_began
            self.gc_collections += 1
            self._gc_began = None

    def __enter__(self) -> Usage:
        gc.callbacks.append(self._on_gc)
        self.before, self._began = _rusage(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._began
        self.after = _rusage()
        gc.callbacks.remove(self._on_gc)

    def fields(self) -> dict[str, float]:
        """Seconds and counts spent inside the block (`FIELDS`, `wall`, `gc_seconds`, `gc_collections`), rounded."""
        out: dict[str, float] = {"wall": round(self.wall, 4)}
        if self.before is not None and self.after is not None:
            for name, a, b in zip(FIELDS, self.before, self.after, strict=True):
                out[name] = round(b - a, 4) if name.startswith("cpu") else int(b - a)
        out["gc_seconds"] = round(self.gc_seconds, 4)
        out["gc_collections"] = self.gc_collections
        return out


def usage_reading(usage: dict[str, float] | None, steps: int) -> str | None:
    """The run's steps' process usage in words: CPU seconds over wall seconds (cores held), CPU a step, the system's
    share, page faults a step, the collector's seconds. None where it was not recorded."""
    if not usage or "cpu_user" not in usage or not usage.get("wall") or steps < 1:
        return None
    cpu = usage["cpu_user"] + usage["cpu_system"]
    return (
        f"the process held {cpu / usage['wall']:.2f} cores, {cpu / steps * 1e3:.1f} ms CPU a step "
        f"({usage['cpu_system'] / max(cpu, 1e-12):.0%} system), {usage['minor_faults'] / steps:.0f} page faults a "
        f"step, {usage['involuntary_switches'] / steps:.1f} preemptions a step, garbage collection "
        f"{usage['gc_seconds']:.2f} s"
    )
