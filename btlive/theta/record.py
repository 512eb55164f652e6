"""StreamRecorder: the Terminal's decoded frames -> ArcticRecorder, at firehose rates.

Layouts:

* ``contract``: one symbol per contract and kind, ``ticks/{quote|trade|ohlc|greeks}/
  {instrument}`` (what ArcticData and backtests read directly);
* ``root``: one symbol per underlying and kind, ``ticks/{kind}/{ROOT}_options``, with the
  contract as columns ``expiration`` (YYYYMMDD), ``strike`` (dollars) and ``is_call``.
  ArcticDB costs ~2 ms per staged symbol, so thousands of contracts (the full trade
  stream) can only be recorded at speed this way; stocks keep ``ticks/{kind}/{ROOT}``.

Rows wait here up to ``window`` seconds (or ``max_rows``), so each symbol gets one
``record_batch`` per window and the numpy conversion runs once for every contract.

Order: one ``root`` symbol mixes many contracts, and the Terminal does not send them in time
order (the full trade stream repeats a contract's last NBBO quote before each trade). Rows
are therefore held for ``reorder`` seconds behind the newest time seen for their symbol and
only then handed to ArcticRecorder (which sorts each batch), so the main symbol gets them in
order instead of the recorder's ``late/`` sidecar. Only a row older than that window when it
arrives still goes to ``late/<symbol>`` (counted in ``late_rows``); readers needing every
row read both.
Everything runs on the store's loop thread; ``flush`` must be called there too.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from btlive.arctic.symbols import tick_symbol
from btlive.theta.greeks import GREEK_FIELDS, YEAR_SECONDS, greeks_from_price
from btlive.theta.parse import (
    columns_by_key,
    columns_by_root,
    contract_key_to_contract,
    et_to_utc_ns,
    expiry_close_ns,
)
from btlive.theta.ticks import two_sided

log = logging.getLogger(__name__)


class StreamRecorder:
    """Batch sink for ``ThetaStore.add_batch_sink``.

    recorder: an ArcticRecorder. layout: ``contract`` or ``root`` (module docstring).
    greeks_interval: seconds between Black-Scholes greeks samples per option (None = off;
    needs the underlying's quotes in the same stream). rate: risk-free rate for them.
    reorder: seconds rows wait behind their symbol's newest time to be written in order.
    """

    def __init__(self, recorder, layout: str = "contract", greeks_interval: float | None = None,
                 rate: float = 0.0, window: float = 0.25, max_rows: int = 200_000,
                 reorder: float = 2.0) -> None:
        if layout not in ("contract", "root"):
            raise ValueError(f"layout {layout!r}: expected 'contract' or 'root'")
        self.recorder = recorder
        self.layout = layout
        self.greeks_interval = greeks_interval
        self.rate = rate
        self.window = window
        self.max_rows = max_rows
        self.messages = 0
        self.bad_rows = 0
        self.errors: list[str] = []
        self.last_tick_ns = 0
        self._symbols: dict[tuple, str] = {}
        self._spot: dict[str, float] = {}
        self._last_greeks: dict[tuple, int] = {}
        self._greek_rows: dict[str, tuple[list, dict]] = {}
        self._pending: dict[tuple, list] = {}
        self._pending_rows = 0
        self._since = time.monotonic()
        self._held: dict[str, list] = {}  # symbol -> [(ts, cols)] waiting to be in order
        self._newest: dict[str, int] = {}
        self._oldest: dict[str, int] = {}
        self.reorder_ns = int(reorder * 1e9)
        self.closed = False

    # ------------------------------------------------------------------ sink

    def __call__(self, batch, recv_ns: int) -> None:
        if self.closed:
            return
        pending = self._pending
        for key, rows in batch.groups.items():
            have = pending.get(key)
            if have is None:
                pending[key] = rows
            else:
                have.extend(rows)
            self._pending_rows += len(rows)
        self.messages += batch.data_frames
        if self._pending_rows >= self.max_rows or time.monotonic() - self._since >= self.window:
            self.flush()

    def flush(self, final: bool = False) -> None:
        """Hand everything pending to the recorder (``final``: the held rows too)."""
        pending, self._pending = self._pending, {}
        self._pending_rows = 0
        self._since = time.monotonic()
        by_kind: dict[str, dict] = {}
        for key, rows in pending.items():
            by_kind.setdefault(key[0], {})[key] = rows
        for kind, groups in by_kind.items():
            if self.greeks_interval is not None and kind == "QUOTE":
                self._sample_greeks(groups)
            for key, ts, cols in self._convert(kind, groups):
                symbol = self._symbol(key)
                if symbol is None:
                    self.bad_rows += len(ts)
                    continue
                self._hold(symbol, ts, cols)
        self._flush_greeks()
        self._release(final)

    def _hold(self, symbol: str, ts: np.ndarray, cols: dict) -> None:
        """Keep a chunk (with its time span) until its rows are older than the reorder window."""
        if not len(ts):
            return
        lo, hi = int(ts.min()), int(ts.max())
        self._held.setdefault(symbol, []).append((ts, cols, lo, hi))
        self._newest[symbol] = max(self._newest.get(symbol, hi), hi)
        self._oldest[symbol] = min(self._oldest.get(symbol, lo), lo)

    def _release(self, final: bool) -> None:
        """Hand the recorder, per symbol, the held rows older than the reorder window (it
        sorts each batch on its own thread; every later batch is newer than this one)."""
        for symbol, chunks in list(self._held.items()):
            mark = self._newest[symbol] if final else self._newest[symbol] - self.reorder_ns
            if self._oldest[symbol] > mark:
                continue  # nothing old enough yet
            out, keep = [], []
            for chunk in chunks:
                ts, cols, lo, hi = chunk
                if hi <= mark:
                    out.append((ts, cols))
                elif lo > mark:
                    keep.append(chunk)
                else:  # the window's edge runs through this chunk
                    old = ts <= mark
                    out.append((ts[old], {n: c[old] for n, c in cols.items()}))
                    new = ~old
                    rest = ts[new]
                    keep.append((rest, {n: c[new] for n, c in cols.items()}, int(rest.min()),
                                 hi))
            if keep:
                self._held[symbol] = keep
                self._oldest[symbol] = min(k[2] for k in keep)
            else:
                del self._held[symbol], self._oldest[symbol]
            if out:
                self._write(symbol, out)

    def _write(self, symbol: str, parts: list) -> None:
        if len(parts) == 1:
            ts, cols = parts[0]
        else:
            ts = np.concatenate([p[0] for p in parts])
            cols = {n: np.concatenate([p[1][n] for p in parts]) for n in parts[0][1]}
        self.recorder.record_batch(symbol, ts, cols)
        self.last_tick_ns = max(self.last_tick_ns, int(ts.max()))

    # ------------------------------------------------------------------ conversion

    def _convert(self, kind: str, groups: dict) -> list:
        convert = columns_by_root if self.layout == "root" else columns_by_key
        try:
            return convert(kind, groups)
        except (ValueError, TypeError, IndexError):
            out = []  # a bad value somewhere: convert per contract, skip the bad ones
            for key, rows in groups.items():
                try:
                    out += convert(kind, {key: rows})
                except (ValueError, TypeError, IndexError) as exc:
                    self.bad_rows += len(rows)
                    self._error(f"skipped {len(rows)} {kind} rows of {key[1:]}: {exc}")
            return out

    def _symbol(self, key: tuple) -> str | None:
        sym = self._symbols.get(key)
        if sym is None:
            try:
                if self.layout == "root":
                    kind, root, sec = key
                    name = f"{root}_options" if sec == "OPTION" else root
                else:
                    kind, name = key[0], contract_key_to_contract(key[1:]).instrument
                sym = tick_symbol(kind.lower(), name)
            except ValueError as exc:
                self._error(f"no symbol for {key}: {exc}")
                return None
            self._symbols[key] = sym
        return sym

    def _error(self, text: str) -> None:
        log.warning(text)
        self.errors.append(text)
        del self.errors[:-20]

    # ------------------------------------------------------------------ greeks

    def _sample_greeks(self, groups: dict) -> None:
        """At most one Black-Scholes sample per option per ``greeks_interval``."""
        options = []
        for key, rows in groups.items():
            row = rows[-1]
            if key[3] is not None and key[5] not in ("STOCK", "INDEX"):
                options.append((key, row))
            elif two_sided(row[2], row[3]):  # an underlying: spot for the options below
                self._spot[key[1]] = (row[2] + row[3]) / 2.0
        step = int(self.greeks_interval * 1e9)
        for key, row in options:
            spot = self._spot.get(key[1])
            if spot is None or not two_sided(row[2], row[3]):
                continue
            try:
                now = et_to_utc_ns(row[0], row[1])
                contract = contract_key_to_contract(key[1:])
            except (TypeError, ValueError):
                continue
            if now - self._last_greeks.get(key, 0) < step:
                continue
            self._last_greeks[key] = now
            mid = (row[2] + row[3]) / 2.0
            years = (expiry_close_ns(contract.expiration) - now) / 1e9 / YEAR_SECONDS
            g = greeks_from_price(mid, spot, contract.strike, years, self.rate,
                                  contract.right == "C")
            values = {name: getattr(g, name) for name in GREEK_FIELDS}
            values.update(underlying=spot, mid=mid)
            if self.layout == "root":
                sym = tick_symbol("greeks", f"{contract.root}_options")
                values = {"expiration": int(contract.expiration), "strike": contract.strike,
                          "is_call": int(contract.right == "C"), **values}
            else:
                sym = tick_symbol("greeks", contract.instrument)
            ts_list, cols = self._greek_rows.setdefault(sym, ([], {}))
            ts_list.append(now)
            for name, value in values.items():
                cols.setdefault(name, []).append(value)

    def _flush_greeks(self) -> None:
        rows, self._greek_rows = self._greek_rows, {}
        for sym, (ts, cols) in rows.items():
            arrays = {n: np.array(v, dtype=np.int64 if n in ("expiration", "is_call")
                                  else np.float64) for n, v in cols.items()}
            self._hold(sym, np.array(ts, dtype=np.int64), arrays)
