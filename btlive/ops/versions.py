"""Which code and which config made a run: recorded in the summary and the audit's run row.

``code_version(path)`` is the git commit of the repository holding the strategy's file and
whether its work tree was dirty, or, outside git, the file's SHA-256. ``config_hash`` is the
SHA-256 of the config as validated (canonical JSON), so a reformatted file hashes the same.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import subprocess
from pathlib import Path
from typing import Any


def _git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def code_version(target: Any) -> dict:
    """``target``: a strategy class (or any object with a source file) or a path.

    Returns ``{"file", "sha256", "git_commit", "git_dirty"}``; the git fields are None
    outside a repository (or without git)."""
    path = Path(target if isinstance(target, str | Path) else inspect.getfile(target)).resolve()
    out = {"file": str(path), "sha256": file_sha256(path), "git_commit": None, "git_dirty": None}
    commit = _git(path.parent, "rev-parse", "HEAD")
    if commit:
        status = _git(path.parent, "status", "--porcelain", "--untracked-files=no")
        out["git_commit"] = commit
        out["git_dirty"] = bool(status) if status is not None else None
    return out


def config_hash(config: Any) -> str:
    """SHA-256 of a config: a pydantic model, a mapping, or a file path (hashed as bytes)."""
    if isinstance(config, str | Path):
        return file_sha256(Path(config))
    if hasattr(config, "model_dump"):
        config = config.model_dump(mode="json", by_alias=True)
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
