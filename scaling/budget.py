"""Training budgets: FLOPs (`1e19`, `1e19flop`), time (`90s`, `30min`, `4h`, `2d`) or money (`$500`).

Durations in any unit are converted in one place (here) to seconds; money becomes seconds through a
price per device-hour (with an optional spot discount).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from smallest_loss.configs.errors import UserError

_SECONDS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "mins": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hr": 3600,
    "hrs": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
}
_EXAMPLES = "for example 1e19 or 1e19flop (FLOPs), 90s, 30min or 4h (time), $500 (money)"
_NUMBER = r"(\d+(?:\.\d*)?(?:e[+-]?\d+)?|\.\d+(?:e[+-]?\d+)?)"


@dataclass(frozen=True)
class Budget:
    """A budget as given: FLOPs, device seconds or money, its value and the text it was parsed from."""

    kind: Literal["flops", "seconds", "dollars"]
    value: float
    text: str

    def seconds(self, price_per_hour: float | None = None, spot_discount: float = 0.0) -> float:
        """Device seconds the budget buys; money needs a price per device-hour."""
        if self.kind == "seconds":
            return self.value
        if self.kind == "dollars":
            if price_per_hour is None:
                raise UserError(f"budget {self.text} is money: give a price per device-hour (--price-per-hour)")
            if not (math.isfinite(price_per_hour) and price_per_hour > 0):
                raise UserError(f"--price-per-hour {price_per_hour:g}: a price per device-hour must be positive")
            if not 0.0 <= spot_discount < 1.0:
                raise UserError(f"--spot-discount {spot_discount} must lie in [0, 1)")
            return self.value / (price_per_hour * (1.0 - spot_discount)) * 3600.0
        raise UserError(f"budget {self.text} is in FLOPs, not time")

    def describe(self) -> str:
        """The budget as a report shows it."""
        if self.kind == "flops":
            return f"{self.value:.3g} FLOPs"
        if self.kind == "dollars":
            return f"${self.value:,.2f}"
        return format_seconds(self.value)


def parse_budget(text: str) -> Budget:
    """Parse a budget string; a bad one is a UserError with examples of good ones."""
    raw = text.strip().lower().replace(",", "").replace("_", "")
    if raw.startswith("$"):
        kind, number, unit = "dollars", raw[1:], ""
    else:
        match = re.fullmatch(_NUMBER + r"\s*([a-z]*)", raw)
        if not match:
            raise UserError(f"cannot read budget {text!r}: {_EXAMPLES}")
        number, unit = match.groups()
        if unit in ("", "flop", "flops"):
            kind = "flops"
        elif unit in _SECONDS:
            kind = "seconds"
        else:
            raise UserError(f"unknown budget unit {unit!r} in {text!r}: {_EXAMPLES}")
    try:
        value = float(number) * (_SECONDS[unit] if kind == "seconds" else 1)
    except ValueError:
        raise UserError(f"cannot read budget {text!r}: {_EXAMPLES}") from None
    if not math.isfinite(value):
        raise UserError(f"budget {text!r} is not a finite number: {_EXAMPLES}")
    if value <= 0:
        raise UserError(f"budget {text!r} must be positive: {_EXAMPLES}")
    return Budget(kind, value, text.strip())


def check_budget(text: str, price_per_hour: float | None = None, spot_discount: float = 0.0) -> Budget:
    """Parse a budget and check that it can be planned, before anything slow runs (the quickstart calls this
    first): a money budget also needs a positive price per device-hour and a spot discount in [0, 1)."""
    budget = parse_budget(text)
    if budget.kind == "dollars":
        budget.seconds(price_per_hour, spot_discount)
    return budget


def format_seconds(seconds: float) -> str:
    """A duration in its most readable unit."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g}{unit}"
    return f"{seconds:.3g}s"
