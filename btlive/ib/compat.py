"""The client library behind IBStore: ib_async (default) or ib_insync, which share their API.

Only names both libraries define are used, so the store, feed and broker run one code path.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

import ib_async
from ib_async import RequestError

APIS = ("ib_async", "ib_insync")


def _from_insync(module: str, name: str) -> tuple[type, ...]:
    """``(module.name,)`` when ib_insync is already imported, else ``()``: its classes can only
    reach us once it is (a store with ``api="ib_insync"``, a user's ib_insync Contract), and
    importing it otherwise would cost every start-up ~0.07 s."""
    loaded = sys.modules.get(module)
    return (getattr(loaded, name),) if loaded is not None else ()


def request_errors() -> tuple[type[Exception], ...]:
    """The RequestError classes of the client libraries in use (for ``except``)."""
    return (RequestError, *_from_insync("ib_insync.wrapper", "RequestError"))


def contract_types() -> tuple[type, ...]:
    """Contract classes accepted as an IBData ``dataname`` (ib_async's, and ib_insync's)."""
    return (ib_async.Contract, *_from_insync("ib_insync", "Contract"))


def load_api(name: str) -> ModuleType:
    """The client module named ``name`` (ImportError with the fix when it is missing)."""
    if name not in APIS:
        raise ValueError(f"api={name!r}: expected one of {', '.join(APIS)}")
    if name == "ib_async":
        return ib_async
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(f"api={name!r} needs the package: pip install {name}") from exc


def convert(api: ModuleType, obj):
    """``obj`` (an ib_async Contract or Order) as the same-named dataclass of ``api``.

    ib_insync's client only serializes its own Contract class, so values built with
    ib_async (parsed contracts, translated orders) are copied field by field.
    """
    target = getattr(api, type(obj).__name__, None)
    if target is None or isinstance(obj, target):
        return obj
    names = set(getattr(target, "__dataclass_fields__", {}))
    values = {name: getattr(obj, name) for name in getattr(obj, "__dataclass_fields__", {})
              if name in names}
    return target(**values)


#: IbPy names that are not ib_async's name with ``m_`` in front.
IBPY_RENAMES = {"expiry": "lastTradeDateOrContractMonth", "primaryExch": "primaryExchange",
                "summary": "contract"}


class IbPyAliases:
    """Read-only ``m_``-prefixed IbPy names (``m_symbol``, ``m_timeZoneId``, ``m_orderId``...)
    on ib_async dataclasses, for backtrader scripts written against IbPy."""


    def __getattr__(self, name: str):
        if name.startswith("m_"):
            real = IBPY_RENAMES.get(name[2:], name[2:])
            if real in getattr(type(self), "__dataclass_fields__", {}):
                return getattr(self, real)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value) -> None:
        if name.startswith("m_"):
            real = IBPY_RENAMES.get(name[2:], name[2:])
            raise AttributeError(f"{name} is a read-only IbPy alias; set {real} instead")
        super().__setattr__(name, value)

    def __eq__(self, other):  # equal to the plain ib_async object with the same fields
        plain = type(self).__mro__[2]
        other_plain = type(other).__mro__[2] if isinstance(other, IbPyAliases) else type(other)
        if other_plain is not plain:
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in plain.__dataclass_fields__)

    def __hash__(self):
        return type(self).__mro__[2].__hash__(self)


_ALIASED: dict[type, type] = {}


def with_ibpy_aliases(obj):
    """``obj`` (an ib_async Contract, ContractDetails or Order) with the IbPy aliases, in
    place; a ContractDetails' contract gets them too. Returns ``obj``."""
    if obj is None or isinstance(obj, IbPyAliases):
        return obj
    cls = type(obj)
    aliased = _ALIASED.get(cls)
    if aliased is None:
        aliased = _ALIASED[cls] = type(cls.__name__, (IbPyAliases, cls), {"__module__": cls.__module__})
    obj.__class__ = aliased
    if hasattr(obj, "contract") and hasattr(obj, "timeZoneId"):
        with_ibpy_aliases(obj.contract)
    return obj
