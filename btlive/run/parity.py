"""Parity: the same strategy on the same market decides the same orders in backtest and paper.

Without a recording, :func:`record_and_compare` runs the strategy in paper mode against the bundled TWS
simulator while the run records its own feeds into a fresh ArcticDB library (history used for
warm-up and live bars alike), then backtests the same class on that recording. The known
sources of divergence are removed by construction: the backtest reads exactly the bars the
paper run saw, with the same (bar start, UTC) timestamps, and treats the same bars as warm-up
(``decide_from`` = the paper run's first live bar). What is left to differ is the strategy's
decisions (compared exactly) and the fills (reported: time, price, commission).

With a recording, :func:`replay_and_compare` backtests on it and runs paper against the TWS
simulator replaying it as TWS served that session: the bars before the last ``bars`` are
history (the paper run's backfill), the last ``bars`` arrive as real-time bars with their
recorded timestamps.
"""

from __future__ import annotations

import tempfile
from datetime import datetime
from itertools import zip_longest
from typing import Any

from btlive.config import RunConfig
from btlive.errors import CommandError, UsageError
from btlive.run.session import run
from btlive.run.wiring import as_config

DECISION = ("datetime", "data", "side", "size", "exectype", "price")


def decision(order: dict[str, Any]) -> tuple:
    return tuple(order[k] for k in DECISION)


def compare(backtest: dict[str, Any], paper: dict[str, Any]) -> dict[str, Any]:
    """The parity object: identical decisions?, the first difference, fills side by side."""
    first = None
    pairs = list(zip_longest(backtest["orders"], paper["orders"]))
    for index, (a, b) in enumerate(pairs):
        if a is None or b is None or decision(a) != decision(b):
            first = {"index": index, "backtest": a, "paper": b}
            break
    fills = []
    for a, b in pairs:
        if a is None or b is None or not (a["filled"] or b["filled"]):
            continue
        fills.append({"datetime": a["datetime"], "side": a["side"],
                      "backtest_price": a["avg_price"], "paper_price": b["avg_price"],
                      "price_diff": _diff(b["avg_price"], a["avg_price"]),
                      "backtest_commission": a["commission"], "paper_commission": b["commission"],
                      "commission_diff": _diff(b["commission"], a["commission"])})
    return {"identical": first is None, "first_difference": first, "fills": fills,
            "backtest": backtest, "paper": paper}


def _diff(x, y):
    return None if x is None or y is None else x - y


def describe(order: dict[str, Any] | None) -> str:
    if order is None:
        return "(no order)"
    price = "" if order["price"] is None else f" @ {order['price']:g}"
    return (f"{order['datetime']} {order['data']} {order['side']} {order['size']:g} "
            f"{order['exectype']}{price}")


def record_and_compare(config: RunConfig | dict | str | None, *, strategy: str | None = None,
                       params: list[str] | tuple = (), bars: int = 60,
                       sim_kwargs: dict[str, Any] | None = None,
                       folder: str | None = None) -> dict[str, Any]:
    """Paper against the simulator (recording its feeds), then a backtest on the recording;
    option legs: paper on the Theta Terminal simulator's stream, then a backtest on its history."""
    from btlive.run.legs import has_legs

    if has_legs(as_config(config)):
        from btlive.run.legs_parity import TIMING_NOTE, legs_sessions

        result = compare(*legs_sessions(config, strategy=strategy, params=params, bars=bars))
        result["notes"] = ["the Theta Terminal simulator ran always open (parity at any hour)"]
        if not result["identical"]:
            result["notes"].append(TIMING_NOTE)
        result["recording"] = None
        return result
    cfg = _ib_feeds(config)
    folder = folder or tempfile.mkdtemp(prefix="btlive-parity-")
    uri = f"lmdb://{folder}/recording"
    raw = cfg.model_dump(by_alias=True, exclude_none=True)
    raw["record"] = {"enabled": True, "uri": uri, "library": "btlive"}
    raw["broker"].setdefault("paper", {})["port"] = 0  # the parity run's own simulator
    paper = run(raw, "paper", strategy=strategy, params=params, sim=True, stop_after=bars,
                sim_kwargs=sim_kwargs, out=None)
    notes = drop_undelivered(uri)
    for data in raw["data"]:
        data.pop("symbol", None)
    return _backtest_and_compare(raw, uri, paper, strategy, params, notes)


