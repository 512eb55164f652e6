"""Strategies for the sweep tests' faults: one that raises, one whose worker process dies."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from strategies.sma_cross import SmaCross


class Fragile(SmaCross):
    """Raises in ``__init__`` when ``fast == fail_fast``."""

    params = (("fail_fast", 0),)

    def __init__(self):
        if self.p.fast == self.p.fail_fast:
            raise ValueError(f"fast={self.p.fast} is unlucky")
        super().__init__()


class Mortal(SmaCross):
    """Kills its own worker process (SIGKILL) the first time it runs with ``fast == die_fast``;
    ``marker`` is the file that remembers it did."""

    params = (("die_fast", 0), ("marker", ""))

    def __init__(self):
        marker = Path(self.p.marker)
        if self.p.fast == self.p.die_fast and not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        super().__init__()
