"""Architecture search spaces for the planner: which (d, n, h, w, s, b) it may recommend.

A loss law holds only for the training recipe it was fitted under, so a space fixes what the law does
not model (vocabulary, context, batch, MLP ratio) to the values of the sweep behind the law; the `cpu`
space matches the `cpu-isoflop` design. A space also names the backends and dtype it is meant for, so a
device profile measured elsewhere (a CPU profile with the `gpu` space) is refused rather than extrapolated.

A law L(N, D) cannot tell apart shapes of equal N, so each space states the shapes it prefers when
predicted losses tie (`preferred_aspect`, `preferred_head_size`, and where they come from).
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from smallest_loss.configs.errors import UserError
from smallest_loss.configs.schema import Activation, Norm


@dataclass(frozen=True)
class SearchSpace:
    name: str
    v: int
    d: tuple[int, ...]
    n: tuple[int, ...]
    head_sizes: tuple[int, ...]  # allowed d/h
    mlp_ratios: tuple[int, ...]  # w = ratio * d
    s: tuple[int, ...]
    b: tuple[int, ...]  # the batch of the recipe a law was fitted under (a law without recipe laws plans at it)
    norm: Norm = "rmsnorm"
    activation: Activation = "gelu"
    tied: bool = True
    dtype: str = "float32"
    # Aspect ratios d/n to consider. A law L(N, D) ignores shape, which holds only near the shapes it was
    # fitted on (Kaplan et al., 2020, found loss nearly flat in d/n over a wide middle range, not at its
    # ends), so a space stays close to the shapes of the sweep behind its law.
    aspect_ratio: tuple[float, float] = (0.0, float("inf"))
    backends: tuple[str, ...] = ("cpu",)  # device backends (configs.devices.backend_of) it is meant for
    # The tie rule: among shapes whose predicted losses tie, prefer d/n inside this band, then this head size.
    preferred_aspect: tuple[float, float] = (20.0, 200.0)
    preferred_head_size: int = 64
    preferred_source: str = (
        "Kaplan et al. 2020, section 3.1 and figure 5: loss within a few percent of its "
        "minimum for d/n from about 20 to 200"
    )
    # Batch sizes the planner may choose when the law carries recipe laws (scaling/recipe.py), inside the batch
    # range they were fitted on; empty: the space's `b`.
    batch_choices: tuple[int, ...] = ()
    # Mixture-of-experts candidates, searched only under a law with a `moe` section (scaling/moe_law.py): expert
    # counts (1: the dense MLP), top-k and granularity; empty: the law's fitted expert counts, top-1, granularity 1.
    experts: tuple[int, ...] = ()
    top_k: tuple[int, ...] = ()
    granularity: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for field in ("d", "n", "head_sizes", "mlp_ratios", "s", "b"):
            values = getattr(self, field)
            if not values or min(values) <= 0:
                raise UserError(f"search space {self.name}: {field} must be a non-empty list of positive integers")
        if not self.batch_choices:
            object.__setattr__(self, "batch_choices", self.b)
        for field in ("experts", "top_k", "granularity"):
            if any(x < 1 for x in getattr(self, field)):
                raise UserError(f"search space {self.name}: {field} must be positive integers (experts 1: dense)")
        for field in ("aspect_ratio", "preferred_aspect"):
            lo, hi = getattr(self, field)
            if not 0 <= lo < hi:
                raise UserError(f"search space {self.name}: {field}=({lo}, {hi}) needs 0 <= low < high")

    @property
    def size(self) -> int:
        """Upper bound on candidates (before dropping widths that no head size divides)."""
        out = 1
        for field in ("d", "n", "head_sizes", "mlp_ratios", "s", "b"):
            out *= len(getattr(self, field))
        return out


def _steps(lo: int, hi: int, step: int) -> tuple[int, ...]:
    return tuple(range(lo, hi + 1, step))


SPACES: dict[str, SearchSpace] = {
    # The recipe of the cpu-isoflop sweep: bytes (v=256), s=64, b=16, w=4d.
    # Its shapes span d/n = 16 to 32, so the space allows 12 to 48.
    # Ties go to the sweep's own shapes: d/n 16 to 32, head size 32 for all but its smallest models.
    "cpu": SearchSpace(
        "cpu",
        v=256,
        d=_steps(16, 512, 8),
        n=_steps(1, 16, 1),
        head_sizes=(8, 16, 32, 64),
        mlp_ratios=(4,),
        s=(64,),
        b=(16,),
        aspect_ratio=(12.0, 48.0),
        preferred_aspect=(16.0, 32.0),
        preferred_head_size=32,
        preferred_source="the shapes of the cpu-isoflop sweep behind the law",
        batch_choices=(2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128),
    ),
    # GPT-style shapes for an accelerator, bf16, GPT-2 vocabulary and context (head size 64, as GPT-2's).
    "gpu": SearchSpace(
        "gpu",
        v=50304,
        d=_steps(256, 8192, 64),
        n=_steps(2, 96, 1),
        head_sizes=(64, 128),
        mlp_ratios=(4,),
        s=(1024,),
        b=(8, 16, 32, 64, 128, 256),
        dtype="bfloat16",
        batch_choices=(8, 16, 32, 64, 96, 128, 192, 256, 384, 512, 768, 1024),
        aspect_ratio=(16.0, 256.0),
        backends=("gpu", "tpu"),
    ),
    # The same shapes in float16 (V100-era and Megatron-LM mixed precision): for profiles of float16 timings
    # (`calibrate --records` of public tables), which predict float16 steps only.
    "gpu-fp16": SearchSpace(
        "gpu-fp16",
        v=50304,
        d=_steps(256, 8192, 64),
        n=_steps(2, 96, 1),
        head_sizes=(64, 128),
        mlp_ratios=(4,),
        s=(1024,),
        b=(8, 16, 32, 64, 128, 256),
        dtype="float16",
        batch_choices=(8, 16, 32, 64, 96, 128, 192, 256, 384, 512, 768, 1024),
        aspect_ratio=(16.0, 256.0),
        backends=("gpu", "tpu"),
    ),
    # Wide and dense, for FLOPs budgets with published laws: Chinchilla's 32k vocabulary, context 2048, bf16
    # and head size 128 (Hoffmann et al. 2022, table 4: Chinchilla's key/value size).
    "chinchilla": SearchSpace(
        "chinchilla",
        v=32000,
        d=_steps(128, 16384, 32),
        n=_steps(1, 160, 1),
        head_sizes=(64, 128),
        mlp_ratios=(4,),
        s=(2048,),
        b=(256,),
        dtype="bfloat16",
        backends=("gpu", "tpu"),
        preferred_head_size=128,
    ),
}
# For a FLOPs budget without a device profile and without --space: the first of these whose parameter range
# holds the law's compute-optimal N (the embedded recipe's space first, then Chinchilla's).
FLOPS_SPACES: tuple[str, ...] = ("cpu", "chinchilla")


def get_space(name: str) -> SearchSpace:
    """A built-in space by name, or a user's space file (a path ending in .toml or .json, `load_space_file`)."""
    if name.endswith((".toml", ".json")):
        return load_space_file(name)
    try:
        return SPACES[name]
    except KeyError:
        raise UserError(
            f"unknown search space {name!r}; choose one of: {', '.join(SPACES)}, or pass a space file (.toml or .json)"
        ) from None


