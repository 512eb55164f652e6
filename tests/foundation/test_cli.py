"""The command line and the package surface that every later piece relies on."""

from __future__ import annotations

import subprocess
import sys

import btlive
from btlive.config import Secret, load_config, secret


def test_python_m_btlive_help_lists_every_group():
    out = subprocess.run([sys.executable, "-m", "btlive", "--help"], capture_output=True, text=True, check=True)
    for group in ("arctic", "sim", "record", "audit", "alerts"):
        assert group in out.stdout


def test_public_names_resolve():
    for name in ("IBStore", "IBData", "IBBroker", "ThetaStore", "ThetaData", "ArcticData", "ArcticRecorder"):
        assert isinstance(getattr(btlive, name), type), name
    assert isinstance(btlive.analyzers.CVaR, type)
    assert isinstance(btlive.analyzers.ExecutionAudit, type)
    assert isinstance(btlive.observers.CVaR, type)
    assert callable(btlive.risk.expected_shortfall)


def test_secret_never_shows_its_value(monkeypatch, tmp_path):
    monkeypatch.setenv("BTLIVE_TEST_TOKEN", "hunter2")
    token = secret("BTLIVE_TEST_TOKEN")
    assert token.reveal() == "hunter2"
    assert "hunter2" not in repr(token) and "hunter2" not in str(token) and "hunter2" not in f"{token}"
    monkeypatch.delenv("BTLIVE_TEST_TOKEN")
    path = tmp_path / "token"
    path.write_text("s3cret\n")
    monkeypatch.setenv("BTLIVE_TEST_TOKEN_FILE", str(path))
    assert secret("BTLIVE_TEST_TOKEN") == Secret("s3cret")


def test_load_config_reads_named_file_and_rejects_missing(tmp_path):
    config = tmp_path / "btlive.toml"
    config.write_text('[alerts]\nrepeat_interval = "4h"\n')
    assert load_config(config) == {"alerts": {"repeat_interval": "4h"}}
    missing = tmp_path / "nope.toml"
    try:
        load_config(missing)
    except FileNotFoundError as exc:
        assert "nope.toml" in str(exc)
    else:
        raise AssertionError("a named config that does not exist must be an error")


def test_build_is_exported():
    from btlive.run import build

    assert btlive.build is build
