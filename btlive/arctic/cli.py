"""``btlive arctic ...``: import CSV bars, list symbols, snapshot, compact, finalize."""

from __future__ import annotations

import csv
import io
import os
import sys
import time
from itertools import islice

from btlive.arctic.library import DEFAULT_LIBRARY, DEFAULT_URI
from btlive.errors import CommandError, UsageError

DATE_NAMES = ("datetime", "date", "timestamp", "time", "ts")
COLUMN_NAMES = {"open": ("open",), "high": ("high",), "low": ("low",), "close": ("close",),
                "volume": ("volume", "vol"), "openinterest": ("openinterest", "open_interest", "oi")}


class CsvError(UsageError):
    """A CSV problem, with file, line and column in the message."""


def register(subparsers) -> None:
    def common(p):
        p.add_argument("--uri", default=DEFAULT_URI, help=f"ArcticDB URI (default {DEFAULT_URI})")
        p.add_argument("--library", default=DEFAULT_LIBRARY,
                       help=f"library name (default {DEFAULT_LIBRARY})")

    p = subparsers.add_parser("import", help="import a CSV of OHLCV bars into ArcticDB",
                              description="Import an OHLCV CSV (one header line; a date/datetime "
                              "column plus open, high, low, close, volume[, openinterest]) into "
                              "a symbol. The import is staged and becomes visible at once at "
                              "the end, or not at all.")
    p.add_argument("csv", help="CSV file")
    p.add_argument("--symbol", required=True, help="target symbol, e.g. bars/1d/AAPL")
    common(p)
    p.add_argument("--tz", default="UTC",
                   help="time zone of timestamps without an offset (default UTC)")
    p.add_argument("--date-column", help="name of the timestamp column (default: guessed)")
    p.add_argument("--time-column", help="separate time-of-day column joined to the date")
    p.add_argument("--chunk-rows", type=int, default=200_000, help="rows read per chunk")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--replace", action="store_true", help="replace an existing symbol")
    mode.add_argument("--append", action="store_true", help="append to an existing symbol")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_import)

    p = subparsers.add_parser("ls", help="list symbols with row counts and date ranges")
    common(p)
    p.add_argument("prefix", nargs="?", default="", help="only symbols starting with this")
    p.set_defaults(func=cmd_ls)

    p = subparsers.add_parser("snapshot", help="snapshot every symbol as YYYYMMDD (end of day)")
    common(p)
    p.add_argument("--name", help="snapshot name (default today's date in UTC, YYYYMMDD)")
    p.add_argument("--replace", action="store_true", help="overwrite a snapshot of that name")
    p.set_defaults(func=cmd_snapshot)

    p = subparsers.add_parser("compact", help="compact fragmented symbols (nightly)")
    common(p)
    p.add_argument("--symbol", action="append", help="only this symbol (repeatable)")
    p.add_argument("--rows-per-segment", type=int, help="target rows per segment")
    p.set_defaults(func=cmd_compact)

    p = subparsers.add_parser("finalize", help="finalize data a crashed recorder left staged")
    common(p)
    p.add_argument("--prefix", help="only symbols starting with this")
    p.set_defaults(func=cmd_finalize)


