"""Headless Chromium driven through the DevTools protocol (no browser download, no node).

    with Chromium.open(url) as page:
        page.evaluate("document.title")
        page.screenshot("out.png")
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from websockets.sync.client import connect

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--remote-debugging-port=0"]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    def __init__(self, proc: subprocess.Popen, profile: tempfile.TemporaryDirectory,
                 url: str) -> None:
        self.proc, self.profile = proc, profile
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(url, max_size=None, open_timeout=30))
        self._ids = itertools.count(1)

    @classmethod
    def open(cls, url: str, width: int = 1400, height: int = 1000, timeout: float = 60.0):
        profile = tempfile.TemporaryDirectory(prefix="btlive-chromium-")
        proc = subprocess.Popen([chromium_path(), *FLAGS, f"--user-data-dir={profile.name}",
                                 f"--window-size={width},{height}", url],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)  # its helpers die with it (close)
        try:
            port_file = Path(profile.name) / "DevToolsActivePort"
            deadline = time.monotonic() + timeout
            while not port_file.exists() or not port_file.read_text().strip():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"chromium did not start (exit code {proc.poll()})")
                time.sleep(0.05)
            port = port_file.read_text().split()[0]
            page = None
            while page is None:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                    page = next((t for t in json.load(r) if t["type"] == "page"), None)
                if page is None:
                    if time.monotonic() > deadline:
                        raise RuntimeError("chromium opened no page")
                    time.sleep(0.05)
            return cls(proc, profile, page["webSocketDebuggerUrl"])
        except BaseException:
            _end(proc, profile)
            raise

    def send(self, method: str, **params) -> dict:
        ident = next(self._ids)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=30))
            if msg.get("id") == ident:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: str | Path) -> None:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        Path(path).write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self._stack.close()
        finally:
            _end(self.proc, self.profile)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _end(proc: subprocess.Popen, profile: tempfile.TemporaryDirectory) -> None:
    """Stop Chromium and every helper process it started (they write to the profile until they
    exit), then remove the profile."""
    def signal_all(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)

    signal_all(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        signal_all(signal.SIGKILL)
        proc.wait(10)
    signal_all(signal.SIGKILL)  # helpers that outlived it
    deadline = time.monotonic() + 10
    while True:  # a helper may still be closing its files for a moment
        try:
            profile.cleanup()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
