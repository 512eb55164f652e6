"""Find the strategy class named on the command line and convert its params."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import backtrader as bt

from btlive.errors import UsageError

_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def load_strategy(spec: str) -> type[bt.Strategy]:
    """The class of ``package.module:Class`` or ``path/to/file.py:Class``."""
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name:
        raise UsageError(f"strategy {spec!r}: expected package.module:Class or path/to/file.py:Class")
    if where.endswith(".py") or os.sep in where or "/" in where:
        path = Path(where).expanduser()
        if not path.is_file():
            raise UsageError(f"strategy {spec!r}: file {str(path)!r} does not exist")
        module_name = f"btlive_strategy_{path.stem}"
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[module_name] = module
        loader_spec.loader.exec_module(module)
    else:
        if os.getcwd() not in sys.path:  # `strategies.sma_cross` from a checkout, as `python -m` does
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as exc:
            raise UsageError(f"strategy {spec!r}: no module {exc.name!r}") from None
    cls = getattr(module, name, None)
    if not (isinstance(cls, type) and issubclass(cls, bt.Strategy)):
        raise UsageError(f"strategy {spec!r}: {name!r} is not a backtrader Strategy class in {where}")
    return cls


def _convert(cls: type, defaults: dict[str, Any], key: str, value: Any, source: str) -> Any:
    if key not in defaults:
        raise UsageError(f"{source} {key}: {cls.__name__} has no such param "
                         f"(known: {', '.join(sorted(defaults))})")
    default = defaults[key]
    kind = type(default)
    wrong = UsageError(f"{source} {key}={value!r}: expected {kind.__name__}, like the default "
                       f"{default!r}")
    if isinstance(value, str) and kind is not str:
        text = value.strip()
        if kind is bool:
            if text.lower() not in _TRUE | _FALSE:
                raise wrong
            return text.lower() in _TRUE
        if default is None:
            try:
                return ast.literal_eval(text)
            except (ValueError, SyntaxError):
                return text
        try:
            return kind(text)
        except (TypeError, ValueError):
            raise wrong from None
    if default is None or isinstance(value, kind) and not (kind is not bool and isinstance(value, bool)):
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    raise wrong


def strategy_params(cls: type[bt.Strategy], configured: Mapping[str, Any] | None = None,
                    overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Params from ``[strategy] params`` then ``--param k=v``, each converted by its default's type."""
    defaults = dict(cls.params._getitems())
    out = {}
    for key, value in (configured or {}).items():
        out[key] = _convert(cls, defaults, key, value, "[strategy] params")
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--param {item!r}: expected NAME=VALUE")
        out[key.strip()] = _convert(cls, defaults, key.strip(), text, "--param")
    return out
