"""IB benchmarks against the in-process TWS simulator.

- ``tick_to_order``: a quote leaves the simulator's socket -> ib_async decodes it on the store's
  loop -> IBData hands it to backtrader's thread -> the strategy places an order -> IBBroker sends
  it -> the simulator has read the placeOrder message. p50/p99 in ms.
  Anchor: the seed's order-submission target, 100 ms (ratio = 100 / p99).
  Rounds are spaced 25 ms apart: ib_async throttles itself to 45 requests/s (TWS's own limit).
- ``hist_bars``: bars/s through IBData in historical mode (request, decode, feed, strategy).
  Anchor: the seed's 10 ms per ingestion -> 100 bars/s.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

import backtrader as bt
from common import percentile, result

from btlive.ib.store import IBStore
from btlive.sim.tws import TwsSimulator
from btlive.sim.tws import messages as M


class _Stamps:
    """Wraps the simulator's price publication and request dispatch with timestamps."""

    def __init__(self, sim: TwsSimulator):
        self.sent_ns = 0
        self.order_ns: list[int] = []
        self.order_seen = threading.Event()
        server = sim.server
        publish, handle = server.publish, server.handle

        def stamped_publish(inst, q, sessions=None):
            self.sent_ns = time.perf_counter_ns()
            return publish(inst, q, sessions)

        def stamped_handle(session, fields):
            if fields and fields[0] == str(M.PLACE_ORDER):
                self.order_ns.append(time.perf_counter_ns())
                self.order_seen.set()
            return handle(session, fields)

        server.publish = stamped_publish
        server.handle = stamped_handle


class _OrderOnTick(bt.Strategy):
    """Places one far-away limit order for every tick (never fills)."""

    def next(self):
        if self.data.close[0] > 0:
            self.buy(size=1, exectype=bt.Order.Limit, price=round(self.data.close[0] * 0.5, 2))


def tick_to_order(n: int) -> list[float]:
    with TwsSimulator(port=0, tick_interval=3600.0, farm_messages=False,
                      always_open=True) as sim:
        stamps = _Stamps(sim)
        store = IBStore(port=sim.port, clientId=91, timeout=2.0)
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(store.getdata(dataname="AAPL", tickmode="BidAsk", backfill_start=False,
                                      timeframe=bt.TimeFrame.Ticks, qcheck=0.5))
        cerebro.setbroker(store.getbroker())
        cerebro.addstrategy(_OrderOnTick)
        lat: list[float] = []

        def drive():
            time.sleep(1.5)  # connect and subscribe
            price = 190.0
            for i in range(n + 20):
                price = 190.0 + (0.01 if i % 2 else -0.01) * (1 + i % 7)
                stamps.order_seen.clear()
                count = len(stamps.order_ns)
                sim.set_price("AAPL", round(price, 2))
                sent = stamps.sent_ns
                if not stamps.order_seen.wait(2.0):
                    continue
                if i >= 20 and len(stamps.order_ns) > count:  # the first ones warm up
                    lat.append((stamps.order_ns[count] - sent) / 1e6)
                time.sleep(0.025)  # ib_async (like TWS) allows ~45 messages/s: stay below
            cerebro.runstop()

        driver = threading.Thread(target=drive, daemon=True)
        driver.start()
        cerebro.run()
        driver.join(10)
        store.close()
    IBStore.close_all()
    return lat


def hist_bars(days: int) -> tuple[int, float]:
    with TwsSimulator(port=0, farm_messages=False, always_open=True) as sim:
        store = IBStore(port=sim.port, clientId=92, timeout=2.0)
        end = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        cerebro = bt.Cerebro(stdstats=False)
        data = store.getdata(dataname="SPY", historical=True, timeframe=bt.TimeFrame.Minutes,
                             fromdate=end - dt.timedelta(days=days), todate=end)
        cerebro.adddata(data)
        cerebro.addstrategy(bt.Strategy)
        start = time.perf_counter()
        cerebro.run()
        seconds = time.perf_counter() - start
        bars = len(data)
        store.close()
    IBStore.close_all()
    return bars, seconds


def run(args):
    n = 100 if args.quick else 500
    lat = tick_to_order(n)
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    yield result("ib", "tick_to_order_p50_ms", p50, "seed order submission target (ms)", 100.0, "ms",
                 higher_is_better=False, samples=len(lat))
    yield result("ib", "tick_to_order_p99_ms", p99, "seed order submission target (ms)", 100.0, "ms",
                 higher_is_better=False, samples=len(lat), goal_ms=5.0)
    bars, seconds = hist_bars(2 if args.quick else 5)  # <= 5 requests: measures the pipeline, not pacing
    yield result("ib", "hist_bars_per_s", bars / seconds, "seed 10 ms/ingestion (bars/s)", 100.0, "bars/s",
                 bars=bars, seconds=round(seconds, 3))


BENCHES = {"ib": run}
