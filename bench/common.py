"""Shared helpers for the benchmarks: result records, percentiles, memory readings."""

from __future__ import annotations

import os
from collections.abc import Sequence


def result(bench: str, metric: str, ours: float, anchor_name: str, anchor: float, unit: str,
           higher_is_better: bool = True, **extra) -> dict:
    """One JSON line. ``ratio`` is always "how many times better ours is"."""
    if higher_is_better:
        ratio = ours / anchor if anchor else None
    else:
        ratio = anchor / ours if ours else None
    record = {"bench": bench, "metric": metric, "ours": ours, "anchor_name": anchor_name,
              "anchor": anchor, "ratio": ratio, "unit": unit}
    record.update(extra)
    return record


def rss_bytes() -> int:
    """Current resident set size of this process (Linux)."""
    with open(f"/proc/{os.getpid()}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def anon_rss_bytes() -> int:
    """Anonymous RSS only: excludes file-backed pages such as the LMDB memory map."""
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return rss_bytes()


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
