"""Events to rows, fast: generated converters per event class, dialect and shape of values.

For each event a converter gives the driver parameters of its INSERT, the canonical JSON that
the hash chain covers (:func:`btlive.audit.chain.canonical_json` of the row as the database
gives it back), built in the same pass, and the row's unique key (None for tables without
one). The writer's speed is largely these functions' speed, so there are two kinds:

* the generic converter per class (``RowCodec.converters``): any value of any field, every
  column bound (NULLs too), each value checked for None and converted by its type;
* per shape, i.e. the exact type of every field (``RowCodec.row_makers``): compiled the first
  time the shape is seen, no None or type checks, the JSON in one ``%`` format, and only the
  columns that are not NULL in the INSERT (SQLite's driver binds a None several times slower
  than a string). Values it does not cover (a float with an exponent, NaN, -0.0, a Decimal or
  text for money, any other type) go to the generic converter: the bytes are the same.
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


def _generic_code(cls, dialect: str, columns: list[str]) -> list[str]:
    """Any values: every column checks for None and converts its value's type."""
    table = schema.TABLES[cls.TABLE]
    fields = set(FIELD_NAMES[cls])
    lines = ["def convert(values, recorded):",
             f"    {', '.join(f'f_{n}' for n in FIELD_NAMES[cls])}, = values",
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
    lines.append("    return (" + ", ".join(f"p_{n}" for n in columns) + ",), "
                 f"'{{' + ','.join(j) + '}}', {_key_code(cls)}")
    return lines


def _key_code(cls) -> str:
    key_columns = KEY_COLUMNS.get(cls.TABLE)
    return "(" + "".join(f"p_{n}, " for n in key_columns) + ")" if key_columns else "None"


_NoneType = type(None)
_JSON_TYPES = (dict, list)
_FLOATS: dict[float, str] = {}  # plain fixed-point reprs only (prices and sizes repeat)


class _Irregular(Exception):
    """A value the shape's converter does not handle (a float with an exponent, NaN, -0.0)."""


def _float_text(value: float) -> str:
    text = repr(value)
    if "e" in text or "n" in text or text == "-0.0":
        raise _Irregular
    if len(_FLOATS) >= 4096:
        _FLOATS.clear()
    _FLOATS[value] = text
    return text


def _fast_column(name: str, kind: str, t: type, src: str,
                 dialect: str) -> tuple[list[str], str, str] | None:
    """(lines setting ``p_<name>``, the JSON fragment with one ``%s``, its argument) for a
    value of type ``t`` (never None); None if ``t`` needs the generic converter."""
    var, key = f"p_{name}", f'"{name}":'
    if name in ("params_json", "raw_json"):
        return ([f"    {var} = _json_text({src})"], key + "%s", f"_enc({var})") \
            if t in _JSON_TYPES else None
    if kind == "str" and t is str:
        return [f"    {var} = {src}"], key + "%s", f"_enc({var})"
    if kind == "int" and t is int:
        return [f"    {var} = {src}"], key + "%s", var
    if kind == "bool" and t is bool:
        return ([f"    {var} = " + (f"1 if {src} else 0" if dialect == "sqlite" else src)],
                key + "%s", f"'true' if {src} else 'false'")
    if kind == "money" and t in (float, int):
        text = f"t_{name}"
        lines = [f"    {text} = _floats.get({src}) or _float_text({src})" if t is float
                 else f"    {text} = str({src})",
                 f"    {var} = " + (text if dialect == "sqlite" else f"_Decimal({text})")]
        return lines, key + '"%s"', text
    if kind == "datetime" and t is int:
        s, us = f"s_{name}", f"us_{name}"
        lines = [f"    {s}, {us} = divmod({src} // 1000, 1_000_000)",
                 f"    {s} = _seconds.get({s}) or _second_text({s})",
                 f"    {us} = '.%06d' % {us} if {us} else ''",
                 f"    {var} = " + (f"{s}.replace('T', ' ') + ({us} or '.000000')"
                                    if dialect == "sqlite"
                                    else f"_datetime.fromisoformat({s} + {us} + '+00:00')")]
        return lines, key + '"%s+00:00"', f"{s} + {us}"
    return None


def _fast_code(cls, dialect: str, columns: list[str],
               types: tuple) -> tuple[list[str], list[str]] | None:
    """A converter for values of exactly these ``types`` (one per field): no None or type
    checks, the canonical JSON in one ``%`` format, only the columns that are not NULL bound
    (SQLite's driver binds a None slower than a string). Returns its code and those columns,
    or None when a type needs the generic converter; the code raises ``_Irregular`` for the
    values it leaves to the generic converter."""
    table = schema.TABLES[cls.TABLE]
    names = FIELD_NAMES[cls]
    type_of = dict(zip(names, types, strict=True))
    lines = ["def convert(values, recorded):", f"    {', '.join(f'f_{n}' for n in names)}, = values"]
    if cls.TABLE == "executions":
        if type_of["exec_id"] is not str:
            return None
        # split_exec_id, inline
        lines += ["    p_base_exec_id, dot, rev = f_exec_id.rpartition('.')",
                  "    if dot and p_base_exec_id and rev.isdigit():",
                  "        p_exec_rev = int(rev)",
                  "    else:",
                  "        p_base_exec_id, p_exec_rev = f_exec_id, 0"]
        type_of.update(_base=str, _rev=int)
    type_of["recorded"] = int
    bound, pieces, args = [], [], []
    for name in columns:
        column = table.c[name]
        kind = _kind(column)
        if kind == "datetime":
            src = f"f_{name[:-3]}_ns"
        else:
            src = _source(cls.TABLE, name, set(names))
            if src is None:
                continue
        t = type_of[src[2:] if src.startswith("f_") else src]
        if t is _NoneType:
            if not column.nullable:
                return None  # the generic converter raises the error
            continue
        if name in ("base_exec_id", "exec_rev"):
            code = [], f'"{name}":%s', f"_enc(p_{name})" if name == "base_exec_id" else f"p_{name}"
        else:
            code = _fast_column(name, kind, t, src, dialect)
            if code is None:
                return None
        lines += code[0]
        pieces.append(code[1])
        args.append(code[2])
        bound.append(name)
    template = "{" + ",".join(pieces) + "}"
    lines.append("    return _sql, (" + "".join(f"p_{n}, " for n in bound) + "), "
                 f"{template!r} % ({', '.join(args)},), {_key_code(cls)}")
    return lines, bound


_NAMESPACE = {"_enc": encode_basestring, "_money": money_text, "_seconds": _SECONDS,
              "_second_text": _second_text, "_json_text": _json_text, "_split": split_exec_id,
              "_datetime": datetime, "_Decimal": Decimal, "_floats": _FLOATS,
              "_float_text": _float_text}
_MAX_SHAPES = 64  # shapes compiled per event class; past that, the generic converter


def _compile(lines: list[str], name: str, **extra) -> Callable:
    namespace = dict(_NAMESPACE, **extra)
    # the code is built above from the schema and field types alone; no input value reaches it
    exec(compile("\n".join(lines), f"<audit row converter {name}>", "exec"), namespace)
    return namespace["convert"]


def insert_sql(table: str, columns: list[str], dialect: str) -> str:
    """The INSERT of ``columns`` then ``seq, row_hash``; keyed tables skip a key that exists."""
    names = [*columns, "seq", "row_hash"]
    mark = "?" if dialect == "sqlite" else "%s"
    sql = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join([mark] * len(names))})"
    if table in KEY_COLUMNS:
        sql += f" ON CONFLICT ({', '.join(KEY_COLUMNS[table])}) DO NOTHING"
    return sql


