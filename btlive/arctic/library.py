"""One ``arcticdb.Arctic`` per URI per process, and library access.

ArcticDB must not open the same LMDB path twice in one process (the second
instance silently breaks LMDB's file locking), so every btlive component goes
through :func:`get_arctic`, which caches the instance by its normalised URI.
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import parse_qs

from btlive.errors import UsageError, redact

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
        hint = f"lmdb://{uri}" if isinstance(uri, str) and uri else "lmdb://./arctic_data"
        raise UsageError(f"arctic uri {redact_uri(str(uri))!r} has no scheme: use {hint} for "
                         "a local folder, mem://, or s3://host:bucket?port=...")
    scheme, rest = uri.split("://", 1)
    if scheme.lower() != "lmdb":
        return uri
    path, sep, query = rest.partition("?")
    if not path:
        raise UsageError(f"arctic uri {uri!r}: missing LMDB folder path, e.g. lmdb://./arctic_data")
    path = os.path.abspath(os.path.expanduser(path))
    return f"lmdb://{path}{sep}{query}"


def get_arctic(uri: str = DEFAULT_URI, create: bool = True):
    """The process-wide ``arcticdb.Arctic`` for ``uri`` (created on first use).

    ``create=False`` is for readers: a missing LMDB folder is an error instead of a new,
    empty store. An S3 endpoint is probed first so that a wrong host or port fails in
    seconds, not after ArcticDB's own retries (about 30 s).
    """
    key = normalize_uri(uri)
    with _lock:
        arctic = _instances.get(key)
        if arctic is None:
            import arcticdb

            _check_exists(key, uri, create)
            _probe_s3(key, uri)
            _quiet_logs()
            try:
                arctic = arcticdb.Arctic(key)
            except Exception as exc:
                raise ArcticError(f"cannot open ArcticDB at {redact_uri(uri)}: "
                                  f"{redact(str(exc))}") from exc
            _instances[key] = arctic
        return arctic


def _check_exists(key: str, uri: str, create: bool) -> None:
    if create or not key.lower().startswith("lmdb://"):
        return
    path = key[len("lmdb://"):].partition("?")[0]
    if not os.path.isdir(path):
        raise ArcticError(f"no ArcticDB store at {redact_uri(uri)}: the folder {path} does not "
                          "exist (check --uri; `btlive arctic import` or a recorder creates it)")
    if not os.path.isdir(os.path.join(path, "_arctic_cfg")):
        raise ArcticError(f"no ArcticDB store at {redact_uri(uri)}: the folder {path} holds no "
                          "ArcticDB data (check --uri)")


def _probe_s3(key: str, uri: str, timeout: float = 5.0) -> None:
    """Fail fast when nothing answers at an S3 URI's host and port (BTLIVE_S3_PROBE=0: skip)."""
    scheme, _, rest = key.partition("://")
    if scheme.lower() not in ("s3", "s3s") or os.environ.get("BTLIVE_S3_PROBE") == "0":
        return
    endpoint, _, query = rest.partition("?")
    host = endpoint.split(":", 1)[0]
    port_text = parse_qs(query).get("port", [None])[0]
    try:
        port = int(port_text) if port_text else (443 if scheme.lower() == "s3s" else 80)
        if not 0 < port < 65536:
            raise ValueError
    except ValueError:
        raise UsageError(f"arctic uri {redact_uri(uri)}: port {port_text!r} is not a TCP port "
                         "(1-65535)") from None
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        reason = ("nothing listens there" if isinstance(exc, ConnectionRefusedError)
                  else f"no answer within {timeout:g} s" if isinstance(exc, TimeoutError)
                  else exc.strerror or str(exc))
        raise ArcticError(f"cannot reach S3 at {host}:{port} ({reason}) for "
                          f"{redact_uri(uri)}; check the host and port= in the URI and that "
                          "the server runs") from None


def _quiet_logs() -> None:
    """ArcticDB logs every compaction at INFO on stderr; keep WARN unless asked otherwise."""
    from arcticdb.config import set_log_level

    set_log_level(os.environ.get("BTLIVE_ARCTICDB_LOGLEVEL", "WARN"))


def get_library(uri: str = DEFAULT_URI, library: str = DEFAULT_LIBRARY, create: bool = True):
    """The library ``library`` at ``uri``; created (static schema) when missing and ``create``."""
    arctic = get_arctic(uri, create=create)
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
    """The URI without credentials (``secret=``, ``access=``, ``user:password@``), for messages."""
    return redact(uri)


def resolve_as_of(lib, as_of):
    """What ArcticDB's ``as_of`` should get for a user's value, snapshots first.

    ``"20261206"`` is the snapshot of that name when the library has one (``btlive arctic
    snapshot`` names them YYYYMMDD), else version 20261206. ``"version:N"`` and
    ``"snapshot:NAME"`` say which explicitly; other text is a date/time (UTC unless it
    has an offset). ints, datetimes and ``None`` pass through.
    """
    if not isinstance(as_of, str):
        return as_of
    text = as_of.strip()
    kind, sep, value = text.partition(":")
    if sep and kind in ("version", "snapshot"):
        if kind == "version":
            if not value.isdigit():
                raise UsageError(f"as_of {as_of!r}: version:N needs a whole number")
            return int(value)
        if value not in lib.list_snapshots():
            raise UsageError(f"as_of {as_of!r}: no snapshot {value!r} in library {lib.name!r} "
                             f"(snapshots: {sorted(lib.list_snapshots())})")
        return value
    if text in lib.list_snapshots():
        return text
    if text.isdigit():
        return int(text)
    import pandas as pd

    try:
        stamp = pd.Timestamp(text)
    except ValueError:
        raise UsageError(f"as_of {as_of!r}: no snapshot of that name in library {lib.name!r} "
                         f"(snapshots: {sorted(lib.list_snapshots())}); use a snapshot name, "
                         "version:N or a date/time") from None
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp
