"""Alipay+ → MPP: refund and cancelPayment, for every product; adjustRefund, for NFC."""

from __future__ import annotations

import asyncio
from typing import TypeVar

from fastapi import APIRouter
from sqlmodel import Session
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from alipayplus import (
    CancelPaymentRequest,
    CancelPaymentResponse,
    RefundRequest,
    RefundResponse,
    Result,
    ResultCode,
)
from alipayplus.nfc import AdjustRefundRequest, AdjustRefundResponse
from wallet import search_attributes, workflow_ids
from wallet.adjust_refunds import AdjustRefundOutcome, IllegalAdjustRefund, adjustment_credit
from wallet.orders import AdjustRefundOrder, CancelOrder, RefundOrder
from wallet.records import AdjustRefundRecord, RefundRecord
from wallet.refunds import RefundOutcome
from workflows.adjust_refund import PRODUCT as ADJUST_REFUND
from workflows.adjust_refund import AdjustRefundWorkflow
from workflows.cancel_payment import PRODUCT as CANCEL
from workflows.cancel_payment import CancelPaymentWorkflow
from workflows.refund import PRODUCT as REFUND
from workflows.refund import RefundWorkflow

from ..inbound import Rejection, inbound
from ..request_clock import seconds_left
from ..services import Services
from ..workflow_calls import answer_once, start_once

router = APIRouter(tags=["Alipay+ inbound"])


@inbound(router, RefundRequest.PATH, RefundRequest)
async def refund(request: RefundRequest, services: Services) -> RefundResponse:
    """refund: full, partial or one of several partial refunds of a successful payment."""
    if request.refund_amount.value <= 0:
        raise Rejection(ResultCode.PARAM_ILLEGAL, "refundAmount.value: must be greater than zero")
    if request.refund_from_amount is not None and request.refund_from_amount.value <= 0:
        raise Rejection(ResultCode.PARAM_ILLEGAL, "refundFromAmount.value: must be greater than zero")
    settings = services.settings
    start = start_once(
        RefundWorkflow.run,
        RefundOrder(request=request, window=settings.refund_window),
        workflow_id=workflow_ids.refund(request.refund_request_id),
        task_queue=settings.temporal_task_queue,
        search_attributes=search_attributes.at_start(REFUND, request.payment_request_id, "PROCESSING"),
    )
    return await answer_once(
        services.temporal,
        RefundWorkflow.request_refund,
        request,
        start,
        settings.pay_answer_deadline,
        # past the deadline Alipay+ retries with the same refundRequestId and then gets the final answer
        late=lambda: RefundResponse(result=Result.of(ResultCode.UNKNOWN_EXCEPTION, "Refund in process; retry")),
        closed=lambda: _refund_from_record(request, services),
    )


def _refund_from_record(request: RefundRequest, services: Services) -> RefundResponse:
    kept = _kept_answer(services, RefundRecord, request)
    if isinstance(kept, RefundRecord):
        return RefundOutcome.of_record(kept).to_response()
    return RefundResponse(result=kept)


@inbound(router, CancelPaymentRequest.PATH, CancelPaymentRequest)
async def cancel_payment(request: CancelPaymentRequest, services: Services) -> CancelPaymentResponse:
    """cancelPayment: close or reverse the payment, whatever its state, until 00:30 UTC+8 on T+1."""
    settings = services.settings
    try:
        return await asyncio.wait_for(
            services.temporal.execute_workflow(
                CancelPaymentWorkflow.run,
                CancelOrder(request=request, cutoff=settings.cancel_cutoff),
                id=workflow_ids.cancellation(request.payment_request_id),
                task_queue=settings.temporal_task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,  # a concurrent repeat joins it
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,  # a cancel is idempotent: rerun it
                search_attributes=search_attributes.at_start(CANCEL, request.payment_request_id, "PROCESSING"),
            ),
            seconds_left(settings.pay_answer_deadline),
        )
    except TimeoutError:
        return CancelPaymentResponse(result=Result.of(ResultCode.UNKNOWN_EXCEPTION, "Cancel in process; retry"))


@inbound(router, AdjustRefundRequest.PATH, AdjustRefundRequest)
async def adjust_refund(request: AdjustRefundRequest, services: Services) -> AdjustRefundResponse:
    """adjustRefund (NFC): credit an excess or unlinked refund; only technical failures answer F."""
    try:  # checked here too, so that a bad request starts nothing and the same id can be sent again
        adjustment_credit(services.records, request)
    except IllegalAdjustRefund as problem:
        raise Rejection(ResultCode.PARAM_ILLEGAL, str(problem)) from None
    settings = services.settings
    start = start_once(
        AdjustRefundWorkflow.run,
        AdjustRefundOrder(request=request),
        workflow_id=workflow_ids.adjust_refund(request.refund_request_id),
        task_queue=settings.temporal_task_queue,
        search_attributes=search_attributes.at_start(ADJUST_REFUND, request.payment_request_id, "PROCESSING"),
    )
    return await answer_once(
        services.temporal,
        AdjustRefundWorkflow.request_adjust_refund,
        request,
        start,
        settings.pay_answer_deadline,
        late=lambda: AdjustRefundResponse(
            result=Result.of(ResultCode.UNKNOWN_EXCEPTION, "Adjust refund in process; retry")
        ),
        closed=lambda: _adjust_refund_from_record(request, services),
    )


def _adjust_refund_from_record(request: AdjustRefundRequest, services: Services) -> AdjustRefundResponse:
    kept = _kept_answer(services, AdjustRefundRecord, request)
    if isinstance(kept, AdjustRefundRecord):
        return AdjustRefundOutcome.of_record(kept).to_response()
    return AdjustRefundResponse(result=kept)


KeptRecord = TypeVar("KeptRecord", RefundRecord, AdjustRefundRecord)


def _kept_answer(
    services: Services, record_type: type[KeptRecord], request: RefundRequest | AdjustRefundRequest
) -> KeptRecord | Result:
    """A repeat after the workflow finished: the answer kept for its refundRequestId, unless the
    key fields changed (REPEAT_REQ_INCONSISTENT) or none was kept (U: ask again)."""
    with Session(services.records) as session:
        record = session.get(record_type, request.refund_request_id)
    if record is None:
        return Result.of(ResultCode.UNKNOWN_EXCEPTION)
    if record.key_fields_digest != request.key_fields_digest():
        return Result.of(ResultCode.REPEAT_REQ_INCONSISTENT)
    return record
