"""Budget strings: FLOPs, time in any unit, money through a price per device-hour; clear errors."""

from __future__ import annotations

import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.budget import check_budget, parse_budget


@pytest.mark.parametrize(
    "text,kind,value",
    [
        ("1e19", "flops", 1e19),
        ("1e19flop", "flops", 1e19),
        ("3.5E18 FLOPs", "flops", 3.5e18),
        ("90s", "seconds", 90),
        ("30min", "seconds", 1800),
        ("4h", "seconds", 14400),
        ("1.5 hours", "seconds", 5400),
        ("2d", "seconds", 172800),
        ("$500", "dollars", 500),
        ("$1,250.50", "dollars", 1250.5),
    ],
)
def test_good_budgets(text, kind, value):
    budget = parse_budget(text)
    assert (budget.kind, budget.value) == (kind, pytest.approx(value))


def test_money_buys_seconds_at_a_price_with_spot_discount():
    budget = parse_budget("$500")
    assert budget.seconds(price_per_hour=2.5) == pytest.approx(200 * 3600)
    assert budget.seconds(price_per_hour=2.5, spot_discount=0.6) == pytest.approx(500 * 3600)
    with pytest.raises(UserError, match="price per device-hour"):
        budget.seconds(None)


@pytest.mark.parametrize("text", ["", "abc", "5 parsecs", "-4h", "0s", "$", "$x", "1e19 joules", "nan"])
def test_bad_budgets_show_examples(text):
    with pytest.raises(UserError, match="for example 1e19"):
        parse_budget(text)


@pytest.mark.parametrize("text", ["1e400", "$1e400", "1e400s"])
def test_budgets_beyond_floating_point_are_not_finite(text):
    with pytest.raises(UserError, match="is not a finite number"):
        parse_budget(text)


def test_check_budget_refuses_what_cannot_be_planned_up_front():
    assert check_budget("20s").value == 20 and check_budget("$5", price_per_hour=2.0).kind == "dollars"
    with pytest.raises(UserError, match="cannot read budget 'abc'"):
        check_budget("abc")
    with pytest.raises(UserError, match="give a price per device-hour"):
        check_budget("$5")
    with pytest.raises(UserError, match="--price-per-hour -2: a price per device-hour must be positive"):
        check_budget("$5", price_per_hour=-2.0)
