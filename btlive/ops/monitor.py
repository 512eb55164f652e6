"""``Monitor``: publishes the run's state for the monitoring page and its JSON API.

On backtrader's thread the analyzer builds a small dict (P&L, positions, orders, fills, feeds,
alerts, CVaR) at most every ``interval`` seconds and hands it to a :class:`StateBoard`; the web
server (:mod:`btlive.ops.web`) runs in its own thread and serves the latest one. The page is
read-only unless a stop token is configured in the environment.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections import deque
from datetime import UTC, datetime

import backtrader as bt

from btlive.ops.board import StateBoard
from btlive.ops.feeds import FeedWatch, feed_name, utcnow_iso
from btlive.ops.hook import LoopHook
from btlive.ops.risk import utilisation

_SIDE = {True: "buy", False: "sell"}
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _num(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


LIVE_PORTS = (7496, 4001)  # TWS and IB Gateway on a live account


def guess_mode(strategy) -> str:
    """backtest without live data; live only on IB's live-account ports; else paper."""
    if not any(d.islive() for d in strategy.datas):
        return "backtest"
    store = getattr(strategy.broker, "store", None)
    port = getattr(getattr(store, "p", None), "port", None)
    return "live" if port in LIVE_PORTS else "paper"


def run_id_of(cerebro) -> str:
    """The run id shared by the audit and the ops components (one per cerebro)."""
    run_id = getattr(cerebro, "_btlive_audit_run_id", None)
    if run_id is None:
        run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
        cerebro._btlive_audit_run_id = run_id
    return run_id


