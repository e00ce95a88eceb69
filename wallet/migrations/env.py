"""Alembic environment for the wallet schema.

Two ways in: ``wallet.db.migrate(url)`` passes an open connection in
``config.attributes["connection"]`` and owns its transaction; the ``alembic`` command line
(``alembic upgrade head`` from the repository root) takes the database from ``DATABASE_URL``
(default ``sqlite:///var/mpp.sqlite``, relative to the working directory).
"""

from __future__ import annotations

import os
from logging.config import fileConfig
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Connection
from sqlalchemy import Enum as SqlEnum
from sqlmodel import SQLModel
from sqlmodel.sql.sqltypes import AutoString

from wallet.db import create_engine_for
from wallet.records import UtcDateTime  # importing records registers the tables

DEFAULT_DATABASE_URL = "sqlite:///var/mpp.sqlite"
# Any constant works; every migrator of this schema must use the same one.
POSTGRES_MIGRATION_LOCK = 0x4D5050_4442  # "MPPDB"

config = context.config
target_metadata = SQLModel.metadata

# Only the command line configures logging; migrate() called from code leaves it alone.
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    return os.environ.get("DATABASE_URL") or os.environ.get("MPP_DATABASE_URL") or DEFAULT_DATABASE_URL


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Autogenerate the plain SQL types the models store, so revisions never import app code."""
    if type_ != "type":
        return False
    if isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    if isinstance(obj, SqlEnum):  # ours are non-native: a VARCHAR
        return f"sa.String({obj.length})"
    if isinstance(obj, AutoString):
        length = getattr(obj.impl, "length", None)
        return f"sa.String({length})" if length else "sa.String()"
    return False


def run_on(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Two processes starting at once must not both create the tables.
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({POSTGRES_MIGRATION_LOCK})")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    url = database_url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.startswith("sqlite"),
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    shared_connection = config.attributes.get("connection")
    if shared_connection is not None:
        run_on(shared_connection)
        return
    # Foreign keys off: SQLite batch migrations drop and recreate referenced tables.
    engine = create_engine_for(database_url(), enforce_foreign_keys=False)
    try:
        with engine.begin() as connection:  # one transaction for the whole upgrade
            run_on(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
