"""Events to rows, fast: one generated converter per event class and dialect.

For each event the converter returns the driver parameters of its INSERT (every column but
``seq`` and ``row_hash``, in sorted column order), the canonical JSON that the hash chain
covers (:func:`btlive.audit.chain.canonical_json` of the row as the database gives it back),
built in the same pass, and the row's unique key (None for tables without one). Generating
straight-line code per class keeps the per-event cost to a few attribute reads and appends:
the writer's speed is largely this function's speed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from json.encoder import encode_basestring
from operator import attrgetter

import sqlalchemy as sa

from btlive.audit import schema
from btlive.audit.events import EVENT_TYPES, FIELD_NAMES, split_exec_id

_RENAMED = {"params": "params_json", "raw": "raw_json"}
#: Unique keys per table (``ON CONFLICT DO NOTHING``), in the order ``event.key()`` gives them;
#: the converters return them as the driver values (what the database compares).
KEY_COLUMNS = {
    "runs": ("run_id", "event"),
    "orders": ("order_key", "source"),
    "executions": ("exec_id",),
    "commissions": ("exec_id",),
}
_EPOCH = datetime(1970, 1, 1)


def money_text(value) -> str | None:
    """Canonical fixed-point text of a number (None for None, NaN and infinities)."""
    if type(value) is float:
        text = repr(value)
        if "e" not in text and "n" not in text:  # no exponent, not nan/inf
            return "0.0" if text == "-0.0" else text
    elif type(value) is int:
        return str(value)
    d = schema.to_decimal(value)
    if d is None:
        return None
    text = format(d, "f")
    return text[1:] if text[0] == "-" and not d else text


_SECONDS: dict[int, str] = {}


def _second_text(seconds: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` of whole seconds since the epoch, UTC (cached, bounded)."""
    if len(_SECONDS) >= 4096:
        _SECONDS.clear()
    text = _SECONDS[seconds] = (_EPOCH + timedelta(seconds=seconds)).isoformat()
    return text


def _json_text(value) -> str:
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


def _kind(column: sa.Column) -> str:
    t = column.type
    if isinstance(t, schema.Money):
        return "money"
    if isinstance(t, schema.UtcDateTime):
        return "datetime"
    if isinstance(t, sa.Boolean):
        return "bool"
    if isinstance(t, sa.Integer):
        return "int"
    return "str"


def _source(table: str, column: str, fields: set[str]) -> str | None:
    if column == "recorded_ns":
        return "recorded"
    if table == "executions" and column == "base_exec_id":
        return "_base"
    if table == "executions" and column == "exec_rev":
        return "_rev"
    field = {v: k for k, v in _RENAMED.items()}.get(column, column)
    if field in fields:
        return f"f_{field}"
    return None


def _column_code(table: str, name: str, kind: str, source: str, required: bool,
                 dialect: str) -> list[str]:
    """Straight-line code setting ``p_<name>`` (the driver value) and appending the column's
    JSON fragment (``"name":value``) when the value is not NULL."""
    var, key = f"p_{name}", encode_basestring(name)
    if kind == "datetime":
        # the whole-second text is cached (events come in bursts within a second); the canonical
        # form drops a zero fraction as isoformat() does, the driver value always has one
        body = ["s, us = divmod(v // 1000, 1_000_000)",
                "t = _seconds.get(s) or _second_text(s)",
                "f = '.%06d' % us",
                f"ja('{key}:\"' + t + (f + '+00:00\"' if us else '+00:00\"'))",
                f"{var} = " + ("t[:10] + ' ' + t[11:] + f" if dialect == "sqlite"
                               else "_datetime.fromisoformat(t + f + '+00:00')")]
        source = f"f_{name[:-3]}_ns"
    elif kind == "str":
        body = ["if type(v) is not str:", "    v = str(v)", f"ja('{key}:' + _enc(v))", f"{var} = v"]
    elif kind == "int":
        body = ["if type(v) is not int:", "    v = int(v)", f"ja('{key}:' + str(v))",
                f"{var} = v"]
    elif kind == "bool":
        body = ["v = bool(v)", f"ja('{key}:true' if v else '{key}:false')",
                f"{var} = " + ("int(v)" if dialect == "sqlite" else "v")]
    else:  # money: the common case inline (a float whose repr is fixed-point already)
        db = "t" if dialect == "sqlite" else "_Decimal(t)"
        body = ["if type(v) is float and 'e' not in (t := repr(v)) and 'n' not in t "
                "and t != '-0.0':",
                f"    ja('{key}:\"' + t + '\"')", f"    {var} = {db}",
                "else:",
                "    t = _money(v)",  # None for NaN and infinities: stored as NULL
                "    if t is None:", f"        {var} = None",
                "    else:", f"        ja('{key}:\"' + t + '\"')", f"        {var} = {db}"]
    out = [f"    v = {source}", "    if v is None:", f"        {var} = None", "    else:",
           *(f"        {line}" for line in body)]
    if required:
        out += [f"    if {var} is None:",
                f"        raise ValueError('{table}.{name} is required but is None')"]
    return out


