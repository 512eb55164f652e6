"""The trading calendar, sessions and chains of the simulated Terminal (issue 15)."""

from __future__ import annotations

from datetime import date, datetime

import numpy as np
import pytest

from btlive.sim.calendar import TradingCalendar
from btlive.sim.theta.endpoints import Endpoints
from btlive.sim.theta.market import NEW_YORK, Market
from btlive.sim.theta.spec import ThetaError
from btlive.sim.theta.tables import to_csv, to_json

NOW = datetime(2024, 12, 31, 18, 0, tzinfo=NEW_YORK)  # after the close: the whole month has happened


def _endpoints(always_open: bool = False, now: datetime = NOW, tier: str = "pro") -> Endpoints:
    m = Market(seed=7, quote_ms=1000, trade_ms=5000, calendar=TradingCalendar(always_open=always_open),
               today=lambda: now.date())
    return Endpoints(m, tier, clock=lambda: now)


def _ms(text: str) -> int:
    h, m = text.split(":")
    return (int(h) * 60 + int(m)) * 60_000


def test_day_types_from_the_nyse_calendar():
    cal = TradingCalendar()
    assert cal.day_type(date(2024, 11, 4)) == "open"
    assert cal.day_type(date(2024, 11, 2)) == "weekend"
    assert cal.day_type(date(2024, 11, 28)) == "full_close"  # Thanksgiving
    assert cal.day_type(date(2024, 11, 29)) == "early_close"
    assert cal.day_type(date(2025, 1, 9)) == "full_close"  # a day of mourning: not a rule, from the library
    assert cal.session(date(2024, 11, 29), "option") == (_ms("09:30"), _ms("13:00"))
    assert cal.session(date(2024, 11, 29), "index_option") == (_ms("09:30"), _ms("13:15"))
    assert cal.session(date(2024, 11, 4), "stock") == (_ms("04:00"), _ms("20:00"))
    assert cal.session(date(2024, 11, 28), "stock") is None
    always = TradingCalendar(always_open=True)
    assert always.session(date(2024, 11, 28), "option") == (0, 86_399_999)
    assert always.is_session(date(2024, 11, 28)) is False  # expirations still follow the real calendar


def test_calendar_endpoints_as_the_terminal_serves_them():
    e = _endpoints()
    csv = to_csv(e.handle("calendar/on_date", {"date": "20241225"})).decode()
    assert csv == "type,open,close\r\nfull_close,,\r\n"
    csv = to_csv(e.handle("calendar/on_date", {"date": "2024-11-29"})).decode()
    assert csv == "type,open,close\r\nearly_close,09:30:00,13:00:00\r\n"
    assert to_csv(e.handle("calendar/on_date", {"date": "20241102"})).decode().split("\r\n")[1] == "weekend,,"
    assert to_csv(e.handle("calendar/today", {})).decode().split("\r\n")[1] == "open,09:30:00,16:00:00"
    year = to_csv(e.handle("calendar/year_holidays", {"year": "2024"})).decode().split("\r\n")
    assert year[0] == "date,type,open,close"
    assert "2024-12-24,early_close,09:30:00,13:00:00" in year and "2024-12-25,full_close,," in year
    assert not [row for row in year[1:] if row and row.split(",")[0] in ("2024-11-02", "2024-11-04")]
    body = to_json(e.handle("calendar/on_date", {"date": "20241225"}))
    assert body == b'{"response":[{"type":"full_close","open":null,"close":null}]}'
    with pytest.raises(ThetaError) as err:
        e.handle("calendar/year_holidays", {"year": "24"})
    assert err.value.status == 473 and "year" in err.value.message
    with pytest.raises(ThetaError) as err:
        _endpoints(tier="free").handle("calendar/on_date", {"date": "20241225"})
    assert err.value.status == 471


def test_no_data_on_weekends_and_holidays():
    e = _endpoints()
    for day in ("20241102", "20241128"):
        with pytest.raises(ThetaError) as err:
            e.handle("stock/history/quote", {"symbol": "SPY", "date": day, "interval": "1m"})
        assert err.value.status == 472
    bars = e.handle("stock/history/eod", {"symbol": "SPY", "start_date": "20241125", "end_date": "20241201"})
    assert bars.rows == 4  # Mon, Tue, Wed and the early-close Friday: not Thanksgiving, not the weekend
    listed = e.handle("stock/list/dates/quote", {"symbol": "SPY"}).blocks[0].data["date"]
    as_days = {date.fromordinal(int(d) + date(1970, 1, 1).toordinal()) for d in listed}
    assert date(2024, 11, 28) not in as_days and date(2024, 11, 2) not in as_days
    assert date(2024, 11, 29) in as_days


