"""Alipay+ → MPP payment APIs: pay (Easy Pay's two calls, MPM's one, NFC's one) and inquiryPayment."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from sqlmodel import Session
from temporalio.client import (
    WorkflowQueryFailedError,
)
from temporalio.service import RPCError, RPCStatusCode

from alipayplus import (
    InquiryPaymentRequest,
    InquiryPaymentResponse,
    PayRequest,
    PayResponse,
    Result,
    ResultCode,
)
from alipayplus.nfc import NFC_PAYMENT_METHOD_TYPE
from wallet import search_attributes, workflow_ids
from wallet.failures import cannot_succeed
from wallet.orders import AutoDebitOrder, EasyPayOrder, MpmOrder, NfcOrder, PaymentState
from wallet.payments import AccountCheck, evaluation_answer
from wallet.records import PaymentRecord, stored_amount
from wallet.states import PaymentStatus
from workflows import auto_debit, easy_pay, mpm_payment, nfc_payment
from workflows.auto_debit import AutoDebitWorkflow
from workflows.easy_pay import EasyPayWorkflow
from workflows.mpm_payment import MpmPaymentWorkflow
from workflows.nfc_payment import NfcPaymentWorkflow
from workflows.payment_order import PaymentOrderWorkflow

from ..inbound import Rejection, inbound
from ..request_clock import seconds_left
from ..services import Services
from ..workflow_calls import answer_once, start_once

log = logging.getLogger(__name__)
router = APIRouter(tags=["Alipay+ inbound"])


def _check_amounts(request: PayRequest) -> None:
    for name, amount in (("paymentAmount", request.payment_amount), ("payToAmount", request.pay_to_amount)):
        if amount.value <= 0:
            raise Rejection(ResultCode.PARAM_ILLEGAL, f"{name}.value: must be greater than zero")


def _check_nfc(request: PayRequest) -> None:
    """An NFC pay names our user and is an in-store payment (spec §10.4)."""
    factor, method = request.payment_factor, request.payment_method
    if not factor.is_in_store_payment:
        raise Rejection(ResultCode.PARAM_ILLEGAL, 'paymentFactor.isInStorePayment: must be "true" for NFC')
    if factor.is_payment_evaluation:
        raise Rejection(ResultCode.PARAM_ILLEGAL, 'paymentFactor.isPaymentEvaluation: must not be "true" for NFC')
    if method.payment_method_type != NFC_PAYMENT_METHOD_TYPE:
        raise Rejection(
            ResultCode.PARAM_ILLEGAL, f'paymentMethod.paymentMethodType: must be "{NFC_PAYMENT_METHOD_TYPE}"'
        )
    if not method.customer_id:
        raise Rejection(ResultCode.PARAM_ILLEGAL, "paymentMethod.customerId: is required for NFC")


@inbound(router, PayRequest.PATH, PayRequest)
async def pay(request: PayRequest, services: Services) -> PayResponse:
    """pay: Easy Pay's account check (isPaymentEvaluation) and order, an MPM order, or an NFC tap."""
    factor = request.payment_factor
    _check_amounts(request)
    if request.nfc_payment_info is not None:
        _check_nfc(request)
        return await _create_order(
            request, services, nfc_payment.PRODUCT, NfcPaymentWorkflow.run, NfcOrder(request=request)
        )
    if request.payment_method.payment_method_type == NFC_PAYMENT_METHOD_TYPE:
        raise Rejection(ResultCode.PARAM_ILLEGAL, "nfcPaymentInfo: is required for an NFC payment")
    if factor.is_easy_pay_scenario:
        if not factor.is_agreement_payment:
            raise Rejection(ResultCode.PARAM_ILLEGAL, 'paymentFactor.isAgreementPayment: must be "true" for Easy Pay')
        if factor.is_payment_evaluation:
            return await _evaluate_account(request, services)
        return await _create_easy_pay_order(request, services)
    if factor.is_agreement_payment:
        if not request.payment_method.payment_method_id:
            raise Rejection(
                ResultCode.PARAM_ILLEGAL, "paymentMethod.paymentMethodId: the access token is required for Auto Debit"
            )
        if factor.is_payment_evaluation:
            return await _evaluate_agreement(request, services)
        return await _create_auto_debit_order(request, services)
    if factor.is_in_store_payment and not factor.is_payment_evaluation:
        if not factor.is_cashier_payment:
            raise Rejection(ResultCode.PARAM_ILLEGAL, 'paymentFactor.isCashierPayment: must be "true" for MPM')
        return await _create_mpm_order(request, services)
    raise Rejection(
        ResultCode.BUSINESS_NOT_SUPPORT,
        "Only Easy Pay (isEasyPayScenario), Auto Debit (isAgreementPayment), merchant-presented mode"
        " (isInStorePayment) and NFC are served",
    )


async def _evaluate_account(request: PayRequest, services: Services) -> PayResponse:
    """Easy Pay's pay #1 (isPaymentEvaluation)."""
    return await _evaluate(request, services, services.payers.check_login)


async def _evaluate_agreement(request: PayRequest, services: Services) -> PayResponse:
    """Auto Debit payment evaluation: the token and the payer checked, no money moves (spec §2.6)."""
    return await _evaluate(request, services, services.payers.check_agreement)


async def _evaluate(
    request: PayRequest, services: Services, checked: Callable[[PayRequest], AccountCheck]
) -> PayResponse:
    """An evaluation is a read with no side effect, answered here from the core: there is nothing
    to make durable, so no workflow. A repeat evaluates again."""
    try:
        check = await asyncio.to_thread(checked, request)
    except Exception as error:
        if not cannot_succeed(error):
            raise  # the database is down or busy: U, and Alipay+ asks again
        log.error("pay #1 %s cannot be evaluated: %s", request.payment_request_id, type(error).__name__)
        return PayResponse(result=Result.of(ResultCode.PROCESS_FAIL), payment_request_id=request.payment_request_id)
    return evaluation_answer(request, check)


