"""``KillSwitch``: stop a run safely, from ``btlive kill``, SIGTERM or the monitoring page.

On a request the switch at once refuses every new order the strategy places (Rejected, with
the reason in ``order.info["message"]``, which the audit records), then on backtrader's thread
(at the next pass of cerebro's loop, bar or no bar) cancels every open order the run placed,
optionally flattens the run's positions with market orders, waits for the broker to confirm
(bounded), sends an alert, writes its report and stops cerebro. With the connection down it
cannot reach the broker: the report names every order it could not cancel and every position
it could not flatten, and why.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
import signal
import socketserver
import threading
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import backtrader as bt

from btlive.alerts.state import Kind
from btlive.ops.events import ops_event
from btlive.ops.feeds import feed_name
from btlive.ops.hook import LoopHook
from btlive.ops.monitor import guess_mode, run_id_of
from btlive.ops.runfile import RunFile, default_run_dir

log = logging.getLogger(__name__)

IDLE, CANCELLING, FLATTENING, DONE = "idle", "cancelling", "flattening", "done"


class _Control(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _ControlHandler(socketserver.StreamRequestHandler):
    timeout = 10

    def handle(self) -> None:
        switch: KillSwitch = self.server.switch  # type: ignore[attr-defined]
        try:
            request = json.loads(self.rfile.readline(65536) or b"{}")
        except ValueError:
            request = {}
        token = str(request.get("token", ""))
        if not hmac.compare_digest(token.encode(), switch.token.encode()):
            reply = {"error": "wrong token"}
        elif request.get("action") != "kill":
            reply = {"error": f"unknown action {request.get('action')!r}"}
        else:
            switch.trigger(str(request.get("reason") or "btlive kill"),
                           flatten=bool(request.get("flatten")))
            reply = switch.wait(switch.p.cancel_timeout + switch.p.flatten_timeout + 30) or \
                {"error": "the run did not finish the kill in time"}
        self.wfile.write(json.dumps(reply, default=str).encode() + b"\n")


class KillSwitch(bt.Analyzer):
    """Halts the run: no new orders, cancel the run's open orders, optionally flatten, exit.

    Params:

      - ``run_dir`` (None): where the run file for ``btlive kill`` goes; None: ``$BTLIVE_RUN_DIR``
        or ``~/.btlive/runs``
      - ``control`` (True): listen on a loopback port for ``btlive kill`` (port and token in
        the run file, mode 0600)
      - ``signals`` (True): SIGTERM triggers the switch (only when cerebro runs in the main
        thread, where Python delivers signals)
      - ``flatten_on_signal`` (False): whether SIGTERM also flattens
      - ``cancel_timeout`` (10.0) / ``flatten_timeout`` (30.0): seconds to wait for the broker
        to confirm the cancels / the flattening fills
      - ``alerts`` (None): a ``btlive.alerts.Dispatcher``; None uses the run's ``OpsAlerts``
        dispatcher when there is one, else the alert is only logged
      - ``stop_run`` (True): stop cerebro when done
      - ``run_id`` (None): the run id (default: the audit's / the run's)

    ``trigger(reason, flatten=False)`` is thread-safe; ``report`` holds what was done.
    """

    params = (("run_dir", None), ("control", True), ("signals", True),
              ("flatten_on_signal", False), ("cancel_timeout", 10.0), ("flatten_timeout", 30.0),
              ("alerts", None), ("stop_run", True), ("run_id", None))

    def __init__(self) -> None:
        self.state = IDLE
        self.halted = False
        self.report: dict | None = None
        self.refused = 0
        self.token = secrets.token_urlsafe(24)
        self._request: tuple[str, bool] | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._control: _Control | None = None
        self._runfile: Path | None = None
        self._old_signal = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        strategy = self.strategy
        self.run_id = self.p.run_id or run_id_of(strategy.env)
        broker = strategy.broker
        self._place = {True: broker.buy, False: broker.sell}
        broker.buy = partial(self._gate, True)
        broker.sell = partial(self._gate, False)
        self._hook = LoopHook.attach(strategy.env, self._tick)
        if self.p.control:
            self._control = _Control(("127.0.0.1", 0), _ControlHandler)
            self._control.switch = self
            threading.Thread(target=self._control.serve_forever, name="btlive-ops-kill",
                             daemon=True).start()
            run_dir = Path(self.p.run_dir) if self.p.run_dir else default_run_dir()
            self._runfile = RunFile(
                run_id=self.run_id, pid=os.getpid(), port=self._control.server_address[1],
                token=self.token, strategy=type(strategy).__name__, mode=guess_mode(strategy),
                started=datetime.now(UTC).isoformat(),
                client_id=int(getattr(getattr(broker, "store", None), "clientId", 0) or 0),
            ).write(run_dir)
        if self.p.signals and threading.current_thread() is threading.main_thread():
            self._old_signal = signal.signal(signal.SIGTERM, self._on_signal)

    def stop(self) -> None:
        broker = self.strategy.broker
        broker.buy, broker.sell = self._place[True], self._place[False]
        self._hook.detach(self.strategy.env)
        if self._old_signal is not None:
            signal.signal(signal.SIGTERM, self._old_signal)
        if self._control is not None:
            self._control.shutdown()
            self._control.server_close()
        if self._runfile is not None:
            self._runfile.unlink(missing_ok=True)
        self._done.set()

    # -- requests (any thread) -------------------------------------------------------------------

    def trigger(self, reason: str, flatten: bool = False) -> None:
        """Halt now; the rest happens on backtrader's thread at the next pass of its loop."""
        with self._lock:
            self.halted = True
            if self._request is None:
                self._request = (reason, flatten)
                log.warning("kill switch: %s%s", reason, " (flatten)" if flatten else "")

    def wait(self, timeout: float) -> dict | None:
        self._done.wait(timeout)
        return self.report

    def _on_signal(self, signum, _frame) -> None:
        self.trigger(signal.Signals(signum).name, flatten=self.p.flatten_on_signal)

    # -- the gate on new orders ------------------------------------------------------------------

    def _gate(self, isbuy: bool, owner, data, size, price=None, plimit=None, exectype=None,
              **kwargs):
        if not self.halted:
            return self._place[isbuy](owner, data, size, price=price, plimit=plimit,
                                      exectype=exectype, **kwargs)
        broker = self.strategy.broker
        cls = bt.BuyOrder if isbuy else bt.SellOrder
        order = cls(owner=owner, data=data, size=size, price=price, pricelimit=plimit,
                    exectype=exectype, tradeid=kwargs.get("tradeid", 0))
        order.addcomminfo(broker.getcommissioninfo(data))
        order.addinfo(message="refused: the run is halted by its kill switch")
        order.reject(broker)
        broker.notify(order)
        self.refused += 1
        return order

    # -- backtrader's thread ---------------------------------------------------------------------

    def _tick(self) -> None:
        if self.state == IDLE:
            if self._request is not None:
                self._begin()
        elif self.state == CANCELLING:
            if not self._working(self._cancelling) or time.monotonic() > self._deadline:
                self._after_cancels()
        elif self.state == FLATTENING:
            if not self._working(self._flattening) or time.monotonic() > self._deadline:
                self._finish()

    def next(self) -> None:
        self._tick()

    @staticmethod
    def _working(orders: list) -> bool:
        return any(o.alive() for o in orders)

    def _connected(self) -> bool:
        store = getattr(self.strategy.broker, "store", None)
        return bool(store.connected()) if store is not None and hasattr(store, "connected") \
            else True

    def _begin(self) -> None:
        reason, flatten = self._request
        broker = self.strategy.broker
        self.report = {"run_id": self.run_id, "reason": reason, "flatten": flatten,
                       "at": datetime.now(UTC).isoformat(), "connected": self._connected(),
                       "cancelled": [], "not_cancelled": [], "flattened": [],
                       "not_flattened": [], "refused": 0}
        self._cancelling = []
        for order in broker.get_orders_open():
            order.addinfo(message=f"cancelled by the kill switch ({reason})")
            self._cancelling.append(order)
            broker.cancel(order)
        self.state = CANCELLING
        self._deadline = time.monotonic() + self.p.cancel_timeout
        self._tick()

    def _after_cancels(self) -> None:
        connected = self._connected()
        for order in self._cancelling:
            if order.alive():
                why = ("the broker connection is down: the order is still working at the broker"
                       if not connected else
                       f"no confirmation within {self.p.cancel_timeout:g} s")
                self.report["not_cancelled"].append(_describe(order, why))
            elif order.status in (order.Canceled, order.Expired):
                self.report["cancelled"].append(_describe(order))
            else:  # filled (or rejected) before the cancel reached the broker
                self.report["not_cancelled"].append(
                    _describe(order, f"{order.getstatusname().lower()} before the cancel"))
        self._flattening = []
        if self.report["flatten"]:
            self._flatten(connected)
        self.state = FLATTENING
        self._deadline = time.monotonic() + self.p.flatten_timeout
        self._tick()

    def _flatten(self, connected: bool) -> None:
        broker = self.strategy.broker
        seen = set()
        for data in self.strategy.datas:
            # two feeds of one instrument (say, ticks and resampled bars) share one position
            key = getattr(getattr(data, "tradecontract", None), "conId", None) or id(data)
            pos = broker.getposition(data)
            if key in seen or not pos.size:
                continue
            seen.add(key)
            size = pos.size
            if not connected:
                self.report["not_flattened"].append(
                    {"data": feed_name(data), "size": size, "why": "the broker connection is down"})
                continue
            order = self._place[size < 0](self.strategy, data, abs(size),
                                          exectype=bt.Order.Market)
            order.addinfo(message=f"flatten by the kill switch ({self.report['reason']})")
            self._flattening.append(order)

    def _finish(self) -> None:
        for order in self._flattening:
            entry = _describe(order)
            entry["filled"] = abs(order.executed.size)
            if order.status == order.Completed:
                self.report["flattened"].append(entry)
            else:
                entry["why"] = (order.info.get("ib_reason") or order.info.get("message")
                                or f"{order.getstatusname()} after {self.p.flatten_timeout:g} s")
                self.report["not_flattened"].append(entry)
        self.report["refused"] = self.refused
        self.report["ok"] = not (self.report["not_cancelled"] or self.report["not_flattened"])
        self.state = DONE
        self._alert()
        log.warning("kill switch done: %s", json.dumps(self.report, default=str))
        if self._runfile is not None:
            self._runfile.with_suffix(".kill.json").write_text(json.dumps(self.report, indent=1))
        self._done.set()
        if self.p.stop_run:
            self.strategy.env.runstop()

    def _alert(self) -> None:
        dispatcher = self.p.alerts
        ops = next((a for a in self.strategy.analyzers if hasattr(a, "publish_event")), None)
        left = len(self.report["not_cancelled"]) + len(self.report["not_flattened"])
        event = ops_event(
            metric="kill_switch", level="critical", kind=Kind.FIRING, value=left, threshold=0,
            unit="count", strategy=type(self.strategy).__name__,
            context={"reason": self.report["reason"], "cancelled": len(self.report["cancelled"]),
                     "not cancelled": len(self.report["not_cancelled"]),
                     "flattened": len(self.report["flattened"]),
                     "not flattened": len(self.report["not_flattened"])})
        if ops is not None and dispatcher is None:
            ops.publish_event(event)
        elif dispatcher is not None:
            dispatcher.submit(event)

    def get_analysis(self) -> dict:
        return {"state": self.state, "report": self.report, "refused": self.refused}

    def ops_section(self) -> tuple[str, dict]:
        return "kill", {"state": self.state, "halted": self.halted, "report": self.report}


def _describe(order, why: str | None = None) -> dict:
    out = {"ref": order.ref, "data": feed_name(order.data),
           "side": "buy" if order.isbuy() else "sell",
           "size": abs(order.created.size), "type": order.getordername(),
           "status": order.getstatusname()}
    if order.info.get("ib_order_id"):
        out["ib_order_id"] = order.info["ib_order_id"]
    if why:
        out["why"] = why
    return out
