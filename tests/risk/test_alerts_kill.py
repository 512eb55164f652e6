"""SIGKILL a process with pending alerts: the next start sends each of them exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from btlive.alerts import Dispatcher, EmailChannel, Outbox
from btlive.runtime import Backoff

CHILD = Path(__file__).with_name("alert_kill_child.py")


@pytest.mark.slow
def test_killed_with_pending_alerts_then_restart_sends_each_once(tmp_path, kit):
    url = f"sqlite:///{tmp_path / 'alerts.db'}"
    port = kit.free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen([sys.executable, str(CHILD), url, str(port)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        line = child.stdout.readline()
        assert line.strip() == "ready 3", child.stderr.read() if child.poll() is not None else line
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL

    outbox = Outbox(url)
    try:
        pending = outbox.pending()
        assert [p.channel for p in pending] == ["email"] * 3  # the log channel had delivered
        assert all(p.attempts == 1 for p in pending)
        ids = [a["alert_id"] for a in outbox.alerts()]
        assert [a["kind"] for a in outbox.alerts()] == ["firing", "firing", "resolved"]

        with kit.smtp() as server:
            channel = EmailChannel("127.0.0.1", server.port, sender="btlive@example.com",
                                   recipients=["risk@example.com"], security="plain", timeout=2)
            fast = Backoff(initial=0.01, maximum=0.05, attempts=2)
            with Dispatcher([channel], outbox=outbox, retry=fast) as dispatcher:
                assert dispatcher.flush(15)
            assert sorted(server.recorder.alert_ids()) == sorted(ids)
            assert outbox.pending() == []
            # a second restart has nothing left to send
            with Dispatcher([channel], outbox=outbox, retry=fast) as dispatcher:
                assert dispatcher.flush(5)
            assert len(server.recorder.messages) == 3
            subjects = [m["Subject"] for m in server.recorder.messages]
            assert sum("WARNING FIRING" in s for s in subjects) == 1
            assert sum("CRITICAL RESOLVED" in s for s in subjects) == 1
    finally:
        outbox.close()
