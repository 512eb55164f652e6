"""After a reconnection: what TWS says about our orders and positions, against what we hold.

Pure: the broker hands in plain values (TWS's list taken on the loop thread, its own orders
and positions on backtrader's thread) and applies the :class:`Plan` it gets back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

ENDED = frozenset({"Cancelled", "ApiCancelled", "Inactive"})
EPS = 1e-9


@dataclass(frozen=True, slots=True)
class TradeState:
    """One order TWS knows (open or completed); ``order_id`` 0 when not this client's."""

    order_id: int
    perm_id: int
    status: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """TWS's view, taken on the loop thread in one go."""

    trades: tuple[TradeState, ...]
    placed: frozenset[int]  # orderIds this client had placed when ``trades`` was taken
    positions: tuple[Any, ...]  # ib_async Position values


@dataclass(frozen=True, slots=True)
class LocalOrder:
    """An order the strategy still believes alive."""

    ref: int
    order_id: int
    perm_id: int


@dataclass(frozen=True, slots=True)
class PositionFix:
    con_id: int
    local: float
    tws: Any  # the TWS Position to adopt, None for flat


@dataclass(frozen=True, slots=True)
class Plan:
    ended: tuple[TradeState, ...]  # orders TWS ended while we were away
    unknown: tuple[int, ...]  # refs of orders TWS never received
    positions: tuple[PositionFix, ...]


def plan(snapshot: Snapshot, alive: Iterable[LocalOrder], local: Mapping[int, float],
         pending: Mapping[int, float]) -> Plan:
    """What to change: ``local`` is our size per conId, ``pending`` the signed size of
    executions still waiting for their commission report (already counted by TWS)."""
    ended = tuple(t for t in snapshot.trades if t.status in ENDED)
    order_ids = {t.order_id for t in snapshot.trades if t.order_id}
    perm_ids = {t.perm_id for t in snapshot.trades if t.perm_id}
    unknown = tuple(o.ref for o in alive
                    # orders placed after TWS's list was taken are not judged by it
                    if o.order_id in snapshot.placed and o.order_id not in order_ids
                    and not (o.perm_id and o.perm_id in perm_ids))
    return Plan(ended, unknown, position_fixes(snapshot.positions, local, pending))


def position_fixes(positions: Iterable[Any], local: Mapping[int, float],
                   pending: Mapping[int, float]) -> tuple[PositionFix, ...]:
    """Where TWS's positions differ from ours once in-flight executions are counted."""
    listed = {p.contract.conId: p for p in positions}
    fixes = [PositionFix(con_id, size, None) for con_id, size in local.items()
             if size and con_id not in listed and not pending.get(con_id)]
    for con_id, pos in listed.items():
        ours = local.get(con_id, 0.0) + pending.get(con_id, 0.0)
        if abs(ours - float(pos.position)) > EPS:
            fixes.append(PositionFix(con_id, local.get(con_id, 0.0), pos))
    return tuple(fixes)
