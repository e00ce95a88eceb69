"""Texting a user: OTP codes and security notices go through one SMS gateway."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import httpx


class SmsGateway(Protocol):
    def send(self, to: str, text: str, reference: str) -> None: ...


@dataclass
class HttpSmsGateway:
    """Posts ``{to, text, reference}`` to an SMS provider's HTTP endpoint (the sandbox's in dev)."""

    url: str
    http: httpx.Client

    def send(self, to: str, text: str, reference: str) -> None:
        self.http.post(self.url, json={"to": to, "text": text, "reference": reference}).raise_for_status()
