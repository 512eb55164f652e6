"""Pure parsers for the Theta Terminal's wire formats (no sockets, no threads).

Everything the store receives is normalized here into one shape, whatever the
path it came by (REST csv/json/ndjson, WebSocket frames, the gRPC client):

* a UTC tz-aware ``DatetimeIndex`` named ``datetime`` (the Terminal speaks US/Eastern
  wall clock; DST is resolved with the tz database);
* prices as float64;
* option contracts as the columns ``root``, ``expiration`` ("YYYYMMDD"),
  ``strike`` (float dollars) and ``right`` ("C" or "P").
"""

from __future__ import annotations

import ast
import io
import json
import math
import operator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from btlive.arctic.symbols import option_instrument

NEW_YORK = ZoneInfo("America/New_York")
UTC = ZoneInfo("UTC")

#: Columns that carry money or model values: always float64.
FLOAT_COLUMNS = frozenset({
    "bid", "ask", "price", "open", "high", "low", "close", "vwap", "midpoint", "strike",
    "delta", "gamma", "theta", "vega", "rho", "epsilon", "lambda", "vanna", "charm", "vomma",
    "veta", "vera", "speed", "zomma", "color", "ultima", "d1", "d2", "dual_delta", "dual_gamma",
    "implied_vol", "iv_error", "bid_implied_vol", "ask_implied_vol", "underlying_price",
})
#: Candidate names of the row time, in order of preference.
TIME_COLUMNS = ("timestamp", "trade_timestamp", "created", "time")
#: Other time columns converted to UTC but kept as columns.
EXTRA_TIME_COLUMNS = ("underlying_timestamp", "quote_timestamp", "last_trade")
#: Longest non-JSON frame tried as a Python literal (literal_eval is slow on big input).
MAX_LITERAL = 64 * 1024


class FrameError(ValueError):
    """A payload that cannot be understood; the message names the field and the value."""


# --------------------------------------------------------------------------- contracts


def normalize_right(value: Any) -> str:
    """'C', 'call', 'CALL' -> 'C'; 'P', 'put', 'PUT' -> 'P'."""
    text = str(value).strip().upper()
    if text in ("C", "CALL"):
        return "C"
    if text in ("P", "PUT"):
        return "P"
    raise FrameError(f"right {value!r}: expected C/CALL or P/PUT")


def normalize_expiration(value: Any) -> str:
    """20241108, '20241108', '2024-11-08', date -> '20241108'."""
    if hasattr(value, "strftime"):
        return value.strftime("%Y%m%d")
    text = str(value).strip().replace("-", "")
    if len(text) != 8 or not text.isdigit():
        raise FrameError(f"expiration {value!r}: expected YYYYMMDD or YYYY-MM-DD")
    return text


@dataclass(frozen=True, slots=True)
class Contract:
    """A stock/index (``root`` only) or an option (all four fields; strike in dollars)."""

    root: str
    expiration: str | None = None
    strike: float | None = None
    right: str | None = None
    sec_type: str = "OPTION"

    @classmethod
    def option(cls, root: str, expiration: Any, strike: Any, right: Any) -> Contract:
        try:
            strike_f = float(strike)
        except (TypeError, ValueError):
            raise FrameError(f"strike {strike!r}: expected dollars") from None
        if not math.isfinite(strike_f) or strike_f <= 0:
            raise FrameError(f"strike {strike!r}: must be a positive number of dollars")
        return cls(str(root).upper(), normalize_expiration(expiration), round(strike_f, 3),
                   normalize_right(right), "OPTION")

    @classmethod
    def stock(cls, root: str) -> Contract:
        return cls(str(root).upper(), sec_type="STOCK")

    @classmethod
    def index(cls, root: str) -> Contract:
        return cls(str(root).upper(), sec_type="INDEX")

    @property
    def is_option(self) -> bool:
        return self.sec_type == "OPTION"

    @property
    def instrument(self) -> str:
        """Name used in ArcticDB symbols: ``SPY`` or ``SPY_20241220_C450``."""
        if self.is_option:
            return option_instrument(self.root, self.expiration, self.strike, self.right)
        return self.root

    def ws_contract(self) -> dict:
        """The contract object of a WebSocket request (strike in 1/10 cent, int date)."""
        if not self.is_option:
            return {"root": self.root}
        return {"root": self.root, "expiration": int(self.expiration),
                "strike": int(round(self.strike * 1000)), "right": self.right}

    def rest_params(self) -> dict:
        """Query parameters naming this contract on the v3 REST API."""
        if not self.is_option:
            return {"symbol": self.root}
        return {"symbol": self.root, "expiration": self.expiration,
                "strike": f"{self.strike:.3f}", "right": "call" if self.right == "C" else "put"}


