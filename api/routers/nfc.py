"""What the phone's Alipay+ NFC SDK calls on our server: activation and the SDK request proxy.

Authenticated by the wallet app's session; the customer is always the signed-in one, never
taken from the request. The proxy forwards payloads unchanged and never logs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import datetime
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import Field, ValidationError
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.workflow import UpdateMethodMultiParam

from alipayplus import Amount, CamelModel, TransportError
from alipayplus.nfc import CUSTOM_DATA_PATTERN
from alipayplus.nfc_sdk import Credential
from wallet import search_attributes, workflow_ids
from wallet.credentials import Verdict
from wallet.nfc_proxy import ProxyRefused, SdkCall
from wallet.nfc_tokens import TokenOwnerRecord
from wallet.records import NfcTokenStatus, payment_by_custom_data, stored_amount
from wallet.states import PaymentStatus
from wallet.users import UserStore
from workflows.nfc_activation import ActivationRequest, DeviceStep, NfcActivationWorkflow, Progress
from workflows.token import (
    TapReport,
    TokenLifecycle,
    TokenRefusal,
    TokenState,
    TokenWorkflow,
)

from ..dependencies import SIGNED_IN, Customer, refuse_attempt
from ..inbound import describe
from ..limits import read_bounded
from ..services import ClientAddress, Services, ServicesDep
from ..token_workflow import TokenHandle, start_token

router = APIRouter(prefix="/app/v1/nfc", tags=["wallet app: NFC"], responses=SIGNED_IN)
PRODUCT = "NFC_ACTIVATION"
# Seed 000: the fingerprint must be a SHA-256 digest; we take it as 64 lowercase hex digits.
DeviceId = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
DevicePath = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")]


Pin = Annotated[str, Field(min_length=4, max_length=12, pattern=r"^[0-9]+$")]


class StartActivation(CamelModel):
    device_id: DeviceId
    silent: bool = False
    pin: Pin | None = None  # the user's wallet PIN: required unless silent (the silent run's confirm asks it)


class Confirmation(CamelModel):
    pin: Pin  # binding a token to a device is confirmed with the wallet PIN, not the session alone


class DeviceReport(CamelModel):
    step: DeviceStep
    ok: bool


class ProxiedRequest(CamelModel):
    device_id: DeviceId
    sdk_request_header: str = Field(min_length=1, max_length=4096)
    sdk_request_data: str = ""


class ProxiedAnswer(CamelModel):
    sdk_response_header: str
    sdk_response_data: str


def _workflow_id(customer_id: str, device_id: str) -> str:
    return workflow_ids.activation(customer_id, device_id)


def _handle(services: Services, customer_id: str, device_id: str) -> WorkflowHandle[NfcActivationWorkflow, Progress]:
    return services.temporal.get_workflow_handle_for(NfcActivationWorkflow.run, _workflow_id(customer_id, device_id))


async def _progress(handle: WorkflowHandle[NfcActivationWorkflow, Progress]) -> Progress:
    try:
        return await handle.query(NfcActivationWorkflow.progress)
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise HTTPException(404, "No activation for this device.") from None
        raise


STEP_UP_STATUSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Not signed in, or a wrong PIN"},
    403: {"description": "The user has no wallet PIN to confirm with"},
    429: {"description": "Too many wrong PINs: wait (Retry-After) or the account is locked"},
}
NO_ACTIVATION: dict[int | str, dict[str, Any]] = {404: {"description": "No activation for this device"}}


async def _step_up(services: Services, customer_id: str, pin: str | None, address: str | None) -> None:
    """The wallet PIN, typed in this request, under the account's guessing limits (401, 403 or 429)."""
    if pin is None:
        raise HTTPException(401, "Binding a device needs your wallet PIN (pin).")
    user = await asyncio.to_thread(UserStore(services.records).get, customer_id)
    if user is None or not user.pin_digest:
        raise HTTPException(403, "Set a wallet PIN first: binding a device needs it.")
    credentials = services.credentials
    attempt = await asyncio.to_thread(
        credentials.check_pin,
        customer_id,
        credentials.pin_digest(customer_id, pin),
        uuid.uuid4().hex,
        "nfc-activation",
        address,
    )
    if attempt.verdict is not Verdict.RIGHT:
        raise refuse_attempt(attempt, wrong="Wrong PIN.")


