"""Run folders (README, "File formats"): config.json, metrics.jsonl, summary.json, checkpoints/ (Orbax).

`config.json` holds the fully resolved config, the schema version, the fingerprints of the corpus and of
the extra validation sets (`eval_sets`), package and JAX versions and the device kind; loading it
reproduces the run. `metrics.jsonl` holds one line per training step, steps 1, 2, 3, ... in order; on
resume, lines past the restored checkpoint are dropped so that no step is lost or duplicated. Every file
is strict JSON: a non-finite number is written as null.

With several processes (hosts), process 0 alone writes files and decides whether a folder can be used;
the others wait for its decision (`sharding.from_main`), so every process fails or goes on together.

A run folder has one writer: `hold_run` takes an exclusive OS lock (`flock`) on the folder's `.lock` file before
anything is written, and the lock dies with its process, so a killed run never leaves a stale lock. On Linux,
`flock` on NFS (v4, or v3 with a lock manager) is carried out as a POSIX lock the server arbitrates, so workers on
several hosts sharing one results folder exclude each other too; where the platform has no `fcntl` (Windows) runs
are not locked. With several hosts, process 0 holds the lock.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import socket
import statistics
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from smallest_loss.configs.errors import UserError
from smallest_loss.configs.lazy import LazyModule, jax
from smallest_loss.configs.schema import SCHEMA_VERSION, RunConfig

# Loaded on first use: reading a run folder (a law's fit, a run table) needs neither JAX nor Orbax.
ocp = LazyModule("orbax.checkpoint")
checkpoint_managers = LazyModule("orbax.checkpoint.checkpoint_managers")  # a module, not a package
sharding = LazyModule("smallest_loss.model.sharding")

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
        packages=versions,
        python=platform.python_version(),
        backend=jax.default_backend(),
        device_kind=device.device_kind,
        device_count=jax.device_count(),
    )


def _is_main() -> bool:
    """Only process 0 writes run files; with several hosts, the others compute and checkpoint."""
    return jax.process_index() == 0


def _strict(value: Any) -> Any:
    """`value` with every non-finite float replaced by None, so that it serialises as strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value


def dumps(data: Any, **kwargs: Any) -> str:
    """Strict JSON (no NaN or Infinity, which `json.loads` accepts but other readers reject)."""
    return json.dumps(_strict(data), allow_nan=False, **kwargs)


def write_json(path: Path, data: Any) -> None:
    """Write atomically: a crash leaves the old file or the new one, never half of one."""
    if not _is_main():
        return
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _make_folder(path: Path) -> None:
    """Create folder `path` (and its parents) and check that files can be written in it."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} is a file, not a folder; choose another --out")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"cannot create {path}: {existing} is a file, not a folder; choose another --out")
    probe = path / f".write-test-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError as err:
        where = f" ({err.filename})" if err.filename else ""
        raise UserError(f"cannot write run folder {path}: {err.strerror or err}{where}; choose another --out") from None


def _main_decides(check: Callable[[], None]) -> None:
    """Run `check` on process 0 alone; when it raises `UserError`, every process raises the same one."""
    error, kind = None, UserError
    if _is_main():
        try:
            check()
        except UserError as err:
            error, kind = str(err), type(err)
    error = sharding.from_main(error)
    if error:
        raise kind(error)


def make_folder(path: str | Path) -> Path:
    """Create an output folder on process 0, or fail on every process with process 0's one-line reason."""
    path = Path(path)
    _main_decides(lambda: _make_folder(path))
    return path


try:
    import fcntl
except ImportError:  # Windows: no flock; run folders go unlocked there
    fcntl = None

LOCK_FILE = ".lock"


class RunLocked(UserError):
    """The run folder is being written by another process."""


PTQ_FILE = "ptq.json"  # a run's losses after post-training quantisation (model/evaluate.py `post_training_losses`)


def read_ptq(folder: str | Path) -> dict[str, Any] | None:
    """The run's `ptq.json` (None when it has none): `loss` as trained and `loss_post` {bits: loss} on `sample`."""
    file = Path(folder) / PTQ_FILE
    return json.loads(file.read_text()) if file.exists() else None


class RunExists(UserError):
    """A new run was asked for in a folder that already holds one."""


def _lock_holder(file: Path) -> str:
    """Who holds a run's lock, from what the holder wrote in the lock file."""
    try:
        who = json.loads(file.read_text())
        return f"pid {who['pid']} on {who['host']}, since {who['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not yet said who it is"