def _row_maker(cls, dialect: str, generic: Callable, columns: list[str]) -> Callable:
    """``make(event, recorded_ns) -> (insert_sql, params, canonical_json, key)``: the fields read
    in one C call, then the converter compiled for their types (the first time this shape of
    types is seen), else the generic one with every column bound."""
    full_sql = insert_sql(cls.TABLE, columns, dialect)
    get = attrgetter(*FIELD_NAMES[cls])
    shapes: dict[tuple, Callable] = {}

    def full(values, recorded):
        return full_sql, *generic(values, recorded)

    def shape(types: tuple) -> Callable:
        if len(shapes) >= _MAX_SHAPES:
            return full
        code = _fast_code(cls, dialect, columns, types)
        if code is None:
            fast = full
        else:
            lines, bound = code
            fast = _compile(lines, f"{cls.__name__}, one shape",
                            _sql=insert_sql(cls.TABLE, bound, dialect))
        shapes[types] = fast
        return fast

    def make(ev, recorded):
        values = get(ev)
        fast = shapes.get(tuple(map(type, values)))
        if fast is None:
            fast = shape(tuple(map(type, values)))
        try:
            return fast(values, recorded)
        except _Irregular:
            return full(values, recorded)

    return make


class RowCodec:
    """Per dialect and event class: ``converters[cls](event, recorded_ns) -> (params,
    canonical_json, key)`` with every column (the reference), ``row_makers[cls](event,
    recorded_ns) -> (insert_sql, params, canonical_json, key)`` binding only the columns that are
    not NULL (what the writer uses: the same canonical JSON, faster), and ``insert_sql[table]``,
    the INSERT of every column (the params with the chain's ``seq, row_hash`` appended)."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.converters: dict[type, Callable] = {}
        self.row_makers: dict[type, Callable] = {}
        self.insert_sql: dict[str, str] = {}
        for cls in EVENT_TYPES:
            table = schema.TABLES[cls.TABLE]
            columns = sorted(c.name for c in table.columns if c.name not in ("seq", "row_hash"))
            generic = _compile(_generic_code(cls, dialect, columns), cls.__name__)
            get = attrgetter(*FIELD_NAMES[cls])
            self.converters[cls] = lambda ev, recorded, g=generic, get=get: g(get(ev), recorded)
            self.row_makers[cls] = _row_maker(cls, dialect, generic, columns)
            self.insert_sql[cls.TABLE] = insert_sql(cls.TABLE, columns, dialect)
