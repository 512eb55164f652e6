"""``btlive record theta``: record the Theta Terminal stream into ArcticDB.

Every QUOTE, TRADE and OHLC frame goes through ArcticRecorder as columnar batches
(``ticks/quote/<instrument>``, ``ticks/trade/...``, ``ticks/ohlc/...``); with
``--greeks``, Black-Scholes greeks of each option are sampled from its quotes and the
underlying's (``ticks/greeks/<instrument>``). A status line on stderr shows messages/s,
symbols, lag, flushes and the acknowledged (durable) row count; ``--stats-file`` holds
the same numbers as JSON, rewritten atomically every interval.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

DEFAULT_REST = "http://127.0.0.1:25503"
DEFAULT_WS = "ws://127.0.0.1:25520/v1/events"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "theta", help="record the ThetaData stream into ArcticDB",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--uri", required=True, help="ArcticDB URI, e.g. lmdb:///data/arctic")
    p.add_argument("--library", default=None, help="ArcticDB library (default btlive)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--full-trade-stream", action="store_true",
                      help="every option trade (Pro tier), with its NBBO quotes and OHLC")
    what.add_argument("--contracts", metavar="FILE",
                      help="one instrument per line: SPY, SPY_20241220_C450 or "
                           "root,expiration,strike,right; '#' starts a comment")
    p.add_argument("--kinds", default="quote,trade",
                   help="with --contracts: streams per contract (quote, trade; OHLC rides "
                        "on trade) [quote,trade]")
    p.add_argument("--greeks", action="store_true",
                   help="also record Black-Scholes greeks per option (subscribes underlyings)")
    p.add_argument("--greeks-interval", type=float, default=1.0,
                   help="seconds between greeks samples per option [1.0]")
    p.add_argument("--rate", type=float, default=0.0, help="risk-free rate for greeks [0]")
    p.add_argument("--layout", choices=["contract", "root"], default=None,
                   help="symbols per contract (ticks/quote/SPY_20241220_C450) or per underlying "
                        "with contract columns (ticks/quote/SPY_options); default: contract "
                        "with --contracts, root with --full-trade-stream")
    p.add_argument("--rest-url", default=DEFAULT_REST, help=f"Terminal REST [{DEFAULT_REST}]")
    p.add_argument("--ws-url", default=DEFAULT_WS, help=f"Terminal WebSocket [{DEFAULT_WS}]")
    p.add_argument("--flush-rows", type=int, default=10_000, help="recorder flush_rows [10000]")
    p.add_argument("--flush-seconds", type=float, default=1.0,
                   help="recorder flush_seconds [1.0]")
    p.add_argument("--heartbeat-timeout", type=float, default=5.0,
                   help="stream silence that forces a reconnect, seconds [5]")
    p.add_argument("--status-interval", type=float, default=1.0,
                   help="seconds between status lines [1.0]")
    p.add_argument("--stats-file", default=None,
                   help="write the counters as JSON here every interval (acked_rows = durable)")
    p.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    p.add_argument("--quiet", action="store_true", help="no status line")
    p.set_defaults(func=run)


def read_contracts(path: str):
    """Contracts file -> list of Contract (clear errors with the line number)."""
    from btlive.theta.feed import parse_dataname
    from btlive.theta.parse import Contract

    out = []
    for n, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            parts = [x.strip() for x in line.split(",")]
            if len(parts) == 4:
                out.append(Contract.option(*parts))
            elif len(parts) == 1:
                out.append(parse_dataname(parts[0]))
            else:
                raise ValueError("expected 1 or 4 comma-separated fields")
        except ValueError as exc:
            raise SystemExit(f"{path}:{n}: {line!r}: {exc}") from None
    if not out:
        raise SystemExit(f"{path}: no contracts")
    return out


def run(args) -> int:
    from btlive.arctic.library import DEFAULT_LIBRARY
    from btlive.arctic.recorder import ArcticRecorder
    from btlive.theta.parse import Contract
    from btlive.theta.record import StreamRecorder
    from btlive.theta.store import ThetaStore

    subs = []
    if args.contracts:
        kinds = [k.strip().upper() for k in args.kinds.split(",") if k.strip()]
        bad = [k for k in kinds if k not in ("QUOTE", "TRADE")]
        if bad or not kinds:
            raise SystemExit(f"--kinds {args.kinds!r}: expected quote and/or trade")
        contracts = read_contracts(args.contracts)
        for c in contracts:
            for k in kinds:
                subs.append((k, c))
        if args.greeks:
            roots = {c.root for c in contracts if c.is_option}
            subs += [("QUOTE", Contract.stock(r)) for r in sorted(roots)
                     if ("QUOTE", Contract.stock(r)) not in subs]
    recorder = ArcticRecorder(args.uri, args.library or DEFAULT_LIBRARY,
                              flush_rows=args.flush_rows, flush_seconds=args.flush_seconds)
    store = ThetaStore(rest_url=args.rest_url, ws_url=args.ws_url,
                       heartbeat_timeout=args.heartbeat_timeout)
    layout = args.layout or ("root" if args.full_trade_stream else "contract")
    sink = StreamRecorder(recorder, layout, args.greeks_interval if args.greeks else None,
                          args.rate)
    events: collections.deque = collections.deque(maxlen=20)  # appended on the loop thread
    started = time.monotonic()
    last_msgs, last_t = 0, started
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        store.add_event_sink(lambda ev: ev.kind != "SUBSCRIBED" and events.append(ev))
        store.add_batch_sink(sink, full_trade_stream=args.full_trade_stream, subscriptions=subs)
        while not stop.wait(args.status_interval):
            store.call_soon(sink.flush)
            now = time.monotonic()
            msgs = sink.messages
            rate = (msgs - last_msgs) / max(now - last_t, 1e-9)
            last_msgs, last_t = msgs, now
            status = _status(store, recorder, sink, rate, events)
            if not args.quiet:
                print("\r" + _status_line(status), end="", file=sys.stderr, flush=True)
            if args.stats_file:
                _write_json(args.stats_file, status)
            if args.duration is not None and now - started >= args.duration:
                break
    finally:
        try:
            store.run_sync(_stop_and_flush(store, sink), 10)
        except Exception as exc:  # noqa: BLE001 - still close the recorder
            print(f"\nfinal flush failed: {exc}", file=sys.stderr)
        store.close()
        recorder.close()
        status = _status(store, recorder, sink, 0.0, events)
        status["closed"] = True
        if args.stats_file:
            _write_json(args.stats_file, status)
        if not args.quiet:
            print("\n" + _status_line(status), file=sys.stderr)
        ThetaStore.close_all()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


async def _stop_and_flush(store, sink) -> None:
    """Stop reading first, so every counted message reaches the recorder."""
    if store.stream is not None:
        await store.stream.stop()
    sink.closed = True
    sink.flush()


def _status(store, recorder, sink, rate: float, events: collections.deque) -> dict:
    rs = recorder.stats
    stream = store.stream
    lag_ms = (time.time_ns() - sink.last_tick_ns) / 1e6 if sink.last_tick_ns else None
    return {
        "messages": sink.messages, "msgs_per_s": round(rate, 1), "symbols": rs.get("symbols", 0),
        "lag_ms": round(lag_ms, 1) if lag_ms is not None else None,
        "flushes": rs.get("flushes", 0), "rows": rs.get("rows", 0),
        "acked_rows": rs.get("staged_rows", 0), "late_rows": rs.get("late_rows", 0),
        "errors": rs.get("errors", 0), "bad_rows": sink.bad_rows,
        "reconnects": stream.stats["reconnects"] if stream else 0,
        "malformed": stream.stats["malformed"] if stream else 0,
        "events": [f"{e.kind}: {e.detail}" for e in list(events)[-5:]],
    }


def _status_line(s: dict) -> str:
    lag = f"{s['lag_ms']:.0f}ms" if s["lag_ms"] is not None else "-"
    return (f"msgs={s['messages']} rate={s['msgs_per_s']:.0f}/s symbols={s['symbols']} "
            f"lag={lag} flushes={s['flushes']} acked={s['acked_rows']} "
            f"reconnects={s['reconnects']} bad={s['malformed'] + s['bad_rows']}   ")


def _write_json(path: str, data: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
