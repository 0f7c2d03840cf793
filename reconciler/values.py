"""``@frozen``: immutable value classes, as ``@dataclass(frozen=True)`` makes them, at a fraction
of the cost of defining one.

A frozen dataclass has six methods generated from source text and compiled when its module is
imported (``__init__``, ``__repr__``, ``__eq__``, ``__hash__``, ``__setattr__``,
``__delattr__``): about 0.5 ms a class, and bpfman defines about a hundred value classes.
``@frozen`` lets dataclasses generate only ``__init__`` and the two that guard immutability
(whose compiled code ``reconciler.codecache`` keeps between runs) and gives every class the same
three generic methods instead of the others, with the same meaning:

- equality and hashing over the fields that compare (``field(compare=False)`` and
  ``field(hash=...)`` are honoured), only between instances of the very same class;
- ``ClassName(a=1, b='x')`` as repr, over the fields that show (``field(repr=False)``).

Fields are set once, by ``__init__``, and never again: ``dataclasses.FrozenInstanceError`` as for
a frozen dataclass, and ``__post_init__`` may set derived fields with ``object.__setattr__``.

Everything else is a dataclass: ``dataclasses.fields``, ``replace``, ``asdict``, ``astuple``,
``is_dataclass``, defaults and ``default_factory``, pickling and copying all work unchanged.
tests/unit/test_values.py holds it against ``@dataclass(frozen=True)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar, cast, dataclass_transform, overload

T = TypeVar("T", bound=type)


def _key(self: Any, names: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple([getattr(self, n) for n in names])


def _eq(self: Any, other: Any) -> Any:
    if other.__class__ is not self.__class__:
        return NotImplemented
    names = self.__value_compare__
    return _key(self, names) == _key(other, names)


def _hash(self: Any) -> int:
    return hash(_key(self, self.__value_hash__))


def _repr(self: Any) -> str:
    shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__value_repr__)
    return f"{self.__class__.__qualname__}({shown})"


def _make(cls: T) -> T:
    made: Any = dataclasses.dataclass(cls, eq=False, repr=False, frozen=True)
    fields = dataclasses.fields(made)
    made.__value_compare__ = tuple(f.name for f in fields if f.compare)
    made.__value_hash__ = tuple(f.name for f in fields if (f.compare if f.hash is None else f.hash))
    made.__value_repr__ = tuple(f.name for f in fields if f.repr)
    made.__eq__ = _eq
    made.__hash__ = _hash
    made.__repr__ = _repr
    return cast(T, made)


@overload
def frozen(cls: T, /) -> T: ...
@overload
def frozen(cls: None = None, /) -> Callable[[T], T]: ...


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def frozen(cls: T | None = None, /) -> T | Callable[[T], T]:
    """As ``@dataclass(frozen=True)``; see the module's text."""
    if cls is None:
        return _make
    return _make(cls)
