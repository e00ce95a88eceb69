"""Alembic migrations for the wallet schema (run them with ``wallet.db.migrate``)."""
