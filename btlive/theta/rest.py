"""Theta Terminal v3 REST client (async, httpx): chunking, pagination, retries, tier limits.

Rules (reference/thetadata.md):

* multi-day requests are capped at one month; intervals under 1m are single-day only,
  so ``plan_chunks`` splits a range accordingly and chunks run concurrently under a
  semaphore sized to the account tier (FREE 1, VALUE 2, STANDARD 4, PRO 8);
* ``Next-Page`` (header, or ``header.next_page`` in JSON) is followed to the end;
* 429 (queue full), 474 (Terminal lost MDDS), 571 (Terminal starting), 572 (uncaught
  Terminal error), 5xx and transport errors are retried with :class:`btlive.runtime.Backoff`;
* 472 means "no data": an empty frame, not an error;
* 471 (permission) and 473 (invalid parameters) stop with the server's message.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import httpx
import pandas as pd

from btlive.runtime import Backoff
from btlive.theta.parse import Contract, FrameError, empty_frame, parse_rest

log = logging.getLogger(__name__)

TIER_CONCURRENCY = {"free": 1, "value": 2, "standard": 4, "pro": 8, "professional": 8}
RETRY_STATUS = frozenset({429, 474, 571, 572, 500, 502, 503, 504})
SUB_MINUTE = frozenset({"tick", "10ms", "100ms", "500ms", "1s", "5s", "10s", "15s", "30s"})
INTERVALS = ("tick", "10ms", "100ms", "500ms", "1s", "5s", "10s", "15s", "30s",
             "1m", "5m", "10m", "15m", "30m", "1h")

#: (sec_type, kind) -> v3 path; a kind not listed for a sec_type is an error.
PATHS = {
    ("OPTION", "quote"): "option/history/quote",
    ("OPTION", "trade"): "option/history/trade",
    ("OPTION", "ohlc"): "option/history/ohlc",
    ("OPTION", "eod"): "option/history/eod",
    ("OPTION", "open_interest"): "option/history/open_interest",
    ("OPTION", "greeks"): "option/history/greeks/first_order",
    ("OPTION", "greeks_second_order"): "option/history/greeks/second_order",
    ("OPTION", "greeks_third_order"): "option/history/greeks/third_order",
    ("OPTION", "greeks_all"): "option/history/greeks/all",
    ("OPTION", "greeks_eod"): "option/history/greeks/eod",
    ("OPTION", "implied_volatility"): "option/history/greeks/implied_volatility",
    ("OPTION", "trade_quote"): "option/history/trade_quote",
    ("STOCK", "quote"): "stock/history/quote",
    ("STOCK", "trade"): "stock/history/trade",
    ("STOCK", "ohlc"): "stock/history/ohlc",
    ("STOCK", "eod"): "stock/history/eod",
    ("STOCK", "trade_quote"): "stock/history/trade_quote",
    ("INDEX", "price"): "index/history/price",
    ("INDEX", "ohlc"): "index/history/ohlc",
    ("INDEX", "eod"): "index/history/eod",
}
#: Kinds whose endpoint takes no interval.
NO_INTERVAL = frozenset({"trade", "eod", "open_interest", "trade_quote", "greeks_eod"})


def resolve(endpoints: dict, contract: Contract, kind: str) -> str:
    """The endpoint of ``kind`` for the contract's security type (PATHS, or gRPC METHODS)."""
    name = endpoints.get((contract.sec_type, kind))
    if name is None:
        kinds = sorted(k for s, k in endpoints if s == contract.sec_type)
        raise ValueError(f"kind {kind!r} for {contract.sec_type}: expected one of {kinds}")
    return name


#: Kinds with one row per day: month-long requests, like 1-minute intervals.
DAILY = frozenset({"eod", "open_interest", "greeks_eod"})


def chunk_interval(kind: str, interval: str) -> str:
    """The interval that sets the chunk size: endpoints without one return ticks, except
    the daily ones."""
    if kind in DAILY:
        return "1m"
    return "tick" if kind in NO_INTERVAL else interval


def expiration_list(df: pd.DataFrame) -> list[str]:
    return sorted(df["expiration"].astype(str).unique()) if "expiration" in df else []


def strike_list(df: pd.DataFrame) -> list[float]:
    return sorted(float(s) for s in df["strike"].unique()) if "strike" in df else []


class ThetaError(Exception):
    """A request the Terminal refused; ``status`` is its HTTP code, the message its text."""

    def __init__(self, status: int, message: str, url: str = "") -> None:
        super().__init__(f"Theta Terminal {status} for {url}: {message}")
        self.status = status
        self.server_message = message
        self.url = url


class ThetaPermissionError(ThetaError):
    """471: the account's tier does not include this data."""