def contract_from_ws(obj: dict) -> Contract:
    """Contract of a WebSocket frame; strike is in 1/10 cent there, ints may be strings."""
    if not isinstance(obj, dict) or "root" not in obj:
        raise FrameError(f"contract {obj!r}: expected an object with a root")
    sec = str(obj.get("security_type") or obj.get("sec_type") or "").upper()
    if sec == "OPTION" or (not sec and "strike" in obj):
        try:
            strike = int(obj["strike"]) / 1000.0
        except (KeyError, TypeError, ValueError):
            raise FrameError(f"strike {obj.get('strike')!r}: expected 1/10 cents") from None
        return Contract.option(obj["root"], obj.get("expiration"), strike, obj.get("right"))
    if sec == "INDEX":
        return Contract.index(obj["root"])
    return Contract.stock(obj["root"])


# --------------------------------------------------------------------------- time


_DST_SWITCH_MS = 7_200_000  # 02:00 ET: wall-clock times from here on use the offset of 03:00


@lru_cache(maxsize=4096)
def _et_midnight_utc_ns(date_int: int, late: bool) -> int:
    """UTC ns of ET midnight for a date, using the UTC offset in force at 03:00 (late) or 00:00."""
    y, rest = divmod(int(date_int), 10000)
    m, d = divmod(rest, 100)
    probe = datetime(y, m, d, 3 if late else 0, tzinfo=NEW_YORK)
    offset = probe.utcoffset() or timedelta(0)
    midnight_naive_utc = datetime(y, m, d) - offset
    return int((midnight_naive_utc - datetime(1970, 1, 1)).total_seconds()) * 1_000_000_000


def et_to_utc_ns(date_int: int, ms_of_day: int) -> int:
    """Terminal ``date`` (YYYYMMDD) + ``ms_of_day`` (ET wall clock) -> UTC nanoseconds.

    DST switches at 02:00 ET, outside every session, so one offset before 02:00 and one from
    02:00 on suffice (01:00-02:00 on the autumn switch day is ambiguous: read as daylight time).
    """
    ms = int(ms_of_day)
    return _et_midnight_utc_ns(int(date_int), ms >= _DST_SWITCH_MS) + ms * 1_000_000


def et_to_utc_ns_near(date_int: int, ms_of_day: int, ref_ns: int) -> int:
    """:func:`et_to_utc_ns`, with the repeated 01:00-02:00 hour of the autumn DST switch read
    as the instant nearest ``ref_ns`` (a live tick's receive time): the only way to tell the
    two 01:30s apart, since (date, ms_of_day) names both."""
    ms = int(ms_of_day)
    if not _DST_SWITCH_MS // 2 <= ms < _DST_SWITCH_MS:
        return et_to_utc_ns(date_int, ms)
    first = _et_midnight_utc_ns(int(date_int), False) + ms * 1_000_000
    second = _et_midnight_utc_ns(int(date_int), True) + ms * 1_000_000
    return first if abs(first - ref_ns) <= abs(second - ref_ns) else second


@lru_cache(maxsize=1024)
def expiry_close_ns(expiration: str) -> int:
    """UTC nanoseconds of 16:00 ET on an expiration day (``YYYYMMDD``), when trading ends."""
    close = datetime.strptime(expiration, "%Y%m%d").replace(hour=16, tzinfo=NEW_YORK)
    return int(close.timestamp()) * 1_000_000_000


