"""Alipay+ → MPP NFC token notifications: tokenActivationNotification (seed 002)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy

from activities.token_activations import record_token_activation
from alipayplus import Result, ResultCode
from alipayplus.nfc import TokenActivationNotificationRequest, TokenActivationNotificationResponse
from workflows import search_attributes
from workflows.token import TokenActivated, TokenStart, TokenWorkflow

from ..inbound import inbound
from ..services import Services

router = APIRouter(tags=["Alipay+ inbound"])
PRODUCT = "NFC_TOKEN"


@inbound(router, TokenActivationNotificationRequest.PATH, TokenActivationNotificationRequest)
async def token_activation_notification(
    request: TokenActivationNotificationRequest, services: Services
) -> TokenActivationNotificationResponse:
    """tokenActivationNotification: record the activation once, then tell the token's workflow.

    A repeat is answered S again and signals again (the workflow ignores repeats), so a U
    after the record (Temporal unreachable) is safely retried by Alipay+."""
    code, message = await asyncio.to_thread(record_token_activation, services.records, request)
    if code is ResultCode.SUCCESS:
        await _tell_token_workflow(request, services)
    return TokenActivationNotificationResponse(result=Result.of(code, message))


def token_start(services: Services, token_reference_id: str, customer_id: str | None = None) -> TokenStart:
    """How a token's workflow starts, whoever starts it: with the configured replenishment."""
    settings = services.settings
    return TokenStart(
        token_reference_id=token_reference_id,
        customer_id=customer_id,
        replenish_below=settings.nfc_replenish_below,
        replenish_count=settings.nfc_replenish_count,
    )


async def _tell_token_workflow(request: TokenActivationNotificationRequest, services: Services) -> None:
    attributes = [SearchAttributePair(search_attributes.PRODUCT, PRODUCT)]
    if request.customer_id:
        attributes.append(SearchAttributePair(search_attributes.CUSTOMER_ID, request.customer_id))
    await services.temporal.start_workflow(
        TokenWorkflow.run,
        token_start(services, request.token_reference_id),
        id=f"token/{request.token_reference_id}",
        task_queue=services.settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        start_signal="activation_notified",
        start_signal_args=[
            TokenActivated(
                customer_id=request.customer_id,
                wallet_id=request.wallet_id,
                token_requestor_id=request.token_requestor_id,
                account_source=request.account_source,
                service_request_time=request.service_request_time,
                token_activated_time=request.token_activated_time,
            )
        ],
        search_attributes=TypedSearchAttributes(attributes),
    )
