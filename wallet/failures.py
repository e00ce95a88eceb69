"""Which failures a retry cannot fix: the worker ends such an activity for good, the API answers F."""

from __future__ import annotations

from pydantic import ValidationError
from sqlalchemy.exc import DataError, StatementError


def cannot_succeed(error: BaseException) -> bool:
    """No retry can fix this: the input itself is refused (a value the database cannot store, a
    timestamp that overflows, a model that does not validate), as opposed to a database or peer
    that is down, locked or slow, or a lost race (an IntegrityError), which a retry does fix."""
    if isinstance(error, DataError | OverflowError | ValidationError):
        return True
    # SQLAlchemy wraps what a column type refuses before the database sees it
    return isinstance(error, StatementError) and isinstance(error.orig, ValueError | OverflowError | TypeError)