def utc_ns_to_et(ts_ns: int) -> tuple[int, int]:
    """UTC nanoseconds -> (date YYYYMMDD, ms_of_day) on the ET wall clock."""
    local = datetime.fromtimestamp(ts_ns / 1e9, tz=NEW_YORK)
    ms = ((local.hour * 60 + local.minute) * 60 + local.second) * 1000 + local.microsecond // 1000
    return local.year * 10000 + local.month * 100 + local.day, ms


def et_series_to_utc(values: pd.Series) -> pd.DatetimeIndex:
    """Naive ET ISO strings (or datetimes) -> UTC ``DatetimeIndex`` with DST handled."""
    values = pd.Series(values)
    if values.dtype == object and len(values) and isinstance(values.iloc[0], datetime) \
            and values.iloc[0].tzinfo is not None:  # the gRPC client's tz-aware datetimes
        return pd.DatetimeIndex(pd.to_datetime(values, utc=True))
    if isinstance(values.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(values):
        parsed = values
    else:
        parsed = pd.to_datetime(values, format="ISO8601", errors="coerce")
    if getattr(parsed.dt, "tz", None) is not None:
        return pd.DatetimeIndex(parsed.dt.tz_convert("UTC"))
    try:
        local = parsed.dt.tz_localize(NEW_YORK, ambiguous="infer", nonexistent="shift_forward")
    except Exception:  # noqa: BLE001 - unsorted data in the repeated hour: take DST
        local = parsed.dt.tz_localize(NEW_YORK, ambiguous=np.ones(len(parsed), dtype=bool),
                                      nonexistent="shift_forward")
    return pd.DatetimeIndex(local.dt.tz_convert("UTC"))


# --------------------------------------------------------------------------- REST payloads


def empty_frame() -> pd.DataFrame:
    return pd.DataFrame(index=pd.DatetimeIndex([], tz="UTC", name="datetime"))


def parse_rest(body: bytes | str, fmt: str = "csv") -> pd.DataFrame:
    """A v3 REST body (csv, json or ndjson) -> a normalized DataFrame."""
    if isinstance(body, str):
        body = body.encode()
    if not body.strip():
        return empty_frame()
    fmt = fmt.lower()
    if fmt == "csv":
        raw = pd.read_csv(io.BytesIO(body), dtype={"expiration": str, "symbol": str})
    elif fmt == "json":
        try:
            raw = _json_to_frame(json.loads(body))
        except json.JSONDecodeError as exc:
            raise FrameError(f"json body: {exc}") from None
    elif fmt == "ndjson":
        rows = []
        for n, line in enumerate(body.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise FrameError(f"ndjson line {n}: {exc}") from None
        raw = pd.DataFrame(rows)
    else:
        raise FrameError(f"format {fmt!r}: expected csv, json or ndjson")
    return normalize_frame(raw)


def _json_to_frame(obj: Any) -> pd.DataFrame:
    """Tolerate every JSON shape seen from v3 Terminals (see reference/thetadata.md)."""
    if isinstance(obj, dict) and "response" in obj:
        header = obj.get("header") or {}
        resp = obj["response"]
        fmt_cols = header.get("format") if isinstance(header, dict) else None
        if isinstance(resp, list) and resp and isinstance(resp[0], list) and fmt_cols:
            return pd.DataFrame(resp, columns=fmt_cols)
        if isinstance(resp, dict):
            return pd.DataFrame(resp)
        if not isinstance(resp, list):
            raise FrameError(f"response {type(resp).__name__}: expected a list")
        if resp and isinstance(resp[0], dict) and "data" in resp[0] and "contract" in resp[0]:
            parts = []
            for item in resp:
                part = pd.DataFrame(item.get("data") or [])
                for key, value in (item.get("contract") or {}).items():
                    part[key] = value
                parts.append(part)
            return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        if resp and not isinstance(resp[0], dict):
            return pd.DataFrame({"value": resp})
        return pd.DataFrame(resp)
    if isinstance(obj, dict) and obj and all(isinstance(v, list) for v in obj.values()):
        return pd.DataFrame(obj)
    if isinstance(obj, list):
        return pd.DataFrame(obj)
    raise FrameError(f"json body of type {type(obj).__name__}: no 'response'")


def normalize_frame(raw: pd.DataFrame) -> pd.DataFrame:
    """Rename, retype and re-index a raw v3 table (see module docstring)."""
    df = raw.rename(columns={"symbol": "root"})
    if df.empty and not len(df.columns):
        return empty_frame()
    if "expiration" in df.columns:
        df["expiration"] = df["expiration"].astype(str).str.replace("-", "", regex=False)
    if "right" in df.columns:
        df["right"] = df["right"].astype(str).str.upper().str[0]
    for col in df.columns:
        if col in FLOAT_COLUMNS:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    for col in EXTRA_TIME_COLUMNS:
        if col in df.columns:
            df[col] = pd.Series(et_series_to_utc(df[col]), index=df.index)
    time_col = next((c for c in TIME_COLUMNS if c in df.columns), None)
    if time_col is not None:
        index = et_series_to_utc(df[time_col])
        df = df.drop(columns=[time_col])
        df.index = index.rename("datetime")
    elif "ms_of_day" in df.columns and "date" in df.columns:  # v2-style rows
        ns = [et_to_utc_ns(d, m) for d, m in zip(df["date"], df["ms_of_day"], strict=True)]
        df = df.drop(columns=["ms_of_day", "date"])
        df.index = pd.DatetimeIndex(pd.to_datetime(ns, utc=True), name="datetime")
    return df


# --------------------------------------------------------------------------- WebSocket frames


def decode_json_or_literal(payload: bytes | str) -> Any:
    """JSON, or the Python-literal form (``str(dict)``) ThetaData's own sample sends."""
    if isinstance(payload, bytes | bytearray | memoryview):
        try:
            payload = bytes(payload).decode()
        except UnicodeDecodeError as exc:
            raise FrameError(f"frame is not UTF-8: {exc}") from None
    try:
        return json.loads(payload)
    except json.JSONDecodeError:
        pass
    if len(payload) > MAX_LITERAL:
        raise FrameError(f"frame of {len(payload)} characters is not JSON")
    try:
        return ast.literal_eval(payload.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        raise FrameError(f"frame is neither JSON nor a Python literal: {payload[:80]!r}") from None


@dataclass(slots=True)
class StreamMessage:
    """One decoded WebSocket frame.

    ``kind``: STATUS, REQ_RESPONSE, STATE, QUOTE, TRADE, OHLC, or another header type.
    For QUOTE/TRADE/OHLC, ``ts_ns`` is UTC nanoseconds and ``data`` the payload object.
    """

    kind: str
    status: str | None = None
    contract: Contract | None = None
    data: dict = field(default_factory=dict)
    ts_ns: int | None = None
    req_id: int | None = None
    response: str | None = None
    state: str | None = None


_PAYLOAD_KEY = {"QUOTE": "quote", "TRADE": "trade", "OHLC": "ohlc"}


def parse_ws_message(payload: bytes | str | dict) -> StreamMessage:
    """Decode one frame; raises ``FrameError`` naming what is wrong."""
    obj = payload if isinstance(payload, dict) else decode_json_or_literal(payload)
    if not isinstance(obj, dict):
        raise FrameError(f"frame {obj!r:.80}: expected an object")
    header = obj.get("header")
    if not isinstance(header, dict) or "type" not in header:
        raise FrameError(f"header {header!r:.80}: expected an object with a type")
    kind = str(header["type"]).upper()
    msg = StreamMessage(kind, status=header.get("status"))
    if kind == "REQ_RESPONSE":
        msg.response = str(header.get("response", "")).upper()
        try:
            msg.req_id = int(header.get("req_id"))
        except (TypeError, ValueError):
            raise FrameError(f"req_id {header.get('req_id')!r}: expected an integer") from None
    elif kind == "STATE":
        msg.state = header.get("state")
    elif kind in _PAYLOAD_KEY:
        data = obj.get(_PAYLOAD_KEY[kind])
        if not isinstance(data, dict):
            raise FrameError(f"{_PAYLOAD_KEY[kind]} {data!r:.80}: expected an object")
        msg.contract = contract_from_ws(obj.get("contract"))
        try:
            msg.ts_ns = et_to_utc_ns(int(data["date"]), int(data["ms_of_day"]))
        except (KeyError, TypeError, ValueError):
            raise FrameError(f"{kind} time date={data.get('date')!r} "
                             f"ms_of_day={data.get('ms_of_day')!r}: expected integers") from None
        msg.data = data
    return msg


def encode_stream_request(req_id: int, req_type: str, contract: Contract | None,
                          add: bool = True) -> str:
    """JSON text of a subscribe/unsubscribe request; ``contract=None`` = full trade stream."""
    req_type = req_type.upper()
    if req_type not in ("QUOTE", "TRADE"):
        raise ValueError(f"req_type {req_type!r}: expected QUOTE or TRADE")
    if contract is None:
        body = {"msg_type": "STREAM_BULK", "sec_type": "OPTION", "req_type": req_type,
                "add": add, "id": req_id}
    else:
        body = {"msg_type": "STREAM", "sec_type": contract.sec_type, "req_type": req_type,
                "add": add, "id": req_id, "contract": contract.ws_contract()}
    return json.dumps(body, separators=(",", ":"))


# --------------------------------------------------------------------------- batched frames
#
# The recorder's hot path: one json.loads for a whole batch of frames, rows grouped by
# (kind, contract) and turned into numpy columns for ArcticRecorder.record_batch.

#: Per kind: payload key, then (column, dtype) in frame order after date and ms_of_day.
TICK_LAYOUT: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "QUOTE": ("quote", (("bid", "f8"), ("ask", "f8"), ("bid_size", "i8"), ("ask_size", "i8"),
                        ("bid_exchange", "i8"), ("ask_exchange", "i8"),
                        ("bid_condition", "i8"), ("ask_condition", "i8"))),
    "TRADE": ("trade", (("price", "f8"), ("size", "i8"), ("sequence", "i8"),
                        ("condition", "i8"), ("exchange", "i8"))),
    "OHLC": ("ohlc", (("open", "f8"), ("high", "f8"), ("low", "f8"), ("close", "f8"),
                      ("volume", "i8"), ("count", "i8"))),
}
TICK_FIELDS = {kind: tuple(name for name, _ in cols) for kind, (_, cols) in TICK_LAYOUT.items()}


@dataclass(slots=True)
class FrameBatch:
    """Rows of one batch grouped by (kind, contract key), plus control frames and rejects."""

    groups: dict[tuple, list[tuple]] = field(default_factory=dict)
    control: list[StreamMessage] = field(default_factory=list)
    malformed: int = 0
    data_frames: int = 0
    errors: list[str] = field(default_factory=list)


def contract_key_to_contract(key: tuple) -> Contract:
    """(root, expiration, strike 1/10 cent, right, sec_type) -> Contract."""
    root, exp, strike, right, sec = key
    if strike is not None and sec != "STOCK" and sec != "INDEX":
        return Contract.option(root, exp, int(strike) / 1000.0, right)
    return Contract.index(root) if sec == "INDEX" else Contract.stock(root)


_ROW_GETTERS = {kind: operator.itemgetter("date", "ms_of_day", *TICK_FIELDS[kind])
                for kind in TICK_LAYOUT}


def _add_obj(batch: FrameBatch, obj: Any) -> None:
    header = obj.get("header") if isinstance(obj, dict) else None
    kind = header.get("type") if isinstance(header, dict) else None
    layout = TICK_LAYOUT.get(kind)
    if layout is None:
        batch.control.append(parse_ws_message(obj))
        return
    c = obj["contract"]
    d = obj[layout[0]]
    try:
        row = _ROW_GETTERS[kind](d)  # the usual complete frame, in C
    except KeyError:
        row = (int(d["date"]), int(d["ms_of_day"]), *(d.get(f) for f in TICK_FIELDS[kind]))
    key = (kind, c["root"], c.get("expiration"), c.get("strike"), c.get("right"),
           c.get("security_type") or ("OPTION" if "strike" in c else "STOCK"))
    rows = batch.groups.get(key)
    if rows is None:
        batch.groups[key] = [row]
    else:
        rows.append(row)
    batch.data_frames += 1


def group_frames(payloads: list[bytes]) -> FrameBatch:
    """Decode a batch of frames; fast when all are JSON, exact per frame when some are not."""
    batch = FrameBatch()
    try:
        objs = json.loads(b"[" + b",".join(payloads) + b"]")
    except (json.JSONDecodeError, UnicodeDecodeError):
        objs = None
    exact = objs is None or len(objs) != len(payloads)
    for item in payloads if exact else objs:
        try:
            _add_obj(batch, decode_json_or_literal(item) if exact else item)
        except (FrameError, KeyError, TypeError, ValueError, AttributeError) as exc:
            batch.malformed += 1
            if len(batch.errors) < 5:
                batch.errors.append(f"{type(exc).__name__}: {exc}")
    return batch


def _flatten(kind: str, keys: list[tuple], groups: dict[tuple, list[tuple]]):
    """One numpy pass over the rows of ``keys`` (in that order) -> (counts, ts, columns)."""
    counts = [len(groups[k]) for k in keys]
    rows = [r for k in keys for r in groups[k]]
    arr = np.array(rows, dtype=np.float64)
    dates = arr[:, 0].astype(np.int64)
    ms = arr[:, 1].astype(np.int64)
    ts = ms * 1_000_000
    late = ms >= _DST_SWITCH_MS
    first = int(dates[0])
    if (dates == first).all():
        ts += np.where(late, _et_midnight_utc_ns(first, True), _et_midnight_utc_ns(first, False))
    else:
        for date in np.unique(dates):
            for flag in (False, True):
                sel = (dates == date) & (late == flag)
                if sel.any():
                    ts[sel] += _et_midnight_utc_ns(int(date), flag)
    cols = []
    for i, (name, dtype) in enumerate(TICK_LAYOUT[kind][1], start=2):
        col = arr[:, i]
        if dtype == "i8":
            col = np.nan_to_num(col, nan=0.0).astype(np.int64)
        cols.append((name, col))
    return counts, ts, cols


def columns_by_key(kind: str, groups: dict[tuple, list[tuple]]):
    """Rows of many contracts of one kind -> [(key, ts_ns, {column: array})], converted in
    one numpy pass (per-contract conversion costs more than the whole batch)."""
    keys = list(groups)
    counts, ts, cols = _flatten(kind, keys, groups)
    out = []
    start = 0
    for key, n in zip(keys, counts, strict=True):
        stop = start + n
        out.append((key, ts[start:stop], {name: col[start:stop] for name, col in cols}))
        start = stop
    return out


def columns_by_root(kind: str, groups: dict[tuple, list[tuple]]):
    """Like ``columns_by_key`` but one table per (root, security type): options carry the
    contract as columns ``expiration`` (int YYYYMMDD), ``strike`` (dollars) and ``is_call``.
    Returns [((kind, root, sec_type), ts_ns, columns)]."""
    keys = sorted(groups, key=lambda k: (k[1], k[5] or "", k[2] or 0, k[3] or 0, k[4] or ""))
    counts, ts, cols = _flatten(kind, keys, groups)
    reps = np.array(counts)
    option = np.array([k[5] == "OPTION" or (k[5] is None and k[3] is not None) for k in keys])
    exp = np.repeat(np.array([int(k[2]) if opt else 0 for k, opt in zip(keys, option,
                                                                        strict=True)]), reps)
    strike = np.repeat(np.array([int(k[3]) / 1000.0 if opt else 0.0 for k, opt in
                                 zip(keys, option, strict=True)]), reps)
    is_call = np.repeat(np.array([1 if str(k[4]).upper().startswith("C") else 0
                                  for k in keys], dtype=np.int64), reps)
    out = []
    start = i = 0
    while i < len(keys):
        root, sec, opt = keys[i][1], keys[i][5], option[i]
        j, stop = i, start
        while j < len(keys) and keys[j][1] == root and keys[j][5] == sec:
            stop += counts[j]
            j += 1
        table = {name: col[start:stop] for name, col in cols}
        if opt:
            table = {"expiration": exp[start:stop], "strike": strike[start:stop],
                     "is_call": is_call[start:stop], **table}
        out.append(((kind, root, sec if sec else ("OPTION" if opt else "STOCK")),
                    ts[start:stop], table))
        start, i = stop, j
    return out
