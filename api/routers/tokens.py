"""Alipay+ → MPP NFC token notifications: tokenActivationNotification (seed 002)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from temporalio.client import WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy

from alipayplus import Result, ResultCode
from alipayplus.nfc import TokenActivationNotificationRequest, TokenActivationNotificationResponse
from wallet import search_attributes, workflow_ids
from wallet.token_activations import record_token_activation
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
    recorded = await asyncio.to_thread(record_token_activation, services.records, request)
    if recorded.result_code is ResultCode.SUCCESS:
        await _tell_token_workflow(request, recorded.customer_id, services)
    return TokenActivationNotificationResponse(result=Result.of(recorded.result_code, recorded.message))


TokenHandle = WorkflowHandle[TokenWorkflow, None]


async def start_token(
    services: Services, token_reference_id: str, customer_id: str | None = None, notice: TokenActivated | None = None
) -> TokenHandle:
    """The token's workflow ``token/{tokenReferenceId}``, started unless it runs, whoever comes first
    (Alipay+'s notice, signalled with the start, or the phone): the configured replenishment, and
    the search attributes the Web UI filters by. Callers start it only for a token recorded as its
    owner's (``activities.nfc_tokens``)."""
    settings = services.settings
    attributes = [SearchAttributePair(search_attributes.PRODUCT, PRODUCT)]
    owner = (notice.customer_id if notice else None) or customer_id
    if owner:
        attributes.append(SearchAttributePair(search_attributes.CUSTOMER_ID, owner))
    signal: dict[str, Any] = {"start_signal": "activation_notified", "start_signal_args": [notice]} if notice else {}
    return await services.temporal.start_workflow(
        TokenWorkflow.run,
        TokenStart(
            token_reference_id=token_reference_id,
            customer_id=customer_id,
            replenish_below=settings.nfc_replenish_below,
            replenish_count=settings.nfc_replenish_count,
        ),
        id=workflow_ids.token(token_reference_id),
        task_queue=settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=TypedSearchAttributes(attributes),
        **signal,
    )


async def _tell_token_workflow(
    request: TokenActivationNotificationRequest, owner: str | None, services: Services
) -> None:
    notice = TokenActivated.model_validate(request, from_attributes=True)  # the fields the workflow keeps
    notice.customer_id = owner  # as our activation recorded it when the notice names nobody
    await start_token(services, request.token_reference_id, notice=notice)
