"""History through the real ``thetadata`` 1.0 client against the simulator's gRPC service."""

from __future__ import annotations

import time
from datetime import timedelta

import pandas as pd
import pytest

from btlive.theta.grpc import GrpcHistory
from btlive.theta.parse import Contract, utc_ns_to_et
from btlive.theta.rest import parse_day


def test_real_thetadata_client_gives_the_same_frames_as_rest(sim, store_for, option_of,
                                                            monkeypatch):
    monkeypatch.setenv("THETADATA_EMAIL", "tester@example.com")
    monkeypatch.setenv("THETADATA_PASSWORD", "not-a-real-password")
    rest_store = store_for(sim)
    grpc_store = store_for(sim, history="grpc", grpc_host="127.0.0.1", grpc_port=sim.grpc_port,
                           grpc_insecure=True, auth_url=sim.auth_url)
    c = option_of(rest_store)
    day = parse_day(str(utc_ns_to_et(time.time_ns())[0])) - timedelta(days=1)
    for kind, contract in (("quote", c), ("ohlc", c), ("greeks", c),
                           ("quote", Contract.stock("SPY"))):
        via_rest = rest_store.history(kind, contract, day, day, "5m")
        via_grpc = grpc_store.history(kind, contract, day, day, "5m")
        assert len(via_grpc) == len(via_rest) > 0, kind
        assert str(via_grpc.index.tz) == "UTC"
        cols = [col for col in ("bid", "ask", "close", "delta", "implied_vol") if col in via_rest]
        pd.testing.assert_frame_equal(via_grpc[cols], via_rest[cols], check_dtype=False,
                                      check_freq=False)
        if contract.is_option:
            assert via_grpc["root"].iloc[0] == "SPY" and via_grpc["right"].iloc[0] == "C"
            assert via_grpc["expiration"].iloc[0] == c.expiration
            assert via_grpc["strike"].iloc[0] == c.strike
    assert grpc_store.expirations("SPY") == rest_store.expirations("SPY")
    assert grpc_store.strikes("SPY", c.expiration) == rest_store.strikes("SPY", c.expiration)


def test_no_data_is_an_empty_frame_and_missing_credentials_are_explained(sim, monkeypatch,
                                                                        tmp_path):
    monkeypatch.delenv("THETADATA_EMAIL", raising=False)
    monkeypatch.delenv("THETADATA_PASSWORD", raising=False)
    monkeypatch.delenv("THETADATA_API_KEY", raising=False)
    with pytest.raises(RuntimeError, match="THETADATA_EMAIL"):
        GrpcHistory(host="127.0.0.1", port=sim.grpc_port, insecure=True, auth_url=sim.auth_url)
    creds = tmp_path / "creds.txt"
    creds.write_text("tester@example.com\nsecret\n")
    hist = GrpcHistory(host="127.0.0.1", port=sim.grpc_port, insecure=True,
                       auth_url=sim.auth_url, creds_file=str(creds))
    old = Contract.option("SPY", "20230106", 400, "C")
    assert hist.history("quote", old, parse_day("20200102"), parse_day("20200102"), "1m").empty


def test_grpc_faults_are_retried_or_raised(sim, monkeypatch):
    from btlive.theta.rest import ThetaError, ThetaPermissionError

    monkeypatch.setenv("THETADATA_EMAIL", "tester@example.com")
    monkeypatch.setenv("THETADATA_PASSWORD", "x")
    hist = GrpcHistory(host="127.0.0.1", port=sim.grpc_port, insecure=True,
                       auth_url=sim.auth_url, retries=3, backoff_initial=0.01)
    # a whole past day: today has no 09:30 quotes before 09:30 ET
    day = parse_day(str(utc_ns_to_et(time.time_ns())[0])) - timedelta(days=1)
    spy = Contract.stock("SPY")
    sim.faults.grpc_once("", "UNAVAILABLE", times=2)
    assert len(hist.history("quote", spy, day, day, "1m", start_time="09:30:00",
                            end_time="09:31:00")) == 2
    sim.faults.grpc_once("", "PERMISSION_DENIED", message="tier too low (injected)")
    with pytest.raises(ThetaPermissionError, match="tier too low"):
        hist.history("quote", spy, day, day, "1m")
    sim.faults.grpc_once("", "UNAVAILABLE", times=5)
    with pytest.raises(ThetaError, match="UNAVAILABLE"):
        hist.history("quote", spy, day, day, "1m")
    sim.faults.clear()


def test_store_close_closes_the_grpc_channel_and_a_new_one_works(sim, store_for, monkeypatch):
    monkeypatch.setenv("THETADATA_EMAIL", "tester@example.com")
    monkeypatch.setenv("THETADATA_PASSWORD", "x")
    store = store_for(sim, history="grpc", grpc_host="127.0.0.1", grpc_port=sim.grpc_port,
                      grpc_insecure=True, auth_url=sim.auth_url)
    first = store.grpc()
    expirations = store.expirations("SPY")
    assert expirations
    store.start()
    store.stop()  # the last user: the store closes, and with it the channel
    assert first.channel is None
    with pytest.raises(ValueError, match="Channel closed"):
        first.history("quote", Contract.stock("SPY"), parse_day("20200102"),
                      parse_day("20200102"), "1m")
    assert store.grpc() is not first and store.expirations("SPY") == expirations
    store.close()
