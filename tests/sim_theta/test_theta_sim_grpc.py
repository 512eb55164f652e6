"""The real ``thetadata.ThetaClient`` (gRPC + auth) against the simulator."""

from __future__ import annotations

import datetime as dt
import io

import grpc
import httpx
import pandas as pd
import pytest
from thetadata import ThetaClient
from thetadata.errors import AuthenticationError, NoDataFoundError

from btlive.sim.theta import ThetaSimulator

DAY = dt.date(2024, 11, 4)
EXP = dt.date(2024, 11, 15)
NY = "America/New_York"


@pytest.fixture(scope="module")
def client(sim):
    return ThetaClient(email="sim@example.com", password="not-a-secret", dataframe_type="pandas",
                       **sim.client_kwargs())


@pytest.fixture(scope="module")
def strike(client):
    strikes = client.option_list_strikes("SPY", EXP)["strike"].tolist()
    return strikes[len(strikes) // 2]


def _rest_frame(sim, path, **params):
    r = httpx.get(f"{sim.rest_url}/v3/{path}", params=params, timeout=30)
    assert r.status_code == 200, r.text
    return pd.read_csv(io.StringIO(r.text))


def test_auth_populates_the_client(client, sim):
    assert client.email == "sim@example.com"
    assert client.options_subscription == "PRO" and client.stock_subscription == "PRO"
    assert sim.sessions.valid(client.auth_token.session_uuid)


def test_lists(client):
    assert client.option_list_symbols()["symbol"].tolist() == ["AAPL", "NDX", "QQQ", "SPX", "SPXW", "SPY"]
    exps = client.option_list_expirations("SPY")
    assert "2024-11-15" in exps["expiration"].tolist()
    strikes = client.option_list_strikes("SPY", EXP)["strike"]
    assert len(strikes) > 50 and (strikes.diff().round(3) == 1.0).sum() >= 40  # $1 near the money
    dates = client.option_list_dates("quote", "SPY", EXP)
    assert "2024-11-04" in dates["date"].tolist()
    contracts = client.option_list_contracts("trade", DAY, symbol="SPY")
    assert set(contracts["right"]) == {"CALL", "PUT"} and (contracts["symbol"] == "SPY").all()
    assert client.stock_list_symbols()["symbol"].tolist() == ["AAPL", "QQQ", "SPY"]
    assert client.index_list_symbols()["symbol"].tolist() == ["NDX", "SPX", "VIX"]


def test_option_quote_equals_rest(client, sim, strike):
    df = client.option_history_quote("SPY", EXP, interval="1m", date=DAY, strike=f"{strike:.3f}",
                                     right="call")
    assert len(df) == 391
    assert str(df["timestamp"].dt.tz) == NY
    assert df["timestamp"].iloc[0] == pd.Timestamp("2024-11-04 09:30", tz=NY)
    rest = _rest_frame(sim, "option/history/quote", symbol="SPY", expiration="20241115",
                       strike=f"{strike:.3f}", right="call", date="20241104", interval="1m")
    assert (df["bid"].round(2).to_numpy() == rest["bid"].to_numpy()).all()
    assert (df["ask_size"].to_numpy() == rest["ask_size"].to_numpy()).all()
    assert df["strike"].iloc[0] == pytest.approx(strike) and df["right"].iloc[0] == "CALL"
    assert df["expiration"].iloc[0] == "2024-11-15"


def test_option_ohlc_trade_and_chain_wide(client, sim, strike):
    ohlc = client.option_history_ohlc("SPY", EXP, interval="5m", date=DAY, strike=f"{strike:.3f}")
    assert len(ohlc) == 2 * 78 and set(ohlc["right"]) == {"CALL", "PUT"}
    trades = client.option_history_trade("SPY", EXP, date=DAY, strike=f"{strike:.3f}", right="put",
                                         start_time="10:00:00", end_time="10:01:00")
    assert len(trades) == 60 and (trades["price"] > 0).all()
    chain = client.option_history_quote("SPY", EXP, interval="1h", date=DAY)
    assert chain[["strike", "right"]].drop_duplicates().shape[0] == 2 * len(sim.market.strikes("SPY", EXP))


def test_stock_and_index(client, sim):
    q = client.stock_history_quote("AAPL", interval="1m", date=DAY)
    assert len(q) == 391 and (q["ask"] > q["bid"]).all()
    o = client.stock_history_ohlc("AAPL", interval="1m", date=DAY)
    rest = _rest_frame(sim, "stock/history/ohlc", symbol="AAPL", date="20241104", interval="1m")
    assert (o["close"].round(2).to_numpy() == rest["close"].to_numpy()).all()
    t = client.stock_history_trade("QQQ", date=DAY, start_time="10:00:00", end_time="10:00:30")
    assert len(t) == 30
    eod = client.stock_history_eod("SPY", dt.date(2024, 11, 1), dt.date(2024, 11, 5))
    assert len(eod) == 3  # not on the weekend
    px = client.index_history_price("SPX", interval="1m", date=DAY)
    assert len(px) == 391 and (px["price"] > 1000).all()
    snap = client.stock_snapshot_quote(["SPY", "AAPL"])
    assert snap["symbol"].tolist() == ["SPY", "AAPL"]


def test_greeks(client, strike):
    g = client.option_history_greeks_first_order("SPY", EXP, interval="1h", date=DAY,
                                                 strike=f"{strike:.3f}", right="call")
    assert g["delta"].between(0, 1).all() and (g["implied_vol"] > 0).all()
    a = client.option_history_greeks_all("SPY", EXP, interval="1h", date=DAY, strike=f"{strike:.3f}",
                                         right="put")
    assert a["delta"].between(-1, 0).all() and (a["gamma"] >= 0).all()
    iv = client.option_history_greeks_implied_volatility("SPY", EXP, interval="1h", date=DAY,
                                                         strike=f"{strike:.3f}", right="call")
    assert (iv["bid_implied_vol"] <= iv["ask_implied_vol"]).all()
    assert pd.api.types.is_datetime64_any_dtype(iv["underlying_timestamp"])


def test_at_time_trade_greeks_calendar(client, strike):
    q = client.option_at_time_quote("SPY", dt.date(2024, 11, 1), DAY, "10:00:00", EXP,
                                    strike=f"{strike:.3f}", right="put")
    assert len(q) == 2 and (q["right"] == "PUT").all()  # Friday and Monday
    t = client.stock_at_time_trade("AAPL", DAY, DAY, "15:00:00")
    assert len(t) == 1 and t["timestamp"].iloc[0] <= pd.Timestamp("2024-11-04 15:00", tz=NY)
    g = client.option_history_trade_greeks_first_order("SPY", EXP, date=DAY, strike=f"{strike:.3f}",
                                                       start_time="10:00:00", end_time="10:00:10")
    assert len(g) == 20 and {"delta", "implied_vol", "sequence"} <= set(g.columns)
    assert client.calendar_open_today()["type"].iloc[0] in ("open", "early_close", "full_close", "weekend")
    assert client.calendar_on_date(DAY)["open"].tolist() == ["09:30:00"]
    assert client.calendar_on_date(dt.date(2024, 12, 25))["type"].tolist() == ["full_close"]
    mv = client.stock_snapshot_market_value("SPY")
    assert mv["market_bid"].iloc[0] < mv["market_ask"].iloc[0]


def test_no_data_and_bad_params(client):
    with pytest.raises(NoDataFoundError):
        client.stock_history_quote("ZZZZ", interval="1m", date=DAY)
    with pytest.raises(NoDataFoundError):
        client.option_history_quote("SPY", EXP, interval="1m", date=dt.date(2099, 1, 2))
    with pytest.raises(grpc.RpcError) as err:
        client.option_history_quote("SPY", EXP, interval="1s", start_date=DAY, end_date=DAY + dt.timedelta(3))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "single-day" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        client.option_history_binomial_greeks_all("SPY", EXP, date=DAY)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_injected_grpc_fault(client, sim):
    sim.faults.grpc_once("GetStockHistory", "UNAVAILABLE", times=1)
    with pytest.raises(grpc.RpcError) as err:
        client.stock_history_ohlc("AAPL", interval="1h", date=DAY)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(client.stock_history_ohlc("AAPL", interval="1h", date=DAY)) == 7


@pytest.mark.parametrize("mode", ["zstd", "none"])
def test_chunking_and_compression(mode):
    with ThetaSimulator(seed=11, grpc_compression=mode, grpc_chunk_bytes=2000) as s:
        c = ThetaClient(api_key="k", dataframe_type="pandas", **s.client_kwargs())
        df = c.stock_history_quote("SPY", interval="1m", date=DAY)
        assert len(df) == 391 and df["timestamp"].is_monotonic_increasing


def test_credentials_and_sessions():
    with ThetaSimulator(credentials={"email": "me@x.io", "password": "right"}) as s:
        with pytest.raises(AuthenticationError):
            ThetaClient(email="me@x.io", password="wrong", **s.client_kwargs())
        c = ThetaClient(email="me@x.io", password="right", dataframe_type="pandas", **s.client_kwargs())
        assert len(c.option_list_symbols()) == 6
        s.sessions.revoke_all()
        with pytest.raises(grpc.RpcError) as err:
            c.option_list_symbols()
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        missing_key = httpx.post(s.auth_url, json={"email": "me@x.io", "password": "right"})
        assert missing_key.status_code == 401


def _same_frame(grpc_df: pd.DataFrame, rest_df: pd.DataFrame) -> None:
    assert list(grpc_df.columns) == list(rest_df.columns)
    assert len(grpc_df) == len(rest_df) > 0
    for col in rest_df.columns:
        g, r = grpc_df[col], rest_df[col]
        if pd.api.types.is_datetime64_any_dtype(g):
            r = pd.to_datetime(r).dt.tz_localize(NY)
            assert (g.dt.tz_convert(NY) == r).all(), col
        elif pd.api.types.is_numeric_dtype(r):
            assert ((g.astype(float) - r.astype(float)).abs() < 1e-6).all(), col
        else:
            assert (g.astype(str) == r.astype(str)).all(), col


@pytest.mark.parametrize("method, args, path, params", [
    ("option_history_trade", dict(date=DAY, end_time="09:31:00"), "option/history/trade",
     dict(date="20241104", end_time="09:31:00")),
    ("option_history_eod", dict(start_date=DAY, end_date=DAY), "option/history/eod",
     dict(start_date="20241104", end_date="20241104")),
    ("option_history_open_interest", dict(date=DAY), "option/history/open_interest",
     dict(date="20241104")),
    ("option_history_trade_quote", dict(date=DAY, end_time="09:31:00"), "option/history/trade_quote",
     dict(date="20241104", end_time="09:31:00")),
    ("option_history_greeks_all", dict(date=DAY, interval="1h"), "option/history/greeks/all",
     dict(date="20241104", interval="1h")),
    ("option_history_greeks_eod", dict(start_date=DAY, end_date=DAY), "option/history/greeks/eod",
     dict(start_date="20241104", end_date="20241104")),
    ("option_history_trade_greeks_implied_volatility", dict(date=DAY, end_time="09:31:00"),
     "option/history/trade_greeks/implied_volatility", dict(date="20241104", end_time="09:31:00")),
])
def test_grpc_matches_rest_column_for_column(client, sim, strike, method, args, path, params):
    got = getattr(client, method)(symbol="SPY", expiration=EXP, strike=f"{strike:.3f}", right="call",
                                  **args)
    rest = _rest_frame(sim, path, symbol="SPY", expiration="20241115", strike=f"{strike:.3f}",
                       right="call", **params)
    _same_frame(got, rest)


def test_interest_rate_the_greeks_use(client, sim):
    """The rate behind the default greeks (rate_type sofr), for clients that compute greeks live."""
    rates = client.interest_rate_history_eod("SOFR", dt.date(2024, 11, 1), DAY)
    assert len(rates) == 2 and rates["rate"].round(4).tolist() == [4.33, 4.33]  # no weekend rows
    rest = _rest_frame(sim, "interest_rate/history/eod", symbol="TREASURY_Y10", start_date="20241104",
                       end_date="20241104")
    assert rest.columns.tolist() == ["timestamp", "rate"] and rest["rate"].iloc[0] == 4.30
    with pytest.raises(NoDataFoundError):
        client.interest_rate_history_eod("LIBOR", DAY, DAY)