_MOE_LISTS = ("experts", "top_k", "granularity")  # may be empty (the law's own), as batch_choices
# A space file: SearchSpace's fields, and `base` (a built-in space the fields not given come from).
SPACE_FILE_FIELDS = ("base", *(f.name for f in dataclasses.fields(SearchSpace)))
_INT_LISTS = ("d", "n", "head_sizes", "mlp_ratios", "s", "b", "batch_choices", *_MOE_LISTS)
_REQUIRED = ("v", "d", "n", "head_sizes", "mlp_ratios", "s", "b")  # without a base
_CHOICES: dict[str, tuple[str, ...]] = {
    "norm": get_args(Norm),
    "activation": get_args(Activation),
    "dtype": ("float32", "bfloat16", "float16"),
}
BACKENDS = ("cpu", "gpu", "tpu")


def load_space_file(path: str | Path) -> SearchSpace:
    """A search space from a TOML or JSON file: the fields of `SearchSpace` (integer lists as lists or as
    `{start, stop, step}`, stop included; `aspect_ratio` and `preferred_aspect` as [low, high], high `inf` in TOML or
    null in JSON for no bound), `name` (default: the file's stem) and `base` (a built-in space whose values the
    fields not given take; without it `v`, `d`, `n`, `head_sizes`, `mlp_ratios`, `s` and `b` are required).
    Unknown fields and bad values are one-line UserErrors naming the file."""
    path = Path(path)
    raw, where = _read_space_file(path), f"space file {path}"
    unknown = sorted(set(raw) - set(SPACE_FILE_FIELDS))
    if unknown:
        raise UserError(f"{where}: unknown field {unknown[0]!r}; known fields: {', '.join(SPACE_FILE_FIELDS)}")
    base = raw.get("base")
    if base is not None and base not in SPACES:
        raise UserError(f"{where}: base {base!r} is not a built-in space; choose one of: {', '.join(SPACES)}")
    missing = [key for key in _REQUIRED if key not in raw] if base is None else []
    if missing:
        raise UserError(f"{where}: missing field {missing[0]!r} (or name a built-in space as base)")
    fields = {} if base is None else {f.name: getattr(SPACES[base], f.name) for f in dataclasses.fields(SearchSpace)}
    fields |= {key: _field_value(key, value, where) for key, value in raw.items() if key not in ("base", "name")}
    fields["name"] = str(raw.get("name", path.stem))
    try:
        return SearchSpace(**fields)
    except UserError as err:
        raise UserError(f"{where}: {err}") from None


