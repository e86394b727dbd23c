"""Shared test fixtures: tiny configurations and a small text corpus, so tests run in seconds on CPU."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

# Bytecode caches, as Python writes them by default, even where PYTHONDONTWRITEBYTECODE is set: otherwise every
# xdist worker rewrites every test module's asserts again (about 6 s each) and every CLI subprocess compiles the
# package's modules from source. They land in the checkout's __pycache__ folders (git ignores them).
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

# XLA's persistent compilation cache, shared by this test session and the CLI subprocesses it starts (they
# inherit the environment): many tests compile the same tiny programs, and a hit skips the compile. Set
# before JAX is imported; an existing setting (a warm cache kept between runs) wins.
# The process that makes the folder (the xdist controller: workers inherit it) removes it when it exits.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="smallest-loss-xla-cache-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
# Tests spend most of their time compiling tiny programs: LLVM's lowest optimisation level halves XLA's CPU
# compile time (4 tiny steps: 11.5 s -> 5.7 s) and still ran a 300-step tiny training faster overall
# (16.4 s -> 10.6 s). XLA's own graph optimisations, and so its cost analysis, are unchanged.
# XLA's CPU fusion emitters (MLIR) take most of what is left: without them (the older LLVM IR emitters) a tiny
# training step compiles in 0.8-1.3 s instead of 2.4 s. An unknown flag aborts XLA, so each is set only for the
# jaxlib versions checked to have it (jaxlib 0.11 dropped the fusion emitters' switch: it aborts there). It is not
# free of effects: it changes a few HLO passes, and with them XLA's FLOP count of a mixture of experts' dispatch by
# 1.1%, so tests that hold counts against XLA's as the product compiles run in a process without it
# (`device_env(product_xla=True)`, which sets PRODUCT_XLA for that process).
# LLVM's code generation in one piece rather than split for parallel threads: on 2 busy cores the split only adds
# work (the tiny grid's 10 compiles and timings: 23-28 s -> 18-25 s alone, 26 s -> 23-24 s two at once). Code
# generation only: the HLO and XLA's cost analysis are unchanged.
_FLAGS = ["--xla_backend_optimization_level=0"]
CODEGEN_FLAGS = ["--xla_cpu_parallel_codegen_split_count=1"]
TEST_ONLY_FLAGS = ["--xla_cpu_use_fusion_emitters=false"]
PRODUCT_XLA = "SMALLEST_LOSS_TESTS_PRODUCT_XLA"
_JAXLIB = tuple(int(p) for p in version("jaxlib").split(".")[:2])
if (0, 10) <= _JAXLIB < (0, 12):
    _FLAGS += CODEGEN_FLAGS
if _JAXLIB == (0, 10) and not os.environ.get(PRODUCT_XLA):
    _FLAGS += TEST_ONLY_FLAGS
for _flag in _FLAGS:
    if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

import pytest  # noqa: E402
from smallest_loss.configs.schema import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402


def device_env(devices: int | None = None, product_xla: bool = False) -> dict[str, str]:
    """The environment of a JAX subprocess on the CPU: this session's XLA flags (the fast compiles above; with
    `product_xla`, less those that change XLA's cost analysis) and, with `devices`, that many simulated CPU devices
    (a flag XLA reads when JAX starts, hence a process of its own)."""
    flags = os.environ.get("XLA_FLAGS", "")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    if product_xla:
        flags = " ".join(f for f in flags.split() if f not in TEST_ONLY_FLAGS)
        env[PRODUCT_XLA] = "1"
    if devices:
        flags = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
    return dict(env, XLA_FLAGS=flags)


TINY_MODEL = ModelConfig(v=256, d=32, n=1, h=2, w=64, s=16)


def tiny_run(corpus: str = "stdlib", **train) -> RunConfig:
    """A run that compiles and trains in a couple of seconds."""
    settings = dict(
        batch_size=4, steps=20, lr=3e-3, warmup_steps=2, eval_every=10, eval_batches=2, checkpoint_every=5, log_every=1
    )
    settings.update(train)
    return RunConfig(model=TINY_MODEL, train=TrainConfig(**settings), data=DataConfig(corpus=corpus))


@pytest.fixture
def text_corpus(tmp_path: Path) -> Path:
    """A folder of a few small text files (enough for a split by file)."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(40):
        (folder / f"f{i:02d}.txt").write_text(f"file {i}: " + "the quick brown fox jumps over the lazy dog. " * 20)
    return folder


# Slow tests in files that do not import pytest to say so with `@pytest.mark.slow`: marked here.
SLOW_TESTS = (
    "tests/model/test_sigkill.py::test_sigkill_then_resume_matches_uninterrupted",
    "tests/experiments/test_repeat_seeds.py::test_a_run_repeats_at_another_seed_and_both_evaluate_on_one_sample",
)


# The longest test files, run first: pytest-xdist hands out whole files (--dist loadfile) in collection order (with
# --no-loadscope-reorder, pyproject.toml; by default it orders files by their number of tests), so a long file
# collected last keeps one worker busy after the others have finished. Longest first, measured on 2 cores; the GPU
# session's script third, so that it starts after the quickstart test has compiled the `tiny` grid both tests time
# (its calibration then reads the programs from the shared compilation cache).
LONGEST_FIRST = (
    "tests/experiments/test_quickstart.py",
    "tests/test_docs.py",
    "tests/experiments/test_gpu_session.py",
    "tests/model/test_sharding.py",
    "tests/model/test_transformer.py",
    "tests/experiments/test_fit_curves_cmd.py",
    "tests/timing/test_counts_moe.py",
    "tests/model/test_moe_sharding.py",
)


@pytest.hookimpl(tryfirst=True)  # before `-m` selects on the marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests in `SLOW_TESTS` are marked `slow`; the files of `LONGEST_FIRST` come first, in its order (a stable sort:
    every file keeps its own order; every xdist worker sorts alike); tests marked `gpu` need an accelerator: skipped
    where JAX's default backend is the CPU."""
    root = Path(__file__).resolve().parent.parent
    path = {item: item.path.resolve().relative_to(root).as_posix() for item in items}
    rank = {file: i for i, file in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(path[item], len(rank)))
    for item in items:
        if f"{path[item]}::{item.name}" in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
    import jax

    if jax.default_backend() != "cpu":
        return
    skip = pytest.mark.skip(reason="needs an accelerator (JAX's default backend is the CPU)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
