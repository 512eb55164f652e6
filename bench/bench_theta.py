"""Benchmark ``theta``: the ThetaData stream end to end.

1. ``ws_to_arctic``: messages/s from the simulator's WebSocket (full trade stream in
   firehose mode, a separate process) through the stream client (picows), the batched JSON
   parser and StreamRecorder into ArcticRecorder on LMDB. Every row is read back and
   counted after the run. Anchors: the seed's requirement (1,000 msg/s peak) and the
   seed's naive recipe (``json.loads``, a one-row DataFrame and ``lib.update(...,
   upsert=True)`` per message) measured here on real frames from the same simulator.
2. ``quote_to_next``: latency from the socket read that delivered a quote to the
   strategy's ``next()`` (ThetaData, Ticks, live), p50 and p99. Anchor: the seed's
   10 ms data-ingestion target.
3. ``ws_stream`` and ``ws_transport``: the stream client (``ThetaStream`` on picows) against
   the sans-IO client it replaced (``theta_ws_v1.py`` on ``theta_wire_v1.py``, kept as the
   anchor), on the same firehose from the same simulator process, in the same run:
   messages/s and client CPU microseconds per message, for the whole session (frames to
   parsed batches) and for the transport alone (frames to payloads). Clients alternate,
   twice each; the better run of each counts.
4. ``chain_greeks``: a whole chain's first-order greeks snapshot through the store into one
   DataFrame (one request) against one request per contract (as many in flight as the
   tier allows), contracts/s, same simulator, same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from common import percentile, result

SEED_PEAK_MSGS = 1_000.0
SEED_INGEST_MS = 10.0


def add_arguments(parser, name: str) -> None:
    parser.add_argument("--seconds", type=float, default=None,
                        help="throughput window in seconds (default 20, quick 3)")
    parser.add_argument("--naive-count", type=int, default=None,
                        help="messages written the naive way (default 300, quick 60)")
    parser.add_argument("--latency-ticks", type=int, default=None,
                        help="quotes timed into next() (default 1000, quick 150)")
    parser.add_argument("--only", default=None,
                        help="comma list of parts to run: arctic, ws, chain, latency (default all)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def simulator(*extra: str):
    """``btlive sim theta`` in its own process (so its CPU is not ours); yields URLs."""
    rp, wp, gp = _free_port(), _free_port(), _free_port()
    cmd = [sys.executable, "-m", "btlive", "sim", "theta", "--rest-port", str(rp), "--ws-port",
           str(wp), "--grpc-port", str(gp), "--always-open", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        if not line.startswith("ready"):
            raise RuntimeError(f"simulator did not start: {line!r}")
        yield f"http://127.0.0.1:{rp}", f"ws://127.0.0.1:{wp}/v1/events"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def measure_throughput(rest_url: str, ws_url: str, seconds: float, tmp: str) -> dict:
    from btlive.arctic.library import DEFAULT_LIBRARY, get_library
    from btlive.arctic.recorder import ArcticRecorder
    from btlive.theta.record import StreamRecorder
    from btlive.theta.store import ThetaStore

    uri = f"lmdb://{tmp}/stream"
    recorder = ArcticRecorder(uri, DEFAULT_LIBRARY, flush_rows=50_000, flush_seconds=1.0)
    store = ThetaStore(rest_url=rest_url, ws_url=ws_url, heartbeat_timeout=10.0)
    sink = StreamRecorder(recorder, layout="root")
    try:
        store.add_batch_sink(sink, full_trade_stream=True)
        time.sleep(1.0)  # connect and warm up
        m0, a0, t0, c0 = sink.messages, recorder.stats["staged_rows"], time.perf_counter(), _cpu()
        time.sleep(seconds)
        m1, a1, t1, c1 = sink.messages, recorder.stats["staged_rows"], time.perf_counter(), _cpu()
        malformed = store.stream.stats["malformed"]
    finally:
        store.close()
        sink.flush(final=True)  # the loop is gone: nothing else touches the sink now
        recorder.close()
        ThetaStore.close_all()
    lib = get_library(uri, DEFAULT_LIBRARY)
    stored = sum(lib.get_description(s).row_count for s in lib.list_symbols())
    wall = t1 - t0
    return {"msgs_per_s": (m1 - m0) / wall, "acked_per_s": (a1 - a0) / wall,
            "cpu_per_wall": (c1 - c0) / wall, "messages": sink.messages, "stored_rows": stored,
            "malformed": malformed}


def capture_frames(ws_url: str, count: int) -> list[str]:
    """Real frames from the simulator's full trade stream (for the naive recipe)."""
    from websockets.sync.client import connect

    frames = []
    with connect(ws_url, max_size=2**22) as ws:
        ws.send(json.dumps({"msg_type": "STREAM_BULK", "sec_type": "OPTION", "req_type": "TRADE",
                            "add": True, "id": 0}))
        deadline = time.monotonic() + 30
        while len(frames) < count and time.monotonic() < deadline:
            msg = ws.recv(timeout=5)
            if '"QUOTE"' in msg or '"TRADE"' in msg or '"OHLC"' in msg:
                frames.append(msg)
    return frames


