"""Modules loaded on first use, so that a command that never needs JAX (`plan`) or scipy does not pay its import
(about a second each, more on a busy machine). `jax`, `jnp`, `optimize` (scipy.optimize) and `stats` (scipy.stats)
are shared here; a module needing another one makes its own `LazyModule`.

`jax = LazyModule("jax")` behaves as the module once an attribute is read; `jit(fn, ...)` compiles `fn` with
`jax.jit` on its first call. Both are for module-level names whose use sits inside functions.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from functools import wraps
from types import ModuleType
from typing import Any


class LazyModule:
    """A stand-in for the module `name`, imported when one of its attributes is first read."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)

    @property
    def loaded(self) -> bool:
        """Whether the module has been imported (by this stand-in or by anyone)."""
        return self._name in sys.modules

    def __repr__(self) -> str:
        return f"LazyModule({self._name!r})"


jax = LazyModule("jax")
jnp = LazyModule("jax.numpy")
optimize = LazyModule("scipy.optimize")  # scipy takes a second to import
stats = LazyModule("scipy.stats")


def jit(fn: Callable | None = None, **options: Any) -> Callable:
    """`jax.jit(fn, **options)`, built on the first call; usable as `@jit` or `@partial(jit, static_argnames=...)`."""
    if fn is None:
        return lambda f: jit(f, **options)
    compiled: list[Callable] = []

    @wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        if not compiled:
            compiled.append(jax.jit(fn, **options))
        return compiled[0](*args, **kwargs)

    return call
