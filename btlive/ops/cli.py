"""``btlive kill [RUN_ID] [--flatten]``: stop a running run through its kill switch.

The run is found through its run file (see :mod:`btlive.ops.runfile`); with one live run
RUN_ID may be left out. If the run does not answer on its control port, ``--signal`` sends
it SIGTERM instead (which cancels but does not flatten unless the run says so).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from btlive.errors import CommandError, UsageError
from btlive.ops.runfile import default_run_dir, live_runs, send_kill

HELP = "stop a running run: refuse new orders, cancel its open orders, optionally flatten"


def configure(parser: argparse.ArgumentParser) -> None:
    """``btlive kill`` is itself the command (btlive.cli's ``configure`` hook)."""
    parser.add_argument("run_id", nargs="?", help="the run to stop (default: the only live run)")
    parser.add_argument("--flatten", action="store_true",
                        help="also close the run's positions with market orders")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="where runs write their run files (default: $BTLIVE_RUN_DIR or "
                             "~/.btlive/runs)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for the run's report (default 120)")
    parser.add_argument("--signal", action="store_true",
                        help="if the run does not answer, send it SIGTERM")
    parser.add_argument("--reason", default="btlive kill", help="recorded in the report")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=kill_command)


def register(subparsers) -> None:
    """The same command as a sub-command (``btlive ops kill``), for a group of ops commands."""
    configure(subparsers.add_parser("kill", help=HELP, description=HELP))


def kill_command(args: argparse.Namespace) -> int:
    run_dir = args.run_dir or default_run_dir()
    runs = live_runs(run_dir) if run_dir.is_dir() else []
    if args.run_id:
        runs = [r for r in runs if r.run_id == args.run_id]
        if not runs:
            raise UsageError(f"run_id={args.run_id!r}: no live run with that id in {run_dir}")
    elif not runs:
        raise UsageError(f"no live run in {run_dir} (give --run-dir or set BTLIVE_RUN_DIR)")
    elif len(runs) > 1:
        names = ", ".join(f"{r.run_id} (pid {r.pid}, {r.strategy})" for r in runs)
        raise UsageError(f"{len(runs)} live runs in {run_dir}: name one of {names}")
    run = runs[0]
    try:
        report = send_kill(run, args.flatten, args.reason, args.timeout)
    except OSError as exc:
        if not args.signal:
            raise CommandError(f"run {run.run_id} (pid {run.pid}) did not answer on its control "
                               f"port {run.port}: {exc}; retry with --signal to send SIGTERM") \
                from None
        os.kill(run.pid, signal.SIGTERM)
        print(f"run {run.run_id} did not answer ({exc}); sent SIGTERM to pid {run.pid}")
        return 1
    if "error" in report:
        raise CommandError(f"run {run.run_id}: {report['error']}")
    if args.json:
        json.dump(report, sys.stdout, indent=1)
        print()
    else:
        print(format_report(report))
    return 0 if report.get("ok") else 1


def format_report(report: dict) -> str:
    lines = [f"run {report['run_id']} halted ({report['reason']}); broker "
             f"{'connected' if report['connected'] else 'DISCONNECTED'}"]
    for title, key in (("cancelled", "cancelled"), ("NOT cancelled", "not_cancelled"),
                       ("flattened", "flattened"), ("NOT flattened", "not_flattened")):
        for item in report.get(key, []):
            what = (f"order {item['ref']} {item['side']} {item['size']:g} {item['data']} "
                    f"{item.get('type', '')}" if "ref" in item else
                    f"position {item['size']:g} {item['data']}")
            why = f": {item['why']}" if item.get("why") else ""
            lines.append(f"  {title}: {what.strip()}{why}")
    if report.get("refused"):
        lines.append(f"  refused {report['refused']} new order(s) after the halt")
    lines.append("done" if report.get("ok") else "INCOMPLETE: see the lines above")
    return "\n".join(lines)