class _Progress:
    """A one-line progress bar on stderr, redrawn at most 10 times a second."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self._last = max(total, 1), enabled, 0.0
        self.drawn = False

    def update(self, done: int, rows: int, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not final and now - self._last < 0.1):
            return
        self._last = now
        self.drawn = True
        frac = min(done / self.total, 1.0)
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\r[{bar:<30}] {frac:6.1%} {rows:,} rows")
        if final:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _find_columns(header: list[str], args, path: str) -> tuple[list[str], dict[str, str]]:
    lower = {h.strip().lower(): h for h in header}
    if args.date_column:
        if args.date_column not in header:
            raise CsvError(f"{path}:1: no column {args.date_column!r} (columns: {header})")
        date_cols = [args.date_column]
    else:
        found = [lower[n] for n in DATE_NAMES if n in lower]
        date_cols = [found[0] if found else header[0]]
    if args.time_column:
        if args.time_column not in header:
            raise CsvError(f"{path}:1: no column {args.time_column!r} (columns: {header})")
        date_cols.append(args.time_column)
    mapping = {}
    for name, aliases in COLUMN_NAMES.items():
        col = next((lower[a] for a in aliases if a in lower), None)
        if col is None and name != "openinterest":
            raise CsvError(f"{path}:1: missing column {name!r} (columns: {header})")
        if col is not None:
            mapping[name] = col
    return date_cols, mapping


def read_csv_frames(path: str, args, progress: _Progress | None = None):
    """Yield UTC-indexed float64 OHLCV frames from ``path`` in chunks, checking every row:
    its number of fields, its timestamp and each value (empty values are errors)."""
    with open(path, "rb") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
        reader = csv.reader(text, skipinitialspace=True)
        try:
            header = next(reader, None)
            if not header or not any(h.strip() for h in header):
                raise CsvError(f"{path}:1: empty file or missing header")
            date_cols, mapping = _find_columns(header, args, path)
            chunk = _Chunk(path, header, date_cols, mapping, args.tz)
            while rows := list(islice(reader, args.chunk_rows)):
                frame = chunk.frame(rows)
                if progress is not None:
                    progress.update(raw.tell(), chunk.first_row)
                if len(frame):
                    yield frame
        except UnicodeDecodeError:
            raise CsvError(f"{path}:{reader.line_num + 1}: not a UTF-8 text CSV (a binary "
                           "file?); give a CSV of OHLCV bars") from None
        except csv.Error as exc:
            raise CsvError(f"{path}:{reader.line_num}: {exc} (a binary file?); give a CSV of "
                           "OHLCV bars") from None


def _line_of(path: str, row: int) -> int | str:
    """The line of data row ``row`` (0-based, blank lines skipped), found again only for an
    error message so the fast path keeps no per-row bookkeeping."""
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
        reader = csv.reader(fh, skipinitialspace=True)
        next(reader, None)
        for i, _ in enumerate(r for r in reader if r):
            if i == row:
                return reader.line_num
    return "?"


_NAN_TOKENS = ("nan", "na", "null")
_MAY_BE_NAN = ("volume", "openinterest")


class _Chunk:
    """Turns chunks of raw rows into checked frames; remembers what later chunks must know."""

    def __init__(self, path, header, date_cols, mapping, tz):
        self.path, self.header, self.date_cols, self.mapping, self.tz = (
            path, header, date_cols, mapping, tz)
        self.position = {name: i for i, name in enumerate(header)}
        self.first_row = 0  # data rows before this chunk
        self.last_ns: int | None = None

    def fail(self, i: int, message: str):
        raise CsvError(f"{self.path}:{_line_of(self.path, self.first_row + i)}: {message}")

    def frame(self, rows: list[list[str]]):
        import pandas as pd

        width = len(self.header)
        if any(len(r) != width for r in rows):
            rows = [r for r in rows if r]  # blank lines
            bad = next((i for i, r in enumerate(rows) if len(r) != width), None)
            if bad is not None:
                self.fail(bad, f"{len(rows[bad])} fields where the header has {width} "
                               f"({','.join(self.header)}); fix or remove that row")
        columns = list(zip(*rows, strict=True)) if rows else [()] * width
        index = self._index(columns)
        data = {name: self._numbers(columns[self.position[col]], name, col)
                for name, col in self.mapping.items()}
        frame = pd.DataFrame(data, index=index)
        frame.index.name = None
        self.first_row += len(rows)
        if len(index):
            self.last_ns = int(index.asi8[-1])
        return frame

    def _index(self, columns):
        import numpy as np
        import pandas as pd

        date_col = self.date_cols[0]
        raw_dt = pd.Series(columns[self.position[date_col]], dtype=object)
        if len(self.date_cols) == 2:
            raw_dt = raw_dt + " " + pd.Series(columns[self.position[self.date_cols[1]]],
                                              dtype=object)
        stamps = pd.to_datetime(raw_dt, errors="coerce", format="mixed")
        bad = stamps.isna().to_numpy()
        if bad.any():
            i = int(bad.argmax())
            self.fail(i, f"column {date_col!r}: {raw_dt.iloc[i]!r} is not a date/time")
        index = pd.DatetimeIndex(stamps)
        if index.tz is None:
            try:
                index = index.tz_localize(self.tz)
            except Exception as exc:  # noqa: BLE001 - a bad tz name or a DST gap, in one line
                raise CsvError(f"{self.path}: cannot localize timestamps to --tz {self.tz!r}: "
                               f"{exc}") from None
        index = index.tz_convert("UTC")
        ns = index.asi8
        backwards = np.flatnonzero(np.diff(ns) < 0)
        at = int(backwards[0]) + 1 if len(backwards) else None
        if at is None and self.last_ns is not None and len(ns) and ns[0] < self.last_ns:
            at = 0
        if at is not None:
            self.fail(at, f"column {date_col!r}: timestamps are not sorted "
                          f"({raw_dt.iloc[at]!r} is before the previous row)")
        return index

    def _numbers(self, raw: tuple, name: str, col: str):
        """float64 values of one column; empty and non-numeric values are errors, and NaN
        is accepted only where a bar may lack it (volume, open interest)."""
        import numpy as np

        try:
            values = np.array(raw, dtype=np.float64)
        except ValueError:  # the careful path: find the value, allow NA tokens where fine
            values = np.empty(len(raw))
            for i, text in enumerate(raw):
                try:
                    values[i] = float(text)
                except ValueError:
                    if name in _MAY_BE_NAN and text.strip().lower() in _NAN_TOKENS:
                        values[i] = np.nan
                        continue
                    what = "is empty" if not text.strip() else f"{text.strip()!r} is not a number"
                    self.fail(i, f"column {col!r}: {what}; every row needs a number there")
        if name not in _MAY_BE_NAN:
            nan = np.isnan(values)
            if nan.any():
                i = int(nan.argmax())
                self.fail(i, f"column {col!r}: {raw[i].strip()!r} is not a number; every row "
                             "needs a number there")
        return values


def _open_target(args):
    """The library and whether the symbol exists, refusing what would lose or mix data."""
    from btlive.arctic.library import get_library, redact_uri

    lib = get_library(args.uri, args.library)
    exists = lib.has_symbol(args.symbol)
    if exists and not (args.replace or args.append):
        raise CommandError(f"symbol {args.symbol!r} already exists in {redact_uri(args.uri)} "
                           f"library {args.library!r}; use --replace or --append")
    if args.symbol in lib.get_staged_symbols():
        raise CommandError(f"symbol {args.symbol!r} has staged data from an unfinished write; "
                           "run `btlive arctic finalize` or remove it first")
    return lib, exists


def cmd_import(args) -> int:
    import arcticdb

    path = args.csv
    if os.path.isdir(path):
        raise UsageError(f"{path}: is a directory; give the path of an OHLCV CSV")
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such file; give the path of an OHLCV CSV")
    if not args.symbol.strip():
        raise UsageError(f"--symbol {args.symbol!r}: give a symbol name, e.g. bars/1d/AAPL")
    if args.chunk_rows < 1:
        raise UsageError(f"--chunk-rows {args.chunk_rows}: must be >= 1")
    progress = _Progress(os.path.getsize(path), enabled=not args.quiet)
    lib, exists, rows, tokens = None, False, 0, []
    try:
        for frame in read_csv_frames(path, args, progress):
            if lib is None:  # opened once the header is known good
                lib, exists = _open_target(args)
            tokens.append(lib.stage(args.symbol, frame))
            rows += len(frame)
        progress.update(progress.total, rows, final=True)
        if not rows:
            raise CsvError(f"{path}: no data rows after the header")
        mode = "append" if (exists and args.append) else "write"
        lib.finalize_staged_data(args.symbol, mode, stage_results=tokens)
    except BaseException as exc:  # all or nothing: never leave this import's stages behind
        if tokens:
            lib.delete_staged_data(tokens)
        if progress.drawn:
            sys.stderr.write("\n")
        if isinstance(exc, arcticdb.exceptions.ArcticException):
            raise CommandError(f"symbol {args.symbol!r}: {exc}") from None
        raise
    desc = lib.get_description(args.symbol)
    print(f"imported {rows:,} rows into {args.symbol} ({desc.row_count:,} rows, "
          f"{desc.date_range[0]} .. {desc.date_range[1]} UTC)")
    return 0


def cmd_ls(args) -> int:
    from btlive.arctic.library import get_library

    lib = get_library(args.uri, args.library, create=False)
    staged = set(lib.get_staged_symbols())
    symbols = sorted(s for s in lib.list_symbols() if s.startswith(args.prefix))
    rows = [("SYMBOL", "ROWS", "START (UTC)", "END (UTC)", "COLUMNS")]
    for symbol in symbols:
        desc = lib.get_description(symbol)
        start, end = desc.date_range
        rows.append((symbol + (" *" if symbol in staged else ""), f"{desc.row_count:,}",
                     str(start) if start is not None else "-",
                     str(end) if end is not None else "-",
                     ",".join(c.name for c in desc.columns)))
    for symbol in sorted(staged - set(symbols)):
        if symbol.startswith(args.prefix):
            rows.append((symbol + " *", "0", "-", "-", "(staged only)"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4])
    if staged:
        print("* has staged (not yet finalized) data: `btlive arctic finalize`")
    return 0


def cmd_snapshot(args) -> int:
    from btlive.arctic.maintenance import snapshot

    name = snapshot(args.uri, args.library, name=args.name, replace=args.replace)
    print(f"snapshot {name} created")
    return 0


def cmd_compact(args) -> int:
    from btlive.arctic.maintenance import compact

    if args.rows_per_segment is not None and args.rows_per_segment < 1:
        raise UsageError(f"--rows-per-segment {args.rows_per_segment}: must be >= 1")
    report = compact(args.uri, args.library, symbols=args.symbol,
                     rows_per_segment=args.rows_per_segment)
    return _print_report("compacted", report)


def cmd_finalize(args) -> int:
    from btlive.arctic.maintenance import finalize_staged

    report = finalize_staged(args.uri, args.library, prefix=args.prefix)
    return _print_report("finalized", report)


def _print_report(verb: str, report) -> int:
    """A maintenance report: a count on stdout, one line per failed symbol, then the error."""
    print(f"{verb} {len(report.done)} symbols")
    for symbol, err in report.errors.items():
        print(f"  {symbol}: {err}", file=sys.stderr)
    if report.errors:
        raise CommandError(f"{len(report.errors)} symbols failed (listed above); their data is "
                           "kept as it was")
    return 0

