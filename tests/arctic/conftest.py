"""Fixtures for the ArcticDB tests: a fresh LMDB folder per test."""

from __future__ import annotations

import pytest


@pytest.fixture
def uri(tmp_path) -> str:
    return f"lmdb://{tmp_path}/arctic"