@router.post(
    "/activations", response_model=Progress, responses={**STEP_UP_STATUSES, 409: {"description": "Device quota"}}
)
async def start_activation(
    body: StartActivation, customer_id: Customer, address: ClientAddress, services: ServicesDep
) -> Progress:
    """Manual or silent activation; a running one is joined, a failed one starts again (retry).
    A manual one needs the wallet PIN; each customer has at most ``MPP_NFC_MAX_DEVICES`` devices."""
    settings = services.settings
    if not body.silent:
        await _step_up(services, customer_id, body.pin, address)
    if not await asyncio.to_thread(services.nfc_tokens.start_device, customer_id, body.device_id):
        raise HTTPException(409, "Too many devices: delete the token on another device first.")
    request = ActivationRequest(
        customer_id=customer_id,
        device_id=body.device_id,
        silent=body.silent,
        poll_interval=settings.nfc_poll_interval,
        poll_limit=settings.nfc_poll_limit,
        device_timeout=settings.nfc_device_timeout,
    )
    with contextlib.suppress(WorkflowAlreadyStartedError):  # activated before: its final progress says so
        await services.temporal.start_workflow(
            NfcActivationWorkflow.run,
            request,
            id=_workflow_id(customer_id, body.device_id),
            task_queue=settings.temporal_task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,  # done stays done
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(search_attributes.PRODUCT, PRODUCT),
                    SearchAttributePair(search_attributes.CUSTOMER_ID, customer_id),
                ]
            ),
        )
    return await _progress(_handle(services, customer_id, body.device_id))


@router.get("/activations/{device_id}", response_model=Progress, responses=NO_ACTIVATION)
async def activation_progress(device_id: DevicePath, customer_id: Customer, services: ServicesDep) -> Progress:
    return await _progress(_handle(services, customer_id, device_id))


@router.post("/activations/{device_id}/device", response_model=Progress, responses=NO_ACTIVATION)
async def device_step(
    device_id: DevicePath, body: DeviceReport, customer_id: Customer, services: ServicesDep
) -> Progress:
    """The phone reports a step only it can do (secure storage, local activation). Credentials
    stored at activation are the token's first: its workflow starts counting them."""
    handle = _handle(services, customer_id, device_id)
    asked = (await _progress(handle)).device_action
    try:
        progress = await handle.execute_update(NfcActivationWorkflow.device_step, args=[body.step, body.ok])
    except (WorkflowUpdateFailedError, RPCError):  # ended meanwhile: say how
        return await _progress(handle)
    if body.ok and asked and asked.step is DeviceStep.STORE_CREDENTIALS and progress.token_reference_id:
        stored = StoredCredentials.model_validate(asked.payload)
        token = await _token(services, customer_id, progress.token_reference_id)
        await token.signal(TokenWorkflow.credentials_stored, stored.credentials)
    return progress


@router.post(
    "/activations/{device_id}/confirm", response_model=Progress, responses={**STEP_UP_STATUSES, **NO_ACTIVATION}
)
async def confirm_activation(
    device_id: DevicePath, body: Confirmation, customer_id: Customer, address: ClientAddress, services: ServicesDep
) -> Progress:
    """Silent activation: the user confirms on the NFC page, with the wallet PIN."""
    await _step_up(services, customer_id, body.pin, address)
    handle = _handle(services, customer_id, device_id)
    try:
        return await handle.execute_update(NfcActivationWorkflow.confirm)
    except (WorkflowUpdateFailedError, RPCError):
        return await _progress(handle)


@router.post(
    "/proxy",
    response_model=ProxiedAnswer,
    responses={
        400: {"description": "Not an SDK request this proxy forwards"},
        422: {"description": "A malformed request: the field named"},
        502: {"description": "Mastercard or the Ant server failed"},
    },
    # the body is read here, bounded (not by FastAPI), so its schema is declared by hand
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ProxiedRequest.model_json_schema(by_alias=True)}},
        }
    },
)
async def proxy(request: Request, customer_id: Customer, services: ServicesDep) -> ProxiedAnswer:
    """NFCRequestProxy: an SDK request on to Mastercard or the Ant server, unchanged."""
    body = await read_bounded(request, services.settings.nfc_max_proxy_bytes)  # never more than the limit held
    if body is None:
        raise HTTPException(413, "SDK request too large.")
    try:
        proxied = ProxiedRequest.model_validate_json(body)
    except ValidationError as exc:
        raise HTTPException(422, describe(exc)) from None
    call = SdkCall(
        customer_id=customer_id,
        sdk_request_header=proxied.sdk_request_header,
        sdk_request_data=proxied.sdk_request_data,
    )
    try:
        if call.api in MANAGED_BY_THE_TOKEN:
            raise ProxyRefused(f"sdkRequestHeader.api: {call.api} goes through /app/v1/nfc/tokens/{{ref}}")
        answer = await services.nfc_proxy.forward(call)
    except ProxyRefused as exc:
        raise HTTPException(400, str(exc)) from None
    except (httpx.HTTPError, TransportError, ApplicationError) as exc:
        raise HTTPException(502, f"upstream failed: {type(exc).__name__}") from None
    return ProxiedAnswer(sdk_response_header=answer.sdk_response_header, sdk_response_data=answer.sdk_response_data)