class Monitor(bt.Analyzer):
    """Serves a live monitoring page and ``/api/state`` for this run.

    Params:

      - ``port`` (None): TCP port of the page; None serves nothing (the snapshots are still
        built, for ``get_analysis()`` and other readers of ``board``); 0 picks a free port
      - ``host`` ("127.0.0.1"): the address to bind; anything but loopback needs
        ``allow_remote=True`` (the config must say so explicitly)
      - ``allow_remote`` (False)
      - ``interval`` (0.5): least wall-clock seconds between two snapshots
      - ``history`` (2000): points kept on the P&L curve
      - ``recent`` (50): fills and orders kept for the page
      - ``stale_after`` (60.0): seconds without a new bar before a live feed shows as stale
      - ``token_env`` ("BTLIVE_MONITOR_TOKEN"): environment variable holding the token of the
        page's stop action; unset (the default) means the page is read-only
      - ``on_stop`` (None): called (from the web thread) when an authorised stop arrives;
        default: the run's ``KillSwitch`` if one is added, else ``cerebro.runstop``
      - ``on_ready`` (None): called with the page's URL once it listens
      - ``run_id``/``mode`` (None): shown on the page; guessed when None
      - ``risk`` (None): the run's pre-trade risk checks; the page shows how much of each limit
        is in use (see :func:`btlive.ops.risk.utilisation`)

    ``pnl`` is the mark-to-market P&L of the run's own fills (net of commission) at the last
    price, so it moves with every bar in every mode; ``value``/``cash`` are the broker's.

    The URL is ``monitor.url`` once the run has started.
    """

    params = (("port", None), ("host", "127.0.0.1"), ("allow_remote", False),
              ("interval", 0.5), ("history", 2000), ("recent", 50), ("stale_after", 60.0),
              ("token_env", "BTLIVE_MONITOR_TOKEN"), ("on_stop", None), ("on_ready", None),
              ("run_id", None), ("mode", None), ("risk", None))

    def __init__(self) -> None:
        if self.p.host not in LOOPBACK and not self.p.allow_remote:
            raise ValueError(f"Monitor host={self.p.host!r} is not loopback: set "
                             "allow_remote=True to expose it")
        self.board = StateBoard()
        self.server = None
        self.url: str | None = None
        self._pnl: deque = deque(maxlen=self.p.history)
        self._orders: dict[int, dict] = {}
        self._fills: deque = deque(maxlen=self.p.recent)
        self._traded: dict[int, list[float]] = {}  # id(data) -> [quantity, cash flow]
        self._last = -math.inf

    def start(self) -> None:
        strategy = self.strategy
        self.run_id = self.p.run_id or run_id_of(strategy.env)
        self.mode = self.p.mode or guess_mode(strategy)
        self.feeds = FeedWatch(strategy.datas)
        self._quality = self._find("ExecutionQuality")
        self._cvar = self._find("CVaR")
        self._sections = [a for a in strategy.analyzers if hasattr(a, "ops_section")]
        self._publish()
        # also between bars: with the connection down no bar comes, and the page must say so
        self._hook = LoopHook.attach(strategy.env, self.next)
        if self.p.port is not None:
            from btlive.ops.web import WebServer

            self.server = WebServer(self.board, host=self.p.host, port=self.p.port,
                                    token=os.environ.get(self.p.token_env) or None,
                                    on_stop=self.p.on_stop or self._default_stop)
            self.server.start()
            self.url = self.server.url
            if self.p.on_ready is not None:
                self.p.on_ready(self.url)

    def stop(self) -> None:
        self._hook.detach(self.strategy.env)
        self._publish(final=True)
        if self.server is not None:
            self.server.stop()

    def _find(self, cls_name: str):
        return next((a for a in self.strategy.analyzers if type(a).__name__ == cls_name), None)

    def _default_stop(self) -> None:
        kill = self._find("KillSwitch")
        if kill is not None:
            kill.trigger("monitoring page")
        else:
            self.strategy.env.runstop()

    # -- backtrader's thread ---------------------------------------------------------------------

    def notify_order(self, order) -> None:
        info = self._orders.get(order.ref)
        if info is None:
            info = self._orders[order.ref] = {
                "ref": order.ref, "data": feed_name(order.data), "side": _SIDE[order.isbuy()],
                "size": abs(float(order.created.size)), "type": order.getordername(),
                "price": _num(order.created.price)}
        info["status"] = order.getstatusname()
        info["filled"] = abs(float(order.executed.size))
        traded = self._traded.setdefault(id(order.data), [0.0, 0.0])
        mult = self._mult(order.data)
        for bit in order.executed.iterpending():
            traded[0] += bit.size
            traded[1] -= bit.size * bit.price * mult + bit.comm
            self._fills.append({"ref": order.ref, "data": info["data"], "side": info["side"],
                                "size": abs(float(bit.size)), "price": float(bit.price),
                                "time": bt.num2date(bit.dt).replace(tzinfo=UTC).isoformat()
                                if bit.dt else None})
        if not order.alive():
            self._orders.pop(order.ref, None)

    def next(self) -> None:
        now = time.monotonic()
        if now - self._last >= self.p.interval:
            self._publish()

    def _publish(self, final: bool = False) -> None:
        self._last = time.monotonic()
        strategy = self.strategy
        broker = strategy.broker
        value, cash = _num(broker.getvalue()), _num(broker.getcash())
        pnl = self.run_pnl()
        when = time.time()
        if pnl is not None:
            self._pnl.append([round(when, 3), round(pnl, 2)])
        snap = {
            "run_id": self.run_id, "mode": self.mode, "strategy": type(strategy).__name__,
            "updated": utcnow_iso(), "final": final,
            "value": value, "cash": cash, "pnl": pnl, "pnl_curve": list(self._pnl),
            "positions": self._positions(),
            "orders": [dict(o) for o in self._orders.values()],
            "fills": [{**f, **self._quality_of(f["ref"])} for f in self._fills],
            "feeds": [s.as_dict(self.p.stale_after, self._last) for s in self.feeds.poll()],
            "connection": self._connection(),
            "cvar": self._cvar_state(),
            "execution": self._quality.totals() if self._quality is not None else None,
            "risk": utilisation(self.p.risk, strategy),
            "alerts": [], "stop_enabled": bool(self.server and self.server.token),
        }
        for section in self._sections:
            key, value = section.ops_section()
            snap[key] = value
        self.board.publish(snap)

    def _quality_of(self, ref: int) -> dict:
        row = self._quality.row(ref) if self._quality is not None else None
        if row is None:
            return {}
        return {"decision_price": row.decision_price, "slippage": row.slippage,
                "slippage_bps": row.slippage_bps, "latency_fill_s": row.latency_fill_s}

    def _mult(self, data) -> float:
        comminfo = self.strategy.broker.getcommissioninfo(data)
        return float(getattr(comminfo.p, "mult", 1.0) or 1.0)

    def run_pnl(self) -> float | None:
        """Mark-to-market P&L of what this run traded (cash flows of its fills, net of
        commission, plus the quantity it traded at the last price). Brokers value accounts on
        their own cadence (IB's NetLiquidation every few minutes); this moves with each bar."""
        pnl = 0.0
        for data in self.strategy.datas:
            qty, cash = self._traded.get(id(data), (0.0, 0.0))
            if qty:
                price = _num(data.close[0]) if len(data) else None
                if price is None:
                    return None
                cash += qty * price * self._mult(data)
            pnl += cash
        return pnl

    def _positions(self) -> list[dict]:
        broker = self.strategy.broker
        out = []
        for data in self.strategy.datas:
            pos = broker.getposition(data)
            if not pos.size:
                continue
            current = _num(data.close[0]) if len(data) else None
            mult = self._mult(data)
            entry = _num(pos.price)
            unreal = (current - entry) * pos.size * mult if None not in (current, entry) else None
            out.append({"data": feed_name(data), "size": float(pos.size), "entry": entry,
                        "current": current, "unrealized": unreal})
        return out

    def _connection(self) -> dict:
        store = getattr(self.strategy.broker, "store", None)
        if store is None or not hasattr(store, "connected"):
            return {"broker": "local", "connected": True}
        return {"broker": type(store).__name__, "connected": bool(store.connected())}

    def _cvar_state(self) -> dict | None:
        cvar = self._cvar
        if cvar is None:
            return None
        machine = getattr(cvar, "_machine", None)
        states = {lvl: str(st.state) for lvl, st in machine.states.items()} if machine else {}
        return {"es": _num(cvar.es), "es_dollars": _num(cvar.es_dollars),
                "var": _num(getattr(cvar, "var", None)), "units": cvar.p.units,
                "warning": cvar.p.warning, "critical": cvar.p.critical, "levels": states}

    def get_analysis(self) -> dict:
        return self.board.latest()[1]


