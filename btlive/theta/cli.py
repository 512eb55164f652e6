"""``btlive record theta``: record the Theta Terminal stream into ArcticDB.

Every QUOTE, TRADE and OHLC frame goes through ArcticRecorder as columnar batches
(``ticks/quote/<instrument>``, ``ticks/trade/...``, ``ticks/ohlc/...``); with
``--greeks``, Black-Scholes greeks of each option are sampled from its quotes and the
underlying's (``ticks/greeks/<instrument>``). A status line on stderr shows messages/s,
symbols, lag, flushes, the acknowledged (durable) row count and the connection; connection
failures, rejected or unknown contracts are printed on their own lines. The Terminal serves
one streaming client: next to a trading run whose store has ``fanout_port`` set, the recorder
connects to that run's local fan-out (named in its run file) instead of the Terminal. ``--stats-file``
holds the same numbers as JSON, rewritten atomically every interval. Without a connection
for ``--give-up-after`` seconds the command exits 1.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

from btlive.errors import CommandError, UsageError

DEFAULT_REST = "http://127.0.0.1:25503"
DEFAULT_WS = "ws://127.0.0.1:25520/v1/events"
_SYMBOL = re.compile(r"^[A-Za-z][A-Za-z0-9.]{0,9}$")
#: Stream events printed on their own line (the rest only count).
_SHOWN = frozenset({"DISCONNECTED", "RECONNECTED", "CONNECTED", "STALLED", "CLOSED",
                    "TERMINAL_DISCONNECTED", "TERMINAL_CONNECTED", "MAX_STREAMS_REACHED",
                    "INVALID_PERMS", "ERROR", "TIMED_OUT", "RESUMED"})


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
                   help="recorder flush_seconds: rows are durable (staged) this often [1.0]")
    p.add_argument("--finalize-seconds", type=float, default=5.0,
                   help="make staged rows readable this often [5]: a live ArcticData tail "
                        "lags at most this long; each finalize adds a version segment per "
                        "symbol (5 s = up to 4,680 per 6.5 h session: compact nightly with "
                        "'btlive arctic compact'); use 60 or more when nobody tails live")
    p.add_argument("--reorder-seconds", type=float, default=2.0,
                   help="hold rows this long so each symbol is written in time order [2]")
    p.add_argument("--heartbeat-timeout", type=float, default=5.0,
                   help="stream silence that forces a reconnect, seconds [5]")
    p.add_argument("--give-up-after", type=float, default=120.0,
                   help="exit 1 after this many seconds without a Terminal connection [120]")
    p.add_argument("--status-interval", type=float, default=1.0,
                   help="seconds between status lines [1.0]")
    p.add_argument("--stats-file", default=None,
                   help="write the counters as JSON here every interval (acked_rows = durable)")
    p.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    p.add_argument("--quiet", action="store_true", help="no status line")
    p.set_defaults(func=run)


def read_contracts(path: str):
    """Contracts file -> list of Contract; every bad line is reported (path:line: text)."""
    from btlive.theta.feed import parse_dataname
    from btlive.theta.parse import Contract

    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--contracts {path}: {getattr(exc, 'strerror', None) or exc}") \
            from None
    out, bad = [], []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            parts = [x.strip() for x in line.split(",")]
            if len(parts) == 4:
                contract = Contract.option(*parts)
            elif len(parts) == 1:
                contract = parse_dataname(parts[0])
                if not contract.is_option and not _SYMBOL.match(contract.root):
                    raise ValueError("not a symbol (SPY), an option (SPY_20241220_C450) or "
                                     "root,expiration,strike,right")
            else:
                raise ValueError("expected 1 or 4 comma-separated fields")
            out.append(contract)
        except ValueError as exc:
            bad.append(f"{path}:{n}: {line!r}: {exc}")
    if bad:
        raise UsageError("; ".join(bad))
    if not out:
        raise UsageError(f"--contracts {path}: no contracts")
    return out


def _subscriptions(args) -> list:
    from btlive.theta.parse import Contract

    kinds = [k.strip().upper() for k in args.kinds.split(",") if k.strip()]
    if not kinds or any(k not in ("QUOTE", "TRADE") for k in kinds):
        raise UsageError(f"--kinds {args.kinds!r}: expected quote and/or trade")
    contracts = read_contracts(args.contracts)
    subs = [(k, c) for c in contracts for k in kinds]
    if args.greeks:
        roots = sorted({c.root for c in contracts if c.is_option})
        subs += [("QUOTE", Contract.stock(r)) for r in roots
                 if ("QUOTE", Contract.stock(r)) not in subs]
    return subs


class Session:
    """What the status line and the exit code need: events, connection time, unknown
    contracts (appended from the store's loop thread, read from the main thread)."""

    def __init__(self, give_up_after: float, contracts: int) -> None:
        self.events: collections.deque = collections.deque(maxlen=20)
        self.lines: collections.deque = collections.deque()  # to print on their own line
        self.give_up_after = give_up_after
        self.contracts = contracts
        self.unknown: list[str] = []
        self.since = time.monotonic()  # last time we were connected (or started)
        self.connected = False

    def on_event(self, ev) -> None:
        if ev.kind == "SUBSCRIBED":
            return
        self.events.append(ev)
        if ev.kind in ("CONNECTED", "RECONNECTED"):
            self.connected = True
        elif ev.kind in ("DISCONNECTED", "STALLED", "CLOSED"):
            if self.connected:
                self.since = time.monotonic()
            self.connected = False
        if ev.kind in _SHOWN:
            who = f" {ev.req_type} {ev.contract.instrument}" if ev.contract is not None else ""
            self.lines.append(f"{ev.kind}{who}: {ev.detail}")

    def on_unknown(self, instrument: str, reason: str) -> None:
        self.unknown.append(instrument)
        self.lines.append(f"UNKNOWN CONTRACT {instrument}: {reason}")

    def failure(self) -> str | None:
        """Why the recording cannot go on, if it cannot."""
        down = time.monotonic() - self.since
        if not self.connected and down > self.give_up_after:
            last = next((e.detail for e in reversed(self.events)
                         if e.kind == "DISCONNECTED"), "no connection")
            return f"no Terminal connection for {down:.0f} s ({last})"
        if self.contracts and len(set(self.unknown)) >= self.contracts:
            return f"none of the {self.contracts} contracts exists: {', '.join(self.unknown)}"
        return None


async def _check_contracts(store, contracts, session: Session) -> None:
    for contract in contracts:
        reason = await store.check_contract(contract)
        if reason is not None:
            session.on_unknown(contract.instrument, reason)


def run(args) -> int:
    subs = _subscriptions(args) if args.contracts else []
    if args.finalize_seconds <= 0 or args.give_up_after <= 0:
        raise UsageError("--finalize-seconds and --give-up-after must be > 0")
    stop = threading.Event()
    with _stop_on_signals(stop):  # from here on, a signal is a clean stop
        failure = _record(args, subs, stop)
    if failure:
        raise CommandError(failure)
    return 0


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event):
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _record(args, subs: list, stop: threading.Event) -> str | None:
    """Record until stopped; returns why it could not go on, if it could not."""
    from btlive.arctic.library import DEFAULT_LIBRARY
    from btlive.arctic.recorder import ArcticRecorder
    from btlive.theta.record import StreamRecorder
    from btlive.theta.store import ThetaStore

    contracts = list(dict.fromkeys(c for _, c in subs))
    recorder = ArcticRecorder(args.uri, args.library or DEFAULT_LIBRARY,
                              flush_rows=args.flush_rows, flush_seconds=args.flush_seconds,
                              finalize_seconds=args.finalize_seconds)
    store = ThetaStore(rest_url=args.rest_url, ws_url=_stream_url(args.ws_url),
                       heartbeat_timeout=args.heartbeat_timeout, retries=2)
    layout = args.layout or ("root" if args.full_trade_stream else "contract")
    sink = StreamRecorder(recorder, layout, args.greeks_interval if args.greeks else None,
                          args.rate, reorder=args.reorder_seconds)
    session = Session(args.give_up_after, len(contracts))
    stream = None
    try:
        store.add_event_sink(session.on_event)
        store.add_batch_sink(sink, full_trade_stream=args.full_trade_stream, subscriptions=subs)
        stream = store.stream  # its counters outlive store.close() for the final line
        if contracts:
            store.submit(_check_contracts(store, contracts, session))
        return _loop(args, store, recorder, sink, session, stop)
    finally:
        _finish(args, store, recorder, sink, session, stream)


