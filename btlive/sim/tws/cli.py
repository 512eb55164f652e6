"""``btlive sim tws``: run the TWS simulator in the foreground."""

from __future__ import annotations

# option -> (type, default); flags left unset fall back to the config's [sim.tws] table
SETTINGS = {
    "host": (str, "127.0.0.1"), "port": (int, 7497), "accounts": (str, "DU123456"),
    "replay": (str, None), "library": (str, None), "speed": (float, 1.0),
    "timeframe": (str, "1min"),
    "faults": (str, None), "latency_ms": (float, 0.0), "seed": (int, 0),
    "tick_interval": (float, 0.25), "max_version": (int, 178),
    "unsubscribed": (str, ""), "account_refresh": (float, 180.0),
}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "tws", help="serve the TWS API simulator (ib_async / ib_insync connect to it)",
        description="Serve a simulated TWS on the API wire protocol. Prints one 'ready ...' "
                    "line when accepting connections; stops on SIGINT/SIGTERM. Unset options "
                    "come from the [sim.tws] table of the btlive config file.")
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 7497; 0 = any free port)")
    p.add_argument("--symbols", nargs="*", default=[], metavar="SYM",
                   help="extra symbols: SYM, SYM:price, SYM:IND, BASE.QUOTE:CASH (comma or "
                        "space separated)")
    p.add_argument("--accounts", help="comma-separated account codes (default DU123456)")
    p.add_argument("--replay", metavar="URI", help="replay an ArcticDB library (e.g. "
                   "lmdb://./arctic_data) instead of the random walk")
    p.add_argument("--library", help="ArcticDB library for --replay (default btlive)")
    p.add_argument("--speed", type=float, help="replay speed (2 = twice real time)")
    p.add_argument("--timeframe", help="bar symbols to replay when a symbol has no ticks: "
                   "bars/<timeframe>/<name> (default 1min; any recorder name: 5s, 15min, 1h, 1d, "
                   "1w ...)")
    p.add_argument("--faults", metavar="FILE", help="fault timeline file (see docs/sim.md)")
    p.add_argument("--latency-ms", type=float, help="order/cancel latency in ms")
    p.add_argument("--seed", type=int, help="random-walk seed")
    p.add_argument("--tick-interval", type=float,
                   help="seconds between market steps of a watched instrument (default 0.25)")
    p.add_argument("--pacing", action="store_true", default=None,
                   help="enforce IB's historical-data pacing rules (error 162)")
    p.add_argument("--always-open", action="store_true", default=None,
                   help="every instrument trades at any hour (friendlier than TWS, which "
                        "follows each instrument's trading hours)")
    p.add_argument("--unsubscribed", metavar="SYM,...",
                   help="symbols without an API market-data subscription (10089; delayed data "
                        "after reqMarketDataType 3)")
    p.add_argument("--account-refresh", type=float,
                   help="seconds between account-value updates (default 180, as TWS)")
    p.add_argument("--max-version", type=int, help="highest server version (default 178)")
    p.add_argument("--config", metavar="FILE", help="btlive TOML config (default: "
                   "$BTLIVE_CONFIG or the usual places)")
    p.set_defaults(func=run)


def resolve(args, config: dict) -> dict:
    """Flags first, then ``[sim.tws]`` from the config, then defaults; checks types."""
    table = config.get("sim", {}).get("tws", {})
    flags = {"symbols", "pacing", "always_open"}
    unknown = set(table) - set(SETTINGS) - flags
    if unknown:
        raise ValueError(f"[sim.tws] unknown keys {sorted(unknown)}; known: "
                         f"{sorted(set(SETTINGS) | flags)}")
    out = {}
    for name, (typ, default) in SETTINGS.items():
        value = getattr(args, name, None)
        if value is None:
            value = table.get(name, default)
        if value is not None:
            try:
                value = typ(value)
            except (TypeError, ValueError):
                raise ValueError(f"[sim.tws] {name} = {value!r}: expected {typ.__name__}") \
                    from None
        out[name] = value
    for flag in ("pacing", "always_open"):
        value = getattr(args, flag, None)
        out[flag] = bool(value if value is not None else table.get(flag, False))
    extra = table.get("symbols", [])
    if isinstance(extra, str):
        extra = [extra]
    out["symbols"] = [s.strip() for chunk in [*extra, *args.symbols] for s in chunk.split(",")
                      if s.strip()]
    return out


def run(args) -> int:
    import signal
    import sys
    import threading

    from btlive.config import load_config
    from btlive.errors import CommandError, UsageError

    from . import TwsSimulator
    from .faults import load_timeline

    opts = resolve(args, load_config(args.config))
    try:
        faults = load_timeline(opts["faults"]) if opts["faults"] else []
    except OSError as exc:
        raise UsageError(f"--faults {opts['faults']}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(f"--faults {opts['faults']}: {exc}") from None
    replay = None
    if opts["replay"]:
        from .replay import ArcticReplay
        try:
            replay = ArcticReplay(opts["replay"], library=opts["library"], speed=opts["speed"],
                                  timeframe=opts["timeframe"])
        except ValueError as exc:
            raise UsageError(f"--replay: {exc}") from None
        except (OSError, RuntimeError) as exc:
            raise CommandError(f"--replay: {exc}") from None
    try:
        sim = TwsSimulator(opts["host"], opts["port"], accounts=opts["accounts"].split(","),
                           symbols=opts["symbols"], seed=opts["seed"],
                           latency_ms=opts["latency_ms"], tick_interval=opts["tick_interval"],
                           pacing=opts["pacing"], faults=faults, replay=replay,
                           always_open=opts["always_open"],
                           unsubscribed=[x.strip() for x in opts["unsubscribed"].split(",")
                                         if x.strip()],
                           account_refresh=opts["account_refresh"],
                           max_version=opts["max_version"])
        sim.start()
    except OSError as exc:
        raise CommandError(f"cannot listen on --host {opts['host']} --port {opts['port']}: "
                           f"{exc.strerror or exc}") from None
    if sim.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"btlive sim tws: warning: listening on {sim.host}, not loopback; anyone who "
              "can reach this port can trade the simulated account", file=sys.stderr)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"ready tws {sim.host}:{sim.port} version {sim.version} "
          f"accounts {','.join(sim.accounts)}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
    return 0
