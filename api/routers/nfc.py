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
    """The phone reports a step only it can do (secure storage, local activation)."""
    handle = _handle(services, customer_id, device_id)
    try:
        return await handle.execute_update(NfcActivationWorkflow.device_step, args=[body.step, body.ok])
    except (WorkflowUpdateFailedError, RPCError):  # ended meanwhile: say how
        return await _progress(handle)


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