def _read_space_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"space file {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text()) if path.suffix == ".toml" else json.loads(path.read_text())
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"space file {path} does not parse: {err}") from None
    if not isinstance(raw, dict):
        raise UserError(f"space file {path}: expected an object of space fields")
    return raw


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _field_value(key: str, value: Any, where: str) -> Any:
    """One field of a space file, checked and in SearchSpace's types."""
    if key in _INT_LISTS:
        if (
            isinstance(value, dict)
            and set(value) == {"start", "stop", "step"}
            and all(map(_positive_int, value.values()))
        ):
            return _steps(value["start"], value["stop"], value["step"])
        if (
            isinstance(value, list)
            and all(map(_positive_int, value))
            and (value or key in ("batch_choices", *_MOE_LISTS))
        ):
            return tuple(value)
        raise UserError(f"{where}: {key} must be a list of positive integers or {{start, stop, step}}, not {value!r}")
    if key in ("aspect_ratio", "preferred_aspect"):
        numbers = isinstance(value, list) and len(value) == 2 and all(_number(x) for x in value[:1]) and (
            value[1] is None or _number(value[1]))  # fmt: skip
        if not numbers:
            raise UserError(f"{where}: {key} must be [low, high] (high inf or null: no bound), not {value!r}")
        return (float(value[0]), math.inf if value[1] is None else float(value[1]))
    if key in _CHOICES and value not in _CHOICES[key]:
        raise UserError(f"{where}: {key} {value!r} must be one of {', '.join(_CHOICES[key])}")
    if key == "backends" and not (isinstance(value, list) and value and set(value) <= set(BACKENDS)):
        raise UserError(f"{where}: backends must be a non-empty list of {', '.join(BACKENDS)}, not {value!r}")
    if key in ("v", "preferred_head_size") and not _positive_int(value):
        raise UserError(f"{where}: {key} must be a positive integer, not {value!r}")
    if key == "tied" and not isinstance(value, bool):
        raise UserError(f"{where}: tied must be true or false, not {value!r}")
    if key == "preferred_source" and not isinstance(value, str):
        raise UserError(f"{where}: preferred_source must be a string")
    return tuple(value) if key == "backends" else value


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def space_to_toml(space: SearchSpace) -> str:
    """A space as a space file (TOML) that `load_space_file` reads back to the same space: evenly spaced integer
    lists as {start, stop, step}."""
    lines = [f"# search space {space.name} (smallest-loss space --show): edit, then plan --space FILE.toml"]
    for f in dataclasses.fields(SearchSpace):
        if f.name in _MOE_LISTS and not getattr(space, f.name):
            continue  # unset: the law's own (spaces written before these fields read the same)
        lines.append(f"{f.name} = {_toml_value(getattr(space, f.name))}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string
    if isinstance(value, float):
        return "inf" if math.isinf(value) else repr(value)
    if isinstance(value, tuple) and all(isinstance(v, str) for v in value):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    if isinstance(value, tuple) and all(_positive_int(v) for v in value) and len(value) >= 4:
        step = value[1] - value[0]
        if step > 0 and value == _steps(value[0], value[-1], step):
            return f"{{ start = {value[0]}, stop = {value[-1]}, step = {step} }}"
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return str(value)
