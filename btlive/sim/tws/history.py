"""Historical data: bars (with keepUpToDate), historical ticks and head timestamps, with
IB's pacing rules and error codes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from . import messages as M
from .contracts import Instrument
from .market import Quote
from .state import BarSub, Handlers, Session, bar_wap, safe_int

BAR_SIZES = {
    "1 secs": 1, "5 secs": 5, "10 secs": 10, "15 secs": 15, "30 secs": 30,
    "1 min": 60, "2 mins": 120, "3 mins": 180, "5 mins": 300, "10 mins": 600,
    "15 mins": 900, "20 mins": 1200, "30 mins": 1800, "1 hour": 3600, "2 hours": 7200,
    "3 hours": 10800, "4 hours": 14400, "8 hours": 28800, "1 day": 86400,
    "1 week": 604800, "1 month": 2592000,
}
DURATION_UNITS = {"S": 1, "D": 86400, "W": 604800, "M": 2592000, "Y": 31536000}
TRADING_DAYS = {"D": 1, "W": 5, "M": 21, "Y": 252}
# crypto history has aggregated trades instead of TRADES, as at IB
CRYPTO_HISTORY = ("AGGTRADES", "BID", "ASK", "BID_ASK", "MIDPOINT")
MAX_BARS = 200_000

HANDLERS = Handlers()


class HistoryPart:
    """Historical requests; served whether or not the market is open."""

    @HANDLERS(M.REQ_HISTORICAL_DATA)
    def _historical(self, s: Session, f: list[str]) -> None:
        r = M.Reader(f, 1)
        req_id = r.int()
        c = M.read_contract(r)
        r.skip(1)  # includeExpired
        end_s, bar_size, duration = r.str(), r.str().strip(), r.str().strip().upper()
        rth, what, date_format = r.bool(), r.str().upper(), r.int(1)
        if c.sec_type == "BAG":
            r.skip(4 * r.int())
        keep = r.bool()
        inst = self._resolve(s, req_id, c)
        if inst is None:
            return
        # IB's pacing rules cover bars of 30 seconds or less; larger bars only have step limits
        paced = (bar_seconds(bar_size) or 0) <= 30
        err = self._hist_error(s, req_id, inst, what, (c.con_id or c.symbol, end_s, bar_size,
                                                       duration, rth, what), paced)
        if err:
            return
        if inst.sec_type == "CRYPTO" and what not in CRYPTO_HISTORY:
            s.send(M.error(s.version, req_id, 10299, "Expected what to show is "
                                                     f"{', '.join(CRYPTO_HISTORY)}, but "
                                                     f"'{what}' was received."))
            return
        if what == "AGGTRADES" and inst.sec_type != "CRYPTO":
            s.send(M.error(s.version, req_id, 162, "Historical Market Data Service error "
                                                   "message:No data of type AGGTRADES is "
                                                   f"available for {inst.sec_type}"))
            return
        bar_s = bar_seconds(bar_size)
        if bar_s is None:
            s.send(M.error(s.version, req_id, 321, f"Error validating request.-'bP' : cause - "
                                                   f"Historical data bar size setting "
                                                   f"{bar_size!r} is invalid."))
            return
        try:
            n, unit = duration.split()
            dur_s = int(n) * DURATION_UNITS[unit]
        except (ValueError, KeyError):
            s.send(M.error(s.version, req_id, 321, f"Error validating request.-'bP' : cause - "
                                                   f"Historical data duration {duration!r} is "
                                                   "invalid (use '<n> S|D|W|M|Y')."))
            return
        if keep and end_s:
            s.send(M.error(s.version, req_id, 321, "Error validating request.-'bP' : cause - "
                                                   "End date not supported with live updates"))
            return
        end = self._end_or_error(s, req_id, end_s)
        if end is None:
            return
        if unit != "S" and bar_s < 86400 and rth:
            days = int(n) * TRADING_DAYS[unit]
            # N trading days span at least N - 1 whole days: too many are refused uncounted
            dur_s = max(1, (days - 1) * 86400)
            if dur_s / bar_s <= MAX_BARS:
                dur_s = self._trading_days_span(inst, end, days)
        # daily and longer bars are built a day at a time: bound the days as well
        if dur_s / min(bar_s, 86400) > MAX_BARS:
            s.send(M.error(s.version, req_id, 162, "Historical Market Data Service error "
                                                   "message:Time length exceed max."))
            return
        rows = self.market.bars(inst, end, dur_s, bar_s, what, rth)
        if not rows:
            s.send(M.error(s.version, req_id, 162, "Historical Market Data Service error "
                                                   "message:HMDS query returned no data"))
            return
        tz = ZoneInfo(inst.tz)
        out = [(self._bar_date(t, bar_s, date_format, tz), o, h, lo, cl, v, w, n)
               for t, o, h, lo, cl, v, w, n in rows]
        start_str = self._bar_date(int(end.timestamp()) - dur_s, 1, date_format, tz)
        s.send(M.historical_data(req_id, start_str, self._bar_date(int(end.timestamp()), 1,
                                                                      date_format, tz), out))
        if keep:
            t, o, h, lo, cl, v, w, n = rows[-1]
            s.hist[req_id] = BarSub(req_id, inst, bar_s,
                                    "TRADES" if what == "AGGTRADES" else what, date_format,
                                    [t, o, h, lo, cl, max(v, 0), w * max(v, 0), max(n, 0)])

    @staticmethod
    def _trading_days_span(inst: Instrument, end: datetime, days: int) -> int:
        """Seconds from the start of the ``days``-th last weekday to ``end``: with useRTH,
        IB counts 'D' durations in trading days (so '1 D' on a Saturday is Friday)."""
        tz = ZoneInfo(inst.tz)
        day = end.astimezone(tz).date()
        count = 0
        while True:
            if day.weekday() < 5 or inst.always_open:
                count += 1
                if count >= days:
                    break
            day -= timedelta(days=1)
        start = datetime(day.year, day.month, day.day, tzinfo=tz)
        return max(1, int(end.timestamp() - start.timestamp()))

    def _hist_error(self, s: Session, req_id: int, inst: Instrument, what: str,
                    key: tuple, paced: bool = True) -> bool:
        if self.pacing_violations > 0:
            self.pacing_violations -= 1
            s.send(M.error(s.version, req_id, 162, "Historical Market Data Service error "
                                                   "message:Pacing violation"))
            return True
        if self.pacing is not None and paced:
            why = self.pacing.check(key, (inst.con_id, what), 2 if what == "BID_ASK" else 1)
            if why:
                s.send(M.error(s.version, req_id, 162, "Historical Market Data Service error "
                                                       f"message:Pacing violation ({why})"))
                return True
        if self._refuse_unsubscribed(s, req_id, inst):
            return True
        if inst.symbol in self.unsubscribed or inst.symbol in self.delayed_unavailable:
            # historical data needs the same subscriptions as live data
            s.send(M.error(s.version, req_id, 162, "Historical Market Data Service error "
                                                   "message:No market data permissions for "
                                                   f"{inst.primary_exchange or inst.exchange} "
                                                   f"{inst.sec_type}"))
            return True
        if what == "TRADES" and inst.sec_type == "CASH":
            s.send(M.error(s.version, req_id, 162, "Historical Market Data Service error "
                                                   f"message:No historical market data for "
                                                   f"{inst.local_symbol}/CASH@IDEALPRO TRADES"))
            return True
        return False

    def _parse_end(self, text: str) -> datetime:
        text = text.strip()
        if not text:
            return datetime.now(UTC)
        if "-" in text[:9] and len(text) >= 17:  # 20240102-15:30:00 is UTC
            return datetime.strptime(text[:17], "%Y%m%d-%H:%M:%S").replace(tzinfo=UTC)
        parts = text.split()
        if len(parts) == 1 and len(parts[0]) == 8:
            return datetime.strptime(parts[0], "%Y%m%d").replace(hour=23, minute=59,
                                                                 tzinfo=self.tz)
        if len(parts) < 2:
            raise ValueError(f"endDateTime {text!r}")
        dt = datetime.strptime(parts[0] + parts[1], "%Y%m%d%H:%M:%S")
        try:
            zone = ZoneInfo(parts[2]) if len(parts) > 2 else self.tz
        except (KeyError, ValueError):  # ZoneInfoNotFoundError is a KeyError
            raise ValueError(f"unknown time zone {parts[2]!r}") from None
        return dt.replace(tzinfo=zone)

    def _end_or_error(self, s: Session, req_id: int, text: str) -> datetime | None:
        """``_parse_end``, answering a bad date/time with error 10314 (None)."""
        try:
            return self._parse_end(text)
        except ValueError as exc:
            s.send(M.error(s.version, req_id, 10314, f"End Date/Time: The date, time, or "
                                                     f"time-zone entered is invalid. {exc}"))
            return None

    @staticmethod
    def _bar_date(t: int, bar_s: int, date_format: int, tz: ZoneInfo) -> str:
        if bar_s >= 86400:
            return datetime.fromtimestamp(t, tz).strftime("%Y%m%d")
        if date_format == 2:
            return str(t)
        return datetime.fromtimestamp(t, tz).strftime("%Y%m%d %H:%M:%S ") + str(tz.key)

    @HANDLERS(M.REQ_HISTORICAL_TICKS)
    def _historical_ticks(self, s: Session, f: list[str]) -> None:
        r = M.Reader(f, 1)
        req_id = r.int()
        c = M.read_contract(r)
        r.skip(1)  # includeExpired
        start_s, end_s, count = r.str(), r.str(), r.int()
        what, rth = r.str().upper(), r.bool()
        inst = self._resolve(s, req_id, c)
        if inst is None:
            return
        if what not in ("TRADES", "BID_ASK", "MIDPOINT"):
            s.send(M.error(s.version, req_id, 321, f"Error validating request.-'bY' : cause - "
                                                   f"whatToShow {what!r} is not TRADES, "
                                                   "BID_ASK or MIDPOINT"))
            return
        if bool(start_s) == bool(end_s) or not 0 < count <= 1000:
            s.send(M.error(s.version, req_id, 321, "Error validating request.-'bY' : cause - "
                                                   "give exactly one of startDateTime and "
                                                   "endDateTime, and 1..1000 ticks"))
            return
        if self._hist_error(s, req_id, inst, what, ("ticks", inst.con_id, start_s, end_s,
                                                    count, what)):
            return
        anchor = self._end_or_error(s, req_id, start_s or end_s)
        if anchor is None:
            return
        span = count + 5
        end = anchor if end_s else datetime.fromtimestamp(anchor.timestamp() + span, UTC)
        bars = self.market.bars(inst, end, span, 1, "TRADES", rth)
        if start_s:
            bars = [b for b in bars if b[0] >= anchor.timestamp()][:count]
        else:
            bars = bars[-count:]
        half = inst.min_tick * inst.spread_ticks / 2
        rows = [(t, round(c - half, 8), round(c + half, 8), inst.lot, inst.lot, c,
                 max(1, inst.lot // 100)) for t, _o, _h, _l, c, *_ in bars]
        s.send(M.historical_ticks(req_id, what, rows))

    @HANDLERS(M.CANCEL_HISTORICAL_DATA)
    def _cancel_hist(self, s: Session, f: list[str]) -> None:
        s.hist.pop(safe_int(f[2]), None)

    @HANDLERS(M.REQ_HEAD_TIMESTAMP)
    def _head_timestamp(self, s: Session, f: list[str]) -> None:
        r = M.Reader(f, 1)
        req_id = r.int()
        c = M.read_contract(r)
        r.skip(3)
        date_format = r.int(1)
        inst = self._resolve(s, req_id, c)
        if inst is None:
            return
        head = datetime(2004, 1, 2, 14, 30, tzinfo=UTC)
        s.send([88, req_id, int(head.timestamp()) if date_format == 2 else
                head.strftime("%Y%m%d-%H:%M:%S")])

    def _update_hist(self, s: Session, sub: BarSub, q: Quote) -> None:
        t = int(q.time)
        start = t - t % sub.bar_s if sub.bar_s < 86400 else \
            int(datetime.fromtimestamp(t, ZoneInfo(sub.inst.tz)).replace(
                hour=0, minute=0, second=0).timestamp())
        self._accumulate(sub, q, start)
        c = sub.cur
        if c is None:
            return
        wap = bar_wap(c)
        date = self._bar_date(c[0], sub.bar_s, sub.date_format, ZoneInfo(sub.inst.tz))
        s.send(M.historical_update(sub.req_id, date, c[1], c[2], c[3], c[4],
                                   c[5] if sub.what == "TRADES" else -1, wap, c[7]))


def bar_seconds(text: str) -> int | None:
    """Seconds of a bar size setting; accepts TWS's spellings and singular/plural slips."""
    parts = text.lower().split()
    if len(parts) != 2 or not parts[0].isdigit():
        return None
    n, unit = int(parts[0]), parts[1].rstrip("s")
    if unit == "sec":
        key = f"{n} secs"
    elif unit in ("min", "hour"):
        key = f"{n} {unit}" if n == 1 else f"{n} {unit}s"
    else:
        key = f"{n} {unit}"
    return BAR_SIZES.get(key)