def _stream_url(ws_url: str) -> str:
    """The Terminal serves one streaming client: while a trading run's fan-out relays
    ``ws_url``, record through it instead of throwing the trading run off."""
    from btlive.theta.fanout import find_fanout

    advert = find_fanout(ws_url)
    if advert is None:
        return ws_url
    print(f"a trading run (pid {advert.pid}) holds the Terminal stream at {ws_url}; "
          f"recording through its fan-out {advert.url}", file=sys.stderr, flush=True)
    return advert.url


def _loop(args, store, recorder, sink, session: Session, stop: threading.Event) -> str | None:
    """Status lines until a signal, ``--duration`` or a failure (returned)."""
    started = last_t = time.monotonic()
    last_msgs = 0
    while not stop.wait(args.status_interval):
        store.call_soon(sink.flush)
        now = time.monotonic()
        rate = (sink.messages - last_msgs) / max(now - last_t, 1e-9)
        last_msgs, last_t = sink.messages, now
        status = _status(store.stream, recorder, sink, rate, session)
        _show(args, status, session)
        failure = session.failure()
        if failure:
            return failure
        if args.duration is not None and now - started >= args.duration:
            return None
    return None


def _show(args, status: dict, session: Session) -> None:
    while session.lines:  # events on their own lines, even with --quiet
        print(("\r" if not args.quiet else "") + session.lines.popleft() + " " * 8,
              file=sys.stderr, flush=True)
    if not args.quiet:
        print("\r" + _status_line(status), end="", file=sys.stderr, flush=True)
    if args.stats_file:
        _write_json(args.stats_file, status)


