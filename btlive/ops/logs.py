"""JSON-lines logging with the run id on every line and no secret in any line.

``configure_logging("json", run_id=...)`` replaces the root handlers with one that writes
``{"ts", "level", "logger", "run_id", "msg"[, "exc"]}`` per record; messages and tracebacks
pass :func:`btlive.errors.redact` (credentials in URIs and ``token=``-like values), and the
values of the environment's secrets (``BTLIVE_*PASSWORD``, ``*_TOKEN``, ...) are masked too.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from datetime import UTC, datetime
from typing import TextIO

from btlive.errors import redact

_SECRET_ENV = re.compile(r"(PASSWORD|TOKEN|SECRET|API_?KEY|ACCOUNTKEY|AUTH)", re.IGNORECASE)


def _env_secrets() -> list[str]:
    return sorted((v for k, v in os.environ.items() if _SECRET_ENV.search(k) and len(v) >= 6),
                  key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    text = redact(text)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line; ``run_id`` on every line."""

    def __init__(self, run_id: str | None = None) -> None:
        super().__init__()
        self.run_id = run_id
        self.secrets = _env_secrets()

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
               "level": record.levelname, "logger": record.name,
               "run_id": getattr(record, "run_id", None) or self.run_id,
               "msg": scrub(record.getMessage(), self.secrets)}
        if record.exc_info:
            out["exc"] = scrub(self.formatException(record.exc_info), self.secrets)
        return json.dumps(out, default=str)


class RedactingFormatter(logging.Formatter):
    """The text format, with the same scrubbing and the run id."""

    def __init__(self, run_id: str | None = None) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(run_id)s]: %(message)s")
        self.run_id = run_id
        self.secrets = _env_secrets()

    def format(self, record: logging.LogRecord) -> str:
        record.run_id = getattr(record, "run_id", None) or self.run_id or "-"
        return scrub(super().format(record), self.secrets)


def configure_logging(fmt: str = "text", run_id: str | None = None, level: int = logging.INFO,
                      stream: TextIO | None = None) -> logging.Handler:
    """Install one root handler writing ``fmt`` ("json" or "text") lines; returns it."""
    if fmt not in ("json", "text"):
        raise ValueError(f"log format {fmt!r} must be 'json' or 'text'")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonLogFormatter(run_id) if fmt == "json" else RedactingFormatter(run_id))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
