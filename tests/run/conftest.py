"""Fixtures for the runner tests: a config file in a temporary folder with its own ArcticDB."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(autouse=True)
def run_dir(tmp_path, monkeypatch):
    """Run files and run records of the tests' runs go under tmp_path, not ~/.btlive."""
    path = tmp_path / "runs"
    monkeypatch.setenv("BTLIVE_RUN_DIR", str(path))
    return path


@pytest.fixture
def sma_config(tmp_path, monkeypatch):
    """The `btlive config init` example as a dict, reading an ArcticDB under tmp_path."""
    from btlive.run.examples import SMA

    monkeypatch.chdir(tmp_path)
    raw = tomllib.loads(SMA)
    raw["data"][0]["uri"] = f"lmdb://{tmp_path}/arctic"
    raw["strategy"]["params"] = {"fast": 3, "slow": 8, "stake": 10}
    return raw


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
