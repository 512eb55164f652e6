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
                        help="paper/live: start the bundled TWS simulator on the broker's port")
    parser.add_argument("--live", action="store_true", help="confirm live trading")
    parser.add_argument("--stop-after", type=int, metavar="N",
                        help="paper/live: stop after N bars of live data")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress or status line")
    parser.set_defaults(func=run)


def run(args) -> int:
    import sys

    from btlive.run.session import run as run_session

    run_session(args.config, args.mode, strategy=args.strategy, params=args.param,
                fromdate=args.fromdate, todate=args.todate, sim=args.sim, live=args.live,
                plot=args.plot, summary_json=args.summary_json,
                status=None if args.quiet else sys.stderr, stop_after=args.stop_after)
    return 0
