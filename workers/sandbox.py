"""The workflow sandbox: the SDK's, without three costs that buy nothing here.

The sandbox imports a workflow's module afresh for every new workflow, and for every activation, and
every payload sequence in it, runs a few fixed lines inside the sandbox by passing their text to
``exec``. So:

* the workflow modules are read and compiled once per process (``keep_workflow_code``, which the
  runner applies to each workflow it prepares at the worker's start); each new
  sandbox executes that same code object into its own fresh module, as before (and every workflow
  runs the code the worker started with, even if the files change under it);
* the glue text is compiled once per process, not on every call;
* per payload sequence the sandbox is entered only to ask which serialization and external-storage
  context the payload belongs to. When the data converter is the same under every context and stores
  nothing externally (ours: ``ignores_serialization_context``) the answer cannot change what is
  encoded, so the runner answers "none" without entering the sandbox.

py-spy put the three at about 15% of the worker process's GIL time under ``make bench``; run back
to back against the SDK's own runner, an Easy Pay flow costs about 9% less CPU. What runs inside the
sandbox, its restrictions and its determinism checks are unchanged. It leans on temporalio's private
``_Instance`` (temporalio 1.35); ``tests/workers/test_sandbox.py`` fails if an upgrade stops it from
being used.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Iterable, Sequence
from types import CodeType, ModuleType
from typing import Any

import temporalio.workflow
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


class _KeptCodeLoader(importlib.machinery.SourceFileLoader):
    _codes: dict[str, CodeType] = {}  # by file path, for the life of the process

    def get_code(self, fullname: str) -> CodeType:
        code = self._codes.get(self.path)
        if code is None:
            code = super().get_code(fullname)
            assert code is not None  # a source file always has code
            self._codes[self.path] = code
        return code


class _KeptCodeFinder(importlib.abc.MetaPathFinder):
    """Finds the named packages' modules as the path finder does, with a loader that keeps their code."""

    def __init__(self) -> None:
        self.packages: set[str] = set()
        self._found: dict[str, tuple[str, list[str] | None]] = {}  # module -> (file, package path)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] not in self.packages:
            return None
        found = self._found.get(fullname)
        if found is None:
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
            if spec is None or spec.origin is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
                return spec
            found = self._found[fullname] = (spec.origin, spec.submodule_search_locations)
        origin, package_path = found
        return importlib.util.spec_from_file_location(  # a spec of its own per import: the import marks it
            fullname, origin, loader=_KeptCodeLoader(fullname, origin), submodule_search_locations=package_path
        )


_finder = _KeptCodeFinder()


def keep_workflow_code(workflows: Iterable[type]) -> None:
    """Have the packages of ``workflows`` compiled once per process, not on each sandbox's import."""
    _finder.packages.update(workflow.__module__.partition(".")[0] for workflow in workflows)
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)


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
    """``SandboxedWorkflowRunner`` that compiles the workflow modules and its glue code once and, when
    ``context_free``, does not ask the sandbox for payload contexts (only for a data converter that
    ignores them)."""

    context_free: bool = False

    def prepare_workflow(self, defn: temporalio.workflow._Definition) -> None:
        keep_workflow_code([defn.cls])
        super().prepare_workflow(defn)

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return _LeanInstance(det, self.runner_class, self.restrictions, self.context_free)
