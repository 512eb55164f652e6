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
    from btlive.arctic.symbols import parse_option_instrument

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
        self.by_inst: dict[str, dict] = {}  # kind -> instrument -> (ET epoch ms, columns)
        self.start_ns = self.end_ns = 0
        self._wall0 = time.monotonic_ns()
        self.loaded = False

    def load(self) -> ReplaySource:
        from btlive.arctic.library import DEFAULT_LIBRARY, get_library

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
        for order, kind in enumerate(KINDS):
            ev = self.events.get(kind)
            if ev is None:
                continue
            lo, hi = np.searchsorted(ev.ts, [t0, t1])
            if hi <= lo:
                continue
            sel = np.arange(lo, hi)
            if not bulk:  # one call per instrument present, not per row
                present, where = np.unique(ev.inst[sel], return_inverse=True)
                keep = np.array([wanted(kind, self.instruments[i]) for i in present.tolist()])
                sel = sel[keep[where]]
                if not sel.size:
                    continue
            et = pd.DatetimeIndex(ev.ts[sel]).tz_localize("UTC").tz_convert("America/New_York")
            ymd = (et.year * 10000 + et.month * 100 + et.day).to_numpy().tolist()
            ms = ((et.hour * 3600 + et.minute * 60 + et.second) * 1000
                  + et.microsecond // 1000).to_numpy().tolist()
            encode, fields = _FRAMES[kind]
            cols = [_column(ev.cols.get(name), sel, is_float) for name, is_float in fields]
            contracts = [self._contracts[i] for i in ev.inst[sel].tolist()]
            for ts, contract, m, day, *values in zip(ev.ts[sel].tolist(), contracts, ms, ymd, *cols,
                                                     strict=True):
                rows.append((ts, order, encode(contract, m, *values, day)))
        rows.sort(key=lambda r: (r[0], r[1]))
        return [r[2] for r in rows]


#: frame encoder and its value fields after (contract, ms_of_day), before date: (name, is_float)
_FRAMES = {
    "quote": (quote_frame, (("bid_size", False), ("bid_exchange", False), ("bid", True),
                            ("bid_condition", False), ("ask_size", False), ("ask_exchange", False),
                            ("ask", True), ("ask_condition", False))),
    "trade": (trade_frame, (("sequence", False), ("size", False), ("condition", False),
                            ("price", True), ("exchange", False))),
    "ohlc": (ohlc_frame, (("open", True), ("high", True), ("low", True), ("close", True),
                          ("volume", False), ("count", False))),
}


def _column(values: np.ndarray | None, sel: np.ndarray, is_float: bool) -> list:
    """Recorded values at ``sel`` as Python numbers (zeros for a column the recording lacks)."""
    if values is None:
        return [0.0 if is_float else 0] * sel.size
    picked = np.asarray(values[sel], dtype=float)
    return picked.tolist() if is_float else np.nan_to_num(picked).astype(np.int64).tolist()


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
    return idx.tz_convert("UTC").as_unit("ns").asi8.astype(np.int64)
