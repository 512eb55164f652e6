"""The audit's local spill journal: events the database has not taken yet, on disk, in order.

A live run whose writer falls behind appends events here instead of blocking the strategy or
dropping them; the writer drains the file once it has caught up. Events that could not be written
at all when a run ended are saved here too, and the next writer on the same database writes them
first. A journal is a file of length-prefixed pickled events; its ``.pos`` sidecar names the
batch being committed from it (written before the commit), so a writer killed between the
commit and the next read resumes exactly after what reached the database.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pickle
import struct
from collections.abc import Iterable
from pathlib import Path

import sqlalchemy as sa

_HEADER = struct.Struct("<I")


def default_dir(url: str) -> Path:
    """Next to a SQLite file (``audit.db.journal/``), else ``$XDG_STATE_HOME/btlive/audit-journal``."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        path = Path(parsed.database.removeprefix("file:").split("?")[0]).expanduser().resolve()
        return path.parent / (path.name + ".journal")
    state = Path(os.environ.get("XDG_STATE_HOME") or "~/.local/state").expanduser()
    return state / "btlive" / "audit-journal"


def stem(url: str) -> str:
    """The name journals of one database share (the URL's hash: no secret in a file name)."""
    return "audit-" + hashlib.sha256(sa.make_url(url).render_as_string(hide_password=False)
                                     .encode()).hexdigest()[:16]


class Journal:
    """One journal file, appended by producers, read by the writer (offsets in bytes).

    Holds an exclusive ``flock`` while open, so a writer in another process never adopts a
    journal that is still in use.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a+b")  # kept open while the journal is
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.close()
            raise
        self._file.seek(0, os.SEEK_END)
        self.size = self._file.tell()  # bytes of complete records
        self.read_pos = 0
        self.records = 0  # appended by this process
        self._reader = open(self.path, "rb")

    @property
    def pos_path(self) -> Path:
        return self.path.with_suffix(".pos")

    def append(self, event) -> None:
        """Write one event and hand it to the OS (it survives the process being killed)."""
        data = pickle.dumps(event, protocol=pickle.HIGHEST_PROTOCOL)
        self._file.write(_HEADER.pack(len(data)) + data)
        self._file.flush()
        self.size += _HEADER.size + len(data)
        self.records += 1

    def append_many(self, events: Iterable) -> int:
        n = 0
        for event in events:
            data = pickle.dumps(event, protocol=pickle.HIGHEST_PROTOCOL)
            self._file.write(_HEADER.pack(len(data)) + data)
            self.size += _HEADER.size + len(data)
            n += 1
        self.sync()
        self.records += n
        return n

    def sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    @property
    def unread(self) -> bool:
        return self.read_pos < self.size

    def read(self, limit: int, end: int | None = None) -> tuple[list, int]:
        """Up to ``limit`` events from ``read_pos`` (not past ``end``), and the offset after them.

        A torn last record (the process was killed mid-write) ends the journal.
        """
        end = self.size if end is None else end
        reader = self._reader
        reader.seek(self.read_pos)
        pos = self.read_pos
        events = []
        while len(events) < limit and pos + _HEADER.size <= end:
            header = reader.read(_HEADER.size)
            (length,) = _HEADER.unpack(header)
            if pos + _HEADER.size + length > end:
                break
            events.append(pickle.loads(reader.read(length)))  # our own file, written above
            pos += _HEADER.size + length
        return events, pos

    def mark(self, writer_id: str, batch_no: int, start: int, end: int) -> None:
        """Record, before committing it, which part of the journal a batch holds."""
        tmp = self.pos_path.with_suffix(".pos.tmp")
        tmp.write_text(json.dumps({"writer_id": writer_id, "batch_no": batch_no,
                                   "start": start, "end": end}))
        os.replace(tmp, self.pos_path)

    def last_mark(self) -> dict | None:
        try:
            return json.loads(self.pos_path.read_text())
        except (OSError, ValueError):
            return None

    def close(self, delete: bool = False) -> None:
        if delete:
            for path in (self.path, self.pos_path):
                path.unlink(missing_ok=True)
        self._reader.close()
        self._file.close()  # releases the lock

    def copy_rest_to(self, other: Journal) -> int:
        """Append the unread records to ``other``; returns how many."""
        n = 0
        while self.unread:
            events, self.read_pos = self.read(1000)
            if not events:
                break
            n += other.append_many(events)
        return n


def read_events(path: Path) -> list:
    """Every complete event in the journal at ``path`` (for tests and inspection)."""
    jr = Journal(path)
    try:
        events, _ = jr.read(1 << 62)
        return events
    finally:
        jr.close()


def count_records(path: Path, start: int = 0) -> int:
    """How many complete records ``path`` holds after byte ``start``."""
    n = 0
    with open(path, "rb") as f:
        f.seek(start)
        while header := f.read(_HEADER.size):
            if len(header) < _HEADER.size:
                break
            (length,) = _HEADER.unpack(header)
            if len(f.read(length)) < length:
                break
            n += 1
    return n


def leftovers(directory: Path, prefix: str) -> list[Path]:
    """Journals of ``prefix`` left by earlier writers (oldest first)."""
    if not directory.is_dir():
        return []
    return sorted(directory.glob(f"{prefix}-*.journal"), key=lambda p: (p.stat().st_mtime, p.name))
