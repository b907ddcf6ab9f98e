"""Typed config choices: string enums whose members are named by their values, so OmegaConf checks a value when the
config is loaded (naming the key and the allowed values) while code compares, formats and serialises members as the
plain strings they are."""

from __future__ import annotations

from enum import Enum


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
