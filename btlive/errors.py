"""The command line's error vocabulary and secret redaction (stdlib only, imported by anyone).

A command raises :class:`UsageError` (exit 2: the input is wrong, say which and how to fix
it) or :class:`CommandError` (exit 1: the input is fine, the work failed). ``btlive.cli``
prints either as one line, ``btlive GROUP COMMAND: error: MESSAGE``, never a traceback, and
maps common library errors the same way. Every line btlive prints passes :func:`redact`.
"""

from __future__ import annotations

import re


class CliError(Exception):
    """An error the command line prints as one line and exits with ``exit_code``."""

    exit_code = 1


class UsageError(CliError, ValueError):
    """Bad input: an option, a file or a setting. The message names it and what to do."""

    exit_code = 2


class CommandError(CliError):
    """Valid input, failed work (a store that does not exist, a server that does not answer)."""

    exit_code = 1


_SECRET_KEYS = r"secret|secret_?key|access|access_?key|[a-z_]*password|passwd|pwd|token|api_?key|accountkey|sig"
_QUERY_SECRET = re.compile(rf"(?i)\b({_SECRET_KEYS})=([^&;\s'\"]+)")
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^/\s:@'\"]*):([^@/\s'\"]+)@")


def redact(text: str) -> str:
    """``text`` with credentials in URIs and connection strings replaced by ``***``:
    ``secret=``/``access=``/``password=``/``token=``-like values and ``user:password@``."""
    if "=" not in text and "@" not in text:
        return text
    text = _QUERY_SECRET.sub(lambda m: f"{m.group(1)}=***", text)
    return _USERINFO.sub(lambda m: f"{m.group(1)}:***@", text)
