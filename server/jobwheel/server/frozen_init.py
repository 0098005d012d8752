"""A faster __init__ for the frozen slots dataclasses built once or more per job.

dataclasses' own __init__ of a frozen class sets each field through object.__setattr__,
looked up and called per field: 2.0 µs for four fields where a plain class takes 0.8. The
dispatch of one job builds five of them (its result, attempt end, settlement and two events),
a batch enqueue one event per job. quick_frozen_init gives such a class an __init__ of the same
signature that stores each field through its slot's descriptor directly (0.8 µs for four);
the class stays frozen (assignment raises FrozenInstanceError) and everything else about it is
dataclasses' own.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
from typing import Any, TypeVar

T = TypeVar("T")


def quick_frozen_init(cls: type[T]) -> type[T]:
    """Replaces the __init__ of `cls`, a @dataclass(frozen=True, slots=True) whose fields are
    all plain init parameters (no default_factory, keyword-only field, InitVar or
    __post_init__, no __init__ of its own), with one of the same signature. Raises TypeError
    for any other class."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or not params.init or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: not a frozen dataclass with dataclasses' __init__")
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    plain = all(
        f.default_factory is dataclasses.MISSING and not f.kw_only and f.init for f in fields
    )
    # an InitVar, which fields() leaves out, is a parameter of its own
    named = list(inspect.signature(cls.__init__).parameters)[1:] == [f.name for f in fields]
    if not (plain and named):
        raise TypeError(f"{cls.__name__}: a field is not a plain init parameter")
    scope: dict[str, Any] = {}
    args = []
    for f in fields:
        slot = cls.__dict__.get(f.name)  # the slot's member descriptor (not a base class's)
        if not isinstance(slot, types.MemberDescriptorType):
            raise TypeError(f"{cls.__name__}.{f.name}: not a slot of the class itself")
        scope[f"_set_{f.name}"] = slot.__set__
        if f.default is dataclasses.MISSING:
            args.append(f.name)
        else:
            scope[f"_default_{f.name}"] = f.default
            args.append(f"{f.name}=_default_{f.name}")
    body = "".join(f"\n    _set_{f.name}(self, {f.name})" for f in fields) or "\n    pass"
    exec(f"def __init__(self, {', '.join(args)}):{body}", scope)
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    init.__annotations__ = dict(cls.__init__.__annotations__)
    setattr(cls, "__init__", init)  # noqa: B010 (mypy: a method is not assigned to)
    return cls
