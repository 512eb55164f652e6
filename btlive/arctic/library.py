"""One ``arcticdb.Arctic`` per URI per process, and library access.

ArcticDB must not open the same LMDB path twice in one process (the second
instance silently breaks LMDB's file locking), so every btlive component goes
through :func:`get_arctic`, which caches the instance by its normalised URI.
"""

from __future__ import annotations

import os
import threading

DEFAULT_URI = "lmdb://./arctic_data"
DEFAULT_LIBRARY = "btlive"

_lock = threading.Lock()
_instances: dict[str, object] = {}
_live_reads = False


class ArcticError(RuntimeError):
    """A btlive-level ArcticDB problem with a message that names the symbol and the cause."""


def normalize_uri(uri: str) -> str:
    """Make LMDB paths absolute so ``./x`` and ``/abs/x`` share one cached instance."""
    if not isinstance(uri, str) or "://" not in uri:
        raise ValueError(f"arctic uri {uri!r}: expected a URI such as lmdb://./arctic_data, "
                         "mem://, or s3://host:bucket?port=...")
    scheme, rest = uri.split("://", 1)
    if scheme.lower() != "lmdb":
        return uri
    path, sep, query = rest.partition("?")
    if not path:
        raise ValueError(f"arctic uri {uri!r}: missing LMDB folder path")
    path = os.path.abspath(os.path.expanduser(path))
    return f"lmdb://{path}{sep}{query}"


def get_arctic(uri: str = DEFAULT_URI):
    """The process-wide ``arcticdb.Arctic`` for ``uri`` (created on first use)."""
    key = normalize_uri(uri)
    with _lock:
        arctic = _instances.get(key)
        if arctic is None:
            import arcticdb

            _quiet_logs()
            try:
                arctic = arcticdb.Arctic(key)
            except Exception as exc:
                raise ArcticError(f"cannot open ArcticDB at {redact_uri(uri)}: {exc}") from exc
            _instances[key] = arctic
        return arctic


def _quiet_logs() -> None:
    """ArcticDB logs every compaction at INFO on stderr; keep WARN unless asked otherwise."""
    from arcticdb.config import set_log_level

    set_log_level(os.environ.get("BTLIVE_ARCTICDB_LOGLEVEL", "WARN"))


def get_library(uri: str = DEFAULT_URI, library: str = DEFAULT_LIBRARY, create: bool = True):
    """The library ``library`` at ``uri``; created (static schema) when missing and ``create``."""
    arctic = get_arctic(uri)
    if create:
        return arctic.get_library(library, create_if_missing=True)
    if not arctic.has_library(library):
        raise ArcticError(f"library {library!r} does not exist at {redact_uri(uri)} "
                          f"(libraries: {sorted(arctic.list_libraries())})")
    return arctic.get_library(library)


def forget_arctic(uri: str) -> None:
    """Drop the cached instance for ``uri`` (tests and tools that delete the folder)."""
    with _lock:
        _instances.pop(normalize_uri(uri), None)


def enable_live_reads() -> None:
    """Make readers see new versions at once (ArcticDB caches the version map for 2 s).

    It is a process-wide ArcticDB setting; live-tail feeds call it.
    """
    global _live_reads
    if _live_reads:
        return
    from arcticdb.config import set_config_int

    set_config_int("VersionMap.ReloadInterval", 0)
    _live_reads = True


def redact_uri(uri: str) -> str:
    """The URI without its ``secret=`` value, for messages and logs."""
    if "secret=" not in uri:
        return uri
    head, _, query = uri.partition("?")
    parts = [("secret=***" if p.startswith("secret=") else p) for p in query.split("&")]
    return head + "?" + "&".join(parts)
