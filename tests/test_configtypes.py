"""configtypes: a choice or a bound is declared once, on its field, and `rules` reads every one back for the check."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest

from configtypes import Bound, bounded, choice, one_of, registrar, rules, violations

Colour = choice("Colour", ("red", "green"), __name__)


@dataclass
class Inner:
    rate: float = bounded(0.5, gt=0, le=1)
    colour: Colour = Colour.red


@dataclass
class Outer:
    count: int = bounded(1, ge=1)
    stage: int = one_of(2, (0, 1, 2, 3))
    name: str = "free"  # no rule
    inner: Inner = field(default_factory=Inner)


def test_rules_walk_nested_fields_and_read_each_declaration():
    found = {rule.key: (rule.bound, rule.choices) for rule in rules(Outer)}
    assert found == {
        "count": (Bound(low=1), None),
        "stage": (None, (0, 1, 2, 3)),
        "inner.rate": (Bound(low=0, high=1, low_open=True), None),
        "inner.colour": (None, ("red", "green")),
    }
    assert Outer().count == 1 and Inner().rate == 0.5  # the defaults stay the fields' defaults


@pytest.mark.parametrize("bound, inside, outside, rule", [
    (Bound(low=1), [1, 7], [0, -1, math.nan], ">= 1"),
    (Bound(low=0, low_open=True), [1e-9, 3], [0, -2, math.nan], "> 0"),
    (Bound(low=0, high=1), [0, 1, 0.5], [-0.1, 1.1, math.nan], "in [0, 1]"),
    (Bound(low=0, high=1, low_open=True), [1, 0.01], [0, 1.5], "in (0, 1]"),
])
def test_a_bound_allows_its_range_only_and_reads_as_the_error_says(bound, inside, outside, rule):
    assert all(bound.allows(v) for v in inside) and not any(bound.allows(v) for v in outside)
    assert bound.rule == rule


def test_a_registrar_enters_a_class_under_each_name_once_and_names_it():
    table: dict[str, type] = {}
    register = registrar(table, "widget", attribute="name")

    @register("a", "alias")
    class A:
        pass

    assert table == {"a": A, "alias": A} and A.name == "a"
    with pytest.raises(ValueError, match=r"widget 'a' is registered twice \(A, B\)"):
        register("a")(type("B", (), {}))


def test_violations_name_each_broken_rule_with_its_prefix():
    values = {"count": 0, "stage": True, "name": "x", "inner.rate": None, "inner.colour": "blue"}
    found = [message for _, message in violations(Outer, values.__getitem__, prefix="top.")]
    assert found == ["top.count must be >= 1; got 0", "top.stage must be one of 0, 1, 2, 3; got True",
                     "top.inner.colour must be one of red, green; got 'blue'"]  # None (take the default) passes
    assert list(violations(Outer, {"count": 3, "stage": 0, "inner.rate": 1, "inner.colour": "red"}.__getitem__)) == []
    assert [m for _, m in violations(Outer, {"count": "3", "stage": 0, "inner.rate": math.nan,
                                             "inner.colour": "red"}.__getitem__)] == [
        "count must be >= 1; got '3'", "inner.rate must be in (0, 1]; got nan"]
