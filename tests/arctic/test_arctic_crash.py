"""Crash safety: every row whose flush() returned survives a SIGKILL of the writer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from btlive.arctic.library import get_library
from btlive.arctic.recorder import ArcticRecorder

CHILD = r"""
import sys
from btlive.arctic.recorder import ArcticRecorder
T0 = 1_700_000_000_000_000_000
rec = ArcticRecorder(sys.argv[1], flush_rows=300, flush_seconds=0.01, finalize_seconds=3600)
i = 0
while i < 2_000_000:
    for _ in range(97):
        rec.record("ticks/trade/K", T0 + i * 1000, price=float(i), size=1.0)
        i += 1
    rec.flush()
    print(i, flush=True)
"""

T0 = 1_700_000_000_000_000_000


@pytest.mark.slow
def test_sigkill_loses_no_acknowledged_row(uri):
    child = subprocess.Popen([sys.executable, "-c", CHILD, uri], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    acked = 0
    try:
        deadline = time.monotonic() + 60
        while acked < 5_000 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            acked = int(line)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    assert acked >= 5_000, "child did not get going"

    lib = get_library(uri)
    assert lib.get_staged_symbols() == ["ticks/trade/K"]  # nothing was finalized before the kill
    with ArcticRecorder(uri, background=False) as rec:
        assert rec.stats["recovered_symbols"] == 1
    frame = lib.read("ticks/trade/K").data
    assert len(frame) >= acked
    head = frame.iloc[:acked]
    assert (head.index.asi8 == T0 + np.arange(acked) * 1000).all()
    assert (head["price"].to_numpy() == np.arange(acked, dtype=float)).all()
    assert (frame["seq"].to_numpy() == np.arange(len(frame))).all()
    assert lib.get_staged_symbols() == []


@pytest.mark.slow
def test_exit_without_close_still_writes_buffered_rows(uri):
    script = ("import sys\nfrom btlive.arctic.recorder import ArcticRecorder\n"
              "rec = ArcticRecorder(sys.argv[1], flush_seconds=3600, finalize_seconds=3600)\n"
              "for i in range(10):\n    rec.record('bars/1d/E', 1_000 + i, close=float(i))\n")
    done = subprocess.run([sys.executable, "-c", script, uri], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert get_library(uri).read("bars/1d/E").data["close"].tolist() == [float(i) for i in range(10)]
