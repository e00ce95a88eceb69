"""Issue 17: the workflows' business counters, through Temporal's replay-safe meter.

A time-skipping server and worker of this module alone, on a runtime whose metrics go to a
``MetricBuffer`` read by ``wallet.telemetry.temporal_metrics.TemporalMetrics`` (what each process
exports on ``/metrics``). An NFC tap paid (and its taps counted by the activities, in this process's
registry), its notifyPayment delivered, refunded, then cancelled; activations by outcome; and
recorded histories replayed without counting anything. Series also carry the SDK's own labels
(namespace, task queue, workflow type), so a count sums every series with the labels asked for.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import WithStartWorkflowOperation, WorkflowFailureError, WorkflowHistory
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.runtime import MetricBuffer, MetricBufferDurationFormat, Runtime, TelemetryConfig
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from activities.nfc_tokens import NfcTokenActivities
from alipayplus import ResultCode, ResultStatus
from sandbox.alipayplus.peer import SandboxAlipayPlus
from tests.conftest import HISTORIES, new_user, real_activities
from wallet import search_attributes, workflow_ids
from wallet.ledger import Ledger
from wallet.nfc_tokens import NfcTokens
from wallet.orders import PaymentState, RefundOrder
from wallet.settings import Settings
from wallet.telemetry.metrics import DELIVERIES_FINISHED, MONEY_PROCESSES_FINISHED, NFC_ACTIVATIONS, PAYMENTS_FINISHED
from wallet.telemetry.temporal_metrics import TemporalMetrics
from wallet.temporal import data_converter, temporal_test_server
from wallet.users import UserStore
from workers.worker import WORKFLOWS, build_worker, workflow_runner
from workflows.nfc_activation import NfcActivationWorkflow, Phase
from workflows.refund import RefundWorkflow

from .test_nfc_activation import Phone, ScriptedNetwork, Texts
from .test_nfc_activation import start as start_activation
from .test_nfc_payment import pay, tap
from .test_refunds import cancel, finished, refund_of

pytestmark = pytest.mark.timeout(120)


class Stack:
    def __init__(self, env: WorkflowEnvironment, settings: Settings, metrics: TemporalMetrics) -> None:
        self.env, self.settings, self.metrics = env, settings, metrics

    def counted(self, name: str, **labels: str) -> float:
        """The counter ``name`` summed over every series carrying ``labels`` (whatever else it carries)."""
        total = 0.0
        for metric in self.metrics.collect():
            for sample in metric.samples:
                if sample.name == f"{name}_total" and labels.items() <= sample.labels.items():
                    total += sample.value
        return total


def taps_counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("mpp_nfc_taps_total", {"outcome": outcome}) or 0.0


@pytest.fixture(scope="module")
async def stack(settings: Settings, database: Ledger, alipayplus: SandboxAlipayPlus) -> AsyncIterator[Stack]:
    buffer = MetricBuffer(10_000, MetricBufferDurationFormat.SECONDS)
    runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer))
    env = await WorkflowEnvironment.start_time_skipping(
        runtime=runtime,
        data_converter=data_converter(settings),
        test_server_existing_path=str(temporal_test_server()),
    )
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for key in search_attributes.ALL},
        )
    )
    own = settings.model_copy(update={"temporal_task_queue": f"metrics-{uuid.uuid4().hex[:8]}"})
    try:
        async with real_activities(env.client, own, alipayplus) as activities:
            worker: Any = build_worker(env.client, own, activities)
            async with worker:
                yield Stack(env, own, TemporalMetrics(buffer))
    finally:
        await env.shutdown()


async def test_a_paid_tap_its_notice_refund_and_cancel_are_each_counted_once(
    stack: Stack, database: Ledger, engine: Engine
) -> None:
    client, settings = stack.env.client, stack.settings
    payer = new_user(engine, database, balance=50_000)
    request = tap(payer)
    taps = {outcome: taps_counted(outcome) for outcome in ("accepted", "replayed_atc")}

    answer = await pay(client, settings, request)
    state = await finished(client, workflow_ids.payment(request.payment_request_id), PaymentState)
    await finished(client, workflow_ids.payment_notification(request.payment_request_id))

    assert (answer.result.result_status, answer.result.result_code) == (ResultStatus.SUCCESS, ResultCode.SUCCESS)
    assert stack.counted(PAYMENTS_FINISHED, product="NFC", status="SUCCESS") == 1
    assert stack.counted(PAYMENTS_FINISHED) == 1  # no other status, no other product so far
    assert stack.counted(DELIVERIES_FINISHED, kind="notifyPayment", outcome="ACKNOWLEDGED") == 1
    assert taps_counted("accepted") == taps["accepted"] + 1  # the activities run in this process

    replayed = request.model_copy(update={"payment_request_id": f"nfc-{uuid.uuid4().hex}"})  # the same ATC
    refused = await pay(client, settings, replayed)
    assert refused.result.result_code == ResultCode.RISK_REJECT
    assert taps_counted("replayed_atc") == taps["replayed_atc"] + 1
    assert stack.counted(PAYMENTS_FINISHED, product="NFC", status="FAIL") == 1

    # as the API sends it: update-with-start (an update arriving after the start, while the refund's
    # one workflow task completes it, fails that task and runs it again: counted twice, at least once)
    refund_request = refund_of(request, state, 1_000)
    refunded = await client.execute_update_with_start_workflow(
        RefundWorkflow.request_refund,
        refund_request,
        start_workflow_operation=WithStartWorkflowOperation(
            RefundWorkflow.run,
            RefundOrder(request=refund_request),
            id=workflow_ids.refund(refund_request.refund_request_id),
            task_queue=settings.temporal_task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        ),
    )
    await finished(client, workflow_ids.refund(refund_request.refund_request_id))
    assert refunded.result.result_code == ResultCode.SUCCESS
    assert stack.counted(MONEY_PROCESSES_FINISHED, process="refund", status="SUCCESS") == 1

    assert await cancel(client, settings, request.payment_request_id) == ResultCode.SUCCESS
    assert stack.counted(MONEY_PROCESSES_FINISHED, process="cancel") == 1
    assert stack.counted(MONEY_PROCESSES_FINISHED) == 2
    assert stack.counted(PAYMENTS_FINISHED) == 2  # the payment already finished: the cancel adds no payment


async def test_replaying_recorded_histories_counts_nothing(settings: Settings) -> None:
    """A worker replays a history after a restart or a cache eviction: what it counted the first time
    is not counted again (``workflow.metric_meter()`` is replay-safe)."""
    buffer = MetricBuffer(10_000, MetricBufferDurationFormat.SECONDS)
    metrics = TemporalMetrics(buffer)
    replayer = Replayer(
        workflows=list(WORKFLOWS),
        data_converter=data_converter(settings),
        workflow_runner=workflow_runner(data_converter(settings)),
        runtime=Runtime(telemetry=TelemetryConfig(metrics=buffer)),
    )
    names = ("nfc_payment_success", "notify_payment", "refund_full", "cancel_paid", "nfc_activation_manual")
    for name in names:
        path = HISTORIES / f"{name}.json"
        await replayer.replay_workflow(WorkflowHistory.from_json(name, path.read_text()))

    counted = [sample for metric in metrics.collect() for sample in metric.samples if sample.name.startswith("mpp_")]
    assert counted == []


async def test_activations_are_counted_by_outcome(stack: Stack, engine: Engine) -> None:
    env, client = stack.env, stack.env.client
    scripted, rejecting = ScriptedNetwork(), ScriptedNetwork(reject=True)
    devices = NfcTokenActivities(NfcTokens(engine), UserStore(engine), Texts())
    outcomes = []
    for network, phone in ((scripted, Phone()), (rejecting, Phone()), (ScriptedNetwork(), Phone(offline=True))):
        task_queue = f"nfc-{uuid.uuid4().hex[:8]}"
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=[NfcActivationWorkflow],
            activities=[
                network.sdk_request,
                devices.record_token_owner,
                devices.notify_new_device,
                devices.release_device,
            ],
            activity_executor=concurrent.futures.ThreadPoolExecutor(max_workers=4),
        ):
            handle = await start_activation(client, task_queue, device_timeout=timedelta(seconds=30))
            outcomes.append((await phone.run(env, handle)).phase)
            with contextlib.suppress(WorkflowFailureError):
                await handle.result()

    assert outcomes == [Phase.DONE, Phase.FAILED, Phase.FAILED]
    assert {
        outcome: stack.counted(NFC_ACTIVATIONS, outcome=outcome) for outcome in ("activated", "rejected", "phone")
    } == {"activated": 1, "rejected": 1, "phone": 1}
    assert stack.counted(NFC_ACTIVATIONS) == 3
