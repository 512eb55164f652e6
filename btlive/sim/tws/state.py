"""Per-connection state, the subscriptions and executions it refers to, and the handler
tables every part of the server fills (message id -> handler)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .contracts import Instrument
from .matching import SimOrder

if TYPE_CHECKING:
    from .session import ClientProtocol


class Handlers(dict[int, Callable]):
    """One part's request handlers by incoming message id: ``@HANDLERS(M.REQ_IDS)`` on a
    method registers it; the server merges every part's table into one dispatch table."""

    def __call__(self, *msg_ids: int) -> Callable[[Callable], Callable]:
        def register(fn: Callable) -> Callable:
            for msg_id in msg_ids:
                if msg_id in self:
                    raise ValueError(f"message {msg_id} already has a handler")
                self[msg_id] = fn
            return fn
        return register


def merge(*tables: Handlers) -> dict[int, Callable]:
    """One dispatch table; a message id claimed by two parts is a programming error."""
    out: dict[int, Callable] = {}
    for table in tables:
        clash = out.keys() & table.keys()
        if clash:
            raise ValueError(f"messages {sorted(clash)} have handlers in two parts")
        out.update(table)
    return out


def safe_int(v) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return -1


def bar_wap(bar: list) -> float:
    """VWAP of a bar [start, o, h, l, c, vol, sum(px*vol), count]; the close without volume."""
    return bar[6] / bar[5] if bar[5] else bar[4]


@dataclass
class Execution:
    exec_id: str
    order: SimOrder
    inst: Instrument
    side: str
    qty: float
    price: float
    cum_qty: float
    avg_price: float
    time: float
    time_str: str
    account: str
    exchange: str
    commission: float
    realized: float
    exchange_hint: str | None = None


@dataclass
class MktSub:
    req_id: int
    inst: Instrument
    rtvolume: bool = False
    delayed: bool = False  # ticks go out on the delayed tick types (66...)


@dataclass
class BarSub:
    req_id: int
    inst: Instrument
    bar_s: int
    what: str
    date_format: int = 1
    cur: list | None = None  # [start, o, h, l, c, vol, wap_num, count]
    done: list = field(default_factory=list)  # completed real-time bars not yet sent


@dataclass
class Session:
    """Per-connection state; ``proto`` does the I/O."""

    proto: ClientProtocol
    client_id: int = -1
    version: int = 0
    auto_open: bool = False
    mkt: dict[int, MktSub] = field(default_factory=dict)
    tbt: dict[int, tuple[Instrument, str]] = field(default_factory=dict)
    rtbars: dict[int, BarSub] = field(default_factory=dict)
    hist: dict[int, BarSub] = field(default_factory=dict)
    account_updates: str = ""  # account code of reqAccountUpdates ("" = not subscribed)
    positions: bool = False
    acct_multi: dict[int, str] = field(default_factory=dict)  # reqId -> account, "" = all
    pnl: dict[int, str] = field(default_factory=dict)  # reqId -> account
    pnl_single: dict[int, tuple[str, int]] = field(default_factory=dict)
    md_type: int = 1

    def send(self, fields: list) -> None:
        self.proto.send(fields)

    def con_ids(self) -> set[int]:
        ids = {s.inst.con_id for s in self.mkt.values()}
        ids |= {i.con_id for i, _ in self.tbt.values()}
        ids |= {s.inst.con_id for s in self.rtbars.values()}
        ids |= {s.inst.con_id for s in self.hist.values()}
        return ids
