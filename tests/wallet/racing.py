"""Releasing many threads at one moment, to race them on the real database."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def race(threads: int, attempt: Callable[[int], T]) -> list[T | Exception]:
    """Run ``attempt(i)`` on ``threads`` threads released at the same moment."""
    start = threading.Barrier(threads)

    def run(i: int) -> T | Exception:
        start.wait()
        try:
            return attempt(i)
        except Exception as error:  # collected, so the test can count outcomes
            return error

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(run, range(threads)))
