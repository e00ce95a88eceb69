"""Starting an NFC token's workflow (``token/{tokenReferenceId}``), for Alipay+'s activation notice
and for the phone, whichever comes first."""

from __future__ import annotations

from typing import Any

from temporalio.client import WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy

from wallet import search_attributes, workflow_ids
from workflows.token import TokenActivated, TokenStart, TokenWorkflow

from .services import Services

PRODUCT = "NFC_TOKEN"  # the Web UI's Product for token workflows

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
