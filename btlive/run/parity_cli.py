"""``btlive parity STRATEGY --config FILE [--recording URI] [--json]``."""

from __future__ import annotations


def configure(parser) -> None:
    parser.description = ("Run STRATEGY in backtest and in paper mode against the bundled TWS "
                          "simulator on the same market: without --recording, paper first while "
                          "recording its feeds, then a backtest on that recording; with "
                          "--recording, a backtest on it and paper against the simulator "
                          "replaying it; for option legs ([[data]] legs), paper on the Theta "
                          "Terminal simulator's stream and then a backtest on its history. Print "
                          "the orders side by side and exit 1 naming the first decision that "
                          "differs.")
    parser.add_argument("strategy", nargs="?", metavar="STRATEGY")
    parser.add_argument("--config", metavar="FILE", help="btlive TOML config")
    parser.add_argument("--param", action="append", default=[], metavar="K=V")
    parser.add_argument("--bars", type=int, default=60,
                        help="live bars: to record, or the recording's last bars to replay as "
                             "real-time bars (the earlier ones are history) (default 60)")
    parser.add_argument("--recording", metavar="URI",
                        help="compare on an existing ArcticDB recording (e.g. lmdb://./arctic_data)")
    parser.add_argument("--library", default="btlive", help="library of --recording (btlive)")
    parser.add_argument("--speed", type=float, default=None,
                        help="replay speed, recorded seconds per second (default 50: 0.1 s per "
                             "5-second bar)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def run(args) -> int:
    import json
    import sys

    from btlive.errors import UsageError
    from btlive.run.parity import REPLAY_SPEED, print_report, record_and_compare, replay_and_compare

    if args.bars < 1:
        raise UsageError(f"--bars {args.bars}: must be >= 1")
    if args.speed is not None and (args.speed <= 0 or not args.recording):
        raise UsageError(f"--speed {args.speed:g}: needs --recording and a positive value")
    if args.recording:
        result = replay_and_compare(args.config, args.recording, library=args.library,
                                    strategy=args.strategy, params=args.param, bars=args.bars,
                                    speed=args.speed or REPLAY_SPEED)
    else:
        result = record_and_compare(args.config, strategy=args.strategy, params=args.param,
                                    bars=args.bars)
    if args.json:
        print(json.dumps({k: result[k] for k in ("identical", "first_difference", "backtest",
                                                 "paper")}))
    else:
        print_report(result, sys.stdout)
    return 0 if result["identical"] else 1
