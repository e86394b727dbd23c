"""Run folders (DESIGN.md section 4): config.json, metrics.jsonl, summary.json, checkpoints/ (Orbax).

`config.json` holds the fully resolved config, the schema version, the corpus fingerprint, package and
JAX versions and the device kind; loading it reproduces the run. `metrics.jsonl` holds one line per
training step; on resume, lines past the restored checkpoint are dropped so that no step is lost or
duplicated.
"""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.schema import SCHEMA_VERSION, RunConfig

_PACKAGES = ("smallest-loss", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")


def environment() -> dict[str, Any]:
    """Versions and device of this process, recorded with every run and measurement."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    device = jax.devices()[0]
    return dict(
        packages=versions, python=platform.python_version(), backend=jax.default_backend(),
        device_kind=device.device_kind, device_count=jax.device_count(),
    )


def _is_main() -> bool:
    """Only process 0 writes run files; with several hosts, the others compute and checkpoint."""
    return jax.process_index() == 0


def _write_json(path: Path, data: Any) -> None:
    """Write atomically: a crash leaves the old file or the new one, never half of one."""
    if not _is_main():
        return
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


class RunDir:
    """One training run's folder."""

    def __init__(self, path: Path, config: RunConfig, record: dict[str, Any]):
        self.path = path
        self.config = config
        self.record = record

    @classmethod
    def create(cls, path: str | Path, config: RunConfig, corpus: dict[str, Any]) -> RunDir:
        path = Path(path)
        if (path / "config.json").exists():
            raise UserError(f"{path} already holds a run; continue it with --resume {path} or choose another --out")
        path.mkdir(parents=True, exist_ok=True)
        record = dict(schema_version=SCHEMA_VERSION, config=config.to_dict(), corpus=corpus, **environment())
        _write_json(path / "config.json", record)
        return cls(path, config, record)

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        path = Path(path)
        config_file = path / "config.json"
        if not config_file.is_file():
            raise UserError(f"{path} is not a run folder (no config.json)")
        try:
            record = json.loads(config_file.read_text())
            config = RunConfig.from_dict(record["config"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise UserError(f"{config_file} is malformed ({err}); it cannot be resumed") from None
        if record.get("schema_version") != SCHEMA_VERSION:
            found = record.get("schema_version")
            raise UserError(f"{config_file} has schema version {found}; this tool reads {SCHEMA_VERSION}")
        return cls(path, config, record)

    # metrics.jsonl ---------------------------------------------------------------------------------
    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    def append_metrics(self, lines: list[dict[str, Any]]) -> None:
        if lines and _is_main():
            with self.metrics_file.open("a") as f:
                f.writelines(json.dumps(line) + "\n" for line in lines)
                f.flush()
                os.fsync(f.fileno())

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_file.exists():
            return []
        lines = []
        for raw in self.metrics_file.read_text().splitlines():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                break  # a line cut short by a crash: everything after it is lost anyway
        return lines

    def truncate_metrics(self, step: int) -> list[dict[str, Any]]:
        """Keep the lines of steps up to `step` (the restored checkpoint) and return them."""
        kept = [line for line in self.read_metrics() if line["step"] <= step]
        if not _is_main():
            return kept
        tmp = self.metrics_file.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(line) + "\n" for line in kept))
        os.replace(tmp, self.metrics_file)
        return kept

    # summary.json ----------------------------------------------------------------------------------
    def write_summary(self, summary: dict[str, Any]) -> None:
        _write_json(self.path / "summary.json", summary)

    def read_summary(self) -> dict[str, Any] | None:
        file = self.path / "summary.json"
        return json.loads(file.read_text()) if file.exists() else None

    # checkpoints/ ----------------------------------------------------------------------------------
    def checkpoint_manager(self) -> ocp.CheckpointManager:
        options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True, enable_async_checkpointing=False)
        return ocp.CheckpointManager((self.path / "checkpoints").absolute(), options=options)
