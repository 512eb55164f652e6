"""TWS API framing, sans-IO: length-prefixed frames of NUL-terminated UTF-8 fields.

Nothing here touches sockets, so the same functions serve the server, the tests
(recorded byte frames) and anyone who wants to look at a capture.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterable

MIN_VERSION = 157
MAX_VERSION = 178
API_PREFIX = b"API\0"

_LEN = struct.Struct(">I")
_VERSIONS = re.compile(rb"^v(\d+)(?:\.\.(\d+))?")


class ProtocolError(ValueError):
    """The peer sent bytes that are not a TWS API conversation."""


def fmt(value) -> str:
    """One field as TWS writes it: bools 1/0, None empty, integral floats without '.0'."""
    if value is None:
        return ""
    if value is True:
        return "1"
    if value is False:
        return "0"
    if isinstance(value, float):
        if value != value or math.isinf(value):
            return ""
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return float.__repr__(value)  # numpy floats repr as np.float64(...)
    return str(value)


def encode_payload(fields: Iterable) -> bytes:
    """The body of one message: every field followed by NUL."""
    return ("\0".join(map(fmt, fields)) + "\0").encode()


def frame(payload: bytes) -> bytes:
    """Prefix a payload with its 4-byte big-endian length."""
    return _LEN.pack(len(payload)) + payload


def encode(fields: Iterable) -> bytes:
    """A complete frame for a list of fields."""
    return frame(encode_payload(fields))


def decode_payload(payload: bytes) -> list[str]:
    """Fields of one message body (the trailing NUL yields no field)."""
    parts = payload.decode(errors="backslashreplace").split("\0")
    if parts and parts[-1] == "":
        parts.pop()
    return parts


def negotiate(payload: bytes, highest: int = MAX_VERSION) -> int:
    """Server version for a client's ``v<min>..<max>[ options]`` greeting.

    Answers min(client max, ``highest``); raises when the ranges do not meet.
    """
    match = _VERSIONS.match(payload)
    if not match:
        raise ProtocolError(f"handshake: expected 'v<min>..<max>', got {payload[:40]!r}")
    low = int(match.group(1))
    high = int(match.group(2) or match.group(1))
    version = min(high, highest)
    if version < max(low, MIN_VERSION):
        raise ProtocolError(f"handshake: client range v{low}..{high} does not meet "
                            f"server range v{MIN_VERSION}..{highest}")
    return version


class FrameDecoder:
    """Incremental decoder for what a client sends: the ``API\\0`` prefix, then frames.

    ``feed(data)`` returns the payloads completed by ``data``; the first payload
    after the prefix is the version greeting (raw bytes), later ones are field
    lists.
    """

    def __init__(self, expect_prefix: bool = True, max_frame: int = 16 << 20):
        self._buf = bytearray()
        self._need_prefix = expect_prefix
        self._max = max_frame

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        if self._need_prefix:
            if len(buf) < len(API_PREFIX):
                if not API_PREFIX.startswith(bytes(buf)):
                    raise ProtocolError(f"handshake: expected b'API\\0', got {bytes(buf)!r}")
                return []
            if not buf.startswith(API_PREFIX):
                raise ProtocolError(f"handshake: expected b'API\\0', got {bytes(buf[:8])!r}")
            del buf[: len(API_PREFIX)]
            self._need_prefix = False
        out = []
        pos = 0
        end = len(buf)
        while end - pos >= 4:
            (size,) = _LEN.unpack_from(buf, pos)
            if size > self._max:
                raise ProtocolError(f"frame of {size} bytes exceeds the {self._max} limit")
            if end - pos - 4 < size:
                break
            out.append(bytes(buf[pos + 4 : pos + 4 + size]))
            pos += 4 + size
        if pos:
            del buf[:pos]
        return out


def split_frames(data: bytes) -> list[list[str]]:
    """All complete frames in ``data`` as field lists (for tests and captures)."""
    decoder = FrameDecoder(expect_prefix=False)
    return [decode_payload(p) for p in decoder.feed(data)]
