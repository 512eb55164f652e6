"""Code and config versions recorded for a run."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from btlive.ops.versions import code_version, config_hash


def test_a_file_outside_git_is_identified_by_its_hash(tmp_path):
    path = tmp_path / "strat.py"
    path.write_text("class S: pass\n")
    version = code_version(path)
    assert version["git_commit"] is None and version["git_dirty"] is None
    assert len(version["sha256"]) == 64
    path.write_text("class S: x = 1\n")
    assert code_version(path)["sha256"] != version["sha256"]


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_a_file_in_git_records_the_commit_and_whether_the_tree_is_dirty(tmp_path):
    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True,
                              text=True).stdout.strip()

    git("init", "-q")
    path = tmp_path / "strat.py"
    path.write_text("class S: pass\n")
    git("add", "strat.py")
    git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", "one")
    clean = code_version(path)
    assert clean["git_commit"] == git("rev-parse", "HEAD") and clean["git_dirty"] is False
    path.write_text("class S: changed = True\n")
    assert code_version(path)["git_dirty"] is True


def test_config_hash_is_canonical():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    assert len(config_hash({})) == 64


def test_a_strategy_class_is_found_through_its_source_file():
    from tests.ops.paper import Holder

    assert code_version(Holder)["file"].endswith("tests/ops/paper.py")
