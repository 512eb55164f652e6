"""A paper run against the TWS simulator, in a thread or a child process, for the ops tests.

The strategy buys 10 AAPL, then rests a far buy limit and a far sell limit, and reports ready
once both are accepted; after a halt it tries one more order (which must be refused).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading

import backtrader as bt

from btlive.ib.broker import IBBroker
from btlive.ib.feed import IBData
from btlive.ib.store import IBStore
from btlive.ops.kill import KillSwitch


class Holder(bt.Strategy):
    params = (("on_ready", None),)

    def __init__(self):
        self.bought = None
        self.resting: list = []
        self.ready = False
        self.after_halt: list = []

    def next(self):
        kill = self.analyzers.getbyname("kill")
        if kill.halted:
            if not self.after_halt:
                self.after_halt.append(self.buy(size=1))
            return
        if self.bought is None and len(self) >= 2:
            self.bought = self.buy(size=10)
        elif self.bought is not None and self.bought.status == bt.Order.Completed \
                and not self.resting:
            price = self.data.close[0]
            self.resting = [
                self.buy(size=1, exectype=bt.Order.Limit, price=round(price * 0.5, 2)),
                self.sell(size=1, exectype=bt.Order.Limit, price=round(price * 1.5, 2))]
        elif self.resting and not self.ready \
                and all(o.status == bt.Order.Accepted for o in self.resting):
            self.ready = True
            if self.p.on_ready is not None:
                self.p.on_ready(self)


def build(port: int, client_id: int, on_ready=None, **kill) -> bt.Cerebro:
    store = IBStore(port=port, clientId=client_id, timeout=0.5)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(IBData(store=store, dataname="AAPL", tickmode="BidAsk", backfill_start=False,
                           timeframe=bt.TimeFrame.Ticks), name="AAPL")
    cerebro.setbroker(IBBroker(store=store))
    cerebro.addstrategy(Holder, on_ready=on_ready)
    cerebro.addanalyzer(KillSwitch, _name="kill", **kill)
    return cerebro


class PaperThread:
    """Runs :func:`build` in a thread; ``ready`` is set once the orders rest at the simulator."""

    def __init__(self, port: int, client_id: int, **kill) -> None:
        self.ready = threading.Event()
        self.cerebro = build(port, client_id, on_ready=lambda s: self.ready.set(), **kill)
        self.result = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            (self.result,) = self.cerebro.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test
            self.error = exc

    def start(self) -> PaperThread:
        self.thread.start()
        return self

    def join(self, timeout: float = 60.0):
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.cerebro.runstop()
            self.thread.join(30)
            raise AssertionError("the paper run did not stop")
        IBStore.close_all()
        if self.error is not None:
            raise self.error
        return self.result


def main() -> int:
    """Child process: run until killed; print READY, then the kill report as one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client-id", type=int, default=51)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--flatten-on-signal", action="store_true")
    args = parser.parse_args()

    def ready(_strategy):
        print("READY", flush=True)

    cerebro = build(args.port, args.client_id, on_ready=ready, run_dir=args.run_dir,
                    flatten_on_signal=args.flatten_on_signal, cancel_timeout=10)
    (strat,) = cerebro.run()
    kill = strat.analyzers.getbyname("kill")
    refused = [o.getstatusname() for o in strat.after_halt]
    print("REPORT " + json.dumps({"report": kill.report, "after_halt": refused}), flush=True)
    IBStore.close_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
