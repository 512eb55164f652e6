"""The Prometheus endpoint scraped during a paper run, and JSON-lines logs."""

from __future__ import annotations

import io
import json
import logging
import threading
import urllib.request

import backtrader as bt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from btlive.analyzers.execution import ExecutionQuality
from btlive.ib.broker import IBBroker
from btlive.ib.feed import IBData
from btlive.ib.store import IBStore
from btlive.ops.alerts import OpsAlerts
from btlive.ops.logs import configure_logging
from btlive.ops.metrics import Metrics
from btlive.ops.monitor import Monitor
from tests.helpers import eventually
from tests.ops.conftest import feed, frame


def samples(text: str) -> dict:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            out[key] = sample.value
    return out


def value(text: str, name: str, **labels) -> float | None:
    return samples(text).get((name, tuple(sorted(labels.items()))))


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode()


class Buyer(bt.Strategy):
    params = (("actions", None),)

    def next(self):
        if len(self) == 3:
            self.buy(size=10)
        actions = self.p.actions
        while actions:
            actions.pop(0)(self)


@pytest.mark.slow
def test_metrics_scraped_during_a_paper_run(sim):
    store = IBStore(port=sim.port, clientId=81, timeout=0.5)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(IBData(store=store, dataname="AAPL", tickmode="BidAsk", backfill_start=False,
                           timeframe=bt.TimeFrame.Ticks), name="AAPL")
    cerebro.setbroker(IBBroker(store=store))
    actions: list = []
    cerebro.addstrategy(Buyer, actions=actions)
    cerebro.addanalyzer(ExecutionQuality)
    cerebro.addanalyzer(OpsAlerts, connection_lost=0.5)
    cerebro.addanalyzer(Monitor)
    cerebro.addanalyzer(Metrics, _name="metrics", port=0, interval=0.1, run_id="m-1")
    thread = threading.Thread(target=cerebro.run, daemon=True)
    thread.start()
    try:
        def url():
            strats = getattr(cerebro, "runningstrats", [])
            metrics = getattr(strats[0].analyzers, "metrics", None) if strats else None
            return metrics is not None and metrics.url

        endpoint = eventually(url, timeout=30, what="the metrics endpoint")
        assert endpoint.startswith("http://127.0.0.1:")
        text = eventually(lambda: (t := scrape(endpoint)) and
                          (value(t, "btlive_fills_total") or 0) >= 1 and
                          (value(t, "btlive_fill_latency_seconds_count") or 0) >= 1 and t,
                          timeout=30, interval=0.1, what="a fill in the metrics")
        assert value(text, "btlive_bars_total", feed="AAPL") >= 3
        assert value(text, "btlive_connected") == 1
        assert value(text, "btlive_feed_live", feed="AAPL") == 1
        assert value(text, "btlive_data_age_seconds", feed="AAPL") < 10
        assert value(text, "btlive_filled_quantity_total") == 10
        assert value(text, "btlive_order_updates_total", state="Completed") == 1
        assert value(text, "btlive_run_info", run_id="m-1", mode="paper", strategy="Buyer") == 1
        assert value(text, "btlive_pnl") is not None
        assert value(text, "btlive_slippage_bps_count") == 1

        sim.reject_next_order("No trading permissions", symbol="AAPL")
        actions.append(lambda s: s.buy(size=1))
        text = eventually(lambda: (t := scrape(endpoint)) and
                          value(t, "btlive_rejections_total") == 1 and t,
                          timeout=30, interval=0.1, what="the rejection in the metrics")
        eventually(lambda: value(scrape(endpoint), "btlive_alerts_total",
                                 metric="order_rejected", level="warning") == 1,
                   timeout=30, interval=0.1, what="the alert in the metrics")

        sim.daily_restart(down=1.0, linger=0.0, farms=0.0)
        eventually(lambda: value(scrape(endpoint), "btlive_reconnects_total") == 1,
                   timeout=60, interval=0.1, what="a reconnect in the metrics")
        assert value(scrape(endpoint), "btlive_connected") == 1
    finally:
        cerebro.runstop()
        thread.join(30)
        IBStore.close_all()
    assert not thread.is_alive()


def test_backtest_metrics_without_a_server():
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed(frame([100, 100, 100, 101, 102])))
    cerebro.addstrategy(Buyer)
    cerebro.addanalyzer(ExecutionQuality)
    cerebro.addanalyzer(Metrics, _name="metrics")
    (strat,) = cerebro.run()
    metrics = strat.analyzers.metrics
    assert metrics.url is None
    reg = metrics.registry
    assert reg.get_sample_value("btlive_bars_total", {"feed": "X"}) == 5
    assert reg.get_sample_value("btlive_fills_total") == 1
    assert reg.get_sample_value("btlive_pnl") == pytest.approx(10 * (102 - 101))
    assert reg.get_sample_value("btlive_fill_latency_seconds_count") == 1
    metrics.set_risk("max_position", 0.25)
    assert reg.get_sample_value("btlive_risk_utilisation", {"limit": "max_position"}) == 0.25


def test_json_logs_carry_the_run_id_and_no_secret(monkeypatch):
    monkeypatch.setenv("BTLIVE_SMTP_PASSWORD", "hunter2-very-secret")
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("json", run_id="run-42", stream=stream)
        log = logging.getLogger("btlive.test")
        log.warning("connecting to postgresql://u:pw123@db/x with hunter2-very-secret")
        try:
            raise RuntimeError("token=abcdef123456 rejected")
        except RuntimeError:
            log.exception("failed")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2 and all(line["run_id"] == "run-42" for line in lines)
    text = stream.getvalue()
    for secret in ("pw123", "hunter2-very-secret", "abcdef123456"):
        assert secret not in text
    assert lines[0]["level"] == "WARNING" and lines[0]["logger"] == "btlive.test"
    assert "RuntimeError" in lines[1]["exc"]
    with pytest.raises(ValueError, match="'xml'"):
        configure_logging("xml")
