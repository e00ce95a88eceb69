"""Bounded requests: one streaming body-size limit for every route, decided before the body is read.

``BoundedRequests`` is pure ASGI middleware (not ``BaseHTTPMiddleware``, which would buffer): it
answers at once when ``Content-Length`` is over the route's limit, and otherwise counts the
``http.request`` chunks as the app asks for them, refusing the request at the first chunk that
crosses the limit, so never more than the limit plus one chunk is taken from the client. On the
way it refuses multipart bodies (no route takes uploads; Starlette would spool them to disk
before the handler runs) and JSON nested deeper than ``max_json_depth``, the latter checked
incrementally on the same chunks.

Routes under a raw prefix (``/aps``: Alipay+'s signed calls, whose bytes are verified before
anything parses them) get only the size limit, answered as the inbound wrapper always did.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wallet.telemetry.metrics import BODY_REJECTIONS

FORM = "application/x-www-form-urlencoded"
RAW_TOO_LARGE = b"request body too large"  # /aps: the answer the inbound wrapper has always given


@dataclass(frozen=True)
class Refusal:
    status: int
    detail: str
    reason: str  # for the metrics: too_large, multipart, too_deep


class RequestRefused(Exception):
    """Raised from ``receive`` once a request is refused, so that nothing reads on."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.detail)
        self.refusal = refusal


def _prefix_matches(path: str, prefix: str) -> bool:
    stem = prefix.rstrip("/")
    return path == stem or path.startswith(stem + "/")


def _media_type(headers: Headers) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


_JSON_STRUCTURE = re.compile(rb'[\[\]{}"\\]')


