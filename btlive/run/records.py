"""Run records: what a run read and ran, so ``btlive run --reproduce RUN_ID`` can rerun it.

Every run writes its summary (strategy spec, params, validated config with credentials
redacted, the ArcticDB version of every symbol read, the requested period) to
``{run dir}/records/{run_id}.json``; the run dir is ``$BTLIVE_RUN_DIR`` or ``~/.btlive/runs``.
Reproducing pins each ``[[data]]`` table to the recorded version (``as_of``), so rows appended
since then do not change the rerun.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from btlive.config import RunConfig, validate_config
from btlive.errors import UsageError, redact


def records_dir() -> Path:
    from btlive.ops.runfile import default_run_dir

    return default_run_dir() / "records"


def redacted(value: Any) -> Any:
    """``value`` (a JSON-like tree) with credentials in its strings replaced by ``***``."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v) for v in value]
    return value


def save_record(summary: dict[str, Any], directory: Path | None = None) -> Path:
    directory = directory or records_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{summary['run_id']}.json"
    path.write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return path


def load_record(ref: str) -> dict[str, Any]:
    """The record of run ``ref``: a run id (in the records dir) or a summary JSON file."""
    path = Path(ref)
    if not (path.suffix == ".json" and path.is_file()):
        path = records_dir() / f"{ref}.json"
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"--reproduce {ref!r}: no run record {path} (give a run id from a "
                         "summary, or the path of a --summary-json file)") from None
    except ValueError as exc:
        raise UsageError(f"--reproduce {ref!r}: {path} is not a run record: {exc}") from None
    missing = [k for k in ("mode", "strategy", "params", "config", "arctic_versions")
               if k not in record]
    if missing:
        raise UsageError(f"--reproduce {ref!r}: {path} lacks {', '.join(missing)} (written by "
                         "an older btlive?)")
    return record


def reproduction(record: dict[str, Any]) -> tuple[RunConfig, dict[str, Any]]:
    """The config and ``run`` keyword arguments that rerun ``record``'s backtest on exactly
    the ArcticDB versions it read."""
    if record["mode"] != "backtest":
        raise UsageError(f"--reproduce: run {record.get('run_id')} was a {record['mode']} run; "
                         "only backtests can be reproduced (backtest its recording instead)")
    raw = json.loads(json.dumps(record["config"]))
    versions = record["arctic_versions"]
    raw["strategy"] = {**raw.get("strategy", {}), "class": record["strategy"],
                       "params": record["params"]}
    cfg = validate_config(raw, f"run record {record.get('run_id')}")
    for spec, table in zip(raw.get("data", []), cfg.data, strict=True):
        if table.source == "theta":
            continue  # ThetaData history does not change (read from the Terminal or its cache)
        symbol = table.arctic_symbol()
        if symbol not in versions:
            raise UsageError(f"--reproduce: the record has no ArcticDB version of {symbol!r} "
                             f"([[data]] {spec['name']})")
        spec["as_of"] = versions[symbol]
    period = record.get("period") or {}
    return validate_config(raw, f"run record {record.get('run_id')}"), \
        {"fromdate": period.get("from"), "todate": period.get("to")}
