"""End-of-day hygiene and crash recovery for ArcticDB libraries.

- :func:`finalize_staged` turns what a crashed recorder left staged into
  readable versions (staged data is invisible until finalized).
- :func:`compact` rewrites fragmented symbols (one segment per flush) into
  full segments; reads over a network get much faster.
- :func:`snapshot` names today's versions ("YYYYMMDD") so a backtest can pin
  them with ``as_of`` even after old versions are pruned.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from btlive.arctic.library import DEFAULT_LIBRARY, DEFAULT_URI, ArcticError, get_library

log = logging.getLogger(__name__)


@dataclass
class MaintenanceReport:
    """What a maintenance call did, per symbol."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def _lib(lib_or_uri, library: str):
    if isinstance(lib_or_uri, str):
        return get_library(lib_or_uri, library, create=False)
    return lib_or_uri


def finalize_staged(lib_or_uri=DEFAULT_URI, library: str = DEFAULT_LIBRARY,
                    prefix: str | None = None, prune_previous_versions: bool = True
                    ) -> MaintenanceReport:
    """Finalize every staged symbol (optionally only those starting with ``prefix``).

    Stages of one recorder never overlap, so a plain append-finalize works; if
    it is refused (unsorted stages), the stages are sorted in memory instead.
    A symbol that still fails keeps its staged data and is reported, never deleted.
    """
    lib = _lib(lib_or_uri, library)
    report = MaintenanceReport()
    for symbol in sorted(lib.get_staged_symbols()):
        if prefix is not None and not symbol.startswith(prefix):
            report.skipped.append(symbol)
            continue
        try:
            try:
                lib.finalize_staged_data(symbol, "append",
                                         prune_previous_versions=prune_previous_versions)
            except Exception:  # noqa: BLE001 - retried below with sorting
                lib.sort_and_finalize_staged_data(symbol, "append",
                                                  prune_previous_versions=prune_previous_versions)
            report.done.append(symbol)
            log.info("finalized staged data of %s", symbol)
        except Exception as exc:  # noqa: BLE001 - reported per symbol
            report.errors[symbol] = str(exc)
            log.error("cannot finalize staged data of %s (kept staged): %s", symbol, exc)
    return report


def compact(lib_or_uri=DEFAULT_URI, library: str = DEFAULT_LIBRARY,
            symbols: list[str] | None = None, rows_per_segment: int | None = None,
            prune_previous_versions: bool = True) -> MaintenanceReport:
    """``compact_data`` on each symbol (default: all); unfragmented ones are cheap no-ops."""
    lib = _lib(lib_or_uri, library)
    report = MaintenanceReport()
    for symbol in symbols if symbols is not None else sorted(lib.list_symbols()):
        try:
            lib.compact_data(symbol, rows_per_segment=rows_per_segment,
                             prune_previous_versions=prune_previous_versions)
            report.done.append(symbol)
        except Exception as exc:  # noqa: BLE001 - reported per symbol
            report.errors[symbol] = str(exc)
            log.error("cannot compact %s: %s", symbol, exc)
    return report


def snapshot_name(day: datetime | None = None) -> str:
    """``YYYYMMDD`` of ``day`` (default: today in UTC)."""
    return (day or datetime.now(UTC)).strftime("%Y%m%d")


def snapshot(lib_or_uri=DEFAULT_URI, library: str = DEFAULT_LIBRARY, name: str | None = None,
             replace: bool = False, metadata=None) -> str:
    """Snapshot the latest version of every symbol as ``name`` (default today's YYYYMMDD)."""
    lib = _lib(lib_or_uri, library)
    name = name or snapshot_name()
    if name in lib.list_snapshots():
        if not replace:
            raise ArcticError(f"snapshot {name!r} already exists in library {lib.name!r}; "
                              "pass replace=True (CLI: --replace) to overwrite it")
        lib.delete_snapshot(name)
    lib.snapshot(name, metadata=metadata)
    return name