class JsonDepth:
    """How deep a JSON text nests, fed chunk by chunk (strings and escapes followed across chunks).

    Only counts brackets outside strings; whether the text is valid JSON is the parser's business.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.depth = 0
        self._in_string = False
        self._offset = 0  # bytes fed before the current chunk
        self._escaped = -1  # absolute offset of the byte a backslash escapes

    def feed(self, chunk: bytes) -> bool:
        """False as soon as the text nests deeper than ``limit``."""
        for match in _JSON_STRUCTURE.finditer(chunk):
            position = self._offset + match.start()
            if position == self._escaped:
                continue
            char = chunk[match.start()]
            if self._in_string:
                if char == 0x5C:  # backslash: the next byte is escaped
                    self._escaped = position + 1
                elif char == 0x22:
                    self._in_string = False
            elif char == 0x22:
                self._in_string = True
            elif char in b"[{":
                self.depth += 1
                if self.depth > self.limit:
                    return False
            elif char in b"]}":
                self.depth -= 1
        self._offset += len(chunk)
        return True


class BoundedRequests:
    """Size, media-type and nesting limits on every HTTP request's body, before the app reads it.

    ``limits`` maps path prefixes to their own limit (the longest matching prefix wins), every
    other path gets ``default_limit``. ``raw_prefixes`` name routes whose bodies are opaque bytes.
    ``listener`` names the listener it guards in the metrics (``public``, ``ops``).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        default_limit: int,
        limits: Mapping[str, int] | None = None,
        raw_prefixes: Sequence[str] = (),
        max_json_depth: int = 32,
        listener: str = "public",
    ) -> None:
        self.app = app
        self.listener = listener
        self.default_limit = default_limit
        self.limits = sorted((limits or {}).items(), key=lambda item: len(item[0]), reverse=True)
        self.raw_prefixes = tuple(raw_prefixes)
        self.max_json_depth = max_json_depth

    def limit_for(self, path: str) -> int:
        return next((limit for prefix, limit in self.limits if _prefix_matches(path, prefix)), self.default_limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        raw = any(_prefix_matches(path, prefix) for prefix in self.raw_prefixes)
        limit = self.limit_for(path)
        headers = Headers(scope=scope)
        too_large = Refusal(413, f"request body too large (limit {limit} bytes)", "too_large")

        declared = headers.get("content-length", "").strip()
        if declared.isdigit() and int(declared) > limit:
            await self._refuse(send, too_large, raw)  # at once: not a byte of the body is read
            return
        media_type = _media_type(headers)
        if not raw and media_type.startswith("multipart/"):
            await self._refuse(
                send, Refusal(415, f"{media_type} bodies are not accepted; send {FORM} or JSON", "multipart"), raw
            )
            return
        depth = None if raw or media_type == FORM else JsonDepth(self.max_json_depth)

        refusal: Refusal | None = None
        received = 0
        app_started = answered = False

        async def bounded_receive() -> Message:
            nonlocal refusal, received
            if refusal is not None:
                raise RequestRefused(refusal)
            message = await receive()
            if message["type"] == "http.request":
                chunk: bytes = message.get("body", b"")
                received += len(chunk)
                if received > limit:
                    refusal = too_large
                elif depth is not None and not depth.feed(chunk):
                    refusal = Refusal(400, f"JSON nested deeper than {self.max_json_depth} levels", "too_deep")
                if refusal is not None:
                    raise RequestRefused(refusal)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal app_started, answered
            if refusal is not None and not app_started:
                # The app answered after the refusal (FastAPI turns it into a 400, a handler may
                # swallow it): our answer instead, and nothing more of the app's.
                if not answered:
                    answered = True
                    await self._refuse(send, refusal, raw)
                return
            if message["type"] == "http.response.start":
                app_started = True
            await send(message)

        try:
            await self.app(scope, bounded_receive, guarded_send)
        except Exception:
            if refusal is None:
                raise
            if not app_started and not answered:
                await self._refuse(send, refusal, raw)
            return
        if refusal is not None and not app_started and not answered:
            await self._refuse(send, refusal, raw)

    async def _refuse(self, send: Send, refusal: Refusal, raw: bool) -> None:
        BODY_REJECTIONS.labels(listener=self.listener, reason=refusal.reason).inc()  # once a request: its one answer
        if raw:
            body, media_type = RAW_TOO_LARGE, b"text/plain; charset=utf-8"
        else:
            body, media_type = json.dumps({"detail": refusal.detail}).encode(), b"application/json"
        await send(
            {
                "type": "http.response.start",
                "status": refusal.status,
                "headers": [
                    (b"content-type", media_type),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),  # the rest of the body is never read: no keep-alive
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


_DETAIL = {"application/json": {"schema": {"type": "object", "properties": {"detail": {"type": "string"}}}}}
# What ``BoundedRequests`` may answer any route, documented on each (issue 13, item 9: honest statuses).
REFUSALS: dict[str, dict[str, Any]] = {
    "400": {"description": "JSON nested too deep, or a body that cannot be parsed", "content": _DETAIL},
    "413": {"description": "Request body too large (the limit is in the message)", "content": _DETAIL},
    "415": {"description": "Multipart bodies are not accepted", "content": _DETAIL},
}
RAW_REFUSALS: dict[str, dict[str, Any]] = {
    "413": {"description": "Request body too large", "content": {"text/plain": {"schema": {"type": "string"}}}},
}
_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})  # a path item's operations


def document_refusals(app: FastAPI, raw_prefixes: Sequence[str] = ()) -> None:
    """Adds the refusals of ``BoundedRequests`` to every operation of ``app``'s OpenAPI schema (only
    413 under ``raw_prefixes``); a route's own description of the same status is kept."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()  # FastAPI's, cached on the app after the first call
        for path, item in schema.get("paths", {}).items():
            raw = any(_prefix_matches(path, prefix) for prefix in raw_prefixes)
            for method, operation in item.items():
                if method not in _METHODS:
                    continue
                responses = operation.setdefault("responses", {})
                for status, response in (RAW_REFUSALS if raw else REFUSALS).items():
                    responses.setdefault(status, response)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


async def read_bounded(request: Request, limit: int) -> bytes | None:
    """The request's body, or None as soon as it (or its ``Content-Length``) exceeds ``limit``."""
    declared = request.headers.get("content-length", "").strip()
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
