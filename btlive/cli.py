"""The ``btlive`` command (also ``python -m btlive``).

Each command group lives next to the code it drives: a module named in
``COMMANDS`` exposes ``register(subparsers)``, which adds its sub-commands and
sets ``func`` on each. Heavy imports happen inside those functions so that
``btlive --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

COMMANDS: dict[str, tuple[str, list[str]]] = {
    "arctic": ("ArcticDB: import CSV, list symbols, snapshot and compact", ["btlive.arctic.cli"]),
    "sim": ("simulators: a TWS and a Theta Terminal that real clients connect to",
            ["btlive.sim.tws.cli", "btlive.sim.theta.cli"]),
    "record": ("record live streams into ArcticDB", ["btlive.theta.cli"]),
    "audit": ("SQL execution audit: verify the hash chain, print reports", ["btlive.audit.cli"]),
    "alerts": ("CVaR alerts: send a test alert, list or flush pending deliveries", ["btlive.alerts.cli"]),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="btlive",
        description="btlive: backtrader plugins for IB, ThetaData, ArcticDB, CVaR alerts and SQL audit.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    groups = parser.add_subparsers(dest="group", metavar="COMMAND")
    for group, (help_text, modules) in COMMANDS.items():
        group_parser = groups.add_parser(group, help=help_text, description=help_text)
        subparsers = group_parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
        for module in modules:
            importlib.import_module(module).register(subparsers)
        group_parser.set_defaults(func=lambda args, p=group_parser: p.print_help() or 2)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
