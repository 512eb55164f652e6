"""What the store's loop thread tells the IB broker: one frozen value per kind of event.

The loop thread only builds these and puts them on the broker's inbox; the broker applies
them on backtrader's thread (``IBBroker.next``), where every change of its state happens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Execution:
    contract: Any
    execution: Any


@dataclass(frozen=True, slots=True)
class Commission:
    report: Any


@dataclass(frozen=True, slots=True)
class Status:
    """An orderStatus, with the last error ib_async logged for the order (0 if none)."""

    order_id: int
    perm_id: int
    status: str
    filled: float
    code: int = 0
    text: str = ""


@dataclass(frozen=True, slots=True)
class OpenOrder:
    order_id: int
    perm_id: int
    status: str


@dataclass(frozen=True, slots=True)
class OrderError:
    order_id: int
    code: int
    text: str


@dataclass(frozen=True, slots=True)
class Placed:
    ref: int
    order_id: int


@dataclass(frozen=True, slots=True)
class NotSent:
    """The client could not send the order (connection lost, library error)."""

    ref: int
    reason: str


@dataclass(frozen=True, slots=True)
class ModifySent:
    ref: int
    before: dict
    created: tuple


@dataclass(frozen=True, slots=True)
class ModifyFailed:
    ref: int
    code: int
    reason: str
    created: tuple


@dataclass(frozen=True, slots=True)
class PositionUpdate:
    position: Any


@dataclass(frozen=True, slots=True)
class AccountValue:
    tag: str
    value: str
    currency: str
    account: str


@dataclass(frozen=True, slots=True)
class Link:
    """The connection to TWS went down (False) or came back and was reconciled (True)."""

    up: bool


@dataclass(frozen=True, slots=True)
class GaveUp:
    """The store stopped reconnecting."""


@dataclass(frozen=True, slots=True)
class Reconciled:
    """TWS's orders and positions after a reconnection (see :mod:`btlive.ib.reconcile`)."""

    snapshot: Any
