"""Run files: how ``btlive kill`` finds a running run and talks to it.

A run with a :class:`~btlive.ops.kill.KillSwitch` writes ``{run_dir}/{run_id}.json`` (mode
0600): its pid, the loopback port of its control socket and a random token. The control
protocol is one JSON line each way: ``{"token", "action": "kill", "flatten", "reason"}`` in,
the kill report out once the switch has done its work.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

RUN_DIR_ENV = "BTLIVE_RUN_DIR"


def default_run_dir() -> Path:
    return Path(os.environ.get(RUN_DIR_ENV) or Path.home() / ".btlive" / "runs")


@dataclass(slots=True)
class RunFile:
    run_id: str
    pid: int
    port: int
    token: str
    strategy: str = ""
    mode: str = ""
    started: str = ""
    client_id: int = 0  # the IB clientId: a resumed run needs it to find its orders at TWS

    def write(self, run_dir: Path) -> Path:
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / f"{self.run_id}.json"
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(self), fh)
        os.replace(tmp, path)
        return path

    @classmethod
    def read(cls, path: Path) -> RunFile:
        return cls(**json.loads(path.read_text()))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_runs(run_dir: Path) -> list[RunFile]:
    """The run files in ``run_dir`` whose process is still alive (stale ones are ignored)."""
    out = []
    for path in sorted(run_dir.glob("*.json")):
        try:
            run = RunFile.read(path)
        except (OSError, ValueError, TypeError):
            continue
        if pid_alive(run.pid):
            out.append(run)
    return out


def send_kill(run: RunFile, flatten: bool, reason: str, timeout: float) -> dict:
    """Ask the run to kill itself; returns its report. Raises OSError if it does not answer."""
    request = {"token": run.token, "action": "kill", "flatten": flatten, "reason": reason}
    with socket.create_connection(("127.0.0.1", run.port), timeout=10) as sock:
        sock.sendall(json.dumps(request).encode() + b"\n")
        sock.settimeout(timeout)
        with sock.makefile("rb") as reader:
            line = reader.readline()
    if not line:
        raise OSError("the run closed the control connection without a report")
    return json.loads(line)
