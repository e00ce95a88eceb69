"""The base of every camelCase JSON model, and of every Alipay+ message: camelCase on the wire,
snake_case in Python."""

from __future__ import annotations

import hashlib
import json
from typing import Self

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from ._types import INBOUND


class CamelModel(BaseModel):
    """JSON in camelCase, Python in snake_case: read by either name, written by the camelCase one;
    unknown fields ignored. Alipay+'s messages, our app's API, the workflows' state and the
    sandbox's controls all speak it (a subclass adds what it needs, e.g. ``frozen``)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="ignore",
    )


class Message(CamelModel):
    """An Alipay+ message: a ``CamelModel`` with the wire's rules (Alipay+ adds fields over time;
    unknown ones are not an error)."""

    def to_wire(self) -> bytes:
        """The JSON body: camelCase, every scalar a string, absent fields omitted."""
        return self.model_dump_json(exclude_none=True).encode()

    def digest_of(self, fields: set[str]) -> str:
        """SHA-256 of these fields as sent: what an idempotent repeat must keep (spec §1.9)."""
        key = self.model_dump(include=fields, exclude_none=True, mode="json")
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()

    @classmethod
    def from_wire(cls, body: bytes | str, *, inbound: bool = False) -> Self:
        """Parse a body a peer sent; raises ``pydantic.ValidationError`` naming the bad field.
        ``inbound``: a request to this MPP, whose times must also lie in the range it stores."""
        return cls.model_validate_json(body, context={INBOUND: inbound})
