"""IBData: Interactive Brokers data feed for backtrader on ib_async (via IBStore)."""

from __future__ import annotations

import datetime as dt
import os
import queue
import sys

import backtrader as bt
from backtrader.feed import DataBase
from backtrader.utils import date2num, num2date
from ib_async import Contract

from btlive.arctic.symbols import timeframe_name
from btlive.ib import messages as msgs
from btlive.ib.compat import contract_types, with_ibpy_aliases
from btlive.ib.contracts import (
    ContractDefaults,
    ContractSpecError,
    contract_label,
    parse_contract,
)
from btlive.ib.history import bar_size
from btlive.ib.messages import HISTORY_END, DataError, IBMessage, LiveBar, LiveTick
from btlive.ib.store import IBStore, store_for
from btlive.ib.ticks import TickRule

TF = bt.TimeFrame
TICK_MODES = ("RTVolume", "AllLast", "Last", "BidAsk", "MidPoint")
#: reqMarketDataType's codes; 'auto' starts live and falls back to delayed when TWS offers it.
MKT_DATA_TYPES = {"live": 1, "frozen": 2, "delayed": 3, "delayed-frozen": 4, "auto": 1}
#: Live tick type -> the delayed one (bid, ask, last; RTVolume's trades become delayed last).
DELAYED_TICKS = {1: 66, 2: 67, 4: 68, 48: 68, 77: 68}
#: Market-data errors that refuse live data but leave delayed data possible.
DELAYED_POSSIBLE = frozenset({354, 10089, 10197})
#: Market-data errors that change nothing for the feed (partial data, delayed shown).
DATA_WARNINGS = frozenset({10090, 10167})


