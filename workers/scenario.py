"""A demo scenario: a name, the state it must end in, and how to drive it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .demo import Demo


@dataclass
class Outcome:
    workflow_id: str
    state: str


@dataclass(frozen=True)
class Scenario:
    name: str
    expected: str
    run: Callable[[Demo], Awaitable[Outcome]]
