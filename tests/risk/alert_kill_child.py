"""Child process for test_alerts_kill: a backtest whose alerts cannot be delivered yet.

argv: outbox URL, SMTP port (nothing listens there yet). Prints "ready <n>" once every alert is
recorded in the outbox with at least one failed attempt, then waits to be killed.
"""

from __future__ import annotations

import sys
import time

import backtrader as bt
import numpy as np
import pandas as pd

import btlive
from btlive.alerts import Dispatcher, EmailChannel, Outbox
from btlive.runtime import Backoff


def main() -> None:
    url, port = sys.argv[1], int(sys.argv[2])
    outbox = Outbox(url)
    channel = EmailChannel("127.0.0.1", port, sender="btlive@example.com",
                           recipients=["risk@example.com"], security="plain", timeout=1.0)
    dispatcher = Dispatcher([channel], outbox=outbox, routes={"warning": ["email"],
                                                              "critical": ["email"]},
                            retry=Backoff(initial=60.0, maximum=60.0, attempts=4))
    returns = np.where(np.arange(120) % 2 == 0, 0.005, -0.005)
    returns[40], returns[45] = -0.04, -0.07
    close = 100.0 * np.cumprod(1.0 + returns)
    df = pd.DataFrame({"open": close, "high": close, "low": close, "close": close, "volume": 1.0},
                      index=pd.date_range("2024-01-01", periods=len(close), freq="D"))
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=df))
    cerebro.broker.set_coc(True)

    class AllIn(bt.Strategy):
        def next(self):
            if len(self) == 1:
                self.buy(size=int(self.broker.getcash() * 0.999 / self.data.close[0]))

    cerebro.addstrategy(AllIn)
    cerebro.addanalyzer(btlive.analyzers.CVaR, window=20, warning=0.03, critical=0.06,
                        repeat_interval=None, alerts=dispatcher, namespace="kill")
    cerebro.run()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        alerts = outbox.alerts()
        tried = {a["alert_id"] for a in outbox.attempts() if a["channel"] == "email"}
        if len(alerts) == 3 and tried == {a["alert_id"] for a in alerts}:
            print(f"ready {len(alerts)}", flush=True)
            break
        time.sleep(0.05)
    time.sleep(120)  # killed long before this


if __name__ == "__main__":
    main()