def measure_naive(frames: list[str], tmp: str) -> float:
    """The seeds' recipe: per message, one DataFrame and one ArcticDB write."""
    import arcticdb as adb
    import pandas as pd

    from btlive.theta.parse import parse_ws_message

    lib = adb.Arctic(f"lmdb://{tmp}/naive").get_library("trades", create_if_missing=True)
    t0 = time.perf_counter()
    for text in frames:
        msg = parse_ws_message(json.loads(text))
        df = pd.DataFrame([msg.data], index=pd.DatetimeIndex([pd.Timestamp(msg.ts_ns, tz="UTC")]))
        lib.update(f"{msg.kind}/{msg.contract.instrument}", df, upsert=True)
    return len(frames) / (time.perf_counter() - t0)


def measure_latency(rest_url: str, ws_url: str, ticks: int) -> dict:
    import backtrader as bt

    from btlive.theta.feed import ThetaData
    from btlive.theta.store import ThetaStore

    recv_lat, stamp_lat = [], []

    class Timer(bt.Strategy):
        def next(self):
            now = time.time_ns()
            d = self.data
            if d.last_recv_ns:
                recv_lat.append((now - d.last_recv_ns) / 1e6)
                stamp_lat.append((now - d.last_tick_ns) / 1e6)
            if len(recv_lat) >= ticks:
                self.env.runstop()

    store = ThetaStore(rest_url=rest_url, ws_url=ws_url)
    try:
        data = ThetaData(dataname="SPY", store=store, timeframe=bt.TimeFrame.Ticks, qcheck=0.05)
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(data)
        cerebro.addstrategy(Timer)
        cerebro.run()
    finally:
        ThetaStore.close_all()
    warm = recv_lat[10:] or recv_lat
    return {"p50": percentile(warm, 50), "p99": percentile(warm, 99),
            "stamp_p50": percentile(stamp_lat[10:] or stamp_lat, 50),
            "stamp_p99": percentile(stamp_lat[10:] or stamp_lat, 99), "n": len(warm)}


_BULK = json.dumps({"msg_type": "STREAM_BULK", "sec_type": "OPTION", "req_type": "TRADE",
                    "add": True, "id": 0}).encode()


async def _v1_transport(ws_url: str, seconds: float) -> tuple[int, float, float]:
    """(messages, wall, client CPU): the old sans-IO codec on a plain asyncio stream."""
    from theta_wire_v1 import (
        OP_TEXT,
        FrameDecoder,
        check_handshake_response,
        encode_frame,
        handshake_request,
        split_url,
    )

    host, port, path = split_url(ws_url)
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 22)
    request, accept = handshake_request(host, port, path)
    writer.write(request)
    check_handshake_response(await reader.readuntil(b"\r\n\r\n"), accept)
    writer.write(encode_frame(OP_TEXT, _BULK))
    decoder, n, got = FrameDecoder(), 0, []
    while n < 1000:  # warm up: the firehose is flowing
        n += len(decoder.feed(await reader.read(1 << 20))[0])
    n, t0, c0 = 0, time.perf_counter(), _cpu()
    while time.perf_counter() - t0 < seconds:
        messages, _ = decoder.feed(await reader.read(1 << 20))
        got.extend(messages)  # hand the payloads on, as the stream does
        n += len(messages)
        got.clear()
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    writer.close()
    return n, wall, cpu


