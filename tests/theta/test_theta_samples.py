"""The ThetaData samples: near-the-money picks and a one-line error without a Terminal."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def test_theta_backtest_without_a_terminal_is_one_line():
    out = subprocess.run([sys.executable, str(SAMPLES / "theta_backtest.py"), "--rest-url",
                          "http://127.0.0.1:9"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
    assert "no Theta Terminal at http://127.0.0.1:9" in out.stderr and "--sim" in out.stderr


@pytest.mark.slow
def test_theta_record_sample_records_options_near_the_money():
    out = subprocess.run([sys.executable, str(SAMPLES / "theta_record.py"), "--sim",
                          "--seconds", "3"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    m = re.search(r"SPY at ([\d.]+): recording the (\d{8}) ([\d.]+) call and put", out.stdout)
    assert m, out.stdout
    spot, strike = float(m.group(1)), float(m.group(3))
    assert abs(strike - spot) <= 2.5, (spot, strike)  # the nearest listed strike
    assert f"ticks/quote/SPY_{m.group(2)}_C{strike:g}" in out.stdout
