"""The `smallest-loss` command: a registry of commands, each a module with `add_parser` and `run`.

Only the command asked for is imported (so `smallest-loss fit` does not load the trainer); `--help` lists them all
from the registry. Every mistake a user can make surfaces as one line on stderr and exit 2 (UserError); Ctrl-C
as one line saying what was saved and how to continue, and exit 130.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from smallest_loss.configs.errors import UserError
from smallest_loss.configs.lazy import LazyModule, jax
from smallest_loss.model.host_memory import steady_host_memory

sharding = LazyModule("smallest_loss.model.sharding")  # JAX's multi-host start, loaded only when asked for

# name: (module under smallest_loss.experiments, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "quickstart": ("quickstart_cmd", "calibrate, sweep, fit, plan and verify on the embedded default"),
    "train": ("train_cmd", "train one model on the embedded corpus or your own"),
    "corpus": ("corpus_cmd", "write a code-only corpus: Python sources without comments or docstrings"),
    "sweep": ("sweep_cmd", "train every run of a sweep design (IsoFLOP or IsoTime)"),
    "fit": ("fit_cmd", "fit a loss law (Chinchilla Approach 3 or Kaplan) to runs or a CSV"),
    "predict": (
        "predict_cmd",
        "a curve law's predicted loss for a run of any length and schedule, or where a run in progress will end",
    ),
    "table": ("table_cmd", "write run or sweep folders as one table (CSV) in the columns every law fits"),
    "ptq": ("ptq_cmd", "quantise finished runs' weights after training and measure the loss each width costs"),
    "fit-recipe": ("recipe_cmd", "fit learning-rate and batch laws from a recipe sweep into a law file"),
    "measure": ("measure_cmd", "time one configuration's training step and show XLA's and our counts"),
    "calibrate": (
        "calibrate",
        "time a grid of configurations (or read external timings), fit and compare step-time models",
    ),
    "plan": ("plan_cmd", "the architectures with the smallest predicted loss for a budget"),
    "suggest": (
        "suggest_cmd",
        "the runs to train next (and their design file) that most shrink the interval predicted at a target budget",
    ),
    "space": ("space_cmd", "list the built-in search spaces, or print one as a space file to edit (--show NAME)"),
}

INTERRUPTED = "interrupted: work finished so far is saved; rerun the same command to continue"


def command_module(name: str) -> ModuleType:
    """The module of command `name`."""
    return importlib.import_module(f"smallest_loss.experiments.{COMMANDS[name][0]}")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser with every command listed; the arguments of the command `argv` names (all, without `argv`)."""
    parser = argparse.ArgumentParser(
        prog="smallest-loss", description="What is the smallest loss your budget can buy? Measured answers."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    chosen = None if argv is None else next((a for a in argv if not a.startswith("-")), "")
    for name, (_, help_line) in COMMANDS.items():
        p = sub.add_parser(name, help=help_line, description=help_line)
        if chosen is None or chosen == name:
            module = command_module(name)
            module.add_parser(p)
            p.set_defaults(command_run=module.run, command_interrupted=getattr(module, "INTERRUPTED", INTERRUPTED))
    return parser


def use_compilation_cache() -> str | None:
    """Keep XLA's compiled programs on disk, so a rerun, a resumed sweep or the next `fit` skips compiling
    programs it has compiled before (seconds each on a CPU). The folder is `SMALLEST_LOSS_XLA_CACHE`
    (default ~/.cache/smallest-loss/xla; `off` disables it); a JAX_COMPILATION_CACHE_DIR set by the user wins.
    A command that has not loaded JAX gets the folder through the environment, which JAX reads if it loads."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    folder = os.environ.get("SMALLEST_LOSS_XLA_CACHE", str(Path.home() / ".cache" / "smallest-loss" / "xla"))
    if folder.lower() in ("off", "0", "none", ""):
        return None
    if jax.loaded:
        jax.config.update("jax_compilation_cache_dir", folder)
    else:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = folder
    return folder


def prepare_process() -> None:
    """What every process that trains or times steps sets first: the C allocator for steady steps (before any step
    allocates: model/host_memory.py) and XLA's compilation cache."""
    steady_host_memory()
    use_compilation_cache()


def main(argv: Sequence[str] | None = None) -> int:
    prepare_process()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    try:
        if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("SMALLEST_LOSS_DISTRIBUTED") == "1":
            sharding.initialize_distributed()
        return args.command_run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{args.command_interrupted.format(args=args)}", file=sys.stderr)
        return 130


def entry() -> None:
    """The `smallest-loss` console script: `main`, then exit with its code. After Ctrl-C (130) the process ends at
    once, once its line is out: everything it saved is on disk, and the interpreter's teardown with XLA's threads
    caught mid-compile can crash (a segmentation fault after the line, on CPU)."""
    code = main()
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(code)


if __name__ == "__main__":
    entry()