def _acquire(folder: Path) -> Any:
    """The open lock file of `folder`, locked for this process; RunLocked naming the holder when another has it."""
    file = folder / LOCK_FILE
    handle = file.open("a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise RunLocked(
            f"{folder} is being written by another process ({_lock_holder(file)}); "
            "wait for it to finish or stop it, then --resume"
        ) from None
    handle.seek(0)
    handle.truncate()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    handle.write(json.dumps(dict(pid=os.getpid(), host=socket.gethostname(), started=started)) + "\n")
    handle.flush()
    return handle


@contextlib.contextmanager
def hold_run(path: str | Path, create: bool) -> Iterator[None]:
    """Hold `path`'s run lock for the block (process 0; the others follow its decision). `create` makes the folder
    first (a new run); without it a missing folder is left for the caller to refuse."""
    path = Path(path)
    handle = None

    def take() -> None:
        nonlocal handle
        if create:
            _make_folder(path)
        if fcntl is not None and path.is_dir():
            handle = _acquire(path)

    _main_decides(take)
    try:
        yield
    finally:
        if handle is not None:
            handle.close()  # closing the file releases the lock


class RunDir:
    """One training run's folder."""

    def __init__(self, path: Path, config: RunConfig, record: dict[str, Any]):
        self.path = path
        self.config = config
        self.record = record

    @staticmethod
    def prepare(path: str | Path) -> Path:
        """Check, before any slow work, that `path` can hold a new run, and create the folder."""
        path = Path(path)

        def check() -> None:
            if (path / "config.json").exists():
                raise RunExists(f"{path} already holds a run; continue it with --resume {path} or choose another --out")
            _make_folder(path)

        _main_decides(check)
        return path

    @classmethod
    def create(
        cls,
        path: str | Path,
        config: RunConfig,
        corpus: dict[str, Any],
        eval_sets: dict[str, dict[str, Any]] | None = None,
        branch: tuple[Path, int] | None = None,
        keep_checkpoints: tuple[int, ...] = (),
    ) -> RunDir:
        """A new run folder. Process 0 writes config.json; the others wait for it (or for its error).

        `corpus` describes the training corpus and `eval_sets` the extra validation sets by name (with their
        fingerprints, which a resumed run must match). A cool-down branch records its parent run folder (as a
        path relative to its own) and the step it starts from; a parent records the checkpoints it keeps for
        its branches."""
        path = RunDir.prepare(path)
        record = dict(
            schema_version=SCHEMA_VERSION,
            config=config.to_dict(),
            corpus=corpus,
            eval_sets=eval_sets or {},
            **environment(),
        )
        if branch:
            record["branch"] = dict(parent=os.path.relpath(branch[0], path), step=branch[1])
        if keep_checkpoints:
            record["keep_checkpoints"] = sorted(keep_checkpoints)
        write_json(path / "config.json", record)
        sharding.barrier("run folder created")  # no process goes on before config.json exists
        return cls(path, config, record)

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        path = Path(path)
        config_file = path / "config.json"
        if not config_file.is_file():
            raise UserError(f"{path} is not a run folder (no config.json)")
        try:
            record = json.loads(config_file.read_text())
            if record.get("schema_version") == 1:  # before train.eval_batch_size: it evaluated at its own batch
                record["config"].setdefault("train", {}).setdefault("eval_batch_size", 0)
                record["schema_version"] = SCHEMA_VERSION
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
                f.writelines(dumps(line) + "\n" for line in lines)
                f.flush()
                os.fsync(f.fileno())

    def check_metrics(self) -> tuple[list[dict[str, Any]], str | None]:
        """The lines of steps 1, 2, ... up to the first line that is cut short or out of order, and what is
        wrong with that line (None when every line is whole)."""
        if not self.metrics_file.exists():
            return [], None
        lines: list[dict[str, Any]] = []
        for number, raw in enumerate(self.metrics_file.read_text().splitlines(), 1):
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                return lines, f"line {number} of {self.metrics_file} is cut short"
            if not isinstance(line, dict) or line.get("step") != len(lines) + 1:
                return lines, f"line {number} of {self.metrics_file} is not step {len(lines) + 1}"
            lines.append(line)
        return lines, None

    def read_metrics(self) -> list[dict[str, Any]]:
        """The whole lines (a crash can cut the last one short; what follows a damaged line is ignored)."""
        return self.check_metrics()[0]

    def start_from(self, parent: RunDir, step: int) -> None:
        """A new branch's metrics.jsonl: its parent's lines of steps 1 to `step`, the steps they share."""
        lines = parent.read_metrics()[:step]
        if _is_main():
            self.metrics_file.write_text("".join(dumps(line) + "\n" for line in lines))

    def truncate_metrics(self, step: int) -> list[dict[str, Any]]:
        """Keep the lines of steps up to `step` (the restored checkpoint) and return them."""
        kept = self.read_metrics()[:step]
        if not _is_main():
            return kept
        tmp = self.metrics_file.with_suffix(".tmp")
        tmp.write_text("".join(dumps(line) + "\n" for line in kept))
        os.replace(tmp, self.metrics_file)
        return kept

    # summary.json ----------------------------------------------------------------------------------
    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json(self.path / "summary.json", summary)

    def read_summary(self) -> dict[str, Any] | None:
        file = self.path / "summary.json"
        return json.loads(file.read_text()) if file.exists() else None

    def status(self) -> str:
        """Where the run stands, in a few words: completed, diverged at step k, or interrupted at step k (the
        last step in metrics.jsonl: also when it was killed before it could write a summary)."""
        summary = self.read_summary()
        if summary and summary["status"] == "diverged" and summary.get("diverged_step"):
            return f"diverged at step {summary['diverged_step']}"
        if summary and summary["status"] != "interrupted":
            return summary["status"]
        logged = len(self.read_metrics())
        return f"interrupted at step {logged}" if logged else "interrupted before its first logged step"

    # checkpoints/ ----------------------------------------------------------------------------------
    @property
    def branch(self) -> tuple[Path, int] | None:
        """(parent run folder, branch step) of a cool-down branch; None for any other run."""
        found = self.record.get("branch")
        return ((self.path / found["parent"]).resolve(), int(found["step"])) if found else None

    @property
    def keep_checkpoints(self) -> tuple[int, ...]:
        """Steps whose checkpoints are saved and never deleted: the branch points of a cool-down parent."""
        return tuple(self.record.get("keep_checkpoints", ()))

    def checkpoint_manager(self) -> ocp.CheckpointManager:
        """The last two checkpoints, and every one in `keep_checkpoints`."""
        return checkpoint_manager(self.path / "checkpoints", self.keep_checkpoints)