# --- the activated token: taps, credentials, replenish, lock/unlock/delete (token/{tokenReferenceId}) ------

TokenPath = Annotated[str, Path(min_length=1, max_length=64)]

# The token's own endpoints do these, so its workflow stays the one record of its state.
MANAGED_BY_THE_TOKEN = frozenset({"lockToken", "unlockToken", "deleteToken"})
MIRRORED = {  # the token workflow's lifecycle as a tap's pay checks it
    TokenLifecycle.PENDING: NfcTokenStatus.ACTIVE,
    TokenLifecycle.ACTIVE: NfcTokenStatus.ACTIVE,
    TokenLifecycle.LOCKED: NfcTokenStatus.LOCKED,
    TokenLifecycle.DELETED: NfcTokenStatus.DELETED,
}
REFUSAL_STATUS: dict[str, int] = {TokenRefusal.ANT_FAILED: 502, TokenRefusal.DELETED: 410, TokenRefusal.LOCKED: 409}
TokenUpdate = UpdateMethodMultiParam[[TokenWorkflow], TokenState]


TOKEN_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such token of the signed-in customer"},
    410: {"description": "The token was deleted"},
}
TOKEN_UPDATED: dict[int | str, dict[str, Any]] = {
    **TOKEN_FOUND,
    409: {"description": "Refused while the token is locked"},
    502: {"description": "The Ant server failed: the token stays as it was"},
}


class StoredCredentials(CamelModel):
    credentials: list[Credential] = Field(min_length=1, max_length=100)


async def _token_and_state(
    services: Services, customer_id: str, token_reference_id: str, *, start_if_new: bool
) -> tuple[TokenHandle, TokenState | None]:
    """The caller's token's workflow and its state (None when just started). A token not recorded as
    the caller's (``nfc_token``: recorded by its activation) is not found, and no workflow is started
    for it."""
    owner = await asyncio.to_thread(services.nfc_tokens.owner_of, token_reference_id)
    handle: TokenHandle = services.temporal.get_workflow_handle_for(
        TokenWorkflow.run, workflow_ids.token(token_reference_id)
    )
    if owner is not None and owner.customer_id != customer_id:
        raise HTTPException(404, "No such token.")
    try:
        state = await handle.query(TokenWorkflow.state)
    except RPCError as exc:
        if exc.status is not RPCStatusCode.NOT_FOUND:
            raise
        if owner is None or not start_if_new:
            raise HTTPException(404, "No such token.") from None
        return await start_token(services, token_reference_id, customer_id), None
    if owner is None:  # a token activated before owners were recorded: its workflow's owner, if the caller
        if state.customer_id != customer_id:
            raise HTTPException(404, "No such token.")
        await asyncio.to_thread(
            services.nfc_tokens.record_owner,
            TokenOwnerRecord(token_reference_id=token_reference_id, customer_id=customer_id),
        )
    return handle, state


async def _token(
    services: Services, customer_id: str, token_reference_id: str, *, start_if_new: bool = True
) -> TokenHandle:
    """The token's workflow, started if new (unless told not to); a deleted token is gone (410)."""
    handle, state = await _token_and_state(services, customer_id, token_reference_id, start_if_new=start_if_new)
    if state is not None and state.lifecycle is TokenLifecycle.DELETED:
        raise HTTPException(410, "The token was deleted.")
    return handle


async def _update(services: Services, handle: TokenHandle, update: TokenUpdate) -> TokenState:
    """Run one of the token's updates and mirror the state it leaves (``nfc_token.status``, which a
    tap's pay checks); its refusal becomes the HTTP answer (Ant failing: 502)."""
    try:
        state = await handle.execute_update(update)
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        if not isinstance(cause, ApplicationError):
            raise HTTPException(502, str(exc)) from None
        raise HTTPException(REFUSAL_STATUS.get(cause.type or "", 502), cause.message) from None
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:  # the workflow ended meanwhile: deleted
            raise HTTPException(410, "The token was deleted.") from None
        raise
    await asyncio.to_thread(services.nfc_tokens.mirror_status, state.token_reference_id, MIRRORED[state.lifecycle])
    return state


@router.post("/tokens/{token_reference_id}/taps", status_code=202, responses=TOKEN_FOUND)
async def report_tap(
    token_reference_id: TokenPath, tap: TapReport, customer_id: Customer, services: ServicesDep
) -> dict[str, bool]:
    """The phone reports a tap (the ATC it used); repeats and reordering are harmless, and a locked
    token's taps count (the tap may predate the lock). A deleted token's cannot (410)."""
    handle = await _token(services, customer_id, token_reference_id)
    await handle.signal(TokenWorkflow.tap_reported, tap)
    return {"accepted": True}


