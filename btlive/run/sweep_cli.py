"""``btlive optimize`` and ``btlive walkforward``: parameter sweeps on Ray.

Both groups name this module in ``btlive.cli.COMMANDS``; :func:`configure` tells them apart by
the parser's name.
"""

from __future__ import annotations

import sys


def configure(parser) -> None:
    command = parser.prog.split()[-1]
    parser.add_argument("strategy", nargs="?", metavar="STRATEGY",
                        help="package.module:Class or path/to/file.py:Class (default: [strategy] class)")
    parser.add_argument("--config", metavar="FILE", help="btlive TOML config (as for btlive run)")
    parser.add_argument("--grid", action="append", metavar="NAME=SPEC",
                        help="a strategy param and its values: START:STOP[:STEP] (STOP included) "
                             "or V1,V2,...; repeat for more params")
    parser.add_argument("--objective",
                        choices=["sharpe", "return", "pnl", "max_drawdown", "win_rate", "cvar"],
                        help="what ranks the combinations (default sharpe, or the resumed "
                             "sweep's; max_drawdown and cvar: lower is better)")
    parser.add_argument("--address", metavar="ADDRESS",
                        help="join this Ray cluster (default: start a local Ray instance)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="parallel backtests (default: the cores here, or the cluster's CPUs)")
    parser.add_argument("--db", metavar="URL", default=None,
                        help="results database: SQLite file or PostgreSQL URL "
                             "(default sqlite:///btlive_sweeps.db)")
    parser.add_argument("--from", dest="fromdate", metavar="DATE", help="first bar (YYYY-MM-DD)")
    parser.add_argument("--to", dest="todate", metavar="DATE", help="last bar (YYYY-MM-DD)")
    parser.add_argument("--top", type=int, default=20, metavar="N", help="rows of the ranked table")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress line")
    if command == "walkforward":
        parser.description = ("Walk-forward: on each training window a sweep picks the best "
                              "params by the objective; a backtest on the following test window "
                              "runs with them. Prints each window and the stitched "
                              "out-of-sample equity curve.")
        parser.add_argument("--train", required=True, metavar="SPAN", help="training span: 6M, 2W, 30D, 1Y")
        parser.add_argument("--test", required=True, metavar="SPAN", help="test span: 1M, ...")
        parser.add_argument("--step", metavar="SPAN", help="shift between windows (default: --test)")
        parser.add_argument("--curve", metavar="FILE.csv", help="write the stitched equity curve")
        parser.add_argument("--plot", metavar="FILE.png", help="plot the stitched equity curve")
        parser.set_defaults(func=walkforward)
    else:
        parser.description = ("Run every combination of the grid as one backtest (exactly what "
                              "btlive run --mode backtest runs) on Ray; results go to SQL; "
                              "prints the ranked table.")
        parser.add_argument("--resume", metavar="SWEEP_ID",
                            help="run only the combinations of this sweep that have no result")
        parser.add_argument("--plot", metavar="FILE.png", help="heat map of a two-parameter grid")
        parser.set_defaults(func=optimize)


def optimize(args) -> int:
    from btlive.errors import UsageError
    from btlive.run.sweep import DEFAULT_DB, heat_axes, heatmap, optimize, parse_grid, print_ranking

    grid = parse_grid(args.grid) if args.grid else None
    if grid is None and not args.resume:
        raise UsageError("no --grid: give at least one, e.g. --grid fast=5:30:5")
    if args.plot and grid is not None:
        heat_axes(grid)
    outcome = optimize(args.config, args.strategy, grid, objective=args.objective or "sharpe",
                       db=args.db or DEFAULT_DB, address=args.address, workers=args.workers,
                       resume=args.resume, fromdate=args.fromdate, todate=args.todate,
                       progress=None if args.quiet else sys.stderr)
    spec = outcome.spec
    objective = args.objective or spec.objective
    print(f"sweep {spec.sweep_id}: {spec.strategy} on {_versions(spec.versions)}; "
          f"{outcome.ran} run now, {len(outcome.results)} stored")
    print_ranking(outcome.results, objective, sys.stdout, args.top)
    if args.plot:
        heatmap(outcome.results, spec.grid, objective, args.plot)
    if outcome.interrupted:
        print(f"interrupted: resume with btlive optimize --resume {spec.sweep_id}"
              f"{' --db ' + args.db if args.db else ''}", file=sys.stderr)
        return 130
    return 0


def walkforward(args) -> int:
    from btlive.errors import UsageError
    from btlive.run.sweep import DEFAULT_DB, parse_grid
    from btlive.run.walkforward import print_report, walk_forward

    if not args.grid:
        raise UsageError("no --grid: give at least one, e.g. --grid fast=5:30:5")
    report = walk_forward(args.config, args.strategy, parse_grid(args.grid), train=args.train,
                          test=args.test, step=args.step, objective=args.objective or "sharpe",
                          db=args.db or DEFAULT_DB, address=args.address, workers=args.workers,
                          fromdate=args.fromdate, todate=args.todate,
                          progress=None if args.quiet else sys.stderr)
    print_report(report, sys.stdout)
    if args.curve:
        report.write_curve(args.curve)
    if args.plot:
        report.plot(args.plot)
    return 130 if report.interrupted else 0


def _versions(versions: dict) -> str:
    return ", ".join(f"{symbol}@{version}" for symbol, version in versions.items()) or "-"