def _ib_feeds(config) -> RunConfig:
    cfg = as_config(config)
    if not cfg.data or any(d.source != "ib" for d in cfg.data):
        raise UsageError("btlive parity compares IB feeds: every [[data]] needs source \"ib\"")
    return cfg


def _backtest_and_compare(raw: dict, uri: str, paper: dict, strategy, params,
                          notes: list[str]) -> dict[str, Any]:
    """The backtest on the recording at ``uri``, with the paper run's warm-up, compared."""
    if paper["decisions_from"] is None:
        raise UsageError("the paper run never reached live data: nothing to compare")
    for data in raw["data"]:
        data.update({"uri": uri, "library": "btlive"})
        data.pop("as_of", None)
    backtest = run(raw, "backtest", strategy=strategy, params=params, out=None,
                   decide_from=datetime.fromisoformat(paper["decisions_from"]))
    result = compare(backtest, paper)
    result["recording"] = uri
    result["notes"] = notes
    return result


REPLAY_SPEED = 50.0  # recorded seconds per wall-clock second: 0.1 s per 5-second bar


def replay_and_compare(config: RunConfig | dict | str | None, recording: str, *,
                       library: str = "btlive", strategy: str | None = None,
                       params: list[str] | tuple = (), bars: int = 60,
                       speed: float = REPLAY_SPEED, folder: str | None = None) -> dict[str, Any]:
    """A backtest on ``recording`` vs paper against the TWS simulator replaying it.

    Both read a copy of the recorded symbols (bars repeating a timestamp dropped, as the feed
    drops them), so the recording itself is never changed.
    """
    cfg = _ib_feeds(config)
    symbols = [d.arctic_symbol() for d in cfg.data]
    sizes = {s.split("/")[1] for s in symbols if s.count("/") == 2 and s.startswith("bars/")}
    if len(sizes) != 1 or len(symbols) != len({s.split("/")[-1] for s in symbols}):
        raise UsageError("btlive parity --recording replays bars/SIZE/NAME symbols of one bar "
                         f"size, one per instrument; the [[data]] tables read {symbols}")
    if bars < 1:
        raise UsageError(f"--bars {bars}: must be >= 1")
    folder = folder or tempfile.mkdtemp(prefix="btlive-parity-")
    uri = f"lmdb://{folder}/recording"
    index, notes = copy_recording(recording, library, symbols, uri)
    if len(index) <= bars:
        raise UsageError(f"--bars {bars}: {symbols[0]} has {len(index)} bars in the recording; "
                         "replay fewer live bars so that some are history")
    start, end = (index[i].to_pydatetime() for i in (-bars, -1))
    from btlive.sim.tws.replay import ArcticReplay

    replay = ArcticReplay(uri, library="btlive", speed=speed, timeframe=sizes.pop(),
                          symbols=[s.split("/")[-1] for s in symbols], start=start)
    raw = cfg.model_dump(by_alias=True, exclude_none=True)
    raw["record"] = {"enabled": False}
    raw["broker"].setdefault("paper", {})["port"] = 0  # the parity run's own simulator
    seconds = (end - start).total_seconds() / speed
    paper = run(raw, "paper", strategy=strategy, params=params, sim=True, out=None,
                sim_kwargs={"replay": replay}, stop_at=end.replace(tzinfo=None),
                deadline=60 + 3 * seconds)
    reached = paper["end"] and datetime.fromisoformat(paper["end"]) >= end
    if not reached:
        raise CommandError(f"the paper run stopped at {paper['end']} before the recording's "
                           f"last bar {end.isoformat()} (replay speed {speed:g}: try a lower "
                           "--speed)")
    return _backtest_and_compare(raw, uri, paper, strategy, params, notes)


