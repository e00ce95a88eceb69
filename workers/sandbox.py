"""The workflow sandbox: the SDK's, without two costs our data converter does not need.

For every activation, and for every payload sequence in it, the SDK's sandboxed instance runs a few
fixed lines inside the sandbox by passing their text to ``exec``:

* it compiles that text again each time: here each distinct text is compiled once per process;
* per payload sequence it enters the sandbox only to ask which serialization context and which
  external-storage context the payload belongs to. When the data converter is the same under every
  context and stores nothing externally (ours: ``ignores_serialization_context``), the answer cannot
  change what is encoded, so the runner answers "none" without entering the sandbox.

Both together were about a tenth of a busy worker's CPU (py-spy over ``make bench``). What runs inside
the sandbox, its restrictions and its determinism checks are unchanged. It leans on temporalio's
private ``_Instance`` (temporalio 1.35); ``tests/workers/test_sandbox.py`` fails if an upgrade stops it
from being used.
"""

from __future__ import annotations

import dataclasses
import functools
from types import CodeType
from typing import Any

from temporalio.converter import ActivitySerializationContext, DataConverter, WorkflowSerializationContext
from temporalio.converter._extstore import StorageDriverStoreContext
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails, WorkflowRunner
from temporalio.worker._command_aware_visitor import CommandInfo
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions
from temporalio.worker.workflow_sandbox._runner import _Instance

_SAMPLE_CONTEXTS = (
    WorkflowSerializationContext(namespace="sample", workflow_id="sample"),
    ActivitySerializationContext(
        namespace="sample",
        workflow_id="sample",
        workflow_type="sample",
        activity_type="sample",
        activity_task_queue="sample",
        is_local=False,
        activity_id="1",
    ),
)


def ignores_serialization_context(converter: DataConverter) -> bool:
    """True when ``converter`` encodes the same under every context and stores nothing elsewhere."""
    return converter.external_storage is None and all(
        converter.with_context(context) is converter for context in _SAMPLE_CONTEXTS
    )


@functools.lru_cache(maxsize=512)  # a few snippets per workflow type
def compiled(code: str) -> CodeType:
    return compile(code, "<string>", "exec")


class _LeanInstance(_Instance):
    def __init__(
        self,
        details: WorkflowInstanceDetails,
        runner_class: type[WorkflowRunner],
        restrictions: SandboxRestrictions,
        context_free: bool,
    ) -> None:
        self._context_free = context_free
        super().__init__(details, runner_class, restrictions)

    def _run_code(self, code: str, **extra_globals: Any) -> None:
        super()._run_code(compiled(code), **extra_globals)  # type: ignore[arg-type]  # exec takes either

    def get_serialization_context(self, command_info: CommandInfo | None) -> Any:
        return None if self._context_free else super().get_serialization_context(command_info)

    def get_external_store_context(self, command_info: CommandInfo | None) -> StorageDriverStoreContext:
        if self._context_free:
            return StorageDriverStoreContext(target=None)
        return super().get_external_store_context(command_info)


@dataclasses.dataclass(frozen=True)
class LeanSandboxedWorkflowRunner(SandboxedWorkflowRunner):
    """``SandboxedWorkflowRunner`` that compiles its glue code once and, when ``context_free``, does
    not ask the sandbox for payload contexts (only for a data converter that ignores them)."""

    context_free: bool = False

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return _LeanInstance(det, self.runner_class, self.restrictions, self.context_free)
