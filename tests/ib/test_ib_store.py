"""IBStore pieces that need no simulator: the client library's logging, history pacing per bar
size, the retry policies."""

from __future__ import annotations

import asyncio
import logging

import backtrader as bt
import pytest

from btlive.ib import IBStore
from btlive.ib.history import bar_size

TF = bt.TimeFrame


class Records(logging.Handler):
    """Every record that reaches the root logger, at any level."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def root_records():
    root, handler = logging.getLogger(), Records()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler.records
    root.removeHandler(handler)
    root.setLevel(level)


def test_client_library_logging_goes_through_ours_at_debug(root_records):
    IBStore(port=27620, clientId=1)  # installs the routing
    logging.getLogger("ib_async.wrapper").warning("Canceled order: Trade(contract=...)")
    (record,) = root_records  # no Trade dump at WARNING (stderr) any more
    assert record.levelno == logging.DEBUG and "Canceled order" in record.getMessage()


def test_only_small_bars_are_paced_as_ib_documents():
    assert bar_size(TF.Seconds, 30).paced and bar_size(TF.Seconds, 5).paced
    assert not bar_size(TF.Minutes, 1).paced and not bar_size(TF.Days, 1).paced
    store = IBStore(port=27621, clientId=2, pacing=(1, 600.0, 1, 600.0))
    key = ("AAPL", "SMART", "TRADES")

    async def many(size, what="TRADES"):
        for _ in range(100):  # far beyond 1 per 10 minutes: must not wait for minute bars
            await asyncio.wait_for(store._pace(key, size, what), 1.0)
    asyncio.run(many(bar_size(TF.Minutes, 1)))
    asyncio.run(store._pace(key, bar_size(TF.Seconds, 5), "TRADES"))
    assert store._pacer.delay(key) > 500  # the 5-second request was counted


def test_bid_ask_requests_count_twice():
    store = IBStore(port=27622, clientId=3, pacing=(10, 600.0, 10, 600.0))
    asyncio.run(store._pace("k", bar_size(TF.Seconds, 1), "BID_ASK"))
    assert len(store._pacer._all) == 2


def test_reconnection_policy_survives_minutes_and_start_stays_bounded():
    store = IBStore(port=27623, clientId=4)
    assert store._reconnect_backoff().deadline == 900.0  # the daily restart takes minutes
    assert store._start_backoff().attempts == 3 and store._startup_budget() < 60
    assert IBStore(port=27624, reconnect=-1)._reconnect_backoff().deadline is None
    assert IBStore(port=27625, reconnect=0)._reconnect_backoff().attempts == 0


def test_debug_keeps_the_client_library_levels_while_the_store_is_open(root_records):
    store = IBStore(port=27626, clientId=5, _debug=True)
    logging.getLogger("ib_async.wrapper").warning("Error 202, reqId 3: Order Canceled")
    store.close()
    logging.getLogger("ib_async.wrapper").warning("Error 202, reqId 3: Order Canceled")
    assert [r.levelno for r in root_records] == [logging.WARNING, logging.DEBUG]
