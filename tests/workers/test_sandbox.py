"""The lean sandbox runner: workflow modules and the sandbox's glue compiled once per process, and
payload contexts asked of the sandbox only when the data converter uses them."""

from __future__ import annotations

import dataclasses
import importlib.machinery
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.converter import (
    ActivitySerializationContext,
    DataConverter,
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
)
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox._runner import _Instance

from bench._trivial import OneActivityWorkflow, echo
from wallet.settings import Settings
from wallet.temporal import data_converter
from workers.sandbox import compiled, ignores_serialization_context
from workers.worker import workflow_runner

pytestmark = pytest.mark.timeout(60)


class ContextRecordingCodec(PayloadCodec, WithSerializationContext):
    """A codec that depends on its context, as a per-workflow key scheme would: it records each one."""

    def __init__(self, seen: list[SerializationContext | None], context: SerializationContext | None = None) -> None:
        self.seen, self.context = seen, context

    def with_context(self, context: SerializationContext) -> ContextRecordingCodec:
        return ContextRecordingCodec(self.seen, context)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        self.seen.append(self.context)
        return list(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)


def with_converter(client: Client, converter: DataConverter) -> Client:
    return Client(**{**client.config(), "data_converter": converter})


async def run_echo(client: Client, text: str) -> str:
    queue = f"sandbox-{uuid.uuid4().hex}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[OneActivityWorkflow],
        activities=[echo],
        workflow_runner=workflow_runner(client.data_converter),
    ):
        return await client.execute_workflow(OneActivityWorkflow.run, text, id=queue, task_queue=queue)


def counting_sandbox_context_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []
    original = _Instance.get_serialization_context

    def counted(self: _Instance, command_info: Any) -> Any:
        calls.append(command_info)
        return original(self, command_info)

    monkeypatch.setattr(_Instance, "get_serialization_context", counted)
    return calls


def test_our_converter_is_the_same_under_every_context(settings: Settings) -> None:
    assert ignores_serialization_context(data_converter(settings))
    aware = dataclasses.replace(data_converter(settings), payload_codec=ContextRecordingCodec([]))
    assert not ignores_serialization_context(aware)


async def test_glue_is_compiled_once_and_contexts_are_not_asked_for(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox_asked = counting_sandbox_context_calls(monkeypatch)
    assert await run_echo(client, "first") == "first"
    before = compiled.cache_info()
    assert await run_echo(client, "second") == "second"
    after = compiled.cache_info()
    assert after.hits > before.hits  # the second run's activations reused the first run's code objects
    assert after.misses == before.misses
    assert sandbox_asked == []  # our converter ignores contexts: the sandbox is not entered to ask


async def test_a_workflow_module_is_read_and_compiled_once(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []
    read = importlib.machinery.SourceFileLoader.get_code

    def counted(self: importlib.machinery.SourceFileLoader, fullname: str) -> Any:
        reads.append(fullname)
        return read(self, fullname)

    monkeypatch.setattr(importlib.machinery.SourceFileLoader, "get_code", counted)
    assert await run_echo(client, "first") == "first"  # the worker's check and the run: two sandbox imports
    assert await run_echo(client, "second") == "second"
    assert reads.count(OneActivityWorkflow.__module__) <= 1  # at most the first, unless an earlier test kept it


async def test_a_converter_that_uses_contexts_still_gets_them(
    client: Client, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox_asked = counting_sandbox_context_calls(monkeypatch)
    seen: list[SerializationContext | None] = []
    aware = dataclasses.replace(data_converter(settings), payload_codec=ContextRecordingCodec(seen))
    assert await run_echo(with_converter(client, aware), "hello") == "hello"
    assert sandbox_asked  # the SDK's own path, unchanged
    activity_contexts = [context for context in seen if isinstance(context, ActivitySerializationContext)]
    assert any(context.activity_type == "echo" for context in activity_contexts)
