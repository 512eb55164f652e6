"""TwsSimulator: the simulated TWS as a context manager, on its own loop thread.

    with TwsSimulator(port=0) as sim:
        ib.connect(sim.host, sim.port, clientId=1)

The server (``session.TwsServer``) runs on a :class:`btlive.runtime.LoopThread`. The fault
methods (``error``, ``drop``, ``restart``, ...) are thread-safe and return once applied.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import replace
from datetime import date

from btlive.runtime import LoopThread

from .contracts import nyse_day_type
from .faults import ACTIONS, Fault, parse_timeline
from .protocol import MAX_VERSION
from .session import TwsServer


class TwsSimulator:
    """The simulator as a context manager (or ``start()``/``stop()``).

    Params:
      - ``host``/``port``: where to listen (``port=0`` picks a free port; see ``.port``)
      - ``accounts``: managed account codes (first is the default)
      - ``symbols``: extra symbols (``"MSFT"``, ``"MSFT:420"``, ``"GBP.USD:CASH"``)
      - ``seed``: random-walk seed (same seed, same prices)
      - ``latency_ms``: delay before an order or cancel is processed
      - ``tick_interval``: seconds between market steps of a watched instrument
      - ``bar_interval``: seconds between real-time bars (5 as in TWS; tests may shorten)
      - ``pacing``: enforce IB's historical-data pacing rules (error 162)
      - ``faults``: a list of ``Fault`` or the text of a timeline (see ``faults.py``)
      - ``replay``: a replay driver (``replay.ArcticReplay``) instead of the random walk
      - ``max_version``: highest server version offered (default 178)
      - ``max_fill_size``: cap every execution at this size (forces partial fills)
      - ``commission_first``: send each commissionReport before its execDetails (robustness
        tests; ib_async then drops the report because it does not know the execId yet)
      - ``account_refresh``: seconds between account-value updates (180 as in TWS; a fill
        sends only the changed portfolio rows at once, cash and value wait for this timer)
      - ``always_open``: friendlier than real, off by default: ticks and fills at any hour.
        Without it instruments follow their trading hours (no ticks on weekends or outside
        the session, orders wait PreSubmitted with warning 399; history is always served)
      - ``unsubscribed``: symbols without an API market-data subscription: reqMktData gets
        10089 under live data, delayed ticks (66...) after reqMarketDataType(3/4); history
        162 (no permissions)
      - ``delayed_unavailable``: symbols without subscription and without delayed data: 10168
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 accounts: Iterable[str] = ("DU123456",), symbols: Iterable[str] = (),
                 seed: int = 0, latency_ms: float = 0.0, tick_interval: float = 0.25,
                 bar_interval: float = 5.0, pacing: bool = False,
                 faults: Iterable[Fault] | str = (), replay=None,
                 max_version: int = MAX_VERSION, timezone: str = "US/Eastern",
                 cash: float = 1_000_000.0, farm_messages: bool = True,
                 account_refresh: float = 180.0, max_fill_size: float = 0.0,
                 commission_first: bool = False, always_open: bool = False,
                 unsubscribed: Iterable[str] = (), delayed_unavailable: Iterable[str] = ()):
        if isinstance(faults, str):
            faults = parse_timeline(faults)
        self.server = TwsServer(host, port, accounts=accounts, symbols=symbols, seed=seed,
                                latency_ms=latency_ms, tick_interval=tick_interval,
                                bar_interval=bar_interval, pacing=pacing,
                                max_version=max_version, timezone=timezone, cash=cash,
                                farm_messages=farm_messages, faults=faults,
                                account_refresh=account_refresh,
                                max_fill_size=max_fill_size,
                                commission_first=commission_first, always_open=always_open,
                                unsubscribed=unsubscribed,
                                delayed_unavailable=delayed_unavailable)
        self.server.replay = replay
        self._loop = LoopThread("btlive-tws-sim")

    # ------------------------------------------------------------ lifecycle
    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def accounts(self) -> list[str]:
        return list(self.server.accounts)

    @property
    def version(self) -> int:
        return self.server.max_version

    def start(self) -> TwsSimulator:
        if self._loop.running:
            return self
        replay = self.server.replay
        if replay is not None and not replay.events:
            replay.load(self.server)  # errors (no data, bad library) surface here
        nyse_day_type(date.today())  # load the holiday calendar here, not on the server's loop
        self._loop.start()
        try:
            self._loop.run(self.server.start(), timeout=10)
        except BaseException:
            self._loop.stop()
            raise
        return self

    def stop(self) -> None:
        if not self._loop.running:
            return
        try:
            self._loop.run(self.server.stop(), timeout=10)
        finally:
            self._loop.stop(10)

    def __enter__(self) -> TwsSimulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------ thread-safe calls
    def call(self, fn, *args, timeout: float = 10.0):
        """Run ``fn(*args)`` on the simulator's loop and return its result."""
        if not self._loop.running:
            return fn(*args)

        async def wrapper():
            result = fn(*args)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return self._loop.run(wrapper(), timeout)

    def fault(self, action: str, **args) -> None:
        """Apply one fault now, e.g. ``sim.fault("error", code=1100)``."""
        fault = Fault(0.0, action, args)
        if action not in ACTIONS:
            raise ValueError(f"unknown fault {action!r}; known: {', '.join(sorted(ACTIONS))}")
        self.call(self.server.apply_fault, fault)

    def error(self, code: int, msg: str | None = None, client_id: int | None = None) -> None:
        """Send a system error/warning (1100, 1101, 1102, 2104, ...) to every client."""
        args = {"code": code}
        if msg:
            args["msg"] = msg
        if client_id is not None:
            args["clientId"] = client_id
        self.fault("error", **args)

    def drop(self, client_id: int | None = None) -> None:
        """Close client sockets abruptly (all, or one clientId)."""
        self.call(self.server.drop, client_id)

    def restart(self, down: float = 1.0) -> None:
        """Full restart: drop everyone, refuse connections ``down`` seconds, keep orders."""
        self.call(self.server.restart, down, timeout=down + 10)

    def daily_restart(self, down: float = 60.0, linger: float = 20.0,
                      farms: float = 10.0) -> None:
        """TWS's daily restart, started now (returns at once): everyone drops, connections
        are refused ``down`` s, the old clientIds get 326 for ``linger`` s more, the farms
        come back ``farms`` s after the restart (2104/2106/2158)."""
        self.fault("daily_restart", down=down, linger=linger, farms=farms)

    def competing_session(self, on: bool = True) -> None:
        """Another live session takes the market data (10197) or gives it back."""
        self.fault("competing", on=int(on))

    def pacing_violation(self, count: int = 1) -> None:
        self.fault("pacing", count=count)

    def reject_next_order(self, reason: str = "rejected by the simulator", symbol: str = "",
                          count: int = 1) -> None:
        self.fault("reject", reason=reason, symbol=symbol, count=count)

    def unknown_symbol(self, symbol: str) -> None:
        self.fault("unknown", symbol=symbol)

    def not_subscribed(self, symbol: str) -> None:
        self.fault("notsubscribed", symbol=symbol)

    def silent_next_order(self, count: int = 1) -> None:
        self.fault("silent", count=count)

    def cancel_order(self, client_id: int, order_id: int, reason: str = "") -> None:
        self.fault("cancel", clientId=client_id, orderId=order_id, reason=reason)

    def order_warning(self, client_id: int, order_id: int, code: int = 399,
                      msg: str = "Order message warning") -> None:
        self.fault("warn", clientId=client_id, orderId=order_id, code=code, msg=msg)

    def set_market(self, symbol: str, state: str | None = "open") -> None:
        """Force a symbol's session now: ``open`` (regular), ``extended`` or ``closed``; None
        follows its trading hours again. Tests of closed markets use it on any weekday."""
        self.call(self.server.set_market, symbol, state)

    def set_price(self, symbol: str, price: float) -> None:
        """Jump an instrument's price now (quotes go out, resting orders match)."""
        self.call(self.server.set_price, symbol, price)

    def close_session(self) -> None:
        """The closing auction: MOC/LOC fill, DAY orders expire."""
        self.call(self.server.close_session)

    def quote(self, symbol: str):
        """The current quote of a symbol (a copy)."""
        def get():
            inst = self.server.find_symbol(symbol)
            return replace(self.server.market.quote(inst))
        return self.call(get)

    def positions(self, account: str | None = None) -> dict[str, float]:
        """{localSymbol: quantity} of an account."""
        def get():
            acct = self.server.accounts[account or self.server.default_account]
            return {p.inst.local_symbol: p.qty for p in acct.positions.values()}
        return self.call(get)

    def orders(self) -> list:
        """Snapshot of every order the simulator has seen (SimOrder copies)."""
        return self.call(lambda: [replace(o) for o in self.server.engine.orders.values()])

    @property
    def stats(self) -> dict:
        return dict(self.server.stats)
