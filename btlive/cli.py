"""The ``btlive`` command (also ``python -m btlive``).

Each command group lives next to the code it drives: a module named in
``COMMANDS`` exposes ``register(subparsers)``, which adds its sub-commands and
sets ``func`` on each. Only the group named on the command line is imported, so
``btlive --help`` stays fast and one group's import problem cannot break another.

Errors end in one line, ``btlive GROUP COMMAND: error: MESSAGE``, never a traceback
(``-vv`` adds it): :class:`btlive.errors.UsageError` exits 2, :class:`~btlive.errors.CommandError`
1, and common library errors are mapped the same way (:func:`_classify`). Everything
printed, by btlive or a library, passes :func:`btlive.errors.redact`.
"""

from __future__ import annotations

import argparse
import importlib
import io
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from btlive.errors import CliError, redact

COMMANDS: dict[str, tuple[str, list[str]]] = {
    "arctic": ("ArcticDB: import CSV, list symbols, snapshot and compact", ["btlive.arctic.cli"]),
    "sim": ("simulators: a TWS and a Theta Terminal that real clients connect to",
            ["btlive.sim.tws.cli", "btlive.sim.theta.cli"]),
    "record": ("record live streams into ArcticDB", ["btlive.theta.cli"]),
    "audit": ("SQL execution audit: verify the hash chain, print reports", ["btlive.audit.cli"]),
    "alerts": ("CVaR alerts: send a test alert, list or flush pending deliveries", ["btlive.alerts.cli"]),
    "run": ("run a strategy in backtest, paper or live mode", ["btlive.run.cli"]),
    "config": ("the btlive.toml config: check a file, write an example, print the reference",
               ["btlive.run.config_cli"]),
    "parity": ("run a strategy in backtest and paper on the same market; compare the orders",
               ["btlive.run.parity_cli"]),
    "optimize": ("parameter sweep on Ray: every grid combination is one backtest",
                 ["btlive.run.sweep_cli"]),
    "walkforward": ("walk-forward on Ray: fit on each training window, test on the next",
                    ["btlive.run.sweep_cli"]),
    "kill": ("stop a running run: refuse new orders, cancel its open orders, optionally flatten",
             ["btlive.ops.cli"]),
}


class _Parser(argparse.ArgumentParser):
    """argparse with redacted messages (a bad value may be a URI with a secret in it)."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {redact(message)}\n")


def _version() -> str:
    from btlive import __version__

    return f"btlive {__version__}"


def build_parser(groups: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the groups in ``groups`` (default: all) get their sub-commands."""
    parser = _Parser(
        prog="btlive",
        description="btlive: backtrader plugins for IB, ThetaData, ArcticDB, CVaR alerts and SQL audit.",
    )
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    subparsers = parser.add_subparsers(dest="group", metavar="COMMAND")
    for group, (help_text, modules) in COMMANDS.items():
        group_parser = subparsers.add_parser(group, help=help_text, description=help_text)
        group_parser.set_defaults(func=lambda args, p=group_parser: p.print_help() or 2)
        if groups is not None and group not in groups:
            continue
        loaded = [importlib.import_module(module) for module in modules]
        if hasattr(loaded[0], "configure"):  # the group is the command: btlive run STRATEGY
            loaded[0].configure(group_parser)
            continue
        commands = group_parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
        for module in loaded:
            module.register(commands)
    return parser


def _selected_group(argv: Sequence[str]) -> list[str]:
    """The group named on the command line (the first word that is one), if any."""
    return [word for word in argv if word in COMMANDS][:1]


class _RedactingStream(io.TextIOBase):
    """A text stream that redacts credentials before they reach the real one."""

    def __init__(self, target):
        self._target = target

    def write(self, text: str) -> int:
        self._target.write(redact(text))
        return len(text)

    def flush(self) -> None:
        self._target.flush()

    def isatty(self) -> bool:
        return self._target.isatty()

    def fileno(self) -> int:
        return self._target.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._target, "encoding", "utf-8")

    def __getattr__(self, name: str):  # buffer, line_buffering, ...: the real stream's
        return getattr(self._target, name)


def _classify(exc: BaseException) -> tuple[int, str]:
    """(exit code, one-line message) for an exception that escaped a command."""
    if isinstance(exc, CliError):
        return exc.exit_code, str(exc)
    if isinstance(exc, FileNotFoundError | IsADirectoryError | NotADirectoryError):
        name = exc.filename if exc.filename is not None else ""
        return 2, f"{name}: {exc.strerror or exc}" if name else str(exc)
    if isinstance(exc, PermissionError) and exc.filename is not None:
        return 1, f"{exc.filename}: permission denied"
    if isinstance(exc, ValueError) and type(exc).__module__ in ("builtins", "tomllib"):
        return 2, str(exc)
    if isinstance(exc, OSError):
        return 1, (f"{exc.filename}: " if exc.filename else "") + (exc.strerror or str(exc)
                                                                  or type(exc).__name__)
    module = type(exc).__module__.split(".")[0]
    if module.startswith("btlive") or module in ("arcticdb", "arcticdb_ext", "sqlalchemy"):
        return 1, str(exc) or type(exc).__name__
    return 1, f"unexpected {type(exc).__name__}: {exc} (run with -vv for the traceback)"


def _one_line(message: str, limit: int = 600) -> str:
    """The first line of ``message`` (SQL and C++ errors run on for pages), whitespace folded."""
    lines = [ln.strip() for ln in str(message).splitlines() if ln.strip()]
    text = " ".join(lines[0].split()) if lines else ""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _RedactingStream(saved[0]), _RedactingStream(saved[1])
    # ArcticDB's own console log repeats what its exceptions say; -v keeps it.
    quiet = "BTLIVE_ARCTICDB_LOGLEVEL" not in os.environ and not any(
        a in ("-v", "-vv", "--verbose") for a in argv)
    if quiet:
        os.environ["BTLIVE_ARCTICDB_LOGLEVEL"] = "OFF"
    try:
        return _main(argv)
    finally:
        if quiet:
            os.environ.pop("BTLIVE_ARCTICDB_LOGLEVEL", None)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        sys.stdout, sys.stderr = saved


def _main(argv: list[str]) -> int:
    parser = build_parser(_selected_group(argv))
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    prog = " ".join(["btlive", *(x for x in (args.group, getattr(args, "command", None)) if x)])
    return run_command(prog, lambda: args.func(args), verbose=args.verbose)


def run_command(prog: str, func: Callable[[], int | None], verbose: int = 0) -> int:
    """Run ``func`` and turn what escapes it into an exit code and one line on stderr,
    ``PROG: error: MESSAGE`` (with the traceback too when ``verbose >= 2``).

    ``btlive`` runs every command through it; samples and scripts can too."""
    try:
        return int(func() or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(f"{prog}: error: {_one_line(redact(exc.code))}", file=sys.stderr)
            return 1
        raise
    except Exception as exc:  # noqa: BLE001 - every failure ends in one line; -vv shows the trace
        code, message = _classify(exc)
        if verbose >= 2:
            print(redact("".join(traceback.format_exc())), file=sys.stderr, end="")
        print(f"{prog}: error: {_one_line(redact(message))}", file=sys.stderr)
        return code

if __name__ == "__main__":
    sys.exit(main())