def copy_recording(source: str, library: str, symbols: list[str], uri: str):
    """Copy ``symbols`` from the recording into a fresh library at ``uri`` (as "btlive"),
    dropping bars that repeat a timestamp; the first symbol's index and notes."""
    from btlive.arctic.library import get_library, redact_uri

    try:
        lib = get_library(source, library, create=False)
    except Exception as exc:  # noqa: BLE001 - a missing store or library: one line
        raise UsageError(f"--recording {redact_uri(source)} (library {library}): {exc}") from None
    out = get_library(uri, "btlive")
    index, notes = None, []
    for symbol in symbols:
        if not lib.has_symbol(symbol):
            raise UsageError(f"--recording {redact_uri(source)}: no symbol {symbol!r} in "
                             f"library {library} (btlive arctic ls lists what is there)")
        frame, note = _delivered(symbol, lib.read(symbol).data)
        notes += note
        out.write(symbol, frame)
        index = frame.index if index is None else index
    return index, notes


def drop_undelivered(uri: str) -> list[str]:
    """Remove recorded bars the feed never delivered: at the seam between backfill and live,
    IB's first real-time bar can carry the timestamp of the last history bar; the feed drops
    it (not newer than what it delivered) but the recorder keeps both. Keep the first."""
    from btlive.arctic.library import get_library

    lib = get_library(uri, "btlive", create=False)
    notes = []
    for symbol in lib.list_symbols():
        if not symbol.startswith("bars/"):
            continue
        frame, note = _delivered(symbol, lib.read(symbol).data)
        if note:
            lib.write(symbol, frame)
            notes += note
    return notes


def _delivered(symbol: str, frame):
    """``frame`` without the bars repeating an earlier timestamp, and a note if any were."""
    repeated = frame.index.duplicated(keep="first")
    if not repeated.any():
        return frame, []
    return frame[~repeated], [f"{symbol}: dropped {int(repeated.sum())} recorded bar(s) repeating "
                              "a timestamp the feed had already delivered (backfill/live seam)"]


def print_report(result: dict[str, Any], out) -> None:
    """Orders side by side, fills with their differences, the final P&L."""
    a, b = result["backtest"], result["paper"]
    width = 58
    print(f"{'backtest (recording)':<{width}} | paper", file=out)
    for x, y in zip_longest(a["orders"], b["orders"]):
        mark = "  " if x is not None and y is not None and decision(x) == decision(y) else "!="
        print(f"{describe(x):<{width}} {mark} {describe(y)}", file=out)
    if result["fills"]:
        print("fills: time, backtest price, paper price, difference, commission difference",
              file=out)
        for f in result["fills"]:
            diff = "-" if f["price_diff"] is None else f"{f['price_diff']:+.4f}"
            comm = "-" if f["commission_diff"] is None else f"{f['commission_diff']:+.4f}"
            print(f"  {f['datetime']} {f['side']:<4} {f['backtest_price']} {f['paper_price']} "
                  f"{diff} {comm}", file=out)
    for note in result.get("notes", []):
        print(f"note: {note}", file=out)
    print(f"P&L: backtest {a['pnl']:,.2f}  paper {b['pnl']:,.2f}   warm-up bars: backtest "
          f"{a['warmup_bars']} paper {b['warmup_bars']}", file=out)
    if result["identical"]:
        print(f"identical: {len(a['orders'])} orders decided the same", file=out)
    else:
        first = result["first_difference"]
        print(f"DIFFERENT at order #{first['index'] + 1}: backtest {describe(first['backtest'])}"
              f" vs paper {describe(first['paper'])}", file=out)


