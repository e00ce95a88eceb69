"""Fixtures for the persistence tests: a fresh, migrated database per test.

SQLite file under tmp_path by default. With ``DATABASE_URL=postgresql+psycopg://…`` each
test gets its own schema in that database instead (dropped afterwards).
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


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    server_url = os.environ.get("DATABASE_URL", "")
    if not server_url.startswith("postgresql"):
        yield f"sqlite:///{tmp_path / 'mpp.sqlite'}"
        return
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