class ThetaInvalidParams(ThetaError):
    """473: the Terminal rejected the parameters."""


def parse_day(value: Any) -> date:
    """date, datetime, 'YYYYMMDD' or 'YYYY-MM-DD' -> date."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value).replace("-", "")
    try:
        return datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise ValueError(f"date {value!r}: expected YYYYMMDD or YYYY-MM-DD") from None


def plan_chunks(start: Any, end: Any, interval: str = "1m",
                skip_weekends: bool = False) -> list[tuple[date, date]]:
    """Split [start, end] (inclusive) into requests the Terminal accepts."""
    first, last = parse_day(start), parse_day(end)
    if last < first:
        raise ValueError(f"end {end!r} is before start {start!r}")
    if interval not in INTERVALS:
        raise ValueError(f"interval {interval!r}: expected one of {', '.join(INTERVALS)}")
    chunks = []
    if interval in SUB_MINUTE:
        day = first
        while day <= last:
            if not (skip_weekends and day.weekday() >= 5):
                chunks.append((day, day))
            day += timedelta(days=1)
        return chunks
    cursor = first
    while cursor <= last:
        month_later = _add_month(cursor) - timedelta(days=1)
        stop = min(last, month_later)
        chunks.append((cursor, stop))
        cursor = stop + timedelta(days=1)
    return chunks


def _add_month(day: date) -> date:
    year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
    for dom in (day.day, 30, 29, 28):
        try:
            return date(year, month, dom)
        except ValueError:
            continue
    raise AssertionError("unreachable")


@dataclass
class RestStats:
    requests: int = 0
    retries: int = 0
    pages: int = 0
    no_data: int = 0
    rows: int = 0


class ThetaRest:
    """Async v3 REST client. Create and use it on one event loop (the store's).

    base_url: Terminal address (``http://127.0.0.1:25503``; ``/v3`` is added).
    concurrency: simultaneous requests (the tier's limit; see TIER_CONCURRENCY).
    retries: attempts after the first for 429/474/571/572/5xx/transport errors.
    backoff_initial/backoff_max: seconds, doubled per attempt, with jitter (runtime.Backoff).
    timeout: seconds per HTTP request. fmt: csv (fastest), json or ndjson.
    on_retry: called (status, attempt, delay, url) before each retry, for notifications.
    """

    def __init__(self, base_url: str = "http://127.0.0.1:25503", concurrency: int = 4,
                 retries: int = 6, backoff_initial: float = 0.25, backoff_max: float = 8.0,
                 timeout: float = 60.0, fmt: str = "csv",
                 on_retry: Callable[[int, int, float, str], None] | None = None) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency {concurrency!r}: must be >= 1")
        if fmt not in ("csv", "json", "ndjson"):
            raise ValueError(f"fmt {fmt!r}: expected csv, json or ndjson")
        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v3"):
            self.base_url += "/v3"
        self.concurrency = concurrency
        self.retries = retries
        self.backoff = Backoff(initial=backoff_initial, maximum=backoff_max, attempts=retries)
        self.fmt = fmt
        self.on_retry = on_retry
        self.stats = RestStats()
        self._sem: asyncio.Semaphore | None = None
        self._client = httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(
            max_connections=concurrency, max_keepalive_connections=concurrency))

    async def aclose(self) -> None:
        await self._client.aclose()

    # ------------------------------------------------------------------ one request

    async def get(self, path: str, params: dict | None = None) -> pd.DataFrame:
        """GET ``/v3/{path}`` with pagination and retries; 472 gives an empty frame."""
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.concurrency)
        query = {k: v for k, v in (params or {}).items() if v is not None}
        query.setdefault("format", self.fmt)
        fmt = query["format"]
        url: str | None = f"{self.base_url}/{path.lstrip('/')}"
        frames = []
        visited: set[str] = set()
        while url:
            first = not visited
            visited.add(url)
            body, next_url = await self._fetch(url, query if first else None, fmt)
            if body is None:
                break
            try:
                frames.append(parse_rest(body, fmt))
            except (FrameError, ValueError) as exc:
                raise ThetaError(200, f"unreadable {fmt} body: {exc}", url) from None
            url = next_url
            if url in visited:  # a server that pages in a circle must not hang us
                raise ThetaError(200, f"Next-Page {url} was already fetched", path)
            if url:
                self.stats.pages += 1
        frames = [f for f in frames if len(f.columns)]
        if not frames:
            return empty_frame()
        df = frames[0] if len(frames) == 1 else pd.concat(frames)
        self.stats.rows += len(df)
        return df

    async def _fetch(self, url: str, params: dict | None, fmt: str) -> tuple[bytes | None, str | None]:
        attempt = 0
        while True:
            async with self._sem:
                self.stats.requests += 1
                try:
                    resp = await self._client.get(url, params=params)
                    status, body = resp.status_code, resp.content
                except httpx.TransportError as exc:
                    status, body, resp = 0, str(exc).encode(), None
            full_url = str(resp.url) if resp is not None else url
            if status == 200:
                return body, _next_page(resp, body, fmt)
            if status == 472:
                self.stats.no_data += 1
                return None, None
            message = _server_message(body)
            retryable = status in RETRY_STATUS or status == 0
            if not retryable or attempt >= self.retries:
                raise _error(status, message, full_url)
            attempt += 1
            self.stats.retries += 1
            delay = self._delay(attempt, resp)
            log.info("Theta Terminal %s for %s; retry %d in %.2fs", status, full_url, attempt,
                     delay)
            if self.on_retry is not None:
                self.on_retry(status, attempt, delay, full_url)
            await asyncio.sleep(delay)

    def _delay(self, attempt: int, resp: httpx.Response | None) -> float:
        """The backoff's delay, or the Terminal's own Retry-After hint within our cap."""
        delay = self.backoff.delay(attempt)
        hint = resp.headers.get("Retry-After") if resp is not None else None
        if hint:
            try:
                delay = max(delay, min(float(hint), self.backoff.maximum))
            except ValueError:
                pass
        return delay

    # ------------------------------------------------------------------ history

    async def history(self, kind: str, contract: Contract, start: Any, end: Any | None = None,
                      interval: str = "1m", start_time: str | None = None,
                      end_time: str | None = None, **extra: Any) -> pd.DataFrame:
        """History of one contract between two dates (inclusive), chunked and concurrent."""
        path = resolve(PATHS, contract, kind)
        chunks = plan_chunks(start, end if end is not None else start,
                             chunk_interval(kind, interval))
        base = dict(contract.rest_params())
        if kind not in NO_INTERVAL:
            base["interval"] = interval
        base.update(start_time=start_time, end_time=end_time, **extra)
        tasks = []
        for first, last in chunks:
            params = dict(base)
            if first == last:
                params["date"] = first.strftime("%Y%m%d")
            else:
                params["start_date"] = first.strftime("%Y%m%d")
                params["end_date"] = last.strftime("%Y%m%d")
            tasks.append(self.get(path, params))
        desc = f"theta {kind} {contract.instrument} {interval}"
        frames = [f for f in await _gather_with_progress(tasks, desc) if len(f)]
        if not frames:
            return empty_frame()
        return pd.concat(frames) if len(frames) > 1 else frames[0]

    # ------------------------------------------------------------------ lists

    async def expirations(self, root: str) -> list[str]:
        return expiration_list(await self.get("option/list/expirations", {"symbol": root}))

    async def strikes(self, root: str, expiration: str) -> list[float]:
        return strike_list(await self.get("option/list/strikes",
                                          {"symbol": root, "expiration": expiration}))

    async def contracts(self, day: Any, root: str | None = None,
                        req_type: str = "quote") -> pd.DataFrame:
        return await self.get(f"option/list/contracts/{req_type}",
                              {"symbol": root, "date": parse_day(day).strftime("%Y%m%d")})


async def _gather_with_progress(coros: list, desc: str) -> list:
    """``asyncio.gather`` of the requests, counting finished ones on a progress display
    (shown only when the download is long: see btlive.run.progress)."""
    from btlive.run.progress import Progress

    with Progress(total=len(coros), desc=desc, unit="requests") as progress:
        async def counted(coro):
            try:
                return await coro
            finally:
                progress.update()

        return await asyncio.gather(*(counted(c) for c in coros))


def _error(status: int, message: str, url: str) -> ThetaError:
    if status == 471:
        return ThetaPermissionError(status, message, url)
    if status == 473:
        return ThetaInvalidParams(status, message, url)
    return ThetaError(status, message or "no message", url)


def _next_page(resp: httpx.Response, body: bytes, fmt: str) -> str | None:
    link = resp.headers.get("Next-Page")
    if link and link.lower() != "null":
        return link
    if fmt == "json" and body[:200].find(b"next_page") >= 0:
        try:
            header = json.loads(body).get("header") or {}
        except (ValueError, AttributeError):
            return None
        page = header.get("next_page")
        if page and str(page).lower() != "null":
            return str(page)
    return None


def _server_message(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
            header = obj.get("header") or {}
            msg = header.get("error_msg") or obj.get("error") or obj.get("message")
            if msg and str(msg).lower() != "null":
                return str(msg)
        except (ValueError, AttributeError):
            pass
    return text[:500]