class IBData(DataBase):
    """Interactive Brokers data feed (live and historical) on ib_async.

    ``dataname`` is an ib_async ``Contract`` or a backtrader contract string::

        TICKER, TICKER-STK[-EXCH[-CUR]], TICKER-CFD[-EXCH[-CUR]], TICKER-IND-EXCH[-CUR],
        TICKER-YYYYMM-EXCH[-CUR[-MULT]], TICKER-FUT-EXCH-CUR-YYYYMM[-MULT],
        TICKER-YYYYMM-EXCH-CUR-STRIKE-RIGHT[-MULT], TICKER-FOP-EXCH-CUR-YYYYMM-STRIKE-RIGHT[-MULT],
        TICKER-YYYYMMDD-EXCH-CUR-STRIKE-RIGHT[-MULT], TICKER-OPT-EXCH-CUR-YYYYMMDD-STRIKE-RIGHT[-MULT],
        CUR1.CUR2-CASH-IDEALPRO, TICKER-CRYPTO-EXCH-CUR (e.g. BTC-CRYPTO-PAXOS-USD)

    Params:
      - ``sectype`` ('STK'), ``exchange`` ('SMART'), ``currency`` (''): defaults for tokens the
        string leaves out
      - ``tradename`` (None): another contract (string or Contract) to trade, e.g. a CFD
      - ``historical`` (False): download ``fromdate``..``todate`` and stop (DISCONNECTED at the end)
      - ``what`` (None): price source for history and real-time bars; default 'BID' for CASH
        and CFD, 'TRADES' otherwise ('MIDPOINT', 'ASK', 'BID_ASK', ... as IB documents); crypto
        history asks 'AGGTRADES' for 'TRADES'
      - ``useRTH`` (False): regular trading hours only
      - ``rtbar`` (False): live 5-second real-time bars (``what`` honoured, FX included);
        ignored when the feed's timeframe is below 5 seconds
      - ``tickmode`` ('RTVolume'): live ticks when not ``rtbar``: 'RTVolume' (generic tick 233;
        CASH/CFD use bid, or ask when ``what='ASK'``; IND uses last), or tick-by-tick 'AllLast',
        'Last', 'BidAsk' (price per ``what``: BID, ASK or midpoint), 'MidPoint'
      - ``qcheck`` (0.5): seconds to wait for live data before letting backtrader run its
        resample/replay clock and notifications
      - ``backfill_start`` (True): backfill from ``fromdate`` (or the longest single request) up to
        the first live message
      - ``backfill`` (True): backfill the gap after a reconnection
      - ``backfill_from`` (None): another feed (e.g. ArcticData) delivered first; IB backfill then
        continues from its last bar
      - ``latethrough`` (False): deliver bars/ticks older than the last delivered one
      - ``tz`` (None): output time zone; default the contract's ``timeZoneId`` (pytz)
      - ``recorder`` (None): an ArcticRecorder (or its URI) that records every bar/tick received
      - ``store`` (None): the IBStore to use; otherwise one is made from the store params
        (host, port, clientId, ...) passed to this feed
      - ``cdtimeout`` (None): seconds to wait for contract details at start (store's ``histtimeout``)
      - ``mktdatatype`` ('auto'): market data type (``reqMarketDataType``) for RTVolume ticks:
        'live', 'frozen', 'delayed', 'delayed-frozen', or 'auto': live, and when TWS answers
        that there is no live subscription but delayed data is available (354, 10089, 10197),
        delayed data with a store notification that says so. Without a fallback the feed
        ends with NOTSUBSCRIBED and the reason (TWS's code and message)

    Without store params the feed uses the IBStore that exists already (the broker's, say),
    as backtrader's one-per-process store does. ``contract``/``contractdetails`` also answer
    IbPy's read-only ``m_`` names (``data.contractdetails.m_timeZoneId``).
    Forex volume is 0, live and backfilled, as in backtrader. A long history download or backfill
    shows a progress bar on stderr when it is a terminal, or when asked for
    (``BTLIVE_PROGRESS=bar|line``, ``btlive.run.progress.set_mode``).
    """

    params = (
        ("sectype", "STK"),
        ("exchange", "SMART"),
        ("currency", ""),
        ("tradename", None),
        ("historical", False),
        ("what", None),
        ("useRTH", False),
        ("rtbar", False),
        ("tickmode", "RTVolume"),
        ("qcheck", 0.5),
        ("backfill_start", True),
        ("backfill", True),
        ("backfill_from", None),
        ("latethrough", False),
        ("recorder", None),
        ("store", None),
        ("cdtimeout", None),
        ("mktdatatype", "auto"),
    )

    RTBAR_MINSIZE = (TF.Seconds, 5)
    _ST_FROM, _ST_LIVE, _ST_HISTORBACK, _ST_OVER = range(4)

    def __init__(self, **kwargs):
        self.ib = store_for("IBData", self.p.store, kwargs)
        self._store = self.ib
        if self.p.tickmode not in TICK_MODES:
            raise ValueError(f"IBData tickmode={self.p.tickmode!r}: expected one of {', '.join(TICK_MODES)}")
        if self.p.mktdatatype not in MKT_DATA_TYPES:
            raise ValueError(f"IBData mktdatatype={self.p.mktdatatype!r}: expected one of "
                             f"{', '.join(MKT_DATA_TYPES)}")
        self._mdtype = MKT_DATA_TYPES[self.p.mktdatatype]
        defaults = ContractDefaults(self.p.sectype, self.p.exchange, self.p.currency)
        self.precontract = self._parse(self.p.dataname, defaults, "dataname")
        self.pretradecontract = (self._parse(self.p.tradename, defaults, "tradename")
                                 if self.p.tradename is not None else None)
        self.qlive: queue.Queue = queue.Queue()
        self._recorder = None
        self._own_recorder = None  # one made here from a URI: closed at stop
        self._state = self._ST_OVER
        self.contract = self.contractdetails = None
        self.tradecontract = self.tradecontractdetails = None
        self.tickrule = TickRule()
        self.error: str | None = None
        self._progress = None  # of a history download, when shown

    @staticmethod
    def _parse(spec, defaults: ContractDefaults, name: str) -> Contract:
        if isinstance(spec, contract_types()):
            return spec
        try:
            return parse_contract(spec, defaults)
        except ContractSpecError as exc:
            raise ContractSpecError(str(exc).replace("dataname", name, 1)) from None

    # -- backtrader plumbing -------------------------------------------------------------------
    def setenvironment(self, env):
        super().setenvironment(env)
        env.addstore(self.ib)

    def islive(self) -> bool:
        return not self.p.historical

    def haslivedata(self) -> bool:
        return self._stored is not None or not self.qlive.empty()

    def _timeoffset(self):
        return self.ib.timeoffset()

    def _gettz(self):
        tz = self.p.tz
        if tz is not None and not isinstance(tz, str):
            return bt.utils.date.Localizer(tz)
        name = tz if isinstance(tz, str) else getattr(self.contractdetails, "timeZoneId", "") or ""
        if not name:
            return None
        import pytz

        name = {"CST": "CST6CDT", "EST": "EST5EDT", "MST": "MST7MDT", "PST": "PST8PDT"}.get(name, name)
        try:
            return pytz.timezone(name)
        except pytz.UnknownTimeZoneError:
            return None

    # -- what to request -----------------------------------------------------------------------
    def live_mode(self) -> str:
        """'rtbar' or one of TICK_MODES."""
        return "rtbar" if not self._usertvol else self.p.tickmode

    def live_what(self) -> str:
        if self.p.what:
            return self.p.what
        return "BID" if self.contract.secType in ("CASH", "CFD") else "TRADES"

    def history_what(self) -> str:
        """IB's history has no TRADES for crypto: its trades are AGGTRADES (error 10299)."""
        what = self.live_what()
        if what.upper() == "TRADES" and self.contract.secType == "CRYPTO":
            return "AGGTRADES"
        return what

    def market_data_type(self) -> int:
        """The ``reqMarketDataType`` code the next subscription asks for."""
        return self._mdtype

    def tick_types(self) -> frozenset[int]:
        """Tick types carrying the feed's price in RTVolume mode (backtrader's choices), or
        their delayed counterparts when the feed uses delayed data."""
        sectype = self.contract.secType
        if sectype in ("CASH", "CFD"):
            types = {2} if (self.p.what or "").upper() == "ASK" else {1}
        elif sectype == "IND":
            types = {4}
        else:
            types = {48, 77}
            if self._mdtype in (2, 4):  # frozen data is the last values, not RTVolume trades
                types.add(4)
        if self._mdtype >= 3:
            types = {DELAYED_TICKS[t] for t in types}
        return frozenset(types)

    def quote_price(self, bid: float, ask: float) -> float:
        what = (self.p.what or "").upper()
        if what == "BID":
            return bid
        if what == "ASK":
            return ask
        return (bid + ask) / 2.0

    # -- loop thread entry ---------------------------------------------------------------------
    def push_live(self, msg) -> None:
        """Called by the store from the loop thread for every live message and control marker."""
        self.qlive.put(msg)
        if self._recorder is not None and isinstance(msg, LiveBar | LiveTick):
            self._record(msg)

    def _record(self, msg: LiveBar | LiveTick, history: bool = False) -> None:
        """Record one message (loop thread for live data, backtrader's for history)."""
        rec = self._recorder  # read once: stop() may clear it from the other thread
        if rec is None:
            return
        try:
            when = msg.time.replace(tzinfo=dt.UTC)
            if isinstance(msg, LiveBar):
                rec.record(self._rec_hist_symbol if history else self._rec_bar_symbol, when,
                           open=msg.open, high=msg.high, low=msg.low, close=msg.close,
                           volume=msg.volume)
            else:
                rec.record(self._rec_tick_symbol, when, price=msg.price, size=msg.size,
                           bid=msg.bid, ask=msg.ask)
        except Exception as exc:  # noqa: BLE001 - recording must never stop the feed
            self._recorder = None
            self.ib.put_notification(IBMessage("error", text=f"recorder: {exc!r}; recording stopped"))

    # -- start/stop ----------------------------------------------------------------------------
    def start(self):
        super().start()
        self.qlive = queue.Queue()
        self.qhist = None
        self._stored = None  # the live message that triggered a backfill, delivered after it
        self._statelivereconn = False
        self._usertvol = not self.p.rtbar or (self._timeframe, self._compression) < self.RTBAR_MINSIZE
        self._state = self._ST_OVER
        self._mdtype = MKT_DATA_TYPES[self.p.mktdatatype]
        self.ib.start(data=self)
        if not self.ib.connected():
            self._fail("not connected to TWS at "
                       f"{self.ib.p.host}:{self.ib.p.port} (start TWS/IB Gateway or `btlive sim tws`)")
            return
        self._laststatus = None  # DataBase.start() presets CONNECTED, which would swallow ours
        self.put_notification(self.CONNECTED)
        self.contract, self.contractdetails = self._resolve(self.precontract, "dataname")
        if self.contract is None:
            return
        if self.pretradecontract is None:
            self.tradecontract, self.tradecontractdetails = self.contract, self.contractdetails
        else:
            self.tradecontract, self.tradecontractdetails = self._resolve(self.pretradecontract, "tradename")
            if self.tradecontract is None:
                self.contract = None
                return
        self.tickrule = self.ib.tick_rule(self.tradecontractdetails)
        self._setup_recorder()
        if self.p.backfill_from is not None:
            self._state = self._ST_FROM
            self.p.backfill_from.setenvironment(self._env)
            self.p.backfill_from._start()
        else:
            self._start_ib()

    def _fail(self, reason: str) -> None:
        self.error = reason
        self.contract = None
        self._state = self._ST_OVER
        self.ib.put_notification(IBMessage("error", text=f"IBData {self.p.dataname}: {reason}"))
        self.put_notification(self.DISCONNECTED, reason)

    def _resolve(self, contract: Contract, name: str):
        try:
            details = self.ib.contract_details(contract, self.p.cdtimeout)
        except Exception as exc:  # noqa: BLE001 - timeouts, connection loss: reported, feed stops
            self._fail(f"{name} {contract_label(contract)!r}: contract details failed: {exc!r}")
            return None, None
        if not details:
            self._fail(f"{name} {self._spec(contract, name)}: no contract matches (check symbol, "
                       "exchange, currency, expiry)")
            return None, None
        if len(details) > 1:
            options = "; ".join(self._describe(d.contract) for d in details[:5])
            self._fail(f"{name} {self._spec(contract, name)}: ambiguous, {len(details)} contracts match "
                       f"({options}); add exchange/currency/expiry/multiplier")
            return None, None
        found = with_ibpy_aliases(details[0])
        return found.contract, found

    def _spec(self, contract: Contract, name: str) -> str:
        given = self.p.dataname if name == "dataname" else self.p.tradename
        return repr(given) if isinstance(given, str) else repr(contract)

    @staticmethod
    def _describe(c: Contract) -> str:
        return " ".join(str(x) for x in (c.secType, c.symbol, c.lastTradeDateOrContractMonth,
                                         c.strike or "", c.right, c.multiplier, c.exchange,
                                         c.currency, f"conId={c.conId}") if x)

    def _setup_recorder(self) -> None:
        rec = self.p.recorder
        if rec is None:
            return
        if isinstance(rec, str):
            from btlive.arctic.recorder import ArcticRecorder

            rec = self._own_recorder = ArcticRecorder(uri=rec)
        from btlive.arctic.symbols import bar_symbol, tick_symbol

        label = contract_label(self.contract).replace(" ", "")
        self._rec_bar_symbol = bar_symbol(timeframe_name(TF.Seconds, 5), label)  # rtbar's bars
        self._rec_hist_symbol = bar_symbol(self._history_timeframe_name(), label)
        kind = {"BidAsk": "quote", "MidPoint": "mid"}.get(self.p.tickmode, "trade")
        if self.contract.secType in ("CASH", "CFD") and self.p.tickmode == "RTVolume":
            kind = "quote"
        self._rec_tick_symbol = tick_symbol(kind, label)
        self._recorder = rec

    def stop(self):
        super().stop()
        self._end_progress()
        if self._state == self._ST_FROM:
            self.p.backfill_from.stop()
        self._recorder = None  # the loop thread stops recording before the recorder closes
        if self.contract is not None and self.islive():
            self.ib.unsubscribe(self)
        own, self._own_recorder = self._own_recorder, None
        if own is not None:
            own.close()
        self.ib.stop()

    # -- state machine -------------------------------------------------------------------------
    def _start_ib(self) -> None:
        """Begin IB's part: the historical download, or the live stream (backfilled first)."""
        self._start_finish()  # the contract's time zone is known now: fromdate/todate in it
        if self.p.historical:
            self.put_notification(self.DELAYED)
            end = num2date(self.todate) if self.todate < float("inf") else None
            begin = num2date(self.fromdate) if self.fromdate > float("-inf") else None
            self._request_history(begin, end)
            return
        self.ib.subscribe(self)
        self._statelivereconn = False
        self._state = self._ST_LIVE
        if self.p.backfill_start:  # now, not at the first live message: the market may be closed
            self.put_notification(self.DELAYED)
            self._request_history(self._backfill_begin(), None)

    def _request_history(self, begin, end) -> None:
        self._hist_asked = dt.datetime.now(dt.UTC).replace(tzinfo=None) + self.ib.timeoffset()
        self.qhist = self.ib.history(self.contract, begin, end, self._timeframe, self._compression,
                                     self.history_what(), bool(self.p.useRTH), self._daily_time)
        self._state = self._ST_HISTORBACK
        self._end_progress()
        self._progress = self._history_progress(begin, end)

    def _history_progress(self, begin, end):
        """A progress bar on stderr for a history download, on a terminal or when asked for
        (``$BTLIVE_PROGRESS``, ``progress.set_mode``); it shows only when the download takes
        long. Its total is an estimate: a closed market has fewer bars than the span."""
        tty = sys.stderr.isatty()
        if not (tty or "BTLIVE_PROGRESS" in os.environ or "btlive.run.progress" in sys.modules):
            return None  # not asked for: no need to import the runner's package
        from btlive.run.progress import Progress, current_mode

        mode = current_mode()
        if mode == "off" or (mode == "auto" and not tty):
            return None
        size = bar_size(self._timeframe, self._compression)
        end = end or dt.datetime.now(dt.UTC).replace(tzinfo=None) + self.ib.timeoffset()
        span = (end - begin).total_seconds() if begin is not None else size.max_duration
        return Progress(total=max(1, int(span // size.seconds)), unit="bars",
                        desc=f"IB history {contract_label(self.contract)} {size.setting}")

    def _end_progress(self) -> None:
        progress, self._progress = self._progress, None
        if progress is not None:
            progress.close()

    def _daily_time(self, day: dt.date) -> dt.datetime:
        """Daily bars carry a date: stamp them at the session end in the contract's time zone,
        in whole seconds so that float date numbers cannot carry them into the next day."""
        naive = dt.datetime.combine(day, self.p.sessionend.replace(microsecond=0))
        if self._tz is None:
            return naive
        return self._tz.localize(naive).astimezone(dt.UTC).replace(tzinfo=None)

    def _load(self):
        if self.contract is None or self._state == self._ST_OVER:
            return False
        while True:
            if self._state in (self._ST_LIVE, self._ST_HISTORBACK):
                ret = self._load_live() if self._state == self._ST_LIVE else self._load_hist()
                if ret == "continue":
                    continue
                return ret
            if self._state == self._ST_FROM:
                source = self.p.backfill_from
                if not source.next():
                    source.stop()
                    self._start_ib()
                    continue
                for alias in self.lines.getlinealiases():
                    getattr(self.lines, alias)[0] = getattr(source.lines, alias)[0]
                return True
            return False

    def _load_live(self):
        msg, self._stored = self._stored, None
        if msg is None:
            try:
                msg = self.qlive.get(timeout=self._qcheck)
            except queue.Empty:
                return None
        if msg is msgs.CONN_BROKEN:
            self.put_notification(self.CONNBROKEN)
            self._statelivereconn = self.p.backfill
            return "continue"
        if isinstance(msg, DataError):
            return self._data_error(msg)
        if isinstance(msg, int):
            return self._control(msg)
        if not self._statelivereconn:
            if self._laststatus != self.LIVE and self.qlive.qsize() <= 1:
                self.put_notification(self.LIVE)
            return True if self._load_msg(msg) else "continue"
        # first live message after start/reconnection: backfill up to it first
        self._stored = msg
        if self._laststatus != self.DELAYED:
            self.put_notification(self.DELAYED)
        self._statelivereconn = False
        self._request_history(self._backfill_begin(), msg.time)
        return "continue"

    def _backfill_begin(self):
        """From the last delivered bar (also one of ``backfill_from``), else ``fromdate``."""
        if len(self) > 1:
            return num2date(self.datetime[-1])
        return num2date(self.fromdate) if self.fromdate > float("-inf") else None

    def _data_error(self, err: DataError):
        """TWS refused (part of) the live data: fall back to delayed data, or end the feed."""
        if err.code in DATA_WARNINGS:
            return "continue"
        if err.code == 10225:  # bust event: TWS stopped the real-time bars, subscribe again
            self.ib.subscribe(self)
            self._statelivereconn = self._statelivereconn or self.p.backfill
            return "continue"
        name = self._name or self.p.dataname
        if (self.p.mktdatatype == "auto" and self._mdtype < 3 and err.code in DELAYED_POSSIBLE
                and self.live_mode() == "RTVolume"):
            self._mdtype = 3
            self.ib.put_notification(IBMessage("mktdatatype", code=err.code, text=(
                f"{name}: no live market data ({err.code}: {err.text}); using delayed data "
                "(reqMarketDataType 3, 15-20 minutes late)")))
            self.ib.subscribe(self)
            return "continue"
        return self._not_subscribed(err)

    def _not_subscribed(self, err: DataError) -> bool:
        self.error = f"{err.code}: {err.text}"
        self.put_notification(self.NOTSUBSCRIBED, self.error)
        self._state = self._ST_OVER
        return False

    def _control(self, code: int):
        if code == msgs.GAVE_UP:  # one more round (None) delivers the pending notifications
            self.put_notification(self.DISCONNECTED)
            self._state = self._ST_OVER
            return None
        if code == msgs.RECONNECTED:
            self.ib.subscribe(self)
            self._statelivereconn = self.p.backfill
        elif code == msgs.LOST_1100:
            self._statelivereconn = self.p.backfill
        elif code == msgs.RESTORED_KEPT_1102:
            self._statelivereconn = self._statelivereconn or self.p.backfill
        elif code == msgs.RESTORED_LOST_1101:
            self.ib.subscribe(self)
            self._statelivereconn = self._statelivereconn or self.p.backfill
        return "continue"

    def _load_hist(self):
        if self.p.historical:  # preloading: an empty answer would end the data, so wait (bounded)
            timeout = 2 * max(self.ib.p.histtimeout, self.ib.p.pacingwait)
        else:
            timeout = self._qcheck
        try:
            msg = self.qhist.get(timeout=timeout)
        except queue.Empty:
            if self.p.historical:
                self._end_progress()
                self.put_notification(self.DISCONNECTED, "historical download timed out")
                self._state = self._ST_OVER
                return False
            return None
        if not isinstance(msg, LiveBar):
            self._end_progress()
        elif self._progress is not None:
            self._progress.update()
        if msg is msgs.CONN_BROKEN:
            if self.p.historical:
                self.put_notification(self.DISCONNECTED, "connection lost during historical download")
                self._state = self._ST_OVER
                return False
            # live: the reconnection markers arrive on the live queue; backfill again then
            self.put_notification(self.CONNBROKEN)
            self._statelivereconn = self.p.backfill
            self._state = self._ST_LIVE
            return "continue"
        if isinstance(msg, DataError):
            if self.p.historical:
                return self._not_subscribed(msg)
            self.ib.put_notification(IBMessage("error", code=msg.code,
                                               text=f"backfill refused: {msg.text}"))
            self._state = self._ST_LIVE
            return "continue"
        if msg is HISTORY_END:
            if self.p.historical:
                self.put_notification(self.DISCONNECTED)
                self._state = self._ST_OVER
                return False
            self._state = self._ST_LIVE
            return "continue"
        if not self.p.historical and isinstance(msg, LiveBar) and self._forming(msg):
            return "continue"
        self._record(msg, history=True)
        return True if self._load_msg(msg) else "continue"

    def _forming(self, bar: LiveBar) -> bool:
        """With 5-second real-time bars, a backfilled 5-second bar that ends after TWS's now when
        the backfill was asked for may have been forming in the answer: its OHLC is not final,
        and the live stream (subscribed before the backfill) delivers the finished bar under the
        same timestamp, which would then be dropped as a repeat, and the first live decision
        would wait a bar more. So such a backfill ends at the last bar finished when asked, and
        the first live bar is delivered."""
        if self.live_mode() != "rtbar" or bar_size(self._timeframe, self._compression).seconds != 5:
            return False
        return bar.time + dt.timedelta(seconds=5) > self._hist_asked

    def _load_msg(self, msg: LiveBar | LiveTick) -> bool:
        """Fill the lines from a bar or a tick; False if it is late (a bar at the last bar's
        time is a repeat, a tick at the same time is a new trade)."""
        dtnum = date2num(msg.time)
        lines = self.lines
        isbar = isinstance(msg, LiveBar)
        if len(self) > 1 and not self.p.latethrough:
            last = lines.datetime[-1]
            if dtnum < last or (isbar and dtnum == last):
                return False
        lines.datetime[0] = dtnum
        if isbar:
            lines.open[0], lines.high[0], lines.low[0], lines.close[0] = \
                msg.open, msg.high, msg.low, msg.close
            lines.volume[0] = msg.volume
        else:
            lines.open[0] = lines.high[0] = lines.low[0] = lines.close[0] = msg.price
            lines.volume[0] = msg.size
        if self.contract.secType == "CASH":  # IB's forex "volume" is quote sizes or -1
            lines.volume[0] = 0.0
        lines.openinterest[0] = 0.0
        return True

    def _history_timeframe_name(self) -> str:
        """The bar size IB serves this feed's history in, as the recorder names timeframes."""
        seconds = bar_size(self._timeframe, self._compression).seconds
        for timeframe, unit in ((TF.Months, 30 * 86400), (TF.Weeks, 7 * 86400), (TF.Days, 86400),
                                (TF.Minutes, 60), (TF.Seconds, 1)):
            if seconds % unit == 0:
                return timeframe_name(timeframe, seconds // unit)
        return timeframe_name(TF.Seconds, seconds)


IBStore.DataCls = IBData

