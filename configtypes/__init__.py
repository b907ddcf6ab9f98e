"""Typed config choices and bounds, declared once, on the field: string enums whose members are named by their values
(OmegaConf checks a value when the config is loaded, naming the key and the allowed values, while code compares,
formats and serialises members as the plain strings they are), `bounded` numbers, `one_of` other choices; `rules`
reads them all back for the config check."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Choice(str, Enum):
    """A config choice; `Choice.x == "x"`, and str() / f-strings / JSON give the value."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


def choice(name: str, values: tuple[str, ...], module: str) -> type[Choice]:
    """The Choice enum `name` of `values`, defined in `module` (pass `__name__`: Ray pickles config objects, and an
    enum pickles by its module and name)."""
    enum = Choice(name, {value: value for value in values}, module=module)
    enum.__qualname__ = name
    return enum


@dataclass(frozen=True)
class Bound:
    """A numeric field's allowed range: `low`/`high` (None: unbounded), each end closed unless marked open."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def allows(self, value: float) -> bool:
        # NaN fails every comparison, so it is refused too.
        if self.low is not None and not (value > self.low if self.low_open else value >= self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    @property
    def rule(self) -> str:
        """How the bound reads in an error: ">= 1", "> 0", "in [0, 1]", "in (0, 1]"."""
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


def bounded(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
            lt: float | None = None) -> Any:
    """A dataclass field defaulting to `default` whose value must lie within the bounds given (None is always
    allowed, for optional fields); the config check reads them from the field (`rules`)."""
    bound = Bound(low=gt if gt is not None else ge, high=lt if lt is not None else le,
                  low_open=gt is not None, high_open=lt is not None)
    return field(default=default, metadata={"bound": bound})


def one_of(default: Any, values: tuple) -> Any:
    """A dataclass field defaulting to `default` that must be one of `values` (for choices that are not strings,
    such as a ZeRO stage; a string choice is a Choice enum, whose members are its values)."""
    return field(default=default, metadata={"choices": tuple(values)})


@dataclass(frozen=True)
class Rule:
    """What the config check enforces on one key: its bound, or its allowed values."""

    key: str
    bound: Bound | None = None
    choices: tuple | None = None


def rules(cls: type, prefix: str = "") -> Iterator[Rule]:
    """Every rule declared on the fields of the dataclass `cls` and of the dataclasses nested in it, keyed by dotted
    path: a `bounded` field's bound, a `one_of` field's values, and a Choice-typed field's members."""
    hints = typing.get_type_hints(cls)
    for spec in dataclasses.fields(cls):
        key = f"{prefix}{spec.name}"
        kind = hints[spec.name]
        if dataclasses.is_dataclass(kind):
            yield from rules(kind, key + ".")
        elif "bound" in spec.metadata:
            yield Rule(key, bound=spec.metadata["bound"])
        elif "choices" in spec.metadata:
            yield Rule(key, choices=spec.metadata["choices"])
        elif isinstance(kind, type) and issubclass(kind, Choice):
            yield Rule(key, choices=tuple(member.value for member in kind))


def registrar(table: dict[str, type], kind: str, attribute: str | None = None) -> Callable[..., Callable[[type], type]]:
    """`register(*names)`, a class decorator that enters the class in `table` under each name a config may choose it
    by (a name taken twice is refused, naming both classes), and with `attribute` sets that class attribute to its
    (first) name: how a variant registers itself where it is written."""

    def register(*names: str) -> Callable[[type], type]:
        def enter(cls: type) -> type:
            for name in names:
                if name in table:
                    raise ValueError(f"{kind} {name!r} is registered twice ({table[name].__name__}, {cls.__name__})")
                table[name] = cls
            if attribute is not None:
                setattr(cls, attribute, names[0])
            return cls

        return enter

    return register


def is_number(value: Any) -> bool:
    """An int or a float, and not a bool (which Python counts as an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def violations(cls: type, value_of: Callable[[str], Any], prefix: str = "") -> Iterator[tuple[Rule, str]]:
    """Each rule of `rules(cls)` that the config breaks, with its message naming `prefix` + the key: a value outside
    its choices (a bool never counts as 0 or 1), or a bound broken by a non-number or a number out of range (None,
    an optional field's "take the default", passes). `value_of(key)` reads a key's value from the config."""
    for rule in rules(cls):
        value = value_of(rule.key)
        if rule.choices is not None and (isinstance(value, bool) or value not in rule.choices):
            yield rule, f"{prefix}{rule.key} must be one of {', '.join(map(str, rule.choices))}; got {value!r}"
        elif rule.bound is not None and value is not None and (not is_number(value) or not rule.bound.allows(value)):
            yield rule, f"{prefix}{rule.key} must be {rule.bound.rule}; got {value!r}"