def _finish(args, store, recorder, sink, session: Session, stream) -> None:
    """Flush everything, close, and print the final status (``stream`` kept its counters)."""
    try:
        store.run_sync(_stop_and_flush(store, sink), 10)
    except (TimeoutError, RuntimeError, OSError) as exc:  # still close the recorder
        print(f"\nfinal flush failed: {exc}", file=sys.stderr)
    store.close()
    recorder.close()
    status = _status(stream, recorder, sink, 0.0, session)
    status["closed"] = True
    if args.stats_file:
        _write_json(args.stats_file, status)
    while session.lines:
        print("\r" + session.lines.popleft(), file=sys.stderr)
    if not args.quiet:
        print("\n" + _status_line(status), file=sys.stderr)


async def _stop_and_flush(store, sink) -> None:
    """Stop reading first, so every counted message reaches the recorder."""
    if store.stream is not None:
        await store.stream.stop()
    sink.closed = True
    sink.flush(final=True)


def _status(stream, recorder, sink, rate: float, session: Session) -> dict:
    rs = recorder.stats
    lag_ms = (time.time_ns() - sink.last_tick_ns) / 1e6 if sink.last_tick_ns else None
    stats = stream.stats if stream is not None else {}
    return {
        "messages": sink.messages, "msgs_per_s": round(rate, 1), "symbols": rs.get("symbols", 0),
        "lag_ms": round(lag_ms, 1) if lag_ms is not None else None,
        "flushes": rs.get("flushes", 0), "rows": rs.get("rows", 0),
        "acked_rows": rs.get("staged_rows", 0), "late_rows": rs.get("late_rows", 0),
        "errors": rs.get("errors", 0), "bad_rows": sink.bad_rows,
        "connected": session.connected,
        "down_s": None if session.connected else round(time.monotonic() - session.since, 1),
        "connect_failures": stats.get("connect_failures", 0),
        "reconnects": stats.get("reconnects", 0), "malformed": stats.get("malformed", 0),
        "unknown_contracts": sorted(set(session.unknown)),
        "events": [f"{e.kind}: {e.detail}" for e in list(session.events)[-5:]],
    }


def _status_line(s: dict) -> str:
    lag = f"{s['lag_ms']:.0f}ms" if s["lag_ms"] is not None else "-"
    conn = "up" if s["connected"] else f"DOWN {s['down_s']:.0f}s"
    return (f"msgs={s['messages']} rate={s['msgs_per_s']:.0f}/s symbols={s['symbols']} "
            f"lag={lag} flushes={s['flushes']} acked={s['acked_rows']} conn={conn} "
            f"connect_failures={s['connect_failures']} reconnects={s['reconnects']} "
            f"bad={s['malformed'] + s['bad_rows']}   ")


def _write_json(path: str, data: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
