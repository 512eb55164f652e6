"""ANCHOR for bench_theta: the sans-IO WebSocket codec btlive ran before it switched to
picows (btlive/theta/wire.py at that time), kept verbatim so the benchmark can measure the
picows client against it in the same run. Not used by btlive.

A small sans-IO WebSocket (RFC 6455) client codec, tuned for a firehose of text frames.

Why not the ``websockets`` package: its per-message machinery costs tens of
microseconds, and the Terminal can push 100k+ frames per second. Here one
``feed(bytes)`` call splits every complete frame out of a read buffer in a tight loop.
Only what a client needs: the upgrade request, masked client frames, unmasked server
frames, fragmentation, ping/pong and close.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from urllib.parse import urlsplit

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_MESSAGE = 16 * 1024 * 1024


class WsProtocolError(Exception):
    """The peer broke RFC 6455 (bad handshake, bad frame, oversized message)."""


def split_url(url: str) -> tuple[str, int, str]:
    """``ws://host:port/path`` -> (host, port, path)."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "http"):
        raise ValueError(f"ws_url {url!r}: only ws:// is supported (the Terminal is local)")
    if not parts.hostname:
        raise ValueError(f"ws_url {url!r}: no host")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.hostname, parts.port or 80, path


def handshake_request(host: str, port: int, path: str) -> tuple[bytes, str]:
    """The HTTP upgrade request and the ``Sec-WebSocket-Accept`` value to expect."""
    key = base64.b64encode(os.urandom(16)).decode()
    accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\n\r\n").encode()
    return request, accept


def check_handshake_response(head: bytes, accept: str) -> None:
    """Raise unless ``head`` (status line + headers) accepts the upgrade."""
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or status[1] != "101":
        raise WsProtocolError(f"WebSocket upgrade refused: {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if headers.get("sec-websocket-accept") != accept:
        raise WsProtocolError("WebSocket upgrade: wrong Sec-WebSocket-Accept")


def encode_frame(opcode: int, payload: bytes, mask: bool = True) -> bytes:
    """One final frame; clients must mask (RFC 6455 5.3)."""
    n = len(payload)
    head = bytearray([0x80 | opcode])
    mbit = 0x80 if mask else 0
    if n < 126:
        head.append(mbit | n)
    elif n < 65536:
        head.append(mbit | 126)
        head += struct.pack("!H", n)
    else:
        head.append(mbit | 127)
        head += struct.pack("!Q", n)
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    head += key
    return bytes(head) + _xor(payload, key)


def _xor(payload: bytes, key: bytes) -> bytes:
    if not payload:
        return b""
    n = len(payload)
    mask = int.from_bytes((key * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ mask).to_bytes(n, "big")


class FrameDecoder:
    """Incremental decoder of server frames.

    ``feed(data)`` returns (messages, controls): complete text/binary message payloads,
    and (opcode, payload) for ping/pong/close frames.
    """

    __slots__ = ("_buf", "_frag", "_frag_size")

    def __init__(self) -> None:
        self._buf = b""
        self._frag: list[bytes] | None = None
        self._frag_size = 0

    def feed(self, data: bytes) -> tuple[list[bytes], list[tuple[int, bytes]]]:
        buf = self._buf + data if self._buf else data
        messages: list[bytes] = []
        controls: list[tuple[int, bytes]] = []
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            n = b1 & 0x7F
            head = 2
            if n == 126:
                if end - pos < 4:
                    break
                n = (buf[pos + 2] << 8) | buf[pos + 3]
                head = 4
            elif n == 127:
                if end - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2:pos + 10], "big")
                head = 10
            if b1 & 0x80:
                raise WsProtocolError("server frames must not be masked")
            if n > MAX_MESSAGE:
                raise WsProtocolError(f"frame of {n} bytes exceeds {MAX_MESSAGE}")
            stop = pos + head + n
            if stop > end:
                break
            payload = buf[pos + head:stop]
            pos = stop
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if opcode == OP_TEXT or opcode == OP_BINARY:
                if fin:
                    messages.append(payload)
                else:
                    self._frag, self._frag_size = [payload], n
            else:  # rare: kept out of the hot loop
                self._other(opcode, fin, payload, messages, controls)
        self._buf = buf[pos:] if pos < end else b""
        return messages, controls


    def _other(self, opcode: int, fin: int, payload: bytes, messages: list[bytes],
               controls: list[tuple[int, bytes]]) -> None:
        """Continuation and control frames."""
        if opcode == OP_CONT:
            if self._frag is None:
                raise WsProtocolError("continuation frame without a start")
            self._frag_size += len(payload)
            if self._frag_size > MAX_MESSAGE:  # each frame is bounded; so is their sum
                raise WsProtocolError(f"fragmented message exceeds {MAX_MESSAGE} bytes")
            self._frag.append(payload)
            if fin:
                messages.append(b"".join(self._frag))
                self._frag = None
        elif opcode in (OP_CLOSE, OP_PING, OP_PONG):
            controls.append((opcode, payload))
        else:
            raise WsProtocolError(f"unknown opcode {opcode}")


def close_payload(code: int = 1000, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()[:120]
