"""``btlive sim theta``: serve the Theta Terminal simulator until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse


def _port(text: str) -> int:
    """A TCP port, 0 for a free one (argparse names the option in its one-line error)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port}: must be 0..65535 (0 picks a free port)")
    return port


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "theta", help="serve the Theta Terminal simulator (REST v3, WebSocket, gRPC)",
        description="Serve a local Theta Terminal: v3 REST (+ auth stub), the /v1/events "
                    "WebSocket and the MDDS gRPC service the thetadata package calls. "
                    "Prints one 'ready ...' line naming every URL, stops on SIGINT/SIGTERM.")
    p.add_argument("--rest-port", type=_port, default=25503, help="REST v3 and auth port (25503)")
    p.add_argument("--ws-port", type=_port, default=25520, help="WebSocket port (25520)")
    p.add_argument("--grpc-port", type=_port, default=25590, help="gRPC MDDS port (25590)")
    p.add_argument("--tier", default="pro", choices=["free", "value", "standard", "pro"],
                   help="subscription tier: permissions, concurrency, stream caps (pro)")
    p.add_argument("--seed", type=int, default=1, help="synthetic market seed (1)")
    p.add_argument("--symbols", default="", help="comma-separated underlyings (SPY,QQQ,AAPL)")
    p.add_argument("--quote-ms", type=int, default=1000, help="quote grid per instrument, ms (1000)")
    p.add_argument("--trade-ms", type=int, default=5000, help="trade grid per instrument, ms (5000)")
    p.add_argument("--replay", metavar="URI", help="replay an ArcticDB recording (e.g. lmdb://./data)")
    p.add_argument("--library", default=None, help="ArcticDB library of the recording (btlive)")
    p.add_argument("--speed", type=float, default=1.0, help="replay speed, x real time (1.0)")
    p.add_argument("--rate", type=float, default=None, metavar="MSGS_PER_S",
                   help="firehose pace for the full trade stream (default: as fast as possible)")
    p.add_argument("--firehose", action="store_true",
                   help="full trade stream sends synthetic frames at --rate instead of model trades")
    p.add_argument("--page-rows", type=int, default=100_000, help="REST rows per page (100000)")
    p.add_argument("--concurrency", type=int, default=None, help="REST concurrency (tier default)")
    p.add_argument("--requests-per-minute", type=int, default=None,
                   help="REST rate limit, 429 beyond it (off; 30 mimics the free tier)")
    p.add_argument("--max-rows", type=int, default=2_000_000,
                   help="larger answers get 570 LARGE_REQUEST (2000000)")
    p.add_argument("--always-open", action="store_true",
                   help="trade 24 hours on every day (default: NYSE calendar, sessions, holidays)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from btlive.errors import CommandError
    from btlive.sim.theta import ThetaSimulator

    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()] or None
    sim = ThetaSimulator(rest_port=args.rest_port, ws_port=args.ws_port, grpc_port=args.grpc_port,
                         tier=args.tier, seed=args.seed, symbols=symbols, replay_uri=args.replay,
                         replay_library=args.library, speed=args.speed, quote_ms=args.quote_ms,
                         trade_ms=args.trade_ms, firehose=args.firehose or args.rate is not None,
                         rate=args.rate, page_rows=args.page_rows, concurrency=args.concurrency,
                         requests_per_minute=args.requests_per_minute, max_rows=args.max_rows,
                         always_open=args.always_open)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        sim.start()
    except OSError as exc:
        raise CommandError(f"cannot start the simulator: {exc.strerror or exc}") from None
    try:
        print(sim.ready_line(), flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
    return 0
