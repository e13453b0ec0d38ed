"""The sql connector: SQLite files for the fast cases, a real PostgreSQL server for the rest."""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3

import pyarrow as pa
import pytest
import sqlalchemy as sa
from loopback import free_port

from connectors import SqlConnector, known_connectors, load_connector
from connectors.sql import read_only_query
from curation.exceptions import DataError, InvalidParameterError
from curation.ingest import ROW_COL, UNIT_COL
from curation.recipe import SourceConfig

PW_VAR = "REVIEWS_DB_PASSWORD"


def source(url: str, **kw) -> SourceConfig:
    """A validated recipe source of kind sql (text column `text` unless told)."""
    return SourceConfig(**{"name": "db", "kind": "sql", "url": url, "text": "text", **kw})


def rows(conn: SqlConnector) -> list[dict]:
    return pa.concat_tables(list(conn.iter_batches())).to_pylist()


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


@pytest.fixture
def db(tmp_path):
    """A SQLite file with table `t`: ten rows inserted out of order (ids 1..10)."""
    path = tmp_path / "reviews.db"
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, text TEXT, label TEXT, seq INTEGER, score REAL, "
                  "updated_at TIMESTAMP)")
        order = [7, 3, 10, 1, 5, 9, 2, 8, 4, 6]
        c.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)",
                      [(i, f"review {i}", "pos" if i % 2 else "neg", 100 - i, i / 4, f"2024-05-{i:02d} 12:00:00")
                       for i in order])
    return path


def sqlite_url(path) -> str:
    return f"sqlite:///{path}"


# ----------------------------------------------------------------------------------- SQLite
def test_sql_is_a_registered_connector_kind():
    assert load_connector("sql") is SqlConnector
    assert "sql" in known_connectors()


def test_table_is_read_once_in_id_order_in_pages_smaller_than_the_table(db):
    conn = SqlConnector(source(sqlite_url(db), table="t", id="id", label="label", page_size=3))
    batches = list(conn.iter_batches())
    assert [b.num_rows for b in batches] == [3, 3, 3, 1]
    got = pa.concat_tables(batches).to_pylist()
    assert [r["id"] for r in got] == list(range(1, 11))
    assert [r[ROW_COL] for r in got] == list(range(1, 11))
    assert {r[UNIT_COL] for r in got} == {f"sqlite:///{db}/t"}
    assert got[0]["text"] == "review 1" and got[0]["label"] == "pos"


def test_table_columns_keep_their_sql_types(db):
    batch = next(SqlConnector(source(sqlite_url(db), table="t", id="id")).iter_batches())
    types = dict(zip(batch.column_names, batch.schema.types))
    assert types["id"] == pa.int64() and types["seq"] == pa.int64()
    assert types["text"] == pa.string() and types["score"] == pa.float64()
    assert types["updated_at"] == pa.timestamp("us")
    assert batch.column("updated_at")[0].as_py() == dt.datetime(2024, 5, 1, 12)


def test_order_by_column_sets_the_order(db):
    got = rows(SqlConnector(source(sqlite_url(db), table="t", id="id", order_by="seq", page_size=4)))
    assert [r["id"] for r in got] == list(range(10, 0, -1))  # seq = 100 - id
    assert [r[ROW_COL] for r in got] == list(range(1, 11))


def test_limit_reads_only_the_first_rows_in_order(db):
    got = rows(SqlConnector(source(sqlite_url(db), table="t", id="id", page_size=2, limit=5)))
    assert [r["id"] for r in got] == [1, 2, 3, 4, 5]


def test_query_is_read_in_order_with_its_own_columns(db):
    query = ("SELECT id, text, upper(label) AS label, 'a:b 100%' AS note FROM t -- the positives\n"
             "WHERE label = 'pos' /* odd ids */;")
    conn = SqlConnector(source(sqlite_url(db), query=query, id="id", label="label", page_size=2))
    (unit,) = conn.units()
    assert re.fullmatch(rf"sqlite:///{re.escape(str(db))}#query:[0-9a-f]{{12}}", unit)
    got = rows(conn)
    assert [r["id"] for r in got] == [1, 3, 5, 7, 9]
    assert {r["label"] for r in got} == {"POS"} and {r["note"] for r in got} == {"a:b 100%"}  # ':' and '%' kept
    assert [r[ROW_COL] for r in got] == [1, 2, 3, 4, 5]
    assert got[0][UNIT_COL] == conn.location(unit) == unit.replace("#query:", "/query:")


def test_query_with_write_words_only_in_literals_and_comments_is_allowed(db):
    query = "SELECT id, text, 'DELETE FROM t; DROP TABLE t' AS note FROM t /* UPDATE t */ -- INSERT INTO t\n"
    got = rows(SqlConnector(source(sqlite_url(db), query=query, id="id")))
    assert len(got) == 10 and got[0]["note"] == "DELETE FROM t; DROP TABLE t"


@pytest.mark.parametrize("query, says", [
    ("DELETE FROM t", "it starts with DELETE"),
    ("update t set text = 'x'", "it starts with UPDATE"),
    ("INSERT INTO t (id, text) VALUES (11, 'x')", "it starts with INSERT"),
    ("DROP TABLE t", "it starts with DROP"),
    ("-- looks harmless\nDELETE FROM t", "it starts with DELETE"),
    ("SELECT 1 AS id; DELETE FROM t", "it holds more than one statement"),
    ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "it contains DELETE"),
    ("WITH x AS (SELECT 1) DELETE FROM t", "it contains DELETE"),
    ("SELECT * INTO t2 FROM t", "it contains INTO"),
    ("SELECT 'unterminated FROM t", "unterminated"),
])
def test_a_query_that_writes_is_refused_before_connecting(tmp_path, query, says):
    never = tmp_path / "never.db"  # connecting would be refused too: the file does not exist
    conn = SqlConnector(source(sqlite_url(never), query=query, id="id"))
    for call in (conn.check, conn.units, conn.fingerprints, lambda: list(conn.iter_batches())):
        with pytest.raises(InvalidParameterError) as exc:
            call()
        msg = one_line(exc)
        assert msg.startswith("sources[db].query is refused: ") and says in msg, msg
        assert "only one read-only SELECT" in msg
    assert not never.exists()


@pytest.mark.parametrize("query", [
    "SELECT 'it''s; DELETE FROM t' AS id",
    "SELECT E'it\\'s; DELETE FROM t' AS id",
    "SELECT $q$ ; DROP TABLE t $q$ AS id",
    "SELECT $$DELETE$$ AS id",
    'SELECT "delete" AS id FROM (SELECT 1 AS "delete") AS x',
    "/* nested /* DELETE */ still a comment */ SELECT 1 AS id;",
    "(SELECT 1 AS id) UNION ALL (SELECT 2)",
])
def test_write_words_inside_literals_quoted_names_and_comments_pass_the_check(query):
    assert read_only_query(query, field="q").lstrip(" (").upper().startswith("SELECT")


def test_the_sqlite_connection_refuses_writes(db):
    conn = SqlConnector(source(sqlite_url(db), table="t", id="id"))
    with pytest.raises(InvalidParameterError, match=r"^sources\[db\] is refused by the database: attempt to "
                                                    r"write a readonly database"):
        with conn.connect() as c:
            c.exec_driver_sql("DELETE FROM t")
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(*) FROM t").fetchone() == (10,)


def test_missing_table_names_it_and_lists_the_tables(db):
    conn = SqlConnector(source(sqlite_url(db), table="reviewz", id="id"))
    with pytest.raises(DataError) as exc:
        conn.check()
    assert one_line(exc) == (f"sources[db].table: table 'reviewz' does not exist in sqlite:///{db}. "
                             "Available tables: t.")


def test_missing_column_names_the_table_the_column_and_the_columns(db):
    conn = SqlConnector(source(sqlite_url(db), table="t", id="id", text="body"))
    with pytest.raises(DataError) as exc:
        conn.check()
    assert one_line(exc) == (f"sources[db].text names column 'body', which table 't' (sqlite:///{db}/t) does not "
                             "have. Available columns: id, text, label, seq, score, updated_at.")


def test_missing_column_of_a_query_lists_its_columns(db):
    conn = SqlConnector(source(sqlite_url(db), query="SELECT id, text FROM t", id="id", label="label"))
    with pytest.raises(DataError, match=r"^sources\[db\]\.label names column 'label', which the query's columns "
                                        r"\(.*/query:[0-9a-f]{12}\) does not have\. Available columns: id, text\.$"):
        conn.check()


def test_no_order_is_refused_with_a_hint_before_connecting(tmp_path):
    conn = SqlConnector(source(sqlite_url(tmp_path / "never.db"), table="t"))
    with pytest.raises(InvalidParameterError) as exc:
        conn.check()
    assert one_line(exc) == ("sources[db]: reading a SQL table in pages needs a stable order: set `order_by` "
                             "(a unique column, e.g. the primary key) or `id`")


def test_a_missing_sqlite_file_is_not_created(tmp_path):
    conn = SqlConnector(source(sqlite_url(tmp_path / "nope.db"), table="t", id="id"))
    with pytest.raises(FileNotFoundError, match=r"^sources\[db\]\.url: the SQLite database '.*nope\.db' does not "
                                                r"exist"):
        conn.check()
    assert not (tmp_path / "nope.db").exists()


def test_a_value_its_column_type_cannot_hold_skips_only_that_row(db):
    with sqlite3.connect(db) as c:  # SQLite stores any value in any column
        c.execute("INSERT INTO t VALUES (11, 'review 11', 'pos', 'not a number', 1.0, '2024-06-01 00:00:00')")
        c.execute("INSERT INTO t VALUES (12, 'review 12', 'neg', 88, 1.0, '2024-06-02 00:00:00')")
    conn = SqlConnector(source(sqlite_url(db), table="t", id="id", page_size=5))
    got = rows(conn)
    assert [r["id"] for r in got] == [*range(1, 11), 12]
    assert got[-1][ROW_COL] == 12  # positions stay those of the ordered table
    assert conn.skipped_rows == [{"reason": "cast_failed", "unit": f"sqlite:///{db}/t", "row": 11}]


def test_fingerprint_counts_rows_and_changes_when_a_row_is_added(db):
    conn = SqlConnector(source(sqlite_url(db), table="t", id="id"))
    before = conn.fingerprints()
    assert before == conn.fingerprints()  # stable while nothing changes
    assert before[0]["rows"] == 10 and before[0]["unit"] == f"sqlite:///{db}/t"
    with sqlite3.connect(db) as c:
        c.execute("INSERT INTO t (id, text, label) VALUES (11, 'review 11', 'pos')")
    after = conn.fingerprints()
    assert after[0]["rows"] == 11 and after[0]["ids_sha256"] != before[0]["ids_sha256"]


def test_fingerprint_with_updated_at_changes_when_a_row_is_updated(db):
    conn = SqlConnector(source(sqlite_url(db), table="t", id="id", updated_at="updated_at"))
    before = conn.fingerprints()
    assert before[0]["rows"] == 10 and before[0]["max_updated_at"] == "2024-05-10 12:00:00"
    with sqlite3.connect(db) as c:
        c.execute("UPDATE t SET text = 'edited', updated_at = '2024-07-01 09:30:00' WHERE id = 3")
    after = conn.fingerprints()
    assert after[0]["rows"] == 10 and after[0]["max_updated_at"] == "2024-07-01 09:30:00"


def test_fingerprint_of_a_query_without_id_hashes_every_row(db):
    conn = SqlConnector(source(sqlite_url(db), query="SELECT text, seq FROM t", order_by="seq"))
    before = conn.fingerprints()
    with sqlite3.connect(db) as c:
        c.execute("UPDATE t SET text = 'edited' WHERE id = 3")  # same ids, same count: only the content differs
    after = conn.fingerprints()
    assert before[0]["rows"] == after[0]["rows"] == 10
    assert before[0]["rows_sha256"] != after[0]["rows_sha256"]


# ------------------------------------------------------------------------------- PostgreSQL
@pytest.fixture
def pg_env(postgres, monkeypatch):
    """The real password in the environment variable the recipe URL names."""
    monkeypatch.setenv(PW_VAR, postgres.password)
    return postgres


@pytest.fixture
def pg_items(pg_env):
    """Table pg_items: 450 rows with text, numeric, timestamptz, boolean and bigint columns."""
    pg_env.run("DROP TABLE IF EXISTS pg_items")
    pg_env.run("CREATE TABLE pg_items (doc_id integer PRIMARY KEY, text text, label varchar(8), score numeric, "
               "weight double precision, n bigint, ok boolean, created timestamptz, meta jsonb)")
    pg_env.run("INSERT INTO pg_items SELECT g, 'review number ' || g, CASE WHEN g % 3 = 0 THEN 'neg' ELSE 'pos' END, "
               "g * 0.5, g / 7.0, g::bigint * 1000000000, g % 2 = 0, "
               "timestamptz '2024-01-01 00:00:00+00' + g * interval '1 hour', jsonb_build_object('g', g) "
               "FROM generate_series(450, 1, -1) AS g")
    return pg_env


def test_postgres_table_of_hundreds_of_rows_is_read_in_order_with_types(pg_items):
    conn = SqlConnector(source(pg_items.url(), table="pg_items", id="doc_id", label="label", page_size=100))
    conn.check()
    batches = list(conn.iter_batches())
    assert [b.num_rows for b in batches] == [100, 100, 100, 100, 50]
    got = pa.concat_tables(batches)
    assert got.column("doc_id").to_pylist() == list(range(1, 451))
    assert got.column(ROW_COL).to_pylist() == list(range(1, 451))
    types = dict(zip(got.column_names, got.schema.types))
    assert types["doc_id"] == pa.int64() and types["n"] == pa.int64() and types["text"] == pa.string()
    assert types["score"] == pa.float64() and types["weight"] == pa.float64() and types["ok"] == pa.bool_()
    assert types["created"] == pa.timestamp("us", tz="UTC") and types["meta"] == pa.string()
    first = got.slice(0, 1).to_pylist()[0]
    assert first["created"] == dt.datetime(2024, 1, 1, 1, tzinfo=dt.timezone.utc)
    assert first["score"] == 0.5 and first["n"] == 1_000_000_000 and json.loads(first["meta"]) == {"g": 1}
    port = pg_items.port
    assert first[UNIT_COL] == f"postgresql://curator:***@127.0.0.1:{port}/reviews/pg_items"


def test_postgres_query_is_read_in_order(pg_items):
    query = "SELECT doc_id, text, label FROM pg_items WHERE label = 'neg' AND text LIKE 'review%'"
    conn = SqlConnector(source(pg_items.url(), query=query, id="doc_id", page_size=40))
    got = rows(conn)
    assert [r["doc_id"] for r in got] == list(range(3, 451, 3))


def test_postgres_wrong_password_is_a_settings_error_naming_the_variable_not_the_password(pg_items, monkeypatch):
    wrong = "wr0ng-Pw-4417"
    monkeypatch.setenv(PW_VAR, wrong)
    conn = SqlConnector(source(pg_items.url(), table="pg_items", id="doc_id"))
    for call in (conn.check, conn.fingerprints, lambda: list(conn.iter_batches())):
        with pytest.raises(InvalidParameterError) as exc:
            call()
        msg = one_line(exc)
        assert msg == (f"sources[db]: postgresql://curator:***@127.0.0.1:{pg_items.port}/reviews refused the login "
                       "of user 'curator' (password authentication failed for user \"curator\"); the password comes "
                       "from ${REVIEWS_DB_PASSWORD} in sources[db].url: check its value")
        assert wrong not in msg and pg_items.password not in msg


def test_postgres_unreachable_port_is_a_connection_error_in_one_clean_line(pg_env):
    port = free_port()  # nothing listens on it once the probe socket is closed
    conn = SqlConnector(source(pg_env.url(port=port), table="pg_items", id="doc_id"))
    for call in (conn.check, conn.fingerprints, lambda: list(conn.iter_batches())):
        with pytest.raises(ConnectionError) as exc:
            call()
        assert isinstance(exc.value, OSError)  # the flow retries it
        assert one_line(exc) == (f"sources[db]: cannot reach postgresql://curator:***@127.0.0.1:{port}/reviews: "
                                 "Connection refused")


def test_postgres_unknown_database_is_a_settings_error(pg_env):
    conn = SqlConnector(source(pg_env.url().replace("/reviews", "/nodb"), table="pg_items", id="doc_id"))
    with pytest.raises(InvalidParameterError, match=r'^sources\[db\]\.url: database "nodb" does not exist on the '
                                                    r"server of postgresql://curator:\*\*\*@"):
        conn.check()


def test_postgres_password_never_appears_in_names_fingerprints_or_errors(pg_items):
    secret = pg_items.password
    seen: list[str] = []
    conn = SqlConnector(source(pg_items.url(), table="pg_items", id="doc_id", updated_at="created"))
    seen += conn.units() + [conn.location(u) for u in conn.units()] + [json.dumps(conn.fingerprints())]
    seen += [t[UNIT_COL][0].as_py() for t in conn.iter_batches()]
    failing = [source(pg_items.url(), table="nope", id="doc_id"),
               source(pg_items.url(), table="pg_items", id="doc_id", text="body"),
               source(pg_items.url(), query="SELECT doc_id, nope AS text FROM pg_items", id="doc_id"),
               source(pg_items.url(), query="SELECT doc_id, text FROM pg_items WHERE", id="doc_id"),
               source(pg_items.url(), query="DELETE FROM pg_items", id="doc_id")]
    for src in failing:
        with pytest.raises((DataError, InvalidParameterError)) as exc:
            SqlConnector(src).check()
        seen.append(one_line(exc))
    assert all("postgresql://curator:***@" in s or "sources[db]" in s for s in seen)
    assert not [s for s in seen if secret in s]


