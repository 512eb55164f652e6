"""Replay an ArcticDB recording on the simulator's WebSocket.

The recording is what ``btlive record theta`` writes: ``ticks/quote/<instrument>``,
``ticks/trade/...`` and ``ticks/ohlc/...`` with UTC indexes. Like ThetaData's dev
FPSS, which loops a past day, the replay plays the recorded span at ``speed`` x
real time from the moment the simulator starts, then starts over; frames carry the
recorded dates and times (ET), so a client sees exactly the recorded session.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from btlive.sim.theta.market import OptionContract
from btlive.sim.theta.wire import contract_json, ohlc_frame, quote_frame, trade_frame

KINDS = ("quote", "trade", "ohlc")


def parse_instrument(name: str) -> OptionContract | str:
    """``SPY_20241220_C450.5`` -> OptionContract; ``AAPL`` -> "AAPL"."""
    from btlive.storage.symbols import parse_option_instrument

    if "_" not in name:
        return name.upper()
    root, exp, strike, right = parse_option_instrument(name)
    return OptionContract(root.upper(), date(int(exp[:4]), int(exp[4:6]), int(exp[6:])),
                          int(round(strike * 1000)), right)


@dataclass
class _Events:
    """All recorded rows of one kind, merged and sorted by time."""

    ts: np.ndarray  # UTC ns
    inst: np.ndarray  # index into ReplaySource.instruments
    cols: dict[str, np.ndarray]


class ReplaySource:
    """Recorded ticks, played against the wall clock at ``speed``."""

    def __init__(self, uri: str, library: str | None = None, speed: float = 1.0, loop: bool = True):
        if speed <= 0:
            raise ValueError(f"speed {speed!r}: must be > 0")
        self.uri = uri
        self.library = library
        self.speed = speed
        self.loop = loop
        self.instruments: list[OptionContract | str] = []
        self._contracts: list[str] = []
        self.events: dict[str, _Events] = {}
        self.start_ns = self.end_ns = 0
        self._wall0 = time.monotonic_ns()
        self.loaded = False

    def load(self) -> ReplaySource:
        from btlive.storage.arctic import DEFAULT_LIBRARY, get_library

        lib = get_library(self.uri, self.library or DEFAULT_LIBRARY, create=False)
        index: dict[OptionContract | str, int] = {}
        parts: dict[str, list] = {k: [] for k in KINDS}
        for symbol in sorted(lib.list_symbols()):
            bits = symbol.split("/", 2)
            if len(bits) != 3 or bits[0] != "ticks" or bits[1] not in KINDS:
                continue
            try:
                inst = parse_instrument(bits[2])
            except ValueError:
                continue
            df = lib.read(symbol).data
            if df.empty:
                continue
            idx = index.setdefault(inst, len(index))
            parts[bits[1]].append((idx, df))
        if not index:
            raise ValueError(f"replay: no ticks/quote|trade|ohlc symbols in {self.uri} "
                             f"library {self.library or DEFAULT_LIBRARY!r}")
        self.instruments = sorted(index, key=index.get)
        self.by_inst = {kind: {self.instruments[i]: _per_instrument(df) for i, df in frames}
                        for kind, frames in parts.items() if frames}
        self._contracts = [contract_json(i) for i in self.instruments]
        for kind, frames in parts.items():
            if not frames:
                continue
            ts = np.concatenate([_utc_ns(df.index) for _, df in frames])
            inst = np.concatenate([np.full(len(df), i, np.int64) for i, df in frames])
            names = sorted({c for _, df in frames for c in df.columns})
            cols = {c: np.concatenate([df[c].to_numpy() if c in df.columns else np.zeros(len(df))
                                       for _, df in frames]) for c in names}
            order = np.argsort(ts, kind="stable")
            self.events[kind] = _Events(ts[order], inst[order], {c: v[order] for c, v in cols.items()})
        self.start_ns = min(e.ts[0] for e in self.events.values())
        self.end_ns = max(e.ts[-1] for e in self.events.values()) + 1
        self._wall0 = time.monotonic_ns()
        self.loaded = True
        return self

    def attach(self, stream, endpoints=None) -> None:
        if not self.loaded:
            self.load()
        stream.replay = self
        if endpoints is not None:
            endpoints.replay = self

    def covers(self, kind: str, inst) -> bool:
        return inst in self.by_inst.get(kind, {})

    def option_contracts(self, root: str) -> list[OptionContract]:
        return [i for i in self.instruments if isinstance(i, OptionContract) and i.root == root]

    def ticks(self, kind: str, inst, day: date, a: int, b: int) -> dict[str, np.ndarray]:
        """Recorded rows of ``day`` between ms-of-day ``a`` and ``b`` (ET, inclusive), REST-shaped."""
        et_ms, cols = self.by_inst[kind][inst]
        base = (day - date(1970, 1, 1)).days * 86_400_000
        lo, hi = np.searchsorted(et_ms, [base + a, base + b + 1])
        names = {"quote": ("bid_size", "bid_exchange", "bid", "bid_condition", "ask_size",
                           "ask_exchange", "ask", "ask_condition"),
                 "trade": ("sequence", "size", "condition", "exchange", "price")}[kind]
        out = {"ms": et_ms[lo:hi] - base}
        for name in names:
            col = cols.get(name)
            out[name] = col[lo:hi] if col is not None else np.zeros(hi - lo)
        return out

    def now_ns(self) -> int:
        """Recording time that corresponds to now (looping over the recorded span)."""
        elapsed = int((time.monotonic_ns() - self._wall0) * self.speed)
        span = max(self.end_ns - self.start_ns, 1)
        if self.loop:
            return self.start_ns + elapsed % span
        return min(self.start_ns + elapsed, self.end_ns)

    def frames(self, t0: int, t1: int, wanted, bulk: bool) -> list[str]:
        """Frames for rows with t0 <= ts < t1; ``wanted(kind, instrument)`` filters unless ``bulk``."""
        if t1 < t0:  # wrapped around: the end of the span, then its start
            return self.frames(t0, self.end_ns, wanted, bulk) + self.frames(self.start_ns, t1, wanted, bulk)
        rows = []
        for kind, ev in self.events.items():
            lo, hi = np.searchsorted(ev.ts, [t0, t1])
            if hi <= lo:
                continue
            sel = np.arange(lo, hi)
            if not bulk:
                keep = [j for j in sel if wanted(kind, self.instruments[ev.inst[j]])]
                sel = np.array(keep, dtype=np.int64)
                if not sel.size:
                    continue
            et = pd.DatetimeIndex(ev.ts[sel]).tz_localize("UTC").tz_convert("America/New_York")
            ymd = (et.year * 10000 + et.month * 100 + et.day).to_numpy()
            ms = ((et.hour * 3600 + et.minute * 60 + et.second) * 1000
                  + et.microsecond // 1000).to_numpy()
            col = lambda n, e=ev, s=sel: e.cols[n][s] if n in e.cols else np.zeros(s.size)  # noqa: E731
            for i, j in enumerate(sel.tolist()):
                contract = self._contracts[ev.inst[j]]
                if kind == "quote":
                    frame = quote_frame(contract, int(ms[i]), int(col("bid_size")[i]),
                                        int(col("bid_exchange")[i]), float(col("bid")[i]),
                                        int(col("bid_condition")[i]), int(col("ask_size")[i]),
                                        int(col("ask_exchange")[i]), float(col("ask")[i]),
                                        int(col("ask_condition")[i]), int(ymd[i]))
                elif kind == "trade":
                    frame = trade_frame(contract, int(ms[i]), int(col("sequence")[i]),
                                        int(col("size")[i]), int(col("condition")[i]),
                                        float(col("price")[i]), int(col("exchange")[i]), int(ymd[i]))
                else:
                    frame = ohlc_frame(contract, int(ms[i]), float(col("open")[i]),
                                       float(col("high")[i]), float(col("low")[i]),
                                       float(col("close")[i]), int(col("volume")[i]),
                                       int(col("count")[i]), int(ymd[i]))
                rows.append((int(ev.ts[j]), KINDS.index(kind), frame))
        rows.sort(key=lambda r: (r[0], r[1]))
        return [r[2] for r in rows]


def _per_instrument(df: pd.DataFrame) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(ET wall-clock epoch ms, sorted; columns) of one recorded symbol."""
    et = pd.DatetimeIndex(_utc_ns(df.index)).tz_localize("UTC").tz_convert("America/New_York")
    et_ms = et.tz_localize(None).as_unit("ms").asi8.astype(np.int64)
    order = np.argsort(et_ms, kind="stable")
    return et_ms[order], {c: df[c].to_numpy()[order] for c in df.columns}


def _utc_ns(index) -> np.ndarray:
    idx = pd.DatetimeIndex(index)
    if idx.tz is None:
        idx = idx.tz_localize("UTC")
    return idx.tz_convert("UTC").asi8.astype(np.int64) if idx.unit == "ns" else \
        idx.tz_convert("UTC").as_unit("ns").asi8.astype(np.int64)
