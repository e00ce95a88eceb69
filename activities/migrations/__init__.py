"""Alembic migrations for the wallet schema (run them with ``activities.db.migrate``)."""
