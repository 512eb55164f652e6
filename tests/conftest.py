"""Fixtures shared by every test area.

Each area (tests/arctic, tests/sim_tws, ...) keeps its own fixtures in its own
conftest.py; only what several areas need lives here.
"""

from __future__ import annotations

import os
import socket
import uuid

import pytest

PG_URL_ENV = "BTLIVE_TEST_PG_URL"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def unused_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """URL of the PostgreSQL test server; skips when absent unless CI requires it."""
    url = os.environ.get(PG_URL_ENV, DEFAULT_PG_URL)
    try:
        import sqlalchemy as sa

        engine = sa.create_engine(url)
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means "no server"
        if os.environ.get("BTLIVE_REQUIRE_PG"):
            pytest.fail(f"PostgreSQL required but not reachable at {url}: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {url}: {exc}")
    return url


@pytest.fixture
def pg_url(pg_server_url: str):
    """A fresh, empty schema on the PostgreSQL test server, dropped afterwards."""
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'create schema "{schema}"'))
    sep = "&" if "?" in pg_server_url else "?"
    yield f"{pg_server_url}{sep}options=-csearch_path%3D{schema}"
    with engine.connect() as conn:
        conn.execute(sa.text(f'drop schema "{schema}" cascade'))
    engine.dispose()


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (``-n``), the sweep tests share one Ray cluster per session: keep them
    on one worker (``--dist loadgroup``)."""
    for item in items:
        if "sweep" in item.path.parts:
            item.add_marker(pytest.mark.xdist_group("ray"))
