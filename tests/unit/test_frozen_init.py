"""quick_frozen_init: the same constructor as dataclasses' own, still frozen."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
from dataclasses import dataclass, field
from typing import Any

import pytest
from jobwheel.server.frozen_init import quick_frozen_init
from jobwheel.server.model import Event, Schedule
from jobwheel.server.rules.attempt import AttemptResult
from jobwheel.server.rules.states import AttemptEnd, Settlement


@dataclass(frozen=True, slots=True)
class _Plain:
    a: int
    b: str
    c: Any = None
    d: tuple[int, ...] = (1, 2)


@quick_frozen_init
@dataclass(frozen=True, slots=True)
class _Quick:
    a: int
    b: str
    c: Any = None
    d: tuple[int, ...] = (1, 2)


def _twin(cls: type[Any]) -> type[Any]:
    """`cls`'s fields in a class with dataclasses' own __init__."""
    specs = [
        (f.name, f.type, field(default=f.default))
        if f.default is not dataclasses.MISSING
        # a field without a default
        else (f.name, f.type)
        for f in dataclasses.fields(cls)
    ]
    return dataclasses.make_dataclass(cls.__name__, specs, frozen=True, slots=True)


@pytest.mark.parametrize("cls", [Event, Schedule, AttemptEnd, Settlement, AttemptResult, _Quick])
def test_signature_is_dataclasses_own(cls: type[Any]) -> None:
    names = cls.__init__.__code__.co_names
    assert all(f"_set_{f.name}" in names for f in dataclasses.fields(cls))  # the quick one
    assert inspect.signature(cls) == inspect.signature(_twin(cls))


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((1, "x"), {}), ((1, "x", 3), {"d": (4,)}), ((), {"b": "y", "a": 2, "c": [1]})],
)
def test_builds_what_dataclasses_builds(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    quick, plain = _Quick(*args, **kwargs), _Plain(*args, **kwargs)
    assert dataclasses.astuple(quick) == dataclasses.astuple(plain)
    assert repr(quick).replace("_Quick", "_Plain") == repr(plain)
    assert quick == _Quick(*args, **kwargs)
    assert hash(_Quick(1, "x")) == hash(_Plain(1, "x"))
    assert dataclasses.replace(quick, a=9).a == 9
    assert pickle.loads(pickle.dumps(quick)) == quick


def test_refuses_the_arguments_dataclasses_refuses() -> None:
    for args, kwargs in [((), {}), ((1,), {}), ((1, "x", 3, (), 5), {}), ((1, "x"), {"e": 1})]:
        with pytest.raises(TypeError):
            _Plain(*args, **kwargs)
        with pytest.raises(TypeError):
            _Quick(*args, **kwargs)


def test_stays_frozen() -> None:
    quick = _Quick(1, "x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        quick.a = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del quick.b  # type: ignore[misc]


def test_takes_only_frozen_slots_classes_of_plain_fields() -> None:
    @dataclass(slots=True)
    class Thawed:
        a: int

    @dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclass(frozen=True, slots=True)
    class Factory:
        a: list[int] = field(default_factory=list)

    @dataclass(frozen=True, slots=True, kw_only=True)
    class KeywordOnly:
        a: int

    @dataclass(frozen=True, slots=True)
    class PostInit:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclass(frozen=True, slots=True)
    class Child(_Plain):
        e: int = 0

    @dataclass(frozen=True, slots=True)
    class WithInitVar:
        a: int
        b: dataclasses.InitVar[int] = 0

    @dataclass(frozen=True, slots=True, init=False)
    class OwnInit:
        a: int

        def __init__(self, a: int) -> None:
            object.__setattr__(self, "a", a * 2)

    cases = (Thawed, NoSlots, Factory, KeywordOnly, PostInit, Child, WithInitVar, OwnInit, int)
    for cls in cases:
        with pytest.raises(TypeError):
            quick_frozen_init(cls)