def checkpoint_manager(folder: Path, keep: tuple[int, ...] = ()) -> ocp.CheckpointManager:
    """A run's checkpoint manager on `folder`: the last two checkpoints and every one in `keep`, saved synchronously."""
    if keep:
        preservation = checkpoint_managers.preservation_policy
        policy = preservation.AnyPreservationPolicy([preservation.LatestN(2), preservation.CustomSteps(keep)])
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy, create=True, enable_async_checkpointing=False
        )
    else:
        options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True, enable_async_checkpointing=False)
    return ocp.CheckpointManager(Path(folder).absolute(), options=options)


def steady_step_seconds(lines: list[dict[str, Any]], checkpoint_every: int, median: bool = False) -> float | None:
    """Seconds per training step from a run's metrics, counting only the time between host syncs that holds
    nothing but steps: not the first interval (compilation), not one that ends in an evaluation, not one that
    follows a checkpoint save. Lines of one sync share its wall time, so intervals run between syncs. None
    when no interval is clean (too few syncs). The clean intervals' total seconds over their steps (what the run
    paid), or with `median` the median interval's seconds a step (robust to a shared machine's slow spell in one)."""
    clean = clean_intervals(lines, checkpoint_every)
    if not clean:
        return None
    if median:
        return float(statistics.median(s / k for s, k in clean))
    return sum(s for s, _ in clean) / sum(k for _, k in clean)


def clean_intervals(lines: list[dict[str, Any]], checkpoint_every: int) -> list[tuple[float, int]]:
    """(seconds, steps) of each interval between host syncs that holds nothing but steps, in run order (see
    `steady_step_seconds`)."""
    syncs = [a for a, b in zip(lines, lines[1:], strict=False) if b["wall_seconds"] != a["wall_seconds"]]
    syncs += lines[-1:]
    return [
        (b["wall_seconds"] - a["wall_seconds"], b["step"] - a["step"])
        for a, b in zip(syncs, syncs[1:], strict=False)
        if "eval_loss" not in b and not (checkpoint_every and a["step"] % checkpoint_every == 0)
    ]


def step_seconds_by_part(lines: list[dict[str, Any]], checkpoint_every: int, parts: int = 4) -> list[float] | None:
    """Seconds a step in each of `parts` consecutive stretches of a run's clean intervals (`clean_intervals`, run
    order): how the machine's speed moved while the run trained, apart from the jitter of single intervals. None
    with fewer clean intervals than `parts`."""
    clean = clean_intervals(lines, checkpoint_every)
    if len(clean) < parts:
        return None
    bounds = [round(i * len(clean) / parts) for i in range(parts + 1)]
    stretches = [clean[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    return [sum(s for s, _ in part) / sum(k for _, k in part) for part in stretches]
