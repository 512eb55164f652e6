""".ci/bootstrap installs once and then skips while the declared dependencies are unchanged.

pip is replaced by a stub that logs its arguments, so the test checks the script's decisions
without a network or a minute of installing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bootstrap_installs_once_then_skips(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python3*/site-packages"))
    (site / "btlive-src.pth").write_text(str(ROOT) + "\n")
    log = tmp_path / "pip.log"
    (site / "pip").mkdir()
    (site / "pip" / "__init__.py").write_text("")
    (site / "pip" / "__main__.py").write_text(
        f"import sys\nopen({str(log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n")

    def bootstrap() -> str:
        done = subprocess.run(["bash", ".ci/bootstrap", str(venv)], cwd=ROOT, check=True,
                              capture_output=True, text=True, timeout=120)
        return done.stderr

    first = bootstrap()
    assert "installing btlive and its dev extras" in first
    installs = log.read_text().splitlines()
    assert any("-e .[dev]" in line and "--quiet" not in line for line in installs), installs
    second = bootstrap()
    assert "is up to date" in second and log.read_text().splitlines() == installs
    (venv / ".btlive-bootstrap").write_text("an older setup.cfg\n")
    assert "installing" in bootstrap()
    assert len(log.read_text().splitlines()) == 2 * len(installs)
