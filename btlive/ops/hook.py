"""A callback on backtrader's thread at every pass of cerebro's loop, with or without a bar.

Live feeds may deliver nothing for a while (a connection down, a closed market), and then no
``next`` runs; cerebro still polls its stores' notifications at every pass (at least every
``qcheck`` seconds). :class:`LoopHook` is a store-shaped object added to ``cerebro.stores`` so
that the ops components can act (the kill switch) and watch clocks (alerts) on that thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


class LoopHook:
    """Calls ``fn()`` at each pass of cerebro's loop; errors are logged, never raised."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn

    @classmethod
    def attach(cls, cerebro, fn: Callable[[], None]) -> LoopHook:
        hook = cls(fn)
        cerebro.stores.append(hook)
        return hook

    def detach(self, cerebro) -> None:
        if self in cerebro.stores:
            cerebro.stores.remove(self)

    def get_notifications(self) -> list:
        try:
            self.fn()
        except Exception:  # an ops failure must not stop the run (logged with traceback)
            log.exception("ops loop hook failed")
        return []

    def start(self, *args, **kwargs) -> None:
        """Store contract: nothing to start."""

    def stop(self) -> None:
        """Store contract: nothing to stop."""
