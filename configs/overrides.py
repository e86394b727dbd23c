"""`--set section.field=value` overrides, parsed against the field's declared type.

Unknown sections or fields, and values that do not parse as the field's type, are `UserError`s.
A field that a config derives from others (its class's `DERIVED`, e.g. the MLP width w from d) is
derived again when one of its sources is set, unless the same command sets it too.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable
from typing import Any

from smallest_loss.configs.errors import UserError

_NONE_WORDS = {"none", "null"}
_TRUE_WORDS = {"true", "1", "yes", "on"}
_FALSE_WORDS = {"false", "0", "no", "off"}


def _parse_scalar(text: str, kind: type, where: str) -> Any:
    if kind is bool:
        low = text.lower()
        if low in _TRUE_WORDS | _FALSE_WORDS:
            return low in _TRUE_WORDS
        raise UserError(f"{where}={text!r}: expected true or false")
    if kind is int:
        try:
            number = float(text)  # accept 1e6 for counts, but only if it is a whole number
        except ValueError:
            raise UserError(f"{where}={text!r}: expected an integer") from None
        if not number.is_integer():
            raise UserError(f"{where}={text!r}: expected an integer")
        return int(number)
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise UserError(f"{where}={text!r}: expected a number") from None
    if kind is str:
        return text
    raise UserError(f"{where}: fields of type {kind} cannot be set from the command line")


def parse_value(text: str, annotation: Any, where: str) -> Any:
    """Parse `text` as a value of `annotation` (int, float, bool, str, Literal, Optional or tuple of those)."""
    origin = typing.get_origin(annotation)
    if origin is tuple:  # tuple[X, ...] from comma-separated items: "a,b" -> ("a", "b"); "" -> ()
        item = typing.get_args(annotation)[0]
        return tuple(parse_value(part.strip(), item, where) for part in text.split(",") if part.strip())
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        if text not in choices:
            raise UserError(f"{where}={text!r}: choose one of {', '.join(map(str, choices))}")
        return text
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if type(None) in typing.get_args(annotation) and text.lower() in _NONE_WORDS:
            return None
        if len(options) == 1:
            return parse_value(text, options[0], where)
        raise UserError(f"{where}: union fields cannot be set from the command line")
    return _parse_scalar(text, annotation, where)


def apply_overrides(config: Any, assignments: Iterable[str]) -> Any:
    """Return a copy of a nested frozen config with every `section.field=value` applied.

    All changes to one section are applied together, so checks that span fields (exactly one of
    train.steps and train.tokens, d divisible by h) see the final values, not an intermediate state.
    """
    changes: dict[str, Any] = {}
    for item in assignments:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r}: expected section.field=value, for example model.d=128")
        node = changes
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {key}: {part!r} is a field, not a section")
        node[leaf] = text.strip()
    return _apply(config, changes, "")


def _apply(node: Any, changes: dict[str, Any], prefix: str) -> Any:
    fields = {f.name for f in dataclasses.fields(node)}
    hints = typing.get_type_hints(type(node))
    updates = {}
    for name, change in changes.items():
        key = prefix + name
        if name not in fields:
            raise UserError(f"--set {key}: unknown key {name!r}; known: {', '.join(sorted(fields))}")
        is_section = dataclasses.is_dataclass(hints[name])
        if is_section != isinstance(change, dict):
            kind = "a section; set one of its fields" if is_section else "a field, not a section"
            raise UserError(f"--set {key}: {name!r} is {kind}")
        if is_section:
            updates[name] = _apply(getattr(node, name), change, key + ".")
        else:
            updates[name] = parse_value(change, hints[name], f"--set {key}")
    for name, sources in getattr(type(node), "DERIVED", {}).items():
        if name not in updates and any(source in updates for source in sources):
            updates[name] = None  # derive it again from the new sources
    return dataclasses.replace(node, **updates)
