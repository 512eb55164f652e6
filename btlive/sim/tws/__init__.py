"""A local TWS: speaks the TWS API wire protocol so unmodified ib_async / ib_insync connect.

Layout: ``server`` (the ``TwsSimulator`` facade), ``session`` (the API socket server, sessions
and dispatch), the parts it is built from (``market_data``, ``history``, ``orders``,
``account_updates``, ``fault_actions``), the pure models (``contracts``, ``market``,
``matching``, ``accounts``), the wire (``protocol``, ``messages``), ``faults`` (the timeline),
``replay`` and ``cli``.
"""

from .faults import Fault, load_timeline, parse_timeline
from .server import TwsSimulator

__all__ = ["TwsSimulator", "Fault", "parse_timeline", "load_timeline"]