def _converter(cls, dialect: str) -> tuple[Callable, list[str]]:
    table = schema.TABLES[cls.TABLE]
    fields = set(FIELD_NAMES[cls])
    columns = sorted(c.name for c in table.columns if c.name not in ("seq", "row_hash"))
    names = FIELD_NAMES[cls]
    lines = ["def convert(ev, recorded, _enc=_enc, _money=_money, _seconds=_SECONDS, "
             "_second_text=_second_text, _get=_get):",
             # every field in one C call, into locals
             f"    {', '.join(f'f_{n}' for n in names)}, = _get(ev)",
             "    j = []", "    ja = j.append"]
    if cls.TABLE == "executions":
        lines.append("    _base, _rev = _split(f_exec_id)")
    for name in columns:
        column = table.c[name]
        kind = _kind(column)
        source = "derived" if kind == "datetime" else _source(cls.TABLE, name, fields)
        if source is None:
            lines.append(f"    p_{name} = None")
            continue
        if name in ("params_json", "raw_json"):
            source = f"(None if {source} is None else _json_text({source}))"
        required = not column.nullable and name not in ("recorded_ns",)
        lines += _column_code(cls.TABLE, name, kind, source, required, dialect)
    key_columns = KEY_COLUMNS.get(cls.TABLE)
    key = "(" + "".join(f"p_{n}, " for n in key_columns) + ")" if key_columns else "None"
    lines.append("    return (" + ", ".join(f"p_{n}" for n in columns) + ",), "
                 f"'{{' + ','.join(j) + '}}', {key}")
    namespace = {"_enc": encode_basestring, "_money": money_text, "_SECONDS": _SECONDS,
                 "_second_text": _second_text, "_json_text": _json_text, "_split": split_exec_id,
                 "_datetime": datetime, "_Decimal": Decimal,
                 "_get": attrgetter(*names)}
    # the code is built above from the schema alone; no input reaches it
    exec(compile("\n".join(lines), f"<audit row converter {cls.__name__}>", "exec"), namespace)
    return namespace["convert"], columns



class RowCodec:
    """Per dialect: ``convert(event, recorded_ns) -> (params, canonical_json, key)`` and the INSERT
    statement (columns ``*sorted others, seq, row_hash``: the params with the chain's two values
    appended) of every audited table."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        mark = "?" if dialect == "sqlite" else "%s"
        self.converters: dict[type, Callable] = {}
        self.insert_sql: dict[str, str] = {}
        for cls in EVENT_TYPES:
            convert, columns = _converter(cls, dialect)
            self.converters[cls] = convert
            names = [*columns, "seq", "row_hash"]
            sql = (f"INSERT INTO {cls.TABLE} ({', '.join(names)}) "
                   f"VALUES ({', '.join([mark] * len(names))})")
            if cls.TABLE in KEY_COLUMNS:
                sql += f" ON CONFLICT ({', '.join(KEY_COLUMNS[cls.TABLE])}) DO NOTHING"
            self.insert_sql[cls.TABLE] = sql
