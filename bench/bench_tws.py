"""TWS simulator benchmarks: order round trips and tick fan-out to one real ib_async client.

The simulator runs as ``btlive sim tws`` in a subprocess so that it and the client do not
share one GIL. Anchor: IB's documented limit of 50 API messages per second (so at most
50 orders/s, one every 20 ms); ib_async throttles itself to 45 requests/s by default, which
is measured here as well ("throttle on").
"""

from __future__ import annotations

import asyncio
import os
import select
import subprocess
import sys
import tempfile
import time

from common import percentile, result

IB_LIMIT = 50.0  # messages per second, IB API documentation
ANCHOR = "IB API limit 50 msg/s"


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start_sim(timeout: float = 30.0) -> tuple[subprocess.Popen, int]:
    # stderr goes to a file: an undrained pipe would stall a simulator that logs a lot
    err = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "btlive", "sim", "tws", "--port", "0", "--tick-interval", "5",
         "--always-open"],
        stdout=subprocess.PIPE, stderr=err, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("ready "):
        proc.kill()
        proc.wait(10)
        err.seek(0)
        raise RuntimeError(f"simulator did not start within {timeout:g} s: {line!r} "
                           f"{err.read()[:500]}")
    err.close()
    return proc, int(line.split()[2].rsplit(":", 1)[1])


async def _connect(port: int, client_id: int, throttle: bool):
    from ib_async import IB
    ib = IB()
    await ib.connectAsync("127.0.0.1", port, clientId=client_id, timeout=10)
    if not throttle:
        ib.client.MaxRequests = 0
    return ib


async def _round_trips(port: int, n: int, throttle: bool, client_id: int) -> list[float]:
    """Sequential placeOrder -> filled event latencies in seconds."""
    from ib_async import MarketOrder, Stock
    ib = await _connect(port, client_id, throttle)
    try:
        c = Stock("SPY", "SMART", "USD")
        await ib.qualifyContractsAsync(c)
        out = []
        loop = asyncio.get_running_loop()
        for i in range(n):
            done = loop.create_future()
            t0 = time.perf_counter()
            trade = ib.placeOrder(c, MarketOrder("BUY" if i % 2 else "SELL", 1))
            trade.filledEvent += lambda _t, f=done: f.done() or f.set_result(None)
            await asyncio.wait_for(done, 10)
            out.append(time.perf_counter() - t0)
        return out
    finally:
        ib.disconnect()


async def _pipelined(port: int, n: int, throttle: bool, client_id: int,
                     window: int = 200) -> float:
    """Orders per second with up to ``window`` in flight."""
    from ib_async import MarketOrder, Stock
    ib = await _connect(port, client_id, throttle)
    try:
        c = Stock("SPY", "SMART", "USD")
        await ib.qualifyContractsAsync(c)
        sem = asyncio.Semaphore(window)
        loop = asyncio.get_running_loop()

        async def one(i: int) -> None:
            async with sem:
                done = loop.create_future()
                trade = ib.placeOrder(c, MarketOrder("BUY" if i % 2 else "SELL", 1))
                trade.filledEvent += lambda _t, f=done: f.done() or f.set_result(None)
                await asyncio.wait_for(done, 60)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return n / (time.perf_counter() - t0)
    finally:
        ib.disconnect()


async def _fanout(port: int, n: int, client_id: int) -> float:
    """Ticks per second delivered to one ib_async Ticker (bid/ask tickPrice messages)."""
    from ib_async import Stock, TagValue
    ib = await _connect(port, client_id, throttle=False)
    try:
        c = Stock("AAPL", "SMART", "USD")
        await ib.qualifyContractsAsync(c)
        got = 0
        first = None
        done = asyncio.get_running_loop().create_future()

        def on_pending(tickers) -> None:
            nonlocal got, first
            for t in tickers:
                got += sum(1 for tk in t.ticks if tk.tickType in (1, 2))
            if first is None:
                first = time.perf_counter()
            if got >= n and not done.done():
                done.set_result(time.perf_counter())

        ib.pendingTickersEvent += on_pending
        t0 = time.perf_counter()
        ib.reqMktData(c, "", False, False, [TagValue("btliveBurst", str(n))])
        end = await asyncio.wait_for(done, 120)
        return n / (end - t0)
    finally:
        ib.disconnect()


