"""Building a frozen slots dataclass without its ``__init__``, for plain Python classes.

A frozen dataclass's ``__init__`` stores each field through ``object.__setattr__`` (to get past
its own ``__setattr__``, which raises): for objects built once per message that is a good part of
the work. ``object.__new__`` and each slot's member descriptor (the store ``object.__setattr__``
ends in) build the same object at about half the cost or less. This holds while the class has no
``__post_init__``; each user's tests check its builder against the constructor.

A class compiled by mypyc is native: ``object.__new__`` refuses it, and its fields are stored
directly from compiled code instead (see ``decoders.codecs._fields``).
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["is_plain_python_class", "slot_setter"]

Setter = Callable[[object, object], None]


def is_plain_python_class(cls: type) -> bool:
    """Whether ``object.__new__`` can allocate ``cls`` (not a native, compiled class)."""
    try:
        object.__new__(cls)
    except TypeError:
        return False
    return True


def slot_setter(cls: type, name: str) -> Setter:
    """The store of slot ``name`` of the plain Python class ``cls``; for a native class, a setter
    that must not be called (its builders store the fields directly)."""
    if not is_plain_python_class(cls):
        return _unused_setter
    setter: Setter = vars(cls)[name].__set__
    return setter


def _unused_setter(_obj: object, _value: object) -> None:
    raise AssertionError("slot setters are only used on plain Python classes")
