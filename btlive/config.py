"""Configuration: a TOML file for settings, the environment for secrets.

Secrets (passwords, tokens, account ids) are read from environment variables
(or a file named by ``NAME_FILE``) and wrapped in :class:`Secret`, whose ``repr`` and ``str``
never show the value, so they cannot leak into logs or exceptions.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_CONFIG_PATHS = ("btlive.toml", "~/.config/btlive/btlive.toml")


@dataclass(frozen=True, slots=True)
class Secret:
    """A credential whose value is only available through ``reveal()``."""

    _value: str

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


def secret(name: str, default: str | None = None) -> Secret | None:
    """Read a secret from ``$NAME`` or from the file named by ``$NAME_FILE``."""
    value = os.environ.get(name)
    if value is None and (file_name := os.environ.get(f"{name}_FILE")):
        value = Path(file_name).expanduser().read_text().strip()
    if value is None:
        value = default
    return None if value is None else Secret(value)


def load_config(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Read the TOML config from ``path``, ``$BTLIVE_CONFIG`` or the default places.

    Returns an empty dict when no file exists; a named file that is missing is an error.
    """
    explicit = path or os.environ.get("BTLIVE_CONFIG")
    if explicit:
        candidate = Path(explicit).expanduser()
        if not candidate.is_file():
            raise FileNotFoundError(f"config file {str(candidate)!r} does not exist")
        return tomllib.loads(candidate.read_text())
    for name in DEFAULT_CONFIG_PATHS:
        candidate = Path(name).expanduser()
        if candidate.is_file():
            return tomllib.loads(candidate.read_text())
    return {}