def test_sessions_and_early_close():
    e = _endpoints()
    day = "20241129"  # closes at 13:00
    opt = {"symbol": "SPY", "expiration": "20241129", "strike": "*", "right": "call", "date": day,
           "start_time": "00:00:00", "end_time": "23:59:59"}
    trades = e.handle("option/history/trade", {**opt, "strike_range": "1"}).blocks[0].data["ms"]
    assert trades.min() >= _ms("09:30") and trades.max() <= _ms("13:00")
    stock = e.handle("stock/history/trade", {"symbol": "SPY", "date": day, "start_time": "00:00:00",
                                             "end_time": "23:59:59"}).blocks[0].data["ms"]
    assert stock.min() >= _ms("04:00") and stock.max() <= _ms("17:00") and stock.max() > _ms("13:00")
    quotes = e.handle("stock/history/quote", {"symbol": "SPY", "date": "20241104", "interval": "1m",
                                              "start_time": "03:00:00", "end_time": "05:00:00"})
    bids = quotes.blocks[0].data["bid"]
    assert (bids[:60] == 0).all() and (bids[61:] > 0).all()  # nothing before 04:00
    eod = e.handle("option/history/eod", {**opt, "strike_range": "1"}).blocks[0].data
    assert int(eod["ms"][0]) == _ms("13:00")
    first = e.handle("option/history/quote", {**opt, "strike_range": "1", "interval": "1m",
                                              "start_time": "09:30:00", "end_time": "09:31:00"})
    assert (first.blocks[0].data["bid"] > 0).all()  # the opening quote is in force at 09:30:00


def test_always_open_trades_around_the_clock():
    e = _endpoints(always_open=True)
    rows = e.handle("stock/history/quote", {"symbol": "SPY", "date": "20241102", "interval": "1h",
                                            "start_time": "00:00:00", "end_time": "23:00:00"})
    assert rows.rows == 24 and (rows.blocks[0].data["bid"][1:] > 0).all()
    assert to_csv(e.handle("calendar/on_date", {"date": "20241225"})).decode().split("\r\n")[1] == \
        "open,09:30:00,16:00:00"


def test_expiration_cycles_like_the_real_chains():
    m = Market(seed=1, today=lambda: date(2024, 11, 4))
    week = [date(2024, 11, d) for d in range(4, 9)]
    for root in ("SPY", "QQQ", "SPXW"):
        exps = m.expirations(root)
        assert all(d in exps for d in week), root  # 0DTE every trading day
        assert date(2024, 11, 28) not in exps and date(2024, 11, 29) in exps  # not on Thanksgiving
    aapl = m.expirations("AAPL")
    assert date(2024, 11, 8) in aapl and date(2024, 11, 5) not in aapl
    assert date(2024, 3, 28) in aapl and date(2024, 3, 29) not in aapl  # Good Friday: the Thursday
    spx = [e for e in m.expirations("SPX") if e.year == 2024]
    assert spx and all(15 <= e.day <= 21 for e in spx) and date(2024, 11, 15) in spx
    assert [m.cycle(e) for e in (date(2024, 11, 5), date(2024, 11, 8), date(2024, 11, 15),
                                 date(2024, 3, 28))] == ["daily", "weekly", "monthly", "weekly"]
    assert m.root_underlying("SPXW").symbol == "SPX" and m.root_underlying("NDX").kind == "index"
    assert m.expirations("VIX") == [] and m.expirations("NOPE") == []


def test_dollar_strikes_near_the_money():
    m = Market(seed=1, today=lambda: date(2024, 11, 4))
    exp = date(2024, 11, 15)
    strikes = np.array(m.strikes("SPY", exp)) / 1000
    spot = m.day_open("SPY", date(2024, 11, 4))
    near = strikes[np.abs(strikes - spot) <= 10]
    assert len(near) >= 19 and set(np.diff(near).round(3)) == {1.0}
    spx = np.array(m.strikes("SPX", exp)) / 1000
    assert set(np.diff(spx[np.abs(spx - m.day_open("SPX", date(2024, 11, 4))) <= 50]).round(3)) == {5.0}
    chain = m.chain("SPXW", date(2024, 11, 4))
    assert chain and {c.root for c in chain} == {"SPXW"} and min(c.expiration for c in chain) == date(2024, 11, 4)