async def _create_easy_pay_order(request: PayRequest, services: Services) -> PayResponse:
    settings = services.settings
    order = EasyPayOrder(
        request=request,
        verification_page_url=f"{settings.public_base_url}/easypay/verify",
        default_expiry=settings.default_payment_expiry,
        verification_attempts=settings.verification_attempts,
    )
    return await _create_order(request, services, easy_pay.PRODUCT, EasyPayWorkflow.run, order)


async def _create_auto_debit_order(request: PayRequest, services: Services) -> PayResponse:
    order = AutoDebitOrder(request=request, default_expiry=services.settings.auto_debit_payment_expiry)
    return await _create_order(request, services, auto_debit.PRODUCT, AutoDebitWorkflow.run, order)


async def _create_mpm_order(request: PayRequest, services: Services) -> PayResponse:
    settings = services.settings
    order = MpmOrder(
        request=request,
        confirmation_page_url=f"{settings.public_base_url}/mpm/pay",
        default_expiry=settings.mpm_payment_expiry,
    )
    return await _create_order(request, services, mpm_payment.PRODUCT, MpmPaymentWorkflow.run, order)


async def _create_order(request: PayRequest, services: Services, product: str, run: Any, order: Any) -> PayResponse:
    """Start the order's workflow ``run(order)`` unless it is running, and ask it for its answer:
    one workflow per paymentRequestId, never restarted, the same answer to every retry."""
    start = start_once(
        run,
        order,
        workflow_id=workflow_ids.payment(request.payment_request_id),
        task_queue=services.settings.temporal_task_queue,
        search_attributes=search_attributes.at_start(product, request.payment_request_id, PaymentStatus.PROCESSING),
    )
    return await answer_once(
        services.temporal,
        PaymentOrderWorkflow.create_order,
        request,
        start,
        services.settings.pay_answer_deadline,
        # Alipay+ waits 8 s; past our deadline it learns the result by inquiry or notify
        late=lambda: PayResponse(result=Result.of(ResultCode.PAYMENT_IN_PROCESS)),
        closed=lambda: _answer_from_record(request, services),
    )


def _answer_from_record(request: PayRequest, services: Services) -> PayResponse:
    """pay #2 repeated after the payment closed: the stored final answer."""
    with Session(services.records) as session:
        record = session.get(PaymentRecord, request.payment_request_id)
    if record is None:
        return PayResponse(result=Result.of(ResultCode.UNKNOWN_EXCEPTION))
    if record.cancelled_at is not None:
        return PayResponse(result=Result.of(ResultCode.ORDER_IS_CLOSED))
    if record.key_fields_digest != request.key_fields_digest():
        return PayResponse(result=Result.of(ResultCode.REPEAT_REQ_INCONSISTENT))
    succeeded = record.status == PaymentStatus.SUCCESS
    return PayResponse(
        result=_payment_result(record),
        payment_id=record.payment_id if succeeded else None,
        payment_time=record.payment_time,
        customer_id=record.customer_id,
    )


def _payment_result(record: PaymentRecord) -> Result:
    if record.status == PaymentStatus.PROCESSING or not record.result_code:
        return Result.of(ResultCode.PAYMENT_IN_PROCESS)
    return Result.of(ResultCode(record.result_code), record.result_message)


@inbound(router, InquiryPaymentRequest.PATH, InquiryPaymentRequest)
async def inquiry_payment(request: InquiryPaymentRequest, services: Services) -> InquiryPaymentResponse:
    """inquiryPayment: the payment's result, from the records once final, else from its workflow."""
    with Session(services.records) as session:
        record = session.get(PaymentRecord, request.payment_request_id)
    if record is not None and record.status != PaymentStatus.PROCESSING:
        return _inquiry_from_record(record)
    try:
        state = await asyncio.wait_for(
            services.temporal.get_workflow_handle(workflow_ids.payment(request.payment_request_id)).query(
                PaymentOrderWorkflow.state  # by name: any product's order
            ),
            seconds_left(services.settings.inquiry_answer_deadline),
        )
    except RPCError as exc:
        if exc.status is not RPCStatusCode.NOT_FOUND:
            raise
        if record is None:
            return InquiryPaymentResponse(result=Result.of(ResultCode.ORDER_NOT_EXIST))
        return _inquiry_from_record(record)
    except (TimeoutError, WorkflowQueryFailedError):
        if record is None:
            raise
        return _inquiry_from_record(record)
    return _inquiry_from_state(state)


def _inquiry_from_state(state: PaymentState) -> InquiryPaymentResponse:
    succeeded = state.status is PaymentStatus.SUCCESS
    return InquiryPaymentResponse(
        result=Result.success(),
        payment_result=state.payment_result,
        payment_request_id=state.payment_request_id,
        payment_id=state.payment_id if succeeded else None,
        payment_time=state.payment_time,
        payment_amount=state.payment_amount,
        pay_to_amount=state.pay_to_amount,
        customer_id=state.customer_id,
    )


def _inquiry_from_record(record: PaymentRecord) -> InquiryPaymentResponse:
    succeeded = record.status == PaymentStatus.SUCCESS
    return InquiryPaymentResponse(
        result=Result.success(),
        payment_result=_payment_result(record),
        payment_request_id=record.payment_request_id,
        payment_id=record.payment_id if succeeded else None,
        payment_time=record.payment_time,
        payment_amount=stored_amount(record.payment_amount_currency, record.payment_amount_value),
        pay_to_amount=stored_amount(record.pay_to_amount_currency, record.pay_to_amount_value),
        customer_id=record.customer_id,
    )
