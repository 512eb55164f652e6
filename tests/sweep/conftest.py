"""Fixtures for the sweep tests: bars in a fresh ArcticDB, a config reading them, one Ray."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.sweep.helpers import sweep_config  # noqa: E402 - needs ROOT on sys.path


def _s3_fixtures():
    """The moto S3 server fixture of the ArcticDB tests, shared rather than copied."""
    path = ROOT / "tests" / "arctic" / "test_arctic_s3.py"
    spec = importlib.util.spec_from_file_location("_sweep_arctic_s3", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.s3_server, module.s3_uri


s3_server, s3_uri = _s3_fixtures()


@pytest.fixture
def lmdb_uri(tmp_path) -> str:
    return f"lmdb://{tmp_path}/arctic"


@pytest.fixture
def config(lmdb_uri) -> dict:
    return sweep_config(lmdb_uri)


@pytest.fixture
def db(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/sweeps.db"


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray with two workers for every Ray test of the session."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             object_store_memory=80 * 1024 * 1024)
    yield ray
    ray.shutdown()