async def _picows_transport(ws_url: str, seconds: float) -> tuple[int, float, float]:
    """The same with picows: payloads collected per socket read, as ThetaStream does."""
    from picows import WSListener, WSMsgType, ws_connect

    class Counter(WSListener):
        def __init__(self):
            self.n, self.got = 0, []

        def on_ws_frame(self, transport, frame):
            if frame.msg_type is WSMsgType.TEXT:
                self.got.append(frame.get_payload_as_bytes())
            if frame.last_in_buffer:
                self.n += len(self.got)
                self.got = []

    transport, listener = await ws_connect(Counter, ws_url, max_frame_size=1 << 24)
    transport.send(WSMsgType.TEXT, _BULK)
    await _until(lambda: listener.n >= 1000)
    n0, t0, c0 = listener.n, time.perf_counter(), _cpu()
    await asyncio.sleep(seconds)
    n, wall, cpu = listener.n - n0, time.perf_counter() - t0, _cpu() - c0
    transport.disconnect()
    return n, wall, cpu


async def _until(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("the firehose did not start")
        await asyncio.sleep(0.01)


async def _session(stream_cls, ws_url: str, seconds: float) -> tuple[int, float, float]:
    """(messages, wall, client CPU) of a whole stream session: frames to parsed batches."""
    n = [0]

    def on_batch(batch, recv_ns):
        n[0] += batch.data_frames

    stream = stream_cls(ws_url, on_batch, lambda event: None, heartbeat_timeout=10.0,
                        gap_after=None)
    stream.subscribe("TRADE", None)
    task = asyncio.ensure_future(stream.run())
    try:
        await _until(lambda: n[0] >= 1000)
        n0, t0, c0 = n[0], time.perf_counter(), _cpu()
        await asyncio.sleep(seconds)
        count, wall, cpu = n[0] - n0, time.perf_counter() - t0, _cpu() - c0
    finally:
        await stream.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return count, wall, cpu


async def _picows_session(ws_url: str, seconds: float) -> tuple[int, float, float]:
    from btlive.theta.ws import ThetaStream

    return await _session(ThetaStream, ws_url, seconds)


async def _v1_session(ws_url: str, seconds: float) -> tuple[int, float, float]:
    from theta_ws_v1 import ThetaStream

    return await _session(ThetaStream, ws_url, seconds)


def measure_ws_clients(ws_url: str, seconds: float, clients: dict) -> dict:
    """Clients on the same firehose, alternating, twice each: (msg/s, CPU µs/msg) of the
    better run of each."""
    best: dict[str, tuple[float, float]] = {}
    for name in [*clients, *clients]:
        n, wall, cpu = asyncio.run(clients[name](ws_url, seconds))
        rate, us = n / wall, cpu / max(n, 1) * 1e6
        if rate > best.get(name, (0.0, 0.0))[0]:
            best[name] = (rate, us)
        time.sleep(0.5)  # the simulator notices the old socket is gone
    return best


def measure_chain_greeks(rest_url: str, ws_url: str, contracts_cap: int) -> dict:
    """Contracts/s of one bulk snapshot vs one snapshot request per contract."""
    from btlive.theta.store import ThetaStore

    store = ThetaStore(rest_url=rest_url, ws_url=ws_url, tier="pro")
    try:
        t0 = time.perf_counter()
        bulk = store.chain_snapshot("SPY", "greeks", expiration="*")
        bulk_s = time.perf_counter() - t0
        keys = bulk[["expiration", "strike", "right"]].drop_duplicates()
        contracts = list(keys.itertuples(index=False))[:contracts_cap]

        async def one_each():
            rest = store.rest()
            return await asyncio.gather(*(rest.get("option/snapshot/greeks/first_order", {
                "symbol": "SPY", "expiration": e, "strike": f"{k:.3f}",
                "right": "call" if r == "C" else "put"}) for e, k, r in contracts))

        t0 = time.perf_counter()
        frames = store.run_sync(one_each(), 600)
        each_s = time.perf_counter() - t0
    finally:
        ThetaStore.close_all()
    return {"bulk_per_s": len(keys) / bulk_s, "bulk_contracts": len(keys),
            "each_per_s": len(contracts) / each_s, "each_contracts": len(contracts),
            "each_rows": sum(len(f) for f in frames)}


def _ws_clients(quick: bool):
    seconds = 2.0 if quick else 5.0
    anchors = {"stream": "the sans-IO session btlive ran before (bench/theta_ws_v1.py)",
               "transport": "the sans-IO codec btlive ran before (bench/theta_wire_v1.py)"}
    with simulator("--firehose") as (_, ws_url):
        stream = measure_ws_clients(ws_url, seconds, {"picows": _picows_session,
                                                      "v1": _v1_session})
        transport = measure_ws_clients(ws_url, seconds, {"picows": _picows_transport,
                                                         "v1": _v1_transport})
    for part, best in (("stream", stream), ("transport", transport)):
        (rate, us), (v1_rate, v1_us) = best["picows"], best["v1"]
        extra = {"picows_msgs_per_s": round(rate), "v1_msgs_per_s": round(v1_rate),
                 "picows_cpu_us_per_msg": round(us, 3), "v1_cpu_us_per_msg": round(v1_us, 3),
                 "window_s": seconds}
        anchor = f"{anchors[part]}, same firehose, same run"
        yield result("theta", f"ws_{part}_msgs_per_s", rate, anchor, v1_rate, "msg/s", **extra)
        yield result("theta", f"ws_{part}_cpu_us_per_msg", us, anchor, v1_us, "us/msg",
                     higher_is_better=False, **extra)


def _arctic(seconds: float, naive_n: int):
    tmp = tempfile.mkdtemp(prefix="bench_theta_")
    try:
        with simulator("--firehose") as (rest_url, ws_url):
            thr = measure_throughput(rest_url, ws_url, seconds, tmp)
            frames = capture_frames(ws_url, naive_n)
        naive = measure_naive(frames, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    extra = {"acked_rows_per_s": round(thr["acked_per_s"]),
             "cpu_seconds_per_second": round(thr["cpu_per_wall"], 2),
             "msgs_per_cpu_second": round(thr["msgs_per_s"] / max(thr["cpu_per_wall"], 1e-9)),
             "messages": thr["messages"], "rows_read_back": thr["stored_rows"],
             "all_rows_stored": thr["stored_rows"] == thr["messages"],
             "window_s": seconds, "layout": "root"}
    ours = thr["msgs_per_s"]
    yield result("theta", "ws_to_arctic_msgs_per_s", ours, "seed requirement: 1,000 msg/s peak",
                 SEED_PEAK_MSGS, "msg/s", **extra)
    yield result("theta", "ws_to_arctic_vs_naive", ours,
                 f"seed recipe: DataFrame + lib.update per message ({len(frames)} msgs)",
                 naive, "msg/s", **extra)


def _chain(quick: bool):
    with simulator() as (rest_url, ws_url):
        chain = measure_chain_greeks(rest_url, ws_url, 200 if quick else 1000)
    yield result("theta", "chain_greeks_snapshot_contracts_per_s", chain["bulk_per_s"],
                 "one snapshot request per contract (tier concurrency), same run",
                 chain["each_per_s"], "contracts/s", **{k: v for k, v in chain.items()
                                                         if not k.endswith("_per_s")})


def _latency(lat_n: int):
    with simulator("--quote-ms", "10", "--symbols", "SPY") as (rest_url, ws_url):
        lat = measure_latency(rest_url, ws_url, lat_n)
    common = {"samples": lat["n"], "exchange_stamp_to_next_p50_ms": round(lat["stamp_p50"], 3),
              "exchange_stamp_to_next_p99_ms": round(lat["stamp_p99"], 3)}
    yield result("theta", "quote_to_next_p99_ms", lat["p99"], "seed: 10 ms data ingestion",
                 SEED_INGEST_MS, "ms", higher_is_better=False, **common)
    yield result("theta", "quote_to_next_p50_ms", lat["p50"], "seed: 10 ms data ingestion",
                 SEED_INGEST_MS, "ms", higher_is_better=False, **common)


PARTS = ("arctic", "ws", "chain", "latency")


def run(args):
    quick = getattr(args, "quick", False)
    seconds = args.seconds or (3.0 if quick else 20.0)
    only = set(args.only.split(",")) if args.only else set(PARTS)
    if only - set(PARTS):
        raise SystemExit(f"--only {args.only!r}: expected a comma list of {', '.join(PARTS)}")
    if "arctic" in only:
        yield from _arctic(seconds, args.naive_count or (60 if quick else 300))
    if "ws" in only:
        yield from _ws_clients(quick)
    if "chain" in only:
        yield from _chain(quick)
    if "latency" in only:
        yield from _latency(args.latency_ticks or (150 if quick else 1000))


BENCHES = {"theta": run}
