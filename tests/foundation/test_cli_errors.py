"""Every command ends in one line on bad input, never a traceback, and never prints a secret."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from btlive.cli import build_parser, main
from btlive.errors import CommandError, UsageError, redact

ROOT = Path(__file__).resolve().parents[2]
SECRETS = ("S3SECRET", "AKIAFAKE", "ENVSECRET", "PWSECRET")
PLANTED = "s3://127.0.0.1:bkt?port=9&access=AKIAFAKE&secret=S3SECRET"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def leaf_commands():
    """(argv prefix, parser) for every registered command (a group may be the command)."""
    for group, group_parser in _subparsers(build_parser()).items():
        commands = _subparsers(group_parser)
        if not commands:
            yield [group], group_parser
        for command, parser in commands.items():
            yield [group, command], parser


def planted_runs() -> list[list[str]]:
    """One argv per command and text option: that option (and every positional) set to a URI
    with a secret; ports 0 so that a command that starts a server never takes a real port."""
    runs = []
    for prefix, parser in leaf_commands():
        actions = [a for a in parser._actions if a.nargs != 0 and a.dest != "help"]
        text = [a for a in actions if a.type in (None, str) and not a.choices]
        ports = [a for a in actions if a.option_strings and "port" in a.dest]
        base = list(prefix)
        for a in ports:
            base += [a.option_strings[0], "0"]
        for a in text:
            if a.option_strings and a.required:
                base += [a.option_strings[0], PLANTED]
        positionals = [PLANTED for a in text if not a.option_strings]
        options = [a for a in text if a.option_strings and not a.required] or [None]
        for option in options:
            argv = list(base)
            if option is not None:
                argv += [option.option_strings[0], PLANTED]
            runs.append(argv + positionals)
    return runs


def run_cli(argv: list[str], cwd: Path, timeout: float = 15.0) -> tuple[int | None, str]:
    env = dict(os.environ, BTLIVE_SMTP_PASSWORD="ENVSECRET", BTLIVE_TWILIO_TOKEN="PWSECRET",
               PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "btlive", *argv], cwd=cwd, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:  # a server that started: stop it, check what it printed
        proc.kill()
        out, _ = proc.communicate()
        return None, out
    return proc.returncode, out


@pytest.mark.slow
def test_no_command_prints_a_planted_secret_or_a_traceback(tmp_path):
    runs = planted_runs()
    assert len(runs) > 20
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda argv: run_cli(argv, tmp_path), runs))
    leaks, tracebacks = [], []
    for argv, (code, out) in zip(runs, results, strict=True):
        shown = " ".join(argv)
        if any(s in out for s in SECRETS):
            leaks.append(f"{shown}\n{out}")
        if "Traceback (most recent call last)" in out:
            tracebacks.append(f"{shown} -> {code}\n{out[-2000:]}")
    assert not leaks, "secret printed by:\n" + "\n\n".join(leaks)
    assert not tracebacks, "traceback from:\n" + "\n\n".join(tracebacks)


def test_errors_map_to_one_line_and_exit_codes(capsys, monkeypatch):
    import btlive.cli as cli

    def raising(exc):
        def func(args):
            raise exc
        return func

    cases = [
        (UsageError("--port 99999: not a TCP port"), 2, "--port 99999: not a TCP port"),
        (CommandError("no server at 127.0.0.1:1"), 1, "no server at 127.0.0.1:1"),
        (FileNotFoundError(2, "No such file or directory", "/nope.toml"), 2,
         "/nope.toml: No such file or directory"),
        (ValueError("bad --kinds 'x'\nsecond line"), 2, "bad --kinds 'x'"),
        (ConnectionRefusedError(111, "Connection refused"), 1, "Connection refused"),
        (KeyError("x"), 1, "unexpected KeyError: 'x' (run with -vv for the traceback)"),
        (RuntimeError(f"cannot open {PLANTED}"), 1, "access=***&secret=***"),
    ]
    for exc, code, text in cases:
        parser = build_parser(["arctic"])
        monkeypatch.setattr(cli, "build_parser", lambda groups, p=parser: p)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                action.choices["arctic"].set_defaults(func=raising(exc))
        assert main(["arctic"]) == code, exc
        err = capsys.readouterr().err
        assert err.startswith("btlive arctic: error: ") and err.count("\n") == 1, err
        assert text in err and "second line" not in err, err


def test_usage_errors_from_argparse_are_redacted(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["arctic", "compact", "--rows-per-segment", PLANTED])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "invalid int value" in err and "S3SECRET" not in err and "AKIAFAKE" not in err


@pytest.mark.parametrize("text, shown", [
    (PLANTED, "s3://127.0.0.1:bkt?port=9&access=***&secret=***"),
    ("postgresql://trader:pw123@db:5432/audit", "postgresql://trader:***@db:5432/audit"),
    ("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=K3y==;Container=c",
     "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=***;Container=c"),
    ("no secrets here", "no secrets here"),
])
def test_redact(text, shown):
    assert redact(text) == shown


def test_only_the_named_group_is_imported():
    code = ("import sys; from btlive.cli import main; main(['arctic', '--help'])")
    out = subprocess.run([sys.executable, "-c", code + "\n"], capture_output=True, text=True,
                         cwd=ROOT)
    assert "import" in out.stdout
    check = ("import sys\nfrom btlive.cli import build_parser\nbuild_parser(['arctic'])\n"
             "print(sorted(m for m in sys.modules if m.startswith('btlive.sim')))")
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
