"""What the phone's Alipay+ NFC SDK calls on our server: activation and the SDK request proxy.

Authenticated by the wallet app's session; the customer is always the signed-in one, never
taken from the request. The proxy forwards payloads unchanged and never logs them.
"""

from __future__ import annotations

import contextlib
from typing import Annotated

import httpx
from fastapi import APIRouter, HTTPException, Path, Request
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

from activities.nfc_proxy import ProxyRefused, SdkCall
from alipayplus import TransportError
from workflows import search_attributes
from workflows.nfc_activation import ActivationRequest, DeviceStep, NfcActivationWorkflow, Progress
from workflows.token import Credential, TapReport, TokenStart, TokenState, TokenWorkflow

from ..inbound import describe
from ..services import Services, ServicesDep
from .wallet_app import CamelModel, Customer

router = APIRouter(prefix="/app/v1/nfc", tags=["wallet app: NFC"])
PRODUCT = "NFC_ACTIVATION"
# Seed 000: the fingerprint must be a SHA-256 digest; we take it as 64 lowercase hex digits.
DeviceId = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
DevicePath = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")]


class StartActivation(CamelModel):
    device_id: DeviceId
    silent: bool = False


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
    return f"activation/{customer_id}/{device_id}"


def _handle(services: Services, customer_id: str, device_id: str) -> WorkflowHandle[NfcActivationWorkflow, Progress]:
    return services.temporal.get_workflow_handle_for(NfcActivationWorkflow.run, _workflow_id(customer_id, device_id))


async def _progress(handle: WorkflowHandle[NfcActivationWorkflow, Progress]) -> Progress:
    try:
        return await handle.query(NfcActivationWorkflow.progress)
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise HTTPException(404, "No activation for this device.") from None
        raise


@router.post("/activations", response_model=Progress)
async def start_activation(body: StartActivation, customer_id: Customer, services: ServicesDep) -> Progress:
    """Manual or silent activation; a running one is joined, a failed one starts again (retry)."""
    settings = services.settings
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


@router.get("/activations/{device_id}", response_model=Progress)
async def activation_progress(device_id: DevicePath, customer_id: Customer, services: ServicesDep) -> Progress:
    return await _progress(_handle(services, customer_id, device_id))


@router.post("/activations/{device_id}/device", response_model=Progress)
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


@router.post("/activations/{device_id}/confirm", response_model=Progress)
async def confirm_activation(device_id: DevicePath, customer_id: Customer, services: ServicesDep) -> Progress:
    """Silent activation: the user confirms on the NFC page."""
    handle = _handle(services, customer_id, device_id)
    try:
        return await handle.execute_update(NfcActivationWorkflow.confirm)
    except (WorkflowUpdateFailedError, RPCError):
        return await _progress(handle)


@router.post("/proxy", response_model=ProxiedAnswer)
async def proxy(request: Request, customer_id: Customer, services: ServicesDep) -> ProxiedAnswer:
    """NFCRequestProxy: an SDK request on to Mastercard or the Ant server, unchanged."""
    body = await request.body()
    if len(body) > services.settings.nfc_max_proxy_bytes:
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
        answer = await services.nfc_proxy.forward(call)
    except ProxyRefused as exc:
        raise HTTPException(400, str(exc)) from None
    except (httpx.HTTPError, TransportError, ApplicationError) as exc:
        raise HTTPException(502, f"upstream failed: {type(exc).__name__}") from None
    return ProxiedAnswer(sdk_response_header=answer.sdk_response_header, sdk_response_data=answer.sdk_response_data)


# --- the activated token: taps, credentials, replenish (token/{tokenReferenceId}) ------------------

TokenPath = Annotated[str, Path(min_length=1, max_length=64)]


class StoredCredentials(CamelModel):
    credentials: list[Credential] = Field(min_length=1, max_length=100)


async def _token(services: Services, customer_id: str, token_reference_id: str) -> WorkflowHandle[TokenWorkflow, None]:
    """The token's workflow, started if new; another customer's token is not found."""
    handle = services.temporal.get_workflow_handle_for(TokenWorkflow.run, f"token/{token_reference_id}")
    try:
        state = await handle.query(TokenWorkflow.state)
    except RPCError as exc:
        if exc.status is not RPCStatusCode.NOT_FOUND:
            raise
        return await services.temporal.start_workflow(
            TokenWorkflow.run,
            TokenStart(token_reference_id=token_reference_id, customer_id=customer_id),
            id=f"token/{token_reference_id}",
            task_queue=services.settings.temporal_task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
    if state.customer_id not in (None, customer_id):
        raise HTTPException(404, "No such token.")
    return handle


@router.post("/tokens/{token_reference_id}/taps", status_code=202)
async def report_tap(
    token_reference_id: TokenPath, tap: TapReport, customer_id: Customer, services: ServicesDep
) -> dict[str, bool]:
    """The phone reports a tap (the ATC it used); repeats and reordering are harmless."""
    handle = await _token(services, customer_id, token_reference_id)
    await handle.signal(TokenWorkflow.tap_reported, tap)
    return {"accepted": True}


@router.post("/tokens/{token_reference_id}/credentials", response_model=TokenState)
async def credentials_stored(
    token_reference_id: TokenPath, body: StoredCredentials, customer_id: Customer, services: ServicesDep
) -> TokenState:
    handle = await _token(services, customer_id, token_reference_id)
    await handle.signal(TokenWorkflow.credentials_stored, body.credentials)
    return await handle.query(TokenWorkflow.state)


@router.get("/tokens/{token_reference_id}", response_model=TokenState)
async def token_state(token_reference_id: TokenPath, customer_id: Customer, services: ServicesDep) -> TokenState:
    """The token as the server sees it, with replenished credentials waiting for the phone."""
    handle = await _token(services, customer_id, token_reference_id)
    return await handle.query(TokenWorkflow.state)


@router.post("/tokens/{token_reference_id}/replenish", response_model=TokenState)
async def replenish(token_reference_id: TokenPath, customer_id: Customer, services: ServicesDep) -> TokenState:
    """Manual replenish(): fetch credentials now."""
    handle = await _token(services, customer_id, token_reference_id)
    return await handle.execute_update(TokenWorkflow.replenish)