def _publish_rate(n_steps: int) -> float:
    """The simulator's own fan-out path in-process (step, encode, buffer): ticks per second."""
    from btlive.sim.tws.session import TwsServer
    from btlive.sim.tws.state import MktSub, Session

    class Sink:
        closed = False

        def __init__(self):
            self.bytes = 0

        def send(self, fields):
            self.bytes += 1

        def send_raw(self, data):
            self.bytes += len(data)

    server = TwsServer()
    sess = Session(Sink(), client_id=1, version=178)
    server.sessions[1] = sess
    inst = server.find_symbol("AAPL")
    sess.mkt[1] = MktSub(1, inst, rtvolume=True)
    t0 = time.perf_counter()
    for i in range(n_steps):
        server.publish(inst, server.market.step(inst, 1e9 + i), [sess])
    return server.stats["ticks"] / (time.perf_counter() - t0)


def run(args):
    quick = getattr(args, "quick", False)
    n_seq = 300 if quick else 3000
    n_pipe = 1000 if quick else 10000
    n_thr = 60 if quick else 200
    n_ticks = 100_000 if quick else 1_000_000
    proc, port = _start_sim()
    try:
        lat = asyncio.run(_round_trips(port, n_seq, throttle=False, client_id=1))
        lat_ms = [x * 1000 for x in lat]
        p50, p99 = percentile(lat_ms, 50), percentile(lat_ms, 99)
        yield result("tws", "order_round_trip_p50_ms", p50, "IB 50 msg/s -> 20 ms/order",
                     1000 / IB_LIMIT, "ms", higher_is_better=False, n=n_seq, throttle="off")
        yield result("tws", "order_round_trip_p99_ms", p99, "IB 50 msg/s -> 20 ms/order",
                     1000 / IB_LIMIT, "ms", higher_is_better=False, n=n_seq, throttle="off")
        yield result("tws", "order_round_trips_per_s_sequential", n_seq / sum(lat), ANCHOR,
                     IB_LIMIT, "orders/s", n=n_seq, throttle="off")
        cpu0 = _cpu_seconds(proc.pid)
        rate = asyncio.run(_pipelined(port, n_pipe, throttle=False, client_id=2))
        sim_cpu = max(_cpu_seconds(proc.pid) - cpu0, 1e-3)
        yield result("tws", "order_round_trips_per_s_pipelined", rate, ANCHOR, IB_LIMIT,
                     "orders/s", n=n_pipe, throttle="off", window=200)
        # what the simulator itself could sustain: orders per second of its own CPU time
        yield result("tws", "simulator_orders_per_cpu_s", n_pipe / sim_cpu, ANCHOR, IB_LIMIT,
                     "orders/s", n=n_pipe, note="client (ib_async) is the bottleneck when "
                     "this exceeds order_round_trips_per_s_pipelined")
        lat_on = asyncio.run(_round_trips(port, n_thr, throttle=True, client_id=3))
        on_ms = [x * 1000 for x in lat_on]
        yield result("tws", "order_round_trip_p99_ms_throttled", percentile(on_ms, 99),
                     "IB 50 msg/s -> 20 ms/order", 1000 / IB_LIMIT, "ms",
                     higher_is_better=False, n=n_thr, throttle="on (45 req/s)",
                     p50=percentile(on_ms, 50))
        rate_on = asyncio.run(_pipelined(port, n_thr, throttle=True, client_id=4))
        yield result("tws", "order_round_trips_per_s_throttled", rate_on, ANCHOR, IB_LIMIT,
                     "orders/s", n=n_thr, throttle="on (45 req/s)")
        ticks = asyncio.run(_fanout(port, n_ticks, client_id=5))
        yield result("tws", "ticks_per_s_one_client", ticks, "IB 50 msg/s", IB_LIMIT,
                     "ticks/s", n=n_ticks, client="ib_async")
        yield result("tws", "simulator_tick_publish_per_s", _publish_rate(n_ticks // 20),
                     "IB 50 msg/s", IB_LIMIT, "ticks/s", note="in-process: market step, "
                     "encode and buffer of bid/ask/last/size/RTVolume ticks, no socket")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


BENCHES = {"tws": run}