@router.post("/tokens/{token_reference_id}/credentials", response_model=TokenState, responses=TOKEN_FOUND)
async def credentials_stored(
    token_reference_id: TokenPath, body: StoredCredentials, customer_id: Customer, services: ServicesDep
) -> TokenState:
    handle = await _token(services, customer_id, token_reference_id)
    await handle.signal(TokenWorkflow.credentials_stored, body.credentials)
    return await handle.query(TokenWorkflow.state)


@router.get("/tokens/{token_reference_id}", response_model=TokenState, responses={404: TOKEN_FOUND[404]})
async def token_state(token_reference_id: TokenPath, customer_id: Customer, services: ServicesDep) -> TokenState:
    """The token as the server sees it, with replenished credentials waiting for the phone."""
    handle, state = await _token_and_state(services, customer_id, token_reference_id, start_if_new=True)
    return state if state is not None else await handle.query(TokenWorkflow.state)


@router.post("/tokens/{token_reference_id}/replenish", response_model=TokenState, responses=TOKEN_UPDATED)
async def replenish(token_reference_id: TokenPath, customer_id: Customer, services: ServicesDep) -> TokenState:
    """Manual replenish(): fetch credentials now (409 while locked)."""
    handle = await _token(services, customer_id, token_reference_id)
    return await _update(services, handle, TokenWorkflow.replenish)


@router.post("/tokens/{token_reference_id}/lock", response_model=TokenState, responses=TOKEN_UPDATED)
async def lock_token(token_reference_id: TokenPath, customer_id: Customer, services: ServicesDep) -> TokenState:
    """lock(): suspended at Mastercard through the Ant server, then LOCKED here; 502 if Ant fails."""
    handle = await _token(services, customer_id, token_reference_id, start_if_new=False)
    return await _update(services, handle, TokenWorkflow.lock)


@router.post("/tokens/{token_reference_id}/unlock", response_model=TokenState, responses=TOKEN_UPDATED)
async def unlock_token(token_reference_id: TokenPath, customer_id: Customer, services: ServicesDep) -> TokenState:
    """unlock(): active again at Mastercard, then here; 502 if Ant fails."""
    handle = await _token(services, customer_id, token_reference_id, start_if_new=False)
    return await _update(services, handle, TokenWorkflow.unlock)


@router.delete("/tokens/{token_reference_id}", response_model=TokenState, responses=TOKEN_UPDATED)
async def delete_token(token_reference_id: TokenPath, customer_id: Customer, services: ServicesDep) -> TokenState:
    """deleteToken: deleted at Mastercard through the Ant server, then its workflow ends; a repeat
    answers the deleted state; 502 if Ant fails (the token stays as it was)."""
    handle, state = await _token_and_state(services, customer_id, token_reference_id, start_if_new=False)
    if state is not None and state.lifecycle is TokenLifecycle.DELETED:
        return state
    return await _update(services, handle, TokenWorkflow.delete)


# --- the payment a tap became (spec §10.1, step 10) ----------------------------------------------

CustomDataQuery = Annotated[str, Query(alias="customData", pattern=CUSTOM_DATA_PATTERN)]


class TapPayment(CamelModel):
    """What the app shows after a tap: the payment Alipay+'s pay made of it, as we recorded it."""

    payment_request_id: str
    payment_id: str | None
    status: PaymentStatus
    result_code: str | None
    pay_to_amount: Amount | None
    payment_time: datetime | None
    token_reference_id: str | None


@router.get("/payments", response_model=TapPayment, responses={404: {"description": "No payment for this tap yet"}})
async def payment_for_tap(custom_data: CustomDataQuery, customer_id: Customer, services: ServicesDep) -> TapPayment:
    """The app put ``customData`` on its tap (setCustomData); this is the payment it joined, the
    signed-in customer's only. 404 until Alipay+'s pay for that tap has reached us."""
    record = payment_by_custom_data(services.records, customer_id, custom_data)
    if record is None:
        raise HTTPException(404, "No payment for this tap yet.")
    return TapPayment(
        payment_request_id=record.payment_request_id,
        payment_id=record.payment_id if record.status is PaymentStatus.SUCCESS else None,
        status=record.status,
        result_code=record.result_code,
        pay_to_amount=stored_amount(record.pay_to_amount_currency, record.pay_to_amount_value),
        payment_time=record.payment_time,
        token_reference_id=record.nfc_token_reference_id,
    )
