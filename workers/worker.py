"""The payments worker: which workflows and activities run on the task queue."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import httpx
from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxRestrictions

from activities.adjust_refunds import AdjustRefundActivities
from activities.agreements import AgreementActivities
from activities.cancellation import CancelActivities
from activities.deliveries import DeliveryActivities
from activities.nfc_proxy import NfcActivities
from activities.nfc_tokens import NfcTokenActivities
from activities.notifications import NotificationActivities
from activities.payments import PaymentActivities
from activities.refunds import RefundActivities
from alipayplus import SignedClient
from api.monitoring import Check
from wallet.agreements import Agreements
from wallet.clients import alipayplus_client, mastercard_client
from wallet.db import create_engine_for, database_answers
from wallet.ledger import Ledger
from wallet.nfc_proxy import NfcProxy
from wallet.nfc_tokens import NfcTokens
from wallet.settings import Settings
from wallet.sms import HttpSmsGateway, SmsGateway
from wallet.users import UserStore
from workflows.account_evaluation import AccountEvaluationWorkflow
from workflows.adjust_refund import AdjustRefundWorkflow
from workflows.auth_notify import AuthNotifyWorkflow
from workflows.auto_debit import AutoDebitWorkflow
from workflows.cancel_payment import CancelPaymentWorkflow
from workflows.easy_pay import EasyPayWorkflow
from workflows.mpm_payment import MpmPaymentWorkflow
from workflows.nfc_activation import NfcActivationWorkflow
from workflows.nfc_payment import NfcPaymentWorkflow
from workflows.notify_payment import NotifyPaymentWorkflow
from workflows.refund import RefundWorkflow
from workflows.token import TokenWorkflow
from workflows.unbind_agreement import UnbindAgreementWorkflow

from .interceptors import PermanentFailures
from .sandbox import LeanSandboxedWorkflowRunner, ignores_serialization_context

WORKFLOWS: Sequence[type] = (
    AccountEvaluationWorkflow,
    EasyPayWorkflow,
    MpmPaymentWorkflow,
    NfcPaymentWorkflow,
    AutoDebitWorkflow,
    NotifyPaymentWorkflow,
    AuthNotifyWorkflow,
    RefundWorkflow,
    CancelPaymentWorkflow,
    AdjustRefundWorkflow,
    NfcActivationWorkflow,
    TokenWorkflow,
    UnbindAgreementWorkflow,
)


# The project's pure modules (messages, orders, states, the core services the workflows name) pass
# through the sandbox: imported once per process, not again for every new workflow. The workflow
# modules themselves stay sandboxed, so the determinism checks still apply to workflow code.
PASSED_THROUGH = ("alipayplus", "wallet", "activities")
RESTRICTIONS = SandboxRestrictions.default.with_passthrough_modules(*PASSED_THROUGH)


def workflow_runner(converter: DataConverter) -> LeanSandboxedWorkflowRunner:
    """The sandbox every workflow runs in, for a client or replayer with ``converter``."""
    return LeanSandboxedWorkflowRunner(restrictions=RESTRICTIONS, context_free=ignores_serialization_context(converter))


def activities_for(
    client: Client,
    settings: Settings,
    *,
    alipayplus: SignedClient | None = None,
    sms: SmsGateway | None = None,
    mastercard: httpx.AsyncClient | None = None,
) -> list[Any]:
    engine = create_engine_for(settings.database_url)
    ledger = Ledger(engine)
    nfc_tokens = NfcTokens(engine, settings.nfc_max_devices)
    users = UserStore(engine)
    sms = sms or HttpSmsGateway(settings.sms_gateway_url, httpx.Client(timeout=5.0))
    payments = PaymentActivities(
        engine=engine,
        ledger=ledger,
        users=users,
        secret_key=settings.secret_key,
        sms=sms,
        otp_ttl=settings.otp_ttl,
        credentials=settings.credentials(engine),
        nfc_tokens=nfc_tokens,
    )
    to_alipayplus = alipayplus or alipayplus_client(settings)
    nfc = NfcActivities(NfcProxy(to_alipayplus, mastercard or mastercard_client(settings)))
    notifications = NotificationActivities(
        alipayplus=to_alipayplus,
        engine=engine,
        secret_key=settings.secret_key,
        access_token_ttl=settings.access_token_ttl,
        refresh_token_ttl=settings.refresh_token_ttl,
    )
    deliveries = DeliveryActivities(
        temporal=client, task_queue=settings.temporal_task_queue, schedule=settings.delivery_schedule()
    )
    device_notices = NfcTokenActivities(nfc_tokens, users, sms)
    agreements = AgreementActivities(Agreements(engine, settings.secret_key), to_alipayplus)
    refunds = RefundActivities(engine=engine, ledger=ledger)
    cancellations = CancelActivities(engine=engine, ledger=ledger)
    adjustments = AdjustRefundActivities(engine=engine, ledger=ledger)
    return [
        refunds.apply_refund,
        adjustments.apply_adjust_refund,
        cancellations.cancel_payment,
        deliveries.start_payment_notification,
        deliveries.start_auth_notification,
        payments.check_account,
        payments.check_token_account,
        payments.check_customer_account,
        payments.open_order,
        payments.record_payment,
        payments.send_otp,
        payments.check_code,
        payments.verify_code,
        payments.debit,
        notifications.notify_payment,
        notifications.auth_notify,
        nfc.sdk_request,
        device_notices.record_token_owner,
        device_notices.notify_new_device,
        device_notices.release_device,
        agreements.unbinding_subject,
        agreements.consult_unbinding,
        agreements.revoke_for_user,
    ]


def build_worker(client: Client, settings: Settings, activities: list[Any] | None = None, **options: Any) -> Worker:
    options.setdefault("graceful_shutdown_timeout", timedelta(seconds=10))
    options.setdefault("max_cached_workflows", settings.worker_cached_workflows)
    return Worker(
        client,
        task_queue=settings.temporal_task_queue,
        workflows=list(WORKFLOWS),
        activities=activities if activities is not None else activities_for(client, settings),
        activity_executor=concurrent.futures.ThreadPoolExecutor(
            max_workers=settings.worker_max_activities + settings.worker_max_local_activities
        ),
        max_concurrent_activities=settings.worker_max_activities,
        max_concurrent_local_activities=settings.worker_max_local_activities,
        max_concurrent_workflow_tasks=settings.worker_max_workflow_tasks,
        max_concurrent_workflow_task_polls=settings.worker_workflow_pollers,
        max_concurrent_activity_task_polls=settings.worker_activity_pollers,
        workflow_runner=workflow_runner(client.data_converter),
        interceptors=[PermanentFailures()],
        **options,
    )


def worker_readiness_checks(client: Client, settings: Settings, running: asyncio.Task[None]) -> dict[str, Check]:
    """What ``/readyz`` asks of a worker process: it still runs, Temporal answers, the database
    answers, and its keys are readable."""
    engine = create_engine_for(settings.database_url)

    async def worker() -> bool:
        return not running.done()

    async def temporal() -> bool:
        return await client.service_client.check_health()

    async def database() -> bool:
        return await asyncio.to_thread(database_answers, engine)

    async def keys() -> bool:
        settings.load_keys()  # read once and kept: raises if a key file was unreadable at start
        return True

    return {"worker": worker, "temporal": temporal, "database": database, "keys": keys}


__all__ = [
    "WORKFLOWS",
    "activities_for",
    "alipayplus_client",
    "build_worker",
    "mastercard_client",
    "worker_readiness_checks",
]
