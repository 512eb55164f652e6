"""``btlive run STRATEGY --mode backtest|paper|live ...``."""

from __future__ import annotations


def configure(parser) -> None:
    parser.description = ("Run STRATEGY (package.module:Class or path/to/file.py:Class; default "
                          "[strategy] class) with the feeds, broker, risk checks and analyzers "
                          "of the config; print the summary at the end.")
    parser.add_argument("strategy", nargs="?", metavar="STRATEGY")
    parser.add_argument("--mode", choices=["backtest", "paper", "live"], default="backtest")
    parser.add_argument("--config", metavar="FILE",
                        help="btlive TOML config (default: $BTLIVE_CONFIG, ./btlive.toml, "
                             "~/.config/btlive/btlive.toml)")
    parser.add_argument("--param", action="append", default=[], metavar="K=V",
                        help="override a strategy param (repeatable); converted to the "
                             "default's type")
    parser.add_argument("--from", dest="fromdate", metavar="DATE", help="first bar (YYYY-MM-DD)")
    parser.add_argument("--to", dest="todate", metavar="DATE", help="last bar (YYYY-MM-DD)")
    parser.add_argument("--plot", metavar="FILE.png", help="save backtrader's plot (headless)")
    parser.add_argument("--summary-json", metavar="PATH", help="write the summary as JSON")
    parser.add_argument("--sim", action="store_true",
                        help="start the bundled simulators the config points at: TWS on the "
                             "broker's port (paper/live), the Theta Terminal for theta feeds")
    parser.add_argument("--live", action="store_true", help="confirm live trading")
    parser.add_argument("--stop-after", type=int, metavar="N",
                        help="paper/live: stop after N bars of live data")
    parser.add_argument("--resume", metavar="RUN_ID",
                        help="paper/live: continue RUN_ID after a crash or a kill, with the same "
                             "run id in the audit; the orders it left working at TWS are "
                             "handled by [recovery] policy (report, cancel or adopt)")
    parser.add_argument("--reproduce", metavar="RUN_ID",
                        help="rerun a recorded backtest (run id or summary JSON) on exactly "
                             "the ArcticDB versions it read")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress or status line")
    parser.add_argument("--monitor-port", type=int, metavar="PORT",
                        help="serve the monitoring page on 127.0.0.1:PORT (0: any free port; "
                             "default [monitor] port, off)")
    parser.add_argument("--metrics-port", type=int, metavar="PORT",
                        help="serve Prometheus metrics on 127.0.0.1:PORT/metrics (default "
                             "[metrics] port, off)")
    parser.add_argument("--log-format", choices=["text", "json"],
                        help="log lines as text or JSON, with the run id on every line")
    parser.set_defaults(func=run)


def run(args) -> int:
    import sys

    from btlive.run.session import run as run_session
    from btlive.run.wiring import new_run_id

    if args.resume and args.reproduce:
        from btlive.errors import UsageError

        raise UsageError("--resume continues a paper/live run, --reproduce reruns a backtest: "
                         "give one of them")
    run_id = args.resume or new_run_id()
    if args.log_format:  # before anything logs, with the run id on every line
        from btlive.ops import configure_logging

        configure_logging(args.log_format, run_id=run_id)
    config, strategy, params = args.config, args.strategy, args.param
    fromdate, todate = args.fromdate, args.todate
    if args.reproduce:
        from btlive.errors import UsageError
        from btlive.run.records import load_record, reproduction

        if strategy or params or args.mode != "backtest" or args.config or fromdate or todate:
            raise UsageError("--reproduce takes the strategy, params, config, period and mode "
                             "from the run record: give none of STRATEGY, --param, --config, "
                             "--from, --to, --mode")
        config, period = reproduction(load_record(args.reproduce))
        fromdate, todate = period["fromdate"], period["todate"]
    from btlive.run import progress

    if args.quiet:  # the download and backfill bars too, not only the status line
        progress.set_mode("off")
    try:
        summary = run_session(config, args.mode, strategy=strategy, params=params,
                              fromdate=fromdate, todate=todate, sim=args.sim,
                              live=args.live, plot=args.plot, summary_json=args.summary_json,
                              status=None if args.quiet else sys.stderr,
                              stop_after=args.stop_after, monitor_port=args.monitor_port,
                              metrics_port=args.metrics_port, run_id=run_id,
                              resume=bool(args.resume))
    finally:
        progress.set_mode(None)
    return exit_code(summary)


def exit_code(summary: dict) -> int:
    """0, or 1 after a kill that could not cancel or flatten everything."""
    kill = summary.get("kill")
    return 1 if kill and not kill.get("ok") else 0
