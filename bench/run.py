"""Benchmarks: ``python bench/run.py NAME --json``.

Every benchmark measures btlive and its anchor in the same run and prints one
JSON object per metric::

    {"bench": ..., "metric": ..., "ours": x, "anchor_name": ..., "anchor": y, "ratio": x/y, "unit": ...}

A benchmark module ``bench/bench_<area>.py`` exposes ``BENCHES``, a dict from
NAME to ``run(args) -> Iterable[dict]``, and optionally ``add_arguments(parser)``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULES = {
    "feed": "bench_arctic",
    "recorder": "bench_arctic",
    "tws": "bench_tws",
    "ib": "bench_ib",
    "theta": "bench_theta",
    "cvar": "bench_cvar",
    "audit": "bench_audit",
    "run": "bench_run",
    "optimize": "bench_optimize",
    "options": "bench_options",
}


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(HERE))
    sys.path.insert(1, str(HERE.parent))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(MODULES), help="which benchmark")
    parser.add_argument("--json", action="store_true", help="print JSON lines only")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke test")
    known, _ = parser.parse_known_args(argv)
    module = importlib.import_module(MODULES[known.name])
    if hasattr(module, "add_arguments"):
        module.add_arguments(parser, known.name)
    args = parser.parse_args(argv)
    for result in module.BENCHES[args.name](args):
        if args.json:
            print(json.dumps(result), flush=True)
        else:
            print(format_result(result), flush=True)
    return 0


def format_result(result: dict) -> str:
    ratio = result.get("ratio")
    ratio_text = f"{ratio:.2f}x" if isinstance(ratio, int | float) else "n/a"
    return (f"{result['bench']:>9} {result['metric']:<32} ours={result['ours']:.6g} {result['unit']} "
            f"anchor[{result['anchor_name']}]={result['anchor']:.6g} ratio={ratio_text}")


if __name__ == "__main__":
    raise SystemExit(main())
