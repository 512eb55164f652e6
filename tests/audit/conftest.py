"""Fixtures for the audit tests: one database URL per backend, and small event builders."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from btlive.audit.events import CommissionEvent, ExecutionEvent, OrderIntent, OrderStatusEvent
from btlive.audit.writer import AuditWriter

DAY_NS = 1_700_000_000 * 1_000_000_000  # 2023-11-14T22:13:20Z


@pytest.fixture(autouse=True)
def no_leftover_writers():
    """Every test must close the writers it starts (directly or through the analyzer)."""
    yield
    alive = [t for t in threading.enumerate() if t.name.startswith("btlive-audit-writer")]
    for t in alive:
        t.join(5)
    names = [t.name for t in alive if t.is_alive()]
    assert not names, f"audit writer threads left running: {names}"


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'audit.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.db'}"
    return request.getfixturevalue("pg_url")


def write_events(url: str, events, **kwargs) -> AuditWriter:
    """Write ``events`` through a fresh writer and close it (asserting everything committed)."""
    writer = AuditWriter(url, **kwargs).start()
    for ev in events:
        writer.submit(ev)
    assert writer.close(timeout=30), writer.stats
    return writer


def rows(url: str, sql: str, **params) -> list:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params)]
    finally:
        engine.dispose()


def intent(key="ib:1:10", side="BUY", qty=100, price="100.00", **kw) -> OrderIntent:
    return OrderIntent(order_key=key, source=kw.pop("source", "ib"), run_id=kw.pop("run_id", "r1"),
                       strategy=kw.pop("strategy", "S"), symbol=kw.pop("symbol", "AAPL"), side=side,
                       order_type=kw.pop("order_type", "MKT"), quantity=qty, decision_price=price,
                       created_ns=kw.pop("created_ns", DAY_NS), **kw)


def fill(exec_id, shares, price, key="ib:1:10", side="BUY", t=0, **kw) -> ExecutionEvent:
    return ExecutionEvent(exec_id=exec_id, side=side, shares=shares, price=price,
                          exec_ns=DAY_NS + t, order_key=key, run_id=kw.pop("run_id", "r1"),
                          symbol=kw.pop("symbol", "AAPL"), **kw)


def comm(exec_id, commission="1.00", pnl=None, **kw) -> CommissionEvent:
    return CommissionEvent(exec_id=exec_id, commission=commission, currency="USD", realized_pnl=pnl,
                           recv_ns=kw.pop("recv_ns", DAY_NS), **kw)


def status(key, st, filled=0, remaining=0, **kw) -> OrderStatusEvent:
    return OrderStatusEvent(order_key=key, source=kw.pop("source", "ib"), status=st, raw_status=st,
                            run_id="r1", filled=filled, remaining=remaining,
                            event_ns=kw.pop("event_ns", DAY_NS), **kw)


class Helpers:
    """Builders and readers, handed to tests as the ``ah`` fixture (importlib mode: no conftest imports)."""

    DAY_NS = DAY_NS
    write_events = staticmethod(write_events)
    rows = staticmethod(rows)
    intent = staticmethod(intent)
    fill = staticmethod(fill)
    comm = staticmethod(comm)
    status = staticmethod(status)


@pytest.fixture
def ah() -> type[Helpers]:
    return Helpers
