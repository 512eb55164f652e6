"""History through the ``thetadata`` 1.0 gRPC client (no Terminal needed).

Same normalized frames as the REST path (see theta_parse). The client is synchronous,
so the store calls it from an executor thread, never from its event loop.
Credentials: ``THETADATA_EMAIL``/``THETADATA_PASSWORD`` (or ``*_FILE``), else
``creds_file`` (email on line 1, password on line 2), else ``THETADATA_API_KEY``.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import date
from typing import Any

import pandas as pd

from btlive.runtime import Backoff
from btlive.theta.parse import Contract, empty_frame, normalize_frame
from btlive.theta.rest import (
    NO_INTERVAL,
    ThetaError,
    ThetaInvalidParams,
    ThetaPermissionError,
    chunk_interval,
    expiration_list,
    plan_chunks,
    resolve,
    strike_list,
)

log = logging.getLogger(__name__)

#: (sec_type, kind) -> ThetaClient method name.
METHODS = {
    ("OPTION", "quote"): "option_history_quote",
    ("OPTION", "trade"): "option_history_trade",
    ("OPTION", "ohlc"): "option_history_ohlc",
    ("OPTION", "eod"): "option_history_eod",
    ("OPTION", "open_interest"): "option_history_open_interest",
    ("OPTION", "greeks"): "option_history_greeks_first_order",
    ("OPTION", "greeks_second_order"): "option_history_greeks_second_order",
    ("OPTION", "greeks_third_order"): "option_history_greeks_third_order",
    ("OPTION", "greeks_all"): "option_history_greeks_all",
    ("OPTION", "greeks_eod"): "option_history_greeks_eod",
    ("OPTION", "implied_volatility"): "option_history_greeks_implied_volatility",
    ("STOCK", "quote"): "stock_history_quote",
    ("STOCK", "trade"): "stock_history_trade",
    ("STOCK", "ohlc"): "stock_history_ohlc",
    ("STOCK", "eod"): "stock_history_eod",
    ("INDEX", "price"): "index_history_price",
    ("INDEX", "ohlc"): "index_history_ohlc",
    ("INDEX", "eod"): "index_history_eod",
}
RETRY_CODES = frozenset({"UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"})
#: Methods that take start_date/end_date only (no single ``date``).
RANGE_ONLY = frozenset({"option_history_eod", "option_history_greeks_eod", "stock_history_eod", "index_history_eod",
                        "index_history_ohlc"})


class GrpcHistory:
    """Thin adapter from ThetaStore's history calls to ``thetadata.ThetaClient``.

    host/port: MDDS address (default: the package's, or THETADATA_MDDS_HOST/_PORT);
    insecure: plain-text channel (local simulators); auth_url: login endpoint;
    creds_file: credentials file; client: an existing ThetaClient (tests, reuse);
    retries/backoff_*: UNAVAILABLE, RESOURCE_EXHAUSTED and DEADLINE_EXCEEDED are retried;
    PERMISSION_DENIED and INVALID_ARGUMENT raise like REST's 471 and 473.
    """

    def __init__(self, host: str | None = None, port: int | str | None = None,
                 insecure: bool = False, auth_url: str | None = None,
                 creds_file: str | None = None, client: Any = None, retries: int = 6,
                 backoff_initial: float = 0.25, backoff_max: float = 8.0) -> None:
        self.channel = None  # ours to close; a client passed in belongs to the caller
        if client is None:
            client = self._login(host, port, insecure, auth_url, creds_file)
            self.channel = _own_channel(client, insecure)
        self.client = client
        self.retries = retries
        self.backoff = Backoff(initial=backoff_initial, maximum=backoff_max, attempts=retries)

    @staticmethod
    def _login(host, port, insecure, auth_url, creds_file):
        from btlive.config import secret

        try:
            from thetadata import ThetaClient
        except ImportError as exc:  # pragma: no cover - dependency of btlive
            raise RuntimeError(f"the thetadata package is needed for history='grpc': {exc}") \
                from None
        kwargs: dict[str, Any] = dict(dataframe_type="pandas", mdds_host=host,
                                      mdds_port=str(port) if port else None,
                                      insecure_channel=bool(insecure), auth_url=auth_url)
        email, password = secret("THETADATA_EMAIL"), secret("THETADATA_PASSWORD")
        if email and password:
            kwargs.update(email=email.reveal(), password=password.reveal())
        elif creds_file:
            kwargs["creds_file"] = creds_file
        elif not os.environ.get("THETADATA_API_KEY"):
            raise RuntimeError("no ThetaData credentials: set THETADATA_EMAIL and "
                               "THETADATA_PASSWORD, THETADATA_API_KEY, or creds_file")
        return ThetaClient(**kwargs)

    def close(self) -> None:
        """Close the gRPC channel (its sockets and polling threads); calls then fail."""
        channel, self.channel = self.channel, None
        if channel is not None:
            channel.close()

    def _call(self, name: str, **kwargs) -> pd.DataFrame:
        import grpc
        from thetadata.errors import NoDataFoundError

        attempt = 0
        while True:
            try:
                df = getattr(self.client, name)(**kwargs)
                break
            except NoDataFoundError:
                return empty_frame()
            except grpc.RpcError as exc:
                code, text = exc.code(), exc.details() or str(exc.code())
                if code == grpc.StatusCode.PERMISSION_DENIED:
                    raise ThetaPermissionError(471, text, name) from None
                if code == grpc.StatusCode.INVALID_ARGUMENT:
                    raise ThetaInvalidParams(473, text, name) from None
                if code.name not in RETRY_CODES or attempt >= self.retries:
                    raise ThetaError(0, f"{code.name}: {text}", name) from None
                attempt += 1
                delay = self.backoff.delay(attempt)
                log.info("gRPC %s for %s; retry %d in %.2fs", code.name, name, attempt, delay)
                time.sleep(delay)
        if df is None or not len(df):
            return empty_frame()
        if not isinstance(df, pd.DataFrame):  # a polars frame
            df = df.to_pandas()
        return normalize_frame(df)

    def history(self, kind: str, contract: Contract, first: date, last: date,
                interval: str = "1m", **extra: Any) -> pd.DataFrame:
        name = resolve(METHODS, contract, kind)
        base: dict[str, Any] = {"symbol": contract.root}
        if contract.is_option:
            base.update(expiration=_ymd(contract.expiration), strike=f"{contract.strike:.3f}",
                        right="call" if contract.right == "C" else "put")
        if kind not in NO_INTERVAL:
            base["interval"] = interval
        base.update({k: v for k, v in extra.items() if v is not None})
        frames = []
        for lo, hi in plan_chunks(first, last, chunk_interval(kind, interval)):
            params = dict(base)
            if lo == hi and name not in RANGE_ONLY:
                params["date"] = lo
            else:
                params.update(start_date=lo, end_date=hi)
            df = self._call(name, **params)
            if len(df):
                frames.append(df)
        if not frames:
            return empty_frame()
        return pd.concat(frames) if len(frames) > 1 else frames[0]

    def expirations(self, root: str) -> list[str]:
        return expiration_list(self._call("option_list_expirations", symbol=root))

    def strikes(self, root: str, expiration: str) -> list[float]:
        return strike_list(self._call("option_list_strikes", symbol=root,
                                      expiration=_ymd(expiration)))


def _own_channel(client: Any, insecure: bool):
    """Give ``client`` a channel we can close: thetadata keeps only the stub, not its channel
    (the one it made never connected - channels are lazy - and is collected)."""
    import grpc
    from thetadata._proto.v3grpc import endpoints_pb2_grpc

    target = f"{client.mdds_host}:{client.mdds_port}"
    insecure = insecure or os.getenv("THETADATA_INSECURE_CHANNEL", "").lower() in ("1", "true")
    channel = grpc.insecure_channel(target) if insecure else grpc.secure_channel(
        target, grpc.ssl_channel_credentials())
    client.stub = endpoints_pb2_grpc.BetaThetaTerminalStub(channel)
    return channel


def _ymd(expiration: str) -> date:
    """'YYYYMMDD' -> date (the thetadata client takes dates)."""
    return date(int(expiration[:4]), int(expiration[4:6]), int(expiration[6:]))
