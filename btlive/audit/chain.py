"""The hash chain, as pure functions: the writer and ``verify`` share them.

``row_hash = SHA256(prev_hash | table | seq | canonical JSON of the row)``,
starting from an all-zero genesis. The canonical JSON covers every non-NULL
column except ``seq`` and ``row_hash`` and is built from values exactly as the
database returns them (Decimal as fixed-point text, datetimes as UTC ISO), so
a row read back hashes to what was written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal

GENESIS = "0" * 64


def canonical_value(value):
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, Decimal):
        if value.is_zero():
            value = value.copy_abs()
        return format(value, "f")
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat()
    if isinstance(value, float):
        # floats never reach the tables (money is Decimal); keep them exact anyway
        return repr(value)
    raise TypeError(f"no canonical form for {value!r} ({type(value).__name__})")


_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def canonical_json(row: Mapping) -> str:
    """Sorted keys, no whitespace, canonical values; NULL columns, ``seq`` and ``row_hash`` left out.

    Leaving NULLs out keeps sparse rows cheap and loses nothing: a value set where
    there was NULL, or cleared, changes the key set and so the hash.
    """
    payload = {}
    for k, v in row.items():
        if v is None:
            continue
        t = type(v)
        if t is Decimal:
            text = str(v)
            if "E" in text:
                text = format(v, "f")
            if text[0] == "-" and not v:
                text = text[1:]
            v = text
        elif t is not str and t is not int:
            v = canonical_value(v)
        payload[k] = v
    payload.pop("seq", None)
    payload.pop("row_hash", None)
    return _encode(payload)


def row_hash(prev_hash: str, table: str, seq: int, row: Mapping) -> str:
    data = f"{prev_hash}|{table}|{seq}|{canonical_json(row)}"
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


class ChainVerifier:
    """Feed rows in ``seq`` order; collects every break instead of stopping at the first."""

    def __init__(self, head: tuple[int, str] = (0, GENESIS)):
        self.seq, self.hash = head
        self.problems: list[str] = []
        self.rows = 0
        self.hash_at: dict[int, str] = {}

    def feed(self, table: str, row: Mapping, remember: bool = False) -> None:
        seq = row["seq"]
        if seq != self.seq + 1:
            if seq <= self.seq:
                self.problems.append(f"{table} seq {seq}: duplicate or out of order after {self.seq}")
            else:
                self.problems.append(
                    f"{table} seq {seq}: rows {self.seq + 1}..{seq - 1} are missing (deleted?)")
        expected = row_hash(self.hash, table, seq, row)
        if expected != row["row_hash"]:
            self.problems.append(
                f"{table} seq {seq}: row_hash mismatch (row modified, or an earlier row changed)")
        # continue from the stored hash so that one edited row is reported once, not for every row after
        self.seq, self.hash = seq, row["row_hash"]
        self.rows += 1
        if remember:
            self.hash_at[seq] = self.hash
