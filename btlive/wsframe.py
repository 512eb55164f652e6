"""Server-side WebSocket framing, pure: the Theta Terminal simulator and the ThetaData fan-out
both write pre-serialized text frames straight to a transport, in bulk."""

from __future__ import annotations


def text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented server text frame (RFC 6455 5.2)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65_536:
        return b"\x81\x7e" + n.to_bytes(2, "big") + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload
