"""Engines and schema migrations for SQLite (the default, a file) and PostgreSQL.

On SQLite every transaction starts with ``BEGIN IMMEDIATE``: it takes the write lock up
front, so concurrent writers queue on the busy timeout instead of failing with "database
is locked" when a read transaction tries to upgrade to a write. Reads go through
``reader(engine)``: their transactions begin deferred and read a WAL snapshot, so they
neither wait for nor hold the write lock. Keep write transactions short.
"""

from __future__ import annotations

import threading
from functools import partial
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_SECONDS = 30.0
_READ_ONLY = "mpp_read_only"  # an execution option: this engine's transactions only read

# PostgreSQL connections per engine: 10 kept open, up to 30 more under load (closed when returned).
# SQLAlchemy's default (5 + 10) made a worker's 32 activity and 32 local activity threads queue for
# a connection; size the server's max_connections for 40 per process (`mpp worker`, `mpp api`).
POOL_SIZE, POOL_OVERFLOW = 10, 30

# Alembic runs env.py through module-global proxies (alembic.context, alembic.op): two
# migrations in one process at the same time would trample each other.
_migration_in_process = threading.Lock()


def create_engine_for(url: str, *, enforce_foreign_keys: bool = True) -> Engine:
    """An engine for ``url``, safe to share between threads.

    SQLite: WAL journal, ``synchronous=NORMAL``, a 30 s busy timeout, ``BEGIN IMMEDIATE``
    transactions, foreign keys enforced (unless ``enforce_foreign_keys=False``, which
    migrations need to rebuild tables), and the file's directory created if missing. Use a
    file: an in-memory database is private to one connection.
    PostgreSQL (``postgresql+psycopg://…``): a pooled engine that checks connections first, with
    up to ``POOL_SIZE + POOL_OVERFLOW`` connections (a worker's activity threads each hold one).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)
    _create_parent_directory(parsed)
    engine = create_engine(
        parsed,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
    )
    event.listen(engine, "connect", partial(_configure_sqlite_connection, enforce_foreign_keys=enforce_foreign_keys))
    event.listen(engine, "begin", _begin_immediate)
    return engine


def reader(engine: Engine) -> Engine:
    """``engine`` for transactions that only read: on SQLite they begin deferred (a WAL snapshot,
    no write lock); on PostgreSQL nothing changes. Shares ``engine``'s connection pool."""
    return engine.execution_options(**{_READ_ONLY: True})


def database_answers(engine: Engine) -> bool:
    """A readiness probe: the database takes a connection and answers a trivial query."""
    with engine.connect() as connection:
        return connection.execute(text("SELECT 1")).scalar_one() == 1


def migrate(url: str) -> None:
    """Bring the database at ``url`` to the newest schema (Alembic ``upgrade head``).

    Safe to call at every start, from any working directory, and from several threads or
    processes at once (one transaction, serialised by a lock: SQLite's write lock, a
    PostgreSQL advisory lock). Leaves Python's logging configuration alone.
    """
    engine = create_engine_for(url, enforce_foreign_keys=False)
    try:
        with _migration_in_process, engine.begin() as connection:
            config = alembic_config()
            # env.py migrates on this connection, inside this transaction
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        engine.dispose()


def alembic_config() -> Config:
    """An Alembic configuration for this package's migrations, built without an ini file."""
    config = Config()
    # ConfigParser interpolates '%', so escape it in the path
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    return config


def _create_parent_directory(url: URL) -> None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:") or url.query.get("uri"):
        return
    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _configure_sqlite_connection(dbapi_connection: Any, _connection_record: Any, *, enforce_foreign_keys: bool) -> None:
    # Stop the sqlite3 module from issuing its own (deferred, lazy) BEGIN; _begin_immediate
    # issues it instead. COMMIT and ROLLBACK still go through the driver.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: durable against application crashes, fsyncs only at checkpoints
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA foreign_keys={'ON' if enforce_foreign_keys else 'OFF'}")
    finally:
        cursor.close()


def _begin_immediate(connection: Connection) -> None:
    read_only = connection.get_execution_options().get(_READ_ONLY, False)
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
