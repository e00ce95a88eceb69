"""A fault-injecting HTTP/1.1 proxy in front of the sandbox Alipay+, on raw asyncio sockets.

Everything passes through untouched, except ``notifyPayment`` and ``authNotify``: about
``rate`` of those calls get a fault instead of the sandbox's answer, half of them before the
call is forwarded (Alipay+ never saw it) and half after (Alipay+ got the notification, its
answer is lost: the case that makes duplicates). The faults:

``signed_u``   a correctly signed ``U/UNKNOWN_EXCEPTION`` answer, as Alipay+ itself would send
``http_500``   HTTP 500 with a plain body
``reset``      the connection closed with a TCP reset, no answer
``stall``      a 200 status line and headers, then one body byte a second for ~12 s, never complete
``unsigned``   a 200 JSON body saying S, without the signature headers
``not_json``   a 200 body that is not JSON, signed

Raw sockets, so a reset is a real RST and a stall really trickles. Every call to the two paths
is recorded: subject (paymentRequestId / referenceAgreementId), whether it was forwarded, what
the sandbox answered, the fault returned (if any), and whether the answer reached the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from alipayplus import (
    AuthNotifyRequest,
    AuthNotifyResponse,
    NotifyPaymentRequest,
    NotifyPaymentResponse,
    Result,
    ResultCode,
    Signer,
)

FAULTS = ("signed_u", "http_500", "reset", "stall", "unsigned", "not_json")
PHASES = ("before", "after")
FAULTED_PATHS = {NotifyPaymentRequest.PATH: "notifyPayment", AuthNotifyRequest.PATH: "authNotify"}
STALL_SECONDS = 12.0
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "accept-encoding", "te"}
_REASONS = {200: "OK", 400: "Bad Request", 500: "Internal Server Error", 502: "Bad Gateway"}


@dataclass
class ProxyCall:
    """One notifyPayment / authNotify call through the proxy."""

    seq: int
    api: str  # notifyPayment | authNotify
    path: str
    subject: str | None
    started: float  # time.monotonic()
    forwarded: bool = False
    forwarded_at: float | None = None
    sandbox_answer: str | None = None  # "S/SUCCESS", "HTTP 502", "error: …"
    fault: str | None = None
    phase: str | None = None  # before | after
    delivered: bool = False  # the answer (faulty or not) was written in full to the caller
    finished: float | None = None

    @property
    def clean_success(self) -> bool:
        """The sandbox answered S and the caller got that answer untouched."""
        return self.forwarded and self.fault is None and self.delivered and self.sandbox_answer == "S/SUCCESS"


@dataclass
class _Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class FaultProxy:
    upstream: str
    signer: Signer  # Alipay+'s: the signed faults must verify at the MPP
    rate: float
    rng: random.Random
    calls: list[ProxyCall] = field(default_factory=list)
    passthrough: int = 0  # other requests forwarded untouched
    _server: asyncio.Server | None = None
    _client: httpx.AsyncClient | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _seq: int = 0

    async def start(self, port: int) -> None:
        self._client = httpx.AsyncClient(base_url=self.upstream, timeout=30.0)
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    # --- one connection, many requests (keep-alive) -------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                method, target, headers, body = request
                keep_alive = headers.get("connection", "").lower() != "close"
                api = FAULTED_PATHS.get(target.split("?", 1)[0]) if method == "POST" else None
                if api is None:
                    self.passthrough += 1
                    response = await self._forward(method, target, headers, body)
                    if not await _write(writer, response, keep_alive) or not keep_alive:
                        break
                    continue
                if not await self._faultable(api, target, headers, body, writer) or not keep_alive:
                    break
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        except asyncio.CancelledError:  # the proxy is closing: end quietly, the caller sees the connection drop
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if task is not None:
                self._tasks.discard(task)

    async def _faultable(
        self, api: str, path: str, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter
    ) -> bool:
        """One notifyPayment / authNotify: maybe a fault before or after forwarding. False: close."""
        self._seq += 1
        call = ProxyCall(self._seq, api, path, _subject(body), time.monotonic())
        self.calls.append(call)
        if self.rng.random() < self.rate:
            call.fault, call.phase = self.rng.choice(FAULTS), self.rng.choice(PHASES)
        try:
            if call.phase != "before":
                call.forwarded, call.forwarded_at = True, time.monotonic()
                response = await self._forward("POST", path, headers, body)
                call.sandbox_answer = _answer_of(response)
                if call.fault is None:
                    call.delivered = await _write(writer, response, True)
                    return call.delivered
            return await self._fault(call, path, body, writer)
        finally:
            call.finished = time.monotonic()

    async def _fault(self, call: ProxyCall, path: str, body: bytes, writer: asyncio.StreamWriter) -> bool:
        fault = call.fault
        if fault == "reset":
            _reset(writer)
            call.delivered = True
            return False
        if fault == "stall":
            await _stall(writer)
            call.delivered = True
            return False
        if fault == "http_500":
            response = _Response(500, [("content-type", "text/plain")], b"Internal Server Error")
        elif fault == "unsigned":
            answer = b'{"result":{"resultCode":"SUCCESS","resultStatus":"S","resultMessage":"success"}}'
            response = _Response(200, [("content-type", "application/json; charset=UTF-8")], answer)
        elif fault == "not_json":
            answer = b"<html><body>502 Bad Gateway (upstream busy)</body></html>"
            response = _Response(200, list(self.signer.headers(path, answer, response=True).items()), answer)
        else:  # signed_u
            answer = _unknown_exception(call.api, body)
            response = _Response(200, list(self.signer.headers(path, answer, response=True).items()), answer)
        call.delivered = await _write(writer, response, True)
        return call.delivered

    async def _forward(self, method: str, target: str, headers: dict[str, str], body: bytes) -> _Response:
        assert self._client is not None
        try:
            upstream = await self._client.request(
                method,
                target,
                content=body,
                headers={name: value for name, value in headers.items() if name not in _HOP_BY_HOP},
            )
        except httpx.HTTPError as exc:
            return _Response(502, [("content-type", "text/plain")], f"proxy: {type(exc).__name__}".encode())
        kept = [
            (name, value)
            for name, value in upstream.headers.multi_items()
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-encoding"
        ]
        return _Response(upstream.status_code, kept, upstream.content)

    # --- what happened ------------------------------------------------------------------------

    def faults(self) -> dict[tuple[str, str], int]:
        counted: dict[tuple[str, str], int] = {}
        for call in self.calls:
            if call.fault and call.phase:
                counted[(call.fault, call.phase)] = counted.get((call.fault, call.phase), 0) + 1
        return counted

    def by_subject(self, api: str) -> dict[str, list[ProxyCall]]:
        grouped: dict[str, list[ProxyCall]] = {}
        for call in self.calls:
            if call.api == api and call.subject:
                grouped.setdefault(call.subject, []).append(call)
        return grouped


def _subject(body: bytes) -> str | None:
    try:
        message = json.loads(body)
    except ValueError:
        return None
    if not isinstance(message, dict):
        return None
    subject = message.get("paymentRequestId") or message.get("referenceAgreementId")
    return str(subject) if subject else None


def _answer_of(response: _Response) -> str:
    if response.status != 200:
        return f"HTTP {response.status}"
    try:
        result: dict[str, Any] = json.loads(response.body)["result"]
        return f"{result['resultStatus']}/{result['resultCode']}"
    except (ValueError, KeyError, TypeError):
        return "unparsable"


def _unknown_exception(api: str, body: bytes) -> bytes:
    """The signed U answer Alipay+ would give to this call."""
    result = Result.of(ResultCode.UNKNOWN_EXCEPTION)
    if api == "authNotify":
        try:
            message = json.loads(body)
        except ValueError:
            message = {}
        return AuthNotifyResponse(
            result=result, acquirer_id=message.get("acquirerId"), psp_id=message.get("pspId")
        ).to_wire()
    return NotifyPaymentResponse(result=result).to_wire()


# --- HTTP/1.1 on raw streams --------------------------------------------------------------------


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes] | None:
    """One request, or None when the caller closed the connection between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            chunks.append(chunk[:-2])
        body = b"".join(chunks)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
    return method, target, headers, body


async def _write(writer: asyncio.StreamWriter, response: _Response, keep_alive: bool) -> bool:
    head = [f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Status')}"]
    head += [f"{name}: {value}" for name, value in response.headers]
    head += [f"content-length: {len(response.body)}", f"connection: {'keep-alive' if keep_alive else 'close'}"]
    try:
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body)
        await writer.drain()
    except OSError:
        return False
    return True


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0): the caller sees "connection reset by peer"."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _stall(writer: asyncio.StreamWriter) -> None:
    """Headers, then a byte a second, never the whole body; then a reset."""
    try:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json; charset=UTF-8\r\ncontent-length: 4096\r\n\r\n{"
        )
        await writer.drain()
        deadline = time.monotonic() + STALL_SECONDS
        while time.monotonic() < deadline and not writer.is_closing():
            await asyncio.sleep(1.0)
            writer.write(b" ")
            await writer.drain()
    except OSError:
        pass
    _reset(writer)
