"""Fixtures for the persistence tests: a fresh, migrated database per test, on each of SQLite and
PostgreSQL (every test runs on both).

SQLite: a file under tmp_path. PostgreSQL: a schema of the test's own (dropped afterwards) in the
session's server (tests/postgres.py), or in the server ``DATABASE_URL=postgresql+psycopg://…`` names.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url

from wallet.db import create_engine_for, migrate
from wallet.ledger import Ledger
from wallet.users import UserStore


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mpp.sqlite'}"
        return
    server_url = os.environ.get("DATABASE_URL", "")
    if not server_url.startswith("postgresql"):
        server_url = request.getfixturevalue("postgres")
    schema = f"test_{uuid.uuid4().hex}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        url = make_url(server_url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        admin.dispose()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    migrate(database_url)
    engine = create_engine_for(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def ledger(engine: Engine) -> Ledger:
    return Ledger(engine)


@pytest.fixture
def users(engine: Engine) -> UserStore:
    return UserStore(engine)


@pytest.fixture
def secret_key() -> bytes:
    return b"test-secret-key-0123456789abcdef"
