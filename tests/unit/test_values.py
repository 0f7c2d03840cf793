"""``@frozen`` (reconciler/values.py) behaves as ``@dataclass(frozen=True)``: the same class
defined both ways gives equal answers for equality, hashing, repr, immutability, the dataclasses
functions, copying and pickling; and the project's value classes are made with it."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from dataclasses import FrozenInstanceError, dataclass, field

import pytest

from reconciler.values import frozen


def _pair(body: dict) -> tuple[type, type]:
    annotations = body["__annotations__"]
    fast = frozen(type("Point", (), {**body, "__annotations__": dict(annotations)}))
    slow = dataclass(frozen=True)(type("Point", (), {**body, "__annotations__": dict(annotations)}))
    return fast, slow


BODY = {
    "__annotations__": {"x": "int", "y": "str", "tags": "tuple", "note": "str", "extra": "list"},
    "y": "a",
    "tags": (),
    "note": field(default="n", compare=False),
    "extra": field(default_factory=list, repr=False, hash=False),
}


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ((1,), (1,)),
        ((1,), (2,)),
        ((1, "b"), (1, "a")),
        ((1, "a", (1, 2)), (1, "a", (1, 2))),
        ((1, "a", (), "one"), (1, "a", (), "two")),  # note does not compare
    ],
)
def test_equality_hash_and_repr_are_a_frozen_dataclass_s(a: tuple, b: tuple) -> None:
    fast, slow = _pair(BODY)
    fa, fb, sa, sb = fast(*a), fast(*b), slow(*a), slow(*b)
    assert (fa == fb) == (sa == sb)
    assert (fa != fb) == (sa != sb)
    assert repr(fa) == repr(sa)
    assert hash(fa) == hash(sa)  # both hash the same tuple of fields
    assert (fa == sa) is False  # another class is never equal
    assert {fa: 1}[fast(*a)] == 1


def test_set_once_never_again() -> None:
    fast, slow = _pair(BODY)
    for obj in (fast(1), slow(1)):
        with pytest.raises(FrozenInstanceError):
            obj.x = 2
        with pytest.raises(FrozenInstanceError):
            obj.other = 2
        with pytest.raises(FrozenInstanceError):
            del obj.x
        assert obj.x == 1


def test_the_dataclasses_functions_copy_and_pickle() -> None:
    fast, slow = _pair(BODY)
    f, s = fast(1, "b", (2,)), slow(1, "b", (2,))
    assert [x.name for x in dataclasses.fields(f)] == [x.name for x in dataclasses.fields(s)]
    assert dataclasses.asdict(f) == dataclasses.asdict(s)
    assert dataclasses.astuple(f) == dataclasses.astuple(s)
    assert dataclasses.replace(f, x=5) == fast(5, "b", (2,))
    assert dataclasses.is_dataclass(f)
    assert copy.deepcopy(f) == f and copy.copy(f) == f
    globals()["Point"] = fast  # pickle finds classes by name
    fast.__qualname__ = "Point"
    try:
        assert pickle.loads(pickle.dumps(f)) == f
    finally:
        del globals()["Point"]


def test_post_init_and_inheritance() -> None:
    @frozen
    class Base:
        a: int
        b: int = 0

        def __post_init__(self) -> None:
            object.__setattr__(self, "b", self.a * 2)

    @frozen
    class Child(Base):
        c: str = "c"

    child = Child(3)
    assert (child.a, child.b, child.c) == (3, 6, "c")
    assert repr(child) == "test_post_init_and_inheritance.<locals>.Child(a=3, b=6, c='c')"
    assert child != Base(3) and Base(3) == Base(3)
    with pytest.raises(FrozenInstanceError):
        child.c = "d"


def test_the_value_classes_of_start_up_are_made_with_it() -> None:
    from reconciler.kernel import types
    from reconciler.kinds import record
    from reconciler.plan import value
    from reconciler.spec import model

    for module in (types, record, value, model):
        for obj in vars(module).values():
            if isinstance(obj, type) and obj.__module__ == module.__name__:
                params = getattr(obj, "__dataclass_params__", None)
                if params is not None and params.frozen and "__value_compare__" not in vars(obj):
                    pytest.fail(f"{obj.__qualname__} is a frozen dataclass: use @frozen")
