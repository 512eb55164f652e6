"""``btlive parity STRATEGY --config FILE [--recording URI] [--json]``."""

from __future__ import annotations


def configure(parser) -> None:
    parser.description = ("Run STRATEGY in paper mode against the bundled TWS simulator while "
                          "recording its feeds, then backtest it on that recording; print the "
                          "orders side by side and exit 1 naming the first decision that "
                          "differs.")
    parser.add_argument("strategy", nargs="?", metavar="STRATEGY")
    parser.add_argument("--config", metavar="FILE", help="btlive TOML config")
    parser.add_argument("--param", action="append", default=[], metavar="K=V")
    parser.add_argument("--bars", type=int, default=60, help="live bars to record (default 60)")
    parser.add_argument("--recording", metavar="URI",
                        help="compare on an existing recording (not available yet)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def run(args) -> int:
    import json
    import sys

    from btlive.errors import UsageError
    from btlive.run.parity import print_report, record_and_compare

    if args.recording:
        raise UsageError("--recording: not available yet: the TWS simulator's replay stamps "
                         "real-time bars with wall-clock time, so a paper run on a replay cannot "
                         "see the recorded bars; run without --recording (it records a session)")
    if args.bars < 1:
        raise UsageError(f"--bars {args.bars}: must be >= 1")
    result = record_and_compare(args.config, strategy=args.strategy, params=args.param,
                                bars=args.bars)
    if args.json:
        print(json.dumps({k: result[k] for k in ("identical", "first_difference", "backtest",
                                                 "paper")}))
    else:
        print_report(result, sys.stdout)
    return 0 if result["identical"] else 1
