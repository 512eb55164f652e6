"""The client library behind IBStore: ib_async (default) or ib_insync, which share their API.

Only names both libraries define are used, so the store, feed and broker run one code path.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import ib_async
from ib_async import RequestError

APIS = ("ib_async", "ib_insync")


def _from_insync(module: str, name: str) -> tuple[type, ...]:
    """``(module.name,)`` when ib_insync is installed, else ``()``."""
    try:
        return (getattr(importlib.import_module(module), name),)
    except ImportError:
        return ()


REQUEST_ERRORS: tuple[type[Exception], ...] = (RequestError, *_from_insync("ib_insync.wrapper",
                                                                           "RequestError"))
# Contract classes accepted as an IBData ``dataname`` (ib_async's, plus ib_insync's if installed)
CONTRACT_TYPES: tuple[type, ...] = (ib_async.Contract, *_from_insync("ib_insync", "Contract"))


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
