"""Fixtures for the sweep tests: bars in a fresh ArcticDB, a config reading them, one Ray."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
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
def ray_session(tmp_path_factory):
    """One Ray with two workers for every Ray test of the session, started as its own process
    group (``ray start --head`` on 127.0.0.1, where test servers belong): a raylet spawned from
    a test process that had already run a thousand tests failed to come up in CI."""
    ray = pytest.importorskip("ray")
    from tests.conftest import free_port
    from tests.helpers import eventually

    port = free_port()
    log = tmp_path_factory.mktemp("ray") / "head.log"
    auth = {"RAY_AUTH_MODE": "disabled"}  # a loopback-only test cluster; ray reads it at import
    current = Path("/tmp/ray/ray_current_cluster")
    had_current = current.exists()
    with open(log, "w") as out:
        head = subprocess.Popen(
            [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
             f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
             f"--object-store-memory={80 * 1024 * 1024}", "--include-dashboard=false",
             "--disable-usage-stats"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=os.environ | auth)
    saved = {key: os.environ.get(key) for key in auth}
    try:
        eventually(lambda: "will now block" in log.read_text() or head.poll() is not None,
                   timeout=120, interval=0.5, what="ray start --head")
        assert head.poll() is None, log.read_text()
        os.environ.update(auth)
        ray.init(address=f"127.0.0.1:{port}", log_to_driver=False, configure_logging=False)
        yield ray
    finally:
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        os.killpg(head.pid, signal.SIGTERM)
        try:  # `ray start --block` takes ~30 s to wind down on SIGTERM: nothing is kept anyway
            head.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
        if not had_current:  # `ray start` leaves the address of a cluster now gone
            current.unlink(missing_ok=True)
