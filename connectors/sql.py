"""SQL databases: one table, or one read-only query, through any SQLAlchemy URL.

The recipe names the database by ``url`` (``postgresql://reader:${DB_PASSWORD}@host:5432/db``,
``sqlite:///path/to.db``, any SQLAlchemy URL whose driver is installed; plain ``postgresql://``
uses psycopg 3) and the rows by ``table`` or by ``query``. Placeholders in the URL are expanded
only while a connection is opened; everything the connector names (its unit, the report's
``location``, fingerprints, messages) shows the URL with the password masked.

Contract (see docs/sources/sql.md):

* **One unit per source**: ``<url>#<table>`` or ``<url>#query:<sha256(query)[:12]>``; its
  location is ``<url>/<table>`` (``<url>/query:<sha>`` for a query), the password shown as ``***``.
* **Stable order, bounded memory**: rows are read with ``ORDER BY order_by`` (default: the id
  column; the id breaks ties) through a server-side cursor, ``page_size`` rows at a time; each
  page is a ``pyarrow.Table`` with the source's columns and the 1-based position of each row in
  the ordered result as :data:`~curation.ingest.ROW_COL`.
* **Read-only**: a query must be one ``SELECT`` (or ``WITH ... SELECT``) with no data-changing
  keyword, checked before connecting; every statement also runs in a read-only transaction
  (PostgreSQL, MySQL) or a read-only connection (SQLite: opened ``mode=ro`` with
  ``PRAGMA query_only``), so a function that writes is refused by the database too.
* **Fingerprints**: the row count and ``max(updated_at)`` when ``updated_at`` is set; otherwise
  the row count and a SHA-256 of the ordered ids (of every row when there is no id column).
* **Errors**: an unreachable server is a ``ConnectionError`` (the flow retries it); wrong
  credentials, an unknown database or a query that writes are :class:`InvalidParameterError`;
  a missing table or column is a :class:`DataError` that lists what exists. One line each,
  never the password.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
import os
import re
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from connectors.base import Connector
from curation.exceptions import DataError, InvalidParameterError
from curation.ingest import ROW_COL
from curation.secrets import MASK, PLACEHOLDER, URL_PASSWORD, expand, redact

CONNECT_TIMEOUT = 10  # seconds; an unreachable host fails the preflight quickly instead of hanging
SHOWN_NAMES = 30  # at most this many table names in a "no such table" message

# Words that change data or schema (or write files: MySQL's SELECT ... INTO OUTFILE). None of
# them has a place in a read-only SELECT; an identifier spelled so can be double-quoted.
_WRITE_WORDS = ("INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT", "DROP", "CREATE", "ALTER", "TRUNCATE",
                "GRANT", "REVOKE", "COPY", "INTO", "CALL", "ATTACH", "DETACH", "PRAGMA", "VACUUM", "REINDEX")
_WRITE_RE = re.compile(r"(?<![\w$.])(" + "|".join(_WRITE_WORDS) + r")(?![\w$])", re.IGNORECASE)
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")

# PostgreSQL type OIDs of a query's result columns (cursor.description), for page types that do
# not depend on which values a page happens to hold
_PG_OIDS: dict[int, pa.DataType] = {
    16: pa.bool_(), 20: pa.int64(), 21: pa.int64(), 23: pa.int64(), 26: pa.int64(),
    700: pa.float64(), 701: pa.float64(), 1700: pa.float64(),
    18: pa.string(), 19: pa.string(), 25: pa.string(), 1042: pa.string(), 1043: pa.string(),
    114: pa.string(), 3802: pa.string(), 2950: pa.string(), 142: pa.string(),
    1082: pa.date32(), 1083: pa.time64("us"), 1114: pa.timestamp("us"), 1184: pa.timestamp("us", tz="UTC"),
    1186: pa.duration("us"), 17: pa.binary(),
}

# causes of a failed connection that may pass (the server is down, restarting or far away)
_UNREACHABLE = ("connection refused", "timeout", "timed out", "could not connect", "could not translate host",
                "name or service not known", "no route to host", "network is unreachable", "server closed the "
                "connection", "connection reset", "terminating connection", "the database system is starting up",
                "the database system is shutting down", "ssl syscall", "connection is lost", "consuming input failed",
                "can't connect", "lost connection", "gone away")


# ------------------------------------------------------------------------------ read-only queries
def split_query(sql: str, *, backslash_escapes: bool = False) -> tuple[str, str]:
    """``sql`` without comments, and its skeleton: the same with every string literal and quoted
    identifier blanked, so keywords and ``;`` can be looked for without false hits.

    Handles ``--`` and (nested) ``/* */`` comments, ``'...'`` with ``''`` (and backslash escapes
    in ``E'...'``, or in every literal when ``backslash_escapes``: MySQL), double-quoted and
    backtick-quoted identifiers, and PostgreSQL's ``$tag$...$tag$``.

    Raises:
        ValueError: an unterminated literal or comment.
    """
    code: list[str] = []
    skel: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j
            code.append(" ")
            skel.append(" ")
        elif sql.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if sql.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif sql.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            if depth:
                raise ValueError("it has an unterminated /* comment")
            i = j
            code.append(" ")
            skel.append(" ")
        elif c in "'\"`":
            prev = sql[i - 1] if i else ""
            escapes = c == "'" and (backslash_escapes or (prev in ("e", "E") and not (
                i >= 2 and (sql[i - 2].isalnum() or sql[i - 2] in "_$"))))
            j = i + 1
            while True:
                if j >= n:
                    raise ValueError(f"it has an unterminated {c}...{c} literal")
                if escapes and sql[j] == "\\":
                    j += 2
                    continue
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:
                        j += 2
                        continue
                    break
                j += 1
            code.append(sql[i:j + 1])
            skel.append(" _ ")
            i = j + 1
        elif c == "$" and not (i and (sql[i - 1].isalnum() or sql[i - 1] in "_$")) and _DOLLAR_TAG.match(sql, i):
            tag = _DOLLAR_TAG.match(sql, i).group(0)
            j = sql.find(tag, i + len(tag))
            if j < 0:
                raise ValueError(f"it has an unterminated {tag}...{tag} literal")
            code.append(sql[i:j + len(tag)])
            skel.append(" _ ")
            i = j + len(tag)
        else:
            code.append(c)
            skel.append(c)
            i += 1
    return "".join(code), "".join(skel)


def read_only_query(sql: str, *, field: str, backslash_escapes: bool = False) -> str:
    """The query to run (comments and trailing ``;`` removed) when ``sql`` is one read-only
    ``SELECT`` (or ``WITH ... SELECT``).

    Raises:
        InvalidParameterError: anything else, in one line: another statement, several
            statements, a data-changing keyword (even inside a ``WITH``), an unterminated literal.
    """
    rule = "only one read-only SELECT (or WITH ... SELECT) is allowed"
    try:
        code, skel = split_query(sql, backslash_escapes=backslash_escapes)
    except ValueError as e:
        raise InvalidParameterError(f"{field} is refused: {e} ({rule})") from None
    # a trailing ";" (and what follows it once comments are gone) is no second statement
    code, skel = re.sub(r"[\s;]+$", "", code).strip(), re.sub(r"[\s;]+$", "", skel).strip()
    first = re.match(r"[\s(]*([A-Za-z_]+)", skel)
    if first is None or first.group(1).upper() not in ("SELECT", "WITH"):
        word = first.group(1).upper() if first else (skel.split() or ["nothing"])[0]
        raise InvalidParameterError(f"{field} is refused: it starts with {word}; {rule}")
    if ";" in skel:
        raise InvalidParameterError(f"{field} is refused: it holds more than one statement; {rule}")
    write = _WRITE_RE.search(skel)
    if write:
        raise InvalidParameterError(f"{field} is refused: it contains {write.group(1).upper()}; {rule} (write a "
                                    f"column of that name in double quotes)")
    return code


# ------------------------------------------------------------------------------ SQL -> Arrow types
def arrow_type(sql_type: Any) -> pa.DataType | None:
    """The Arrow type a column of SQLAlchemy type ``sql_type`` is read as (None: from its values).

    Text, UUID, enum and JSON columns are strings; integers int64; floats and decimals float64;
    timestamps keep their time zone (as UTC); dates, times and intervals keep their kind."""
    if isinstance(sql_type, sa.Boolean):
        return pa.bool_()
    if isinstance(sql_type, sa.Integer):
        return pa.int64()
    if isinstance(sql_type, (sa.Float, sa.Numeric)):
        return pa.float64()
    if isinstance(sql_type, sa.DateTime):
        return pa.timestamp("us", tz="UTC" if sql_type.timezone else None)
    if isinstance(sql_type, sa.Date):
        return pa.date32()
    if isinstance(sql_type, sa.Time):
        return pa.time64("us")
    if isinstance(sql_type, sa.Interval):
        return pa.duration("us")
    if isinstance(sql_type, sa.LargeBinary):
        return pa.binary()
    if isinstance(sql_type, (sa.String, sa.JSON, sa.Uuid)):
        return pa.string()
    return None


def infer_type(values: list[Any]) -> pa.DataType | None:
    """The Arrow type for a column whose SQL type is unknown (None while every value is null)."""
    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return None
    if kinds <= {bool}:
        return pa.bool_()
    if kinds <= {int}:
        return pa.int64()
    if kinds <= {int, float, decimal.Decimal}:
        return pa.float64()
    if kinds <= {dt.datetime}:
        aware = any(v.tzinfo is not None for v in values if v is not None)
        return pa.timestamp("us", tz="UTC" if aware else None)
    if kinds <= {dt.date}:
        return pa.date32()
    if kinds <= {dt.time}:
        return pa.time64("us")
    if kinds <= {dt.timedelta}:
        return pa.duration("us")
    if kinds <= {bytes, bytearray, memoryview}:
        return pa.binary()
    return pa.string()


def _as_datetime(v: Any, tz: bool) -> dt.datetime:
    if isinstance(v, str):
        v = dt.datetime.fromisoformat(v.strip())
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        v = dt.datetime.fromtimestamp(v, dt.timezone.utc)
    elif isinstance(v, dt.date) and not isinstance(v, dt.datetime):
        v = dt.datetime(v.year, v.month, v.day)
    if not isinstance(v, dt.datetime):
        raise TypeError(v)
    if v.tzinfo is not None:
        v = v.astimezone(dt.timezone.utc)
        return v if tz else v.replace(tzinfo=None)
    return v.replace(tzinfo=dt.timezone.utc) if tz else v


def _as_int(v: Any) -> int:
    if isinstance(v, float) and not v.is_integer():
        raise ValueError(v)
    if isinstance(v, decimal.Decimal) and v != v.to_integral_value():
        raise ValueError(v)
    if isinstance(v, (int, float, decimal.Decimal, str)):
        return int(v)
    raise TypeError(v)


def _as_float(v: Any) -> float:
    if isinstance(v, (int, float, decimal.Decimal, str)):
        return float(v)
    raise TypeError(v)


def _as_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    raise ValueError(v)


def _as_text(v: Any) -> str | bytes:
    if isinstance(v, (str, bytes)):
        return v  # bytes: text SQLite could not decode; ingestion counts it as invalid_utf8
    if isinstance(v, (memoryview, bytearray)):
        return bytes(v)
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False, sort_keys=True, default=str)
    if isinstance(v, (dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, uuid.UUID):
        return str(v)
    return str(v)


def _converter(t: pa.DataType) -> Callable[[Any], Any]:
    if pa.types.is_boolean(t):
        return _as_bool
    if pa.types.is_integer(t):
        return _as_int
    if pa.types.is_floating(t):
        return _as_float
    if pa.types.is_timestamp(t):
        return lambda v: _as_datetime(v, t.tz is not None)
    if pa.types.is_date(t):
        return lambda v: dt.date.fromisoformat(v.strip()) if isinstance(v, str) else (
            v.date() if isinstance(v, dt.datetime) else v)
    if pa.types.is_time(t):
        return lambda v: dt.time.fromisoformat(v.strip()) if isinstance(v, str) else v
    if pa.types.is_binary(t):
        return lambda v: v.encode("utf-8") if isinstance(v, str) else bytes(v)
    if pa.types.is_string(t):
        return _as_text
    return lambda v: v


def to_arrow(names: list[str], types: list[pa.DataType | None], rows: list[Any]
             ) -> tuple[pa.Table, list[int]]:
    """One page of DBAPI rows as an Arrow table typed by ``types`` (None: inferred, and the
    inferred type written back into ``types`` for the next pages), and the indexes of the rows
    left out because a value does not fit its column's type (SQLite stores any value in any
    column)."""
    columns: list[list[Any]] = [list(col) for col in zip(*rows)] if rows else [[] for _ in names]
    bad: set[int] = set()
    for j, values in enumerate(columns):
        if types[j] is None:
            types[j] = infer_type(values)
        if types[j] is None:
            continue
        convert = _converter(types[j])
        for i, v in enumerate(values):
            if v is not None:
                try:
                    values[i] = convert(v)
                except (TypeError, ValueError, ArithmeticError):
                    bad.add(i)
    keep = [i for i in range(len(rows)) if i not in bad]
    arrays = []
    for j, values in enumerate(columns):
        t, out = types[j] or pa.string(), [values[i] for i in keep]
        if pa.types.is_string(t) and any(isinstance(v, bytes) for v in out):
            t = pa.binary()  # text SQLite could not decode: bytes, so ingestion skips just those rows
            out = [v.encode("utf-8") if isinstance(v, str) else v for v in out]
        arrays.append(pa.array(out, t))
    return pa.Table.from_arrays(arrays, names=names), sorted(bad)


# ------------------------------------------------------------------------------ the connector
@dataclass
class _Plan:
    """What one source resolves to on a live connection."""

    base: Any  # the table, or the query as a subquery named q
    names: list[str]  # the source's columns, in the table's or query's order
    types: list[pa.DataType | None]  # their Arrow types (None: from the values)
    order: list[str]  # ORDER BY columns: order_by (or id), then id to break ties


class SqlConnector(Connector, name="sql"):
    """A table or a read-only query of a SQL database (``url`` plus ``table`` or ``query``)."""

    # ------------------------------------------------------------------ names (no connection)
    @property
    def _field(self) -> str:
        return f"sources[{self.source.name}]"

    @property
    def shown_url(self) -> str:
        """The recipe's URL with the password (placeholder or not) shown as ``***``."""
        masked = URL_PASSWORD.sub(lambda m: f"{m.group('head')}{MASK}{m.group('tail')}", self.source.url)
        return redact(masked)

    @property
    def _what(self) -> str:
        if self.source.table is not None:
            return self.source.table
        return "query:" + hashlib.sha256(self.source.query.encode("utf-8")).hexdigest()[:12]

    def units(self) -> list[str]:
        """``[<url>#<table>]`` or ``[<url>#query:<sha12>]`` (password masked). Checks, without
        connecting, that the query is read-only and that the rows have an order."""
        self._static_checks()
        return [f"{self.shown_url}#{self._what}"]

    def location(self, unit: str) -> str:
        """``<url>/<table>`` (or ``<url>/query:<sha12>``), the password shown as ``***``."""
        head, sep, what = unit.rpartition("#")
        return redact(f"{head}/{what}" if sep else unit)

    def _order_columns(self) -> list[str]:
        first = self.source.order_by or self.source.id
        if first is None:
            kind = "table" if self.source.table is not None else "query"
            raise InvalidParameterError(
                f"{self._field}: reading a SQL {kind} in pages needs a stable order: set `order_by` (a unique "
                "column, e.g. the primary key) or `id`")
        return [first] + ([self.source.id] if self.source.id not in (None, first) else [])

    def _backslash_escapes(self) -> bool:
        return self.source.url.split(":", 1)[0].split("+", 1)[0].lower() in ("mysql", "mariadb")

    def _static_checks(self) -> str | None:
        """The query to run (None for a table) once it passed the read-only check; the order."""
        query = None
        if self.source.query is not None:
            query = read_only_query(self.source.query, field=f"{self._field}.query",
                                    backslash_escapes=self._backslash_escapes())
        self._order_columns()
        return query

    def _wanted(self) -> list[tuple[str, str]]:
        """(recipe key, column) of every column the source names."""
        s = self.source
        keys = [("id", s.id), ("text", s.text), ("label", s.label), ("order_by", s.order_by),
                ("updated_at", s.updated_at)]
        keys += [("features", f) for f in s.features or []]
        return [(k, c) for k, c in keys if c is not None]

    # ------------------------------------------------------------------ connecting
    def _placeholder_hint(self) -> str:
        m = URL_PASSWORD.search(self.source.url)
        if m and PLACEHOLDER.fullmatch(m.group("password")):
            return f"the password comes from {m.group('password')} in {self._field}.url: check its value"
        if PLACEHOLDER.fullmatch(self.source.url.strip()):
            return f"the URL comes from {self.source.url.strip()}: check the user and password in it"
        return f"{self._field}.url gives no password: write user:${{NAME}}@host and export NAME"

    def _engine_url(self) -> sa.URL:
        """The URL to connect with: placeholders expanded (only here), postgresql:// on psycopg 3,
        SQLite opened read-only."""
        raw, field = self.source.url, f"{self._field}.url"
        try:
            try:
                url = sa.make_url(raw)
                # each part expanded on its own: a password needs no URL-escaping
                url = url.set(**{k: expand(getattr(url, k), field=field) for k in
                                 ("username", "password", "host", "database") if getattr(url, k) is not None},
                              query={k: expand(v, field=field) if isinstance(v, str) else
                                     tuple(expand(x, field=field) for x in v) for k, v in url.query.items()})
            except (sa_exc.ArgumentError, ValueError):  # the whole URL (or its port) is a placeholder
                url = sa.make_url(expand(raw, field=field))
        except KeyError as e:
            raise InvalidParameterError(e.args[0] if e.args else str(e)) from None
        except (sa_exc.ArgumentError, ValueError):
            raise InvalidParameterError(f"{field}: {self.shown_url!r} is not a SQLAlchemy URL "
                                        "(e.g. postgresql://user:${PW}@host:5432/db, sqlite:///path.db)") from None
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")  # psycopg 3 is the PostgreSQL driver installed
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:") \
                and url.query.get("uri") not in ("true", "1"):
            path = url.database
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{field}: the SQLite database {redact(path)!r} does not exist (relative "
                                        f"paths are read from {os.getcwd()!r})")
            # mode=ro: reading never creates or changes the file (query_only below refuses writes too)
            url = url.set(database="file:" + urllib.parse.quote(os.path.abspath(path)),
                          query={**url.query, "uri": "true", "mode": "ro"})
        return url

    def _engine(self) -> sa.Engine:
        url = self._engine_url()
        backend = url.get_backend_name()
        connect_args: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT} if backend == "postgresql" else {}
        try:
            engine = sa.create_engine(url, poolclass=sa.pool.NullPool, hide_parameters=True,
                                      connect_args=connect_args)
        except (sa_exc.NoSuchModuleError, ImportError) as e:
            raise InvalidParameterError(f"{self._field}.url: no driver for {url.drivername!r} is installed "
                                        f"({redact(str(e).splitlines()[0])})") from None
        if backend == "sqlite":
            @sa.event.listens_for(engine, "connect")
            def _sqlite_read_only(dbapi_conn, _record):
                # text that is not UTF-8 comes back as bytes instead of failing the whole read
                dbapi_conn.text_factory = _decode_or_bytes
                dbapi_conn.execute("PRAGMA query_only = ON")
        return engine

    @contextmanager
    def connect(self) -> Iterator[sa.Connection]:
        """A connection inside a read-only transaction (see the module docstring); errors are
        mapped to the connector's exceptions (:meth:`_error`). A query that writes, or rows
        without an order, are refused before the connection is opened."""
        self._static_checks()
        engine = self._engine()
        try:
            try:
                conn = engine.connect()
            except sa_exc.DBAPIError as e:
                raise self._error(e, connecting=True) from None
            try:
                if engine.dialect.name in ("postgresql", "mysql", "mariadb"):
                    conn.exec_driver_sql("SET TRANSACTION READ ONLY")  # the first statement of the transaction
                yield conn
            except sa_exc.DBAPIError as e:
                raise self._error(e, connecting=False) from None
            finally:
                try:
                    conn.close()  # rolls back: the transaction only read
                except sa_exc.DBAPIError:
                    pass  # the connection is gone already; the error that says why is on its way
        finally:
            engine.dispose()

    def _error(self, exc: sa_exc.DBAPIError, *, connecting: bool) -> Exception:
        """One line, without the password, of the right kind (see the module docstring)."""
        orig = getattr(exc, "orig", None) or exc
        text = redact(str(orig))
        low = text.lower()
        first = re.sub(r"\s+", " ", next((ln for ln in text.splitlines() if ln.strip()), type(orig).__name__))
        first = first.replace("FATAL: ", "").strip()
        cause = first.rsplit(" failed: ", 1)[-1]  # psycopg: 'connection to server at "h", port p failed: ...'
        state = getattr(orig, "sqlstate", None) or ""
        url = self.shown_url
        if "authentication failed" in low or "access denied" in low or state.startswith("28"):
            user = re.search(r'user "([^"]+)"', text)
            who = f" of user {user.group(1)!r}" if user else ""
            return InvalidParameterError(f"{self._field}: {url} refused the login{who} ({cause}); "
                                         f"{self._placeholder_hint()}")
        if state == "3D000" or re.search(r"database \S+ does not exist|unknown database", low):
            return InvalidParameterError(f"{self._field}.url: {cause} on the server of {url}")
        if state == "25006" or "read-only transaction" in low or "readonly database" in low:
            what = f"{self._field}.query" if self.source.query is not None else self._field
            return InvalidParameterError(f"{what} is refused by the database: {cause} (sources are read in a "
                                         "read-only transaction)")
        lost = getattr(exc, "connection_invalidated", False) or state.startswith("08") or state in ("57P01", "57P02",
                                                                                                    "57P03")
        if connecting or lost or (isinstance(exc, sa_exc.OperationalError) and any(k in low for k in _UNREACHABLE)):
            if "sqlite" in type(orig).__module__ and "unable to open" in low:
                return FileNotFoundError(f"{self._field}: cannot open {url}: {cause}")
            return ConnectionError(f"{self._field}: {'cannot reach' if connecting else 'lost the connection to'} "
                                   f"{url}: {cause}")
        if state in ("42P01", "42703") or re.search(r"no such (table|column)|doesn't exist|unknown column", low):
            return DataError(f"{self._field}: {cause} ({self.location(self.units()[0])})")
        if self.source.query is not None:
            return InvalidParameterError(f"{self._field}.query failed: {cause}")
        return DataError(f"{self._field}: reading {self.location(self.units()[0])} failed: {cause}")

    # ------------------------------------------------------------------ resolving the source
    def _plan(self, conn: sa.Connection) -> _Plan:
        """The table's or query's columns and types; checks every column the recipe names."""
        query, order = self._static_checks(), self._order_columns()
        if query is not None:
            text = sa.text(query.replace(":", "\\:"))  # a ':' is the query's own, not a bind parameter
            probe = sa.select(sa.literal_column("*")).select_from(text.columns().subquery("q")).limit(0)
            result = conn.execute(probe)  # runs the query (read-only) without fetching a row
            names = list(result.keys())
            desc = list(result.cursor.description or []) if result.cursor is not None else []
            result.close()
            dupes = sorted({c for c in names if names.count(c) > 1})
            if dupes:
                raise InvalidParameterError(f"{self._field}.query returns column {dupes[0]!r} more than once; give "
                                            "each column its own name (AS ...)")
            pg = conn.dialect.name == "postgresql"
            types = [_PG_OIDS.get(d[1]) if pg and isinstance(d[1], int) else None for d in desc] or [None] * len(names)
            base = text.columns(*[sa.column(c) for c in names]).subquery("q")
            where = f"the query's columns ({self.location(self.units()[0])})"
        else:
            schema, table = self._find_table(conn)
            cols = sa.inspect(conn).get_columns(table, schema=schema)
            names = [c["name"] for c in cols]
            types = [arrow_type(c["type"]) for c in cols]
            # untyped columns: no driver-side conversion, so a value that is not what the column
            # declares (SQLite) is one skipped row instead of a failed read
            base = sa.table(table, *[sa.column(c) for c in names], schema=schema)
            where = f"table {self.source.table!r} ({self.location(self.units()[0])})"
        for key, col in self._wanted():
            if col not in names:
                raise DataError(f"{self._field}.{key} names column {col!r}, which {where} does not have. "
                                f"Available columns: {', '.join(names)}.")
        return _Plan(base=base, names=names, types=types, order=order)

    def _find_table(self, conn: sa.Connection) -> tuple[str | None, str]:
        """(schema, table) of ``source.table`` (``table`` or ``schema.table``)."""
        insp, name = sa.inspect(conn), self.source.table
        if insp.has_table(name):
            return None, name
        if "." in name:
            schema, table = name.split(".", 1)
            if insp.has_table(table, schema=schema):
                return schema, table
        try:
            known = sorted(insp.get_table_names() + insp.get_view_names())
        except (sa_exc.DBAPIError, NotImplementedError):
            known = []
        shown = ", ".join(known[:SHOWN_NAMES]) + (f", ... ({len(known)} in all)" if len(known) > SHOWN_NAMES else "")
        raise DataError(f"{self._field}.table: table {name!r} does not exist in {self.shown_url}. "
                        f"Available tables: {shown or 'none'}.")

    def _select(self, plan: _Plan, columns: list[str] | None = None) -> sa.Select:
        """``columns`` (default: all) of the source in its stable order."""
        return sa.select(*[plan.base.c[c] for c in columns or plan.names]).order_by(*[plan.base.c[c] for c in plan.order])

    def _stream(self, conn: sa.Connection, stmt: sa.Select) -> Iterator[list[Any]]:
        """The rows of ``stmt`` in pages of ``page_size`` through a server-side cursor (memory
        stays bounded by the page size, and the whole read sees one snapshot)."""
        size = int(getattr(self.source, "page_size", None) or 10_000)
        result = conn.execution_options(stream_results=True, yield_per=size).execute(stmt)
        try:
            yield from result.partitions(size)
        finally:
            result.close()

    # ------------------------------------------------------------------ the contract
    def check(self) -> None:
        """Connect, and check that the table and every named column exist (a query: that it is
        read-only, runs, and returns the named columns), without reading rows."""
        with self.connect() as conn:
            self._plan(conn)

    def _read_unit(self, unit: str) -> Iterator[pa.Table]:
        with self.connect() as conn:
            plan = self._plan(conn)
            stmt = self._select(plan)
            limit = getattr(self.source, "limit", None)
            if limit is not None:
                stmt = stmt.limit(limit)
            position = 0
            for page in self._stream(conn, stmt):
                table, bad = to_arrow(plan.names, plan.types, page)
                for i in bad:
                    self.skip("cast_failed", unit, position + 1 + i)
                rows = [position + 1 + i for i in range(len(page)) if i not in bad]
                position += len(page)
                yield table.append_column(ROW_COL, pa.array(rows, pa.int64()))

    def fingerprints(self) -> list[dict[str, Any]]:
        """``{unit, rows, max_updated_at}`` with ``updated_at``; otherwise ``{unit, rows,
        ids_sha256}`` (``rows_sha256`` over every column when there is no id column)."""
        unit = self.units()[0]
        out: dict[str, Any] = {"unit": self.location(unit)}
        with self.connect() as conn:
            plan = self._plan(conn)
            out["rows"] = conn.execute(sa.select(sa.func.count()).select_from(plan.base)).scalar_one()
            if self.source.updated_at is not None:
                latest = conn.execute(sa.select(sa.func.max(plan.base.c[self.source.updated_at]))).scalar_one()
                out["max_updated_at"] = _jsonable(latest)
            else:
                h = hashlib.sha256()
                columns = [self.source.id] if self.source.id is not None else None
                for page in self._stream(conn, self._select(plan, columns)):
                    for row in page:
                        h.update(json.dumps([_jsonable(v) for v in row], ensure_ascii=False).encode("utf-8"))
                        h.update(b"\n")
                out["ids_sha256" if self.source.id is not None else "rows_sha256"] = h.hexdigest()
        return [out]


def _decode_or_bytes(raw: bytes) -> str | bytes:
    """SQLite's text as str, or the raw bytes when they are not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def _jsonable(v: Any) -> Any:
    """A value as JSON the same way on every run (timestamps as ISO 8601, decimals as text)."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, dt.datetime) and v.tzinfo is not None:
        return v.astimezone(dt.timezone.utc).isoformat()  # not the session's time zone
    if isinstance(v, (dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray, memoryview)):
        return hashlib.sha256(bytes(v)).hexdigest()
    return str(v)