def test_postgres_missing_table_and_column_list_what_exists(pg_items):
    with pytest.raises(DataError, match=r"^sources\[db\]\.table: table 'nope' does not exist in "
                                        r"postgresql://curator:\*\*\*@127\.0\.0\.1:\d+/reviews\. Available tables: "
                                        r".*\bpg_items\b"):
        SqlConnector(source(pg_items.url(), table="nope", id="doc_id")).check()
    with pytest.raises(DataError, match=r"^sources\[db\]\.label names column 'stars', which table 'pg_items' .* "
                                        r"Available columns: doc_id, text, label, score, weight, n, ok, created, "
                                        r"meta\.$"):
        SqlConnector(source(pg_items.url(), table="pg_items", id="doc_id", label="stars")).check()


def test_postgres_read_only_transaction_refuses_a_select_that_writes(pg_items):
    pg_items.run("DROP SEQUENCE IF EXISTS pg_seq")
    pg_items.run("CREATE SEQUENCE pg_seq")
    pg_items.run("CREATE OR REPLACE FUNCTION pg_bump() RETURNS integer LANGUAGE sql AS "
                 "$$ INSERT INTO pg_items (doc_id, text) VALUES (10000, 'sneaky') RETURNING 1 $$")
    for query in ("SELECT nextval('pg_seq') AS doc_id, 'x' AS text", "SELECT pg_bump() AS doc_id, 'x' AS text"):
        conn = SqlConnector(source(pg_items.url(), query=query, id="doc_id"))
        conn.check()  # a read-only SELECT as far as its text and its columns (LIMIT 0) tell
        with pytest.raises(InvalidParameterError, match=r"^sources\[db\]\.query is refused by the database: cannot "
                                                        r"execute .* in a read-only transaction"):
            list(conn.iter_batches())
    assert pg_items.run("SELECT is_called FROM pg_seq") == [(False,)]
    assert pg_items.run("SELECT count(*) FROM pg_items") == [(450,)]


def test_postgres_fingerprint_follows_updated_at_and_the_row_count(pg_items):
    conn = SqlConnector(source(pg_items.url(), table="pg_items", id="doc_id", updated_at="created"))
    before = conn.fingerprints()[0]
    assert before["rows"] == 450 and before["max_updated_at"] == "2024-01-19T18:00:00+00:00"
    pg_items.run("UPDATE pg_items SET text = 'edited', created = timestamptz '2025-03-01 08:00:00+00' "
                 "WHERE doc_id = 7")
    after = conn.fingerprints()[0]
    assert after["rows"] == 450 and after["max_updated_at"] == "2025-03-01T08:00:00+00:00"
    pg_items.run("INSERT INTO pg_items (doc_id, text, created) VALUES (451, 'new', timestamptz '2024-01-01')")
    assert conn.fingerprints()[0]["rows"] == 451


def test_postgres_engine_url_uses_psycopg_3_and_expands_the_password_only_when_connecting(pg_env, monkeypatch):
    conn = SqlConnector(source(pg_env.url(), table="pg_items", id="doc_id"))
    monkeypatch.delenv(PW_VAR)
    assert conn.units()  # names need no password
    with pytest.raises(InvalidParameterError, match=r"REVIEWS_DB_PASSWORD\}, which is not set"):
        conn.check()
    monkeypatch.setenv(PW_VAR, pg_env.password)
    url = conn._engine_url()
    assert url.drivername == "postgresql+psycopg" and url.password == pg_env.password
    assert isinstance(url, sa.URL)


def test_postgres_rows_come_from_a_server_side_cursor_one_page_at_a_time(pg_items):
    conn = SqlConnector(source(pg_items.url(), table="pg_items", id="doc_id", page_size=100))
    batches = conn.iter_batches()
    try:
        assert next(batches).num_rows == 100
        # between pages the reading session has fetched at most a page from its cursor, not the table
        (last,) = pg_items.run("SELECT query FROM pg_stat_activity WHERE usename = 'curator' AND "
                               "pid <> pg_backend_pid() AND state = 'idle in transaction'")
        fetched = re.match(r'FETCH FORWARD (\d+) FROM "', last[0])
        assert fetched and int(fetched.group(1)) <= 100, last
        assert sum(b.num_rows for b in batches) == 350
    finally:
        batches.close()


def test_postgres_connection_lost_mid_read_is_a_connection_error(pg_items):
    conn = SqlConnector(source(pg_items.url(), table="pg_items", id="doc_id", page_size=100))
    batches = conn.iter_batches()
    try:
        assert next(batches).num_rows == 100
        pg_items.admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'curator' "
                       "AND state = 'idle in transaction'", dbname="reviews")
        with pytest.raises(ConnectionError) as exc:
            list(batches)
    finally:
        batches.close()
    assert one_line(exc) == (f"sources[db]: lost the connection to postgresql://curator:***@127.0.0.1:"
                             f"{pg_items.port}/reviews: terminating connection due to administrator command")
