"""Operating a run: the monitoring page, operational alerts, the kill switch, metrics, logs,
recovery after a crash, and the code/config versions of a run.

Each part is a backtrader component (an analyzer) that any Cerebro script can add; the runner
(``btlive run``) adds them from the config. Network servers run in their own threads;
backtrader's thread only publishes snapshots and counters.
"""

from __future__ import annotations

from btlive.lazy import lazy_exports

_EXPORTS = {
    "Monitor": "btlive.ops.monitor",
    "StateBoard": "btlive.ops.board",
    "KillSwitch": "btlive.ops.kill",
    "OpsAlerts": "btlive.ops.alerts",
    "Metrics": "btlive.ops.metrics",
    "Recovery": "btlive.ops.recovery",
    "previous_run": "btlive.ops.recovery",
    "code_version": "btlive.ops.versions",
    "config_hash": "btlive.ops.versions",
    "JsonLogFormatter": "btlive.ops.logs",
    "configure_logging": "btlive.ops.logs",
}
__all__ = list(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
