"""NFC token activation, manual or silent: one workflow per (customer, device) (seed 000, step 2).

Id ``activation/{customerId}/{deviceId}``. The server side of every step runs here, through
the NFC request proxy; what only the phone can do (keep the token and its credentials in its
secure store, activate the local token) is asked of the phone, which reports back:
  2.1  the device fingerprint (a SHA-256 digest; checked by the API before we start)
  2.2  the public key from Mastercard
  2.3  applyNfcToken (pending), queryToken on a durable timer until approved, provision,
       the token stored on the phone, notifyProvisionResult, queryNTUResult until updated
       (silent activation stops here: status 21 until the user confirms)
  2.4  the phone activates its local token
  2.5  replenish the credentials, stored on the phone; status 2
The ``progress`` query gives the status code and step i of n for the phone's progress bar.
A proxied step that meets a technical fault (a timeout, a lost worker, no answer, a U) is tried
again for up to ``step_deadline`` (2 minutes; the user is watching the progress bar); every
failure after that, and every refusal (rejected application, poll limit, phone gone, an F from
the proxy), ends the workflow as failed with a clear reason and status 0; starting it again is
the retry path. Each step's request id is fixed before its first try, so the Ant server treats a
retry as the same request.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from ._options import DB_RETRY, DB_TIMEOUT, count

with workflow.unsafe.imports_passed_through():
    from activities.nfc_proxy import NfcActivities
    from activities.nfc_tokens import NewDeviceNotice, NfcTokenActivities
    from alipayplus import CamelModel
    from alipayplus.nfc_sdk import (
        ApplyNfcTokenAnswer,
        ApplyNfcTokenData,
        GetPublicKeyData,
        NotifyProvisionResultAnswer,
        NotifyProvisionResultData,
        NtuStatus,
        PolledAnswer,
        ProvisionAnswer,
        ProvisionData,
        PublicKeyAnswer,
        QueryNtuResultAnswer,
        QueryNtuResultData,
        QueryTokenAnswer,
        QueryTokenData,
        ReplenishAnswer,
        ReplenishData,
        SdkData,
        SdkRequestData,
        TokenRequestStatus,
        TokenStatus,
    )
    from wallet.nfc_proxy import SdkAnswer, SdkCall
    from wallet.nfc_tokens import DeviceSlot, TokenOwnerRecord
    from wallet.telemetry.metrics import HELP, NFC_ACTIVATIONS

# within the step's deadline, as often as it takes; then a clear failure
PROXY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10))
CREDENTIALS_PER_REPLENISH = 10
# patch: the approved token recorded as this customer's (nfc_token), the user told of the new device,
# and a failed activation's device slot released
DEVICE_BOUND = "device-bound"
NOTICE_WINDOW = timedelta(hours=1)  # the new-device SMS is retried this long, then only logged
AnswerT = TypeVar("AnswerT", bound=SdkData)
PolledT = TypeVar("PolledT", bound=PolledAnswer)

STEPS = (
    "device fingerprint",
    "Mastercard public key",
    "apply for the NFC token",
    "wait for approval",
    "provision the token",
    "store the token on the phone",
    "notify the provision result",
    "wait for Mastercard's update",
    "activate the token on the phone",
    "replenish credentials",
    "store the credentials on the phone",
)


class Phase(StrEnum):
    RUNNING = "RUNNING"
    WAITING_FOR_DEVICE = "WAITING_FOR_DEVICE"
    WAITING_FOR_CONFIRMATION = "WAITING_FOR_CONFIRMATION"
    DONE = "DONE"
    FAILED = "FAILED"


class DeviceStep(StrEnum):
    STORE_TOKEN = "STORE_TOKEN"
    ACTIVATE_LOCAL_TOKEN = "ACTIVATE_LOCAL_TOKEN"
    STORE_CREDENTIALS = "STORE_CREDENTIALS"


class DeviceAction(CamelModel):
    step: DeviceStep
    payload: dict[str, Any]


class Progress(CamelModel):
    status_code: int  # a TokenStatus
    phase: Phase
    step: int
    steps_total: int = len(STEPS)
    step_name: str
    failure: str | None = None
    token_reference_id: str | None = None
    device_action: DeviceAction | None = None


class ActivationRequest(BaseModel):
    customer_id: str
    device_id: str  # the SHA-256 device fingerprint
    silent: bool = False
    poll_interval: timedelta = timedelta(seconds=2)  # nfc_issue_config's sample: 2000 ms, 10 times
    poll_limit: int = 10
    device_timeout: timedelta = timedelta(minutes=1)  # the phone must answer a device step by then
    confirmation_timeout: timedelta = timedelta(days=7)  # silent: the user's confirmation
    step_timeout: timedelta = timedelta(seconds=20)  # one proxied call, above Alipay+'s 10 s for sdkProxy
    step_deadline: timedelta = timedelta(minutes=2)  # a step's retries; then the activation fails (status 0)


class Outcome(StrEnum):
    """How an activation ended, as the metrics count it (``NFC_ACTIVATIONS``' ``outcome``)."""

    ACTIVATED = "activated"
    REJECTED = "rejected"  # the Ant server refused a step (an F, a rejected application, another's token)
    PHONE = "phone"  # the phone did not answer a device step, or could not do it
    UNCONFIRMED = "unconfirmed"  # silent activation: the user never confirmed
    FAILED = "failed"  # the proxy kept failing, the poll limit, an answer that is not one


class ActivationFailed(Exception):
    """Why this activation stops (the workflow ends failed with it)."""

    def __init__(self, message: str, outcome: Outcome = Outcome.FAILED) -> None:
        super().__init__(message)
        self.outcome = outcome


@workflow.defn
class NfcActivationWorkflow:
    @workflow.init
    def __init__(self, request: ActivationRequest) -> None:
        self._request = request
        self._step = 1
        self._phase = Phase.RUNNING
        self._status: int = TokenStatus.IN_ACTIVATION
        self._failure: str | None = None
        self._token_reference_id: str | None = None
        self._device_action: DeviceAction | None = None
        self._device_reports: dict[DeviceStep, bool] = {}
        self._confirmed = False

    @workflow.run
    async def run(self, request: ActivationRequest) -> Progress:
        try:
            await self._activate(request)
        except ActivationFailed as failure:
            self._phase, self._status, self._failure = Phase.FAILED, TokenStatus.NO_CARD, str(failure)
            count(NFC_ACTIVATIONS, HELP[NFC_ACTIVATIONS], outcome=failure.outcome.value)
            self._device_action = None
            if workflow.patched(DEVICE_BOUND):  # the phone holds no card: its slot is free again
                await workflow.execute_local_activity_method(
                    NfcTokenActivities.release_device,
                    DeviceSlot(customer_id=request.customer_id, device_id=request.device_id),
                    start_to_close_timeout=DB_TIMEOUT,
                    retry_policy=DB_RETRY,
                )
            await workflow.wait_condition(workflow.all_handlers_finished)
            details = self.progress().model_dump(mode="json")
            raise ApplicationError(str(failure), details, type="ActivationFailed") from None
        count(NFC_ACTIVATIONS, HELP[NFC_ACTIVATIONS], outcome=Outcome.ACTIVATED.value)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.progress()

    async def _activate(self, request: ActivationRequest) -> None:
        # 2.1 the fingerprint came with the request (the API refused anything but SHA-256).
        # 2.2 Mastercard's public key, so the SDK's payloads can be encrypted to Mastercard.
        self._at(2)
        public_key = await self._sdk(GetPublicKeyData(), PublicKeyAnswer)
        # 2.3 apply, wait for approval, provision, store, notify, wait for Mastercard's update.
        self._at(3)
        application = await self._sdk(
            ApplyNfcTokenData(device_fingerprint=request.device_id, public_key_id=public_key.public_key_id),
            ApplyNfcTokenAnswer,
        )
        self._at(4)
        approved = await self._poll(
            QueryTokenData(token_request_id=application.token_request_id), QueryTokenAnswer, TokenRequestStatus.APPROVED
        )
        if approved.token_reference_id is None:
            raise ActivationFailed("queryToken: approved without a tokenReferenceId")
        reference = self._token_reference_id = approved.token_reference_id
        if workflow.patched(DEVICE_BOUND):
            await self._record_owner(reference)
        token = {"tokenReferenceId": reference}  # what the phone is told of the token
        self._at(5)
        provisioned = await self._sdk(ProvisionData(token_reference_id=reference), ProvisionAnswer)
        self._at(6)
        # the card profile as the Ant server sent it (only the fields it sent)
        profile = provisioned.card_profile.model_dump(exclude_unset=True)
        await self._on_device(DeviceStep.STORE_TOKEN, {**token, "cardProfile": profile})
        self._at(7)
        await self._sdk(
            NotifyProvisionResultData(token_reference_id=reference, result="SUCCESS"), NotifyProvisionResultAnswer
        )
        self._at(8)
        await self._poll(QueryNtuResultData(token_reference_id=reference), QueryNtuResultAnswer, NtuStatus.UPDATED)
        if request.silent:  # silent activation ends here until the user confirms (status 21)
            await self._await_confirmation(request.confirmation_timeout)
        # 2.4 the phone activates its local token.
        self._at(9)
        await self._on_device(DeviceStep.ACTIVATE_LOCAL_TOKEN, token)
        # 2.5 credentials for the first taps.
        self._at(10)
        replenished = await self._sdk(
            ReplenishData(token_reference_id=reference, count=CREDENTIALS_PER_REPLENISH), ReplenishAnswer
        )
        self._at(11)
        credentials = [credential.model_dump(exclude_unset=True) for credential in replenished.credentials]
        await self._on_device(DeviceStep.STORE_CREDENTIALS, {"credentials": credentials})
        self._phase, self._status = Phase.DONE, TokenStatus.PAYMENT_ALLOWED
        if workflow.patched(DEVICE_BOUND):  # the phone already sees DONE; the user hears of the new device
            await self._notify_new_device()

    # --- the phone and the user talk to the workflow -------------------------------------------

    @workflow.query
    def progress(self) -> Progress:
        return Progress(
            status_code=self._status,
            phase=self._phase,
            step=self._step,
            step_name=STEPS[self._step - 1],
            failure=self._failure,
            token_reference_id=self._token_reference_id,
            device_action=self._device_action,
        )

    @workflow.update
    async def device_step(self, step: DeviceStep, ok: bool) -> Progress:
        """The phone did (or could not do) what it was asked."""
        if self._device_action is not None and self._device_action.step is step:
            self._device_reports[step] = ok
            await workflow.wait_condition(lambda: self._device_action is None or self._device_action.step is not step)
        return self.progress()

    @workflow.update
    async def confirm(self) -> Progress:
        """Silent activation: the user confirms on the NFC page (status 21 → 2)."""
        if self._phase is Phase.WAITING_FOR_CONFIRMATION:
            self._confirmed = True  # the phone carries on: it is asked to activate its local token next
            await workflow.wait_condition(lambda: self._phase is not Phase.WAITING_FOR_CONFIRMATION)
        return self.progress()

    # --- steps ----------------------------------------------------------------------------

    def _at(self, step: int) -> None:
        self._step = step

    async def _sdk(self, data: SdkRequestData, answer_type: type[AnswerT]) -> AnswerT:
        """One SDK request through the proxy, its answer read as ``answer_type``; anything but SUCCESS,
        or an answer that is not one, ends the activation."""
        api = data.API
        call = SdkCall.of(self._request.customer_id, data, request_id=str(workflow.uuid4()))
        try:
            answer: SdkAnswer = await workflow.execute_activity_method(
                NfcActivities.sdk_request,
                call,
                start_to_close_timeout=self._request.step_timeout,
                schedule_to_close_timeout=self._request.step_deadline,
                retry_policy=PROXY_RETRY,
                summary=f"step {self._step}/{len(STEPS)}: {api}",  # what the Web UI shows for the activity
            )
        except ActivityError as exc:
            cause = exc.cause.message if isinstance(exc.cause, ApplicationError) else str(exc.cause or exc)
            raise ActivationFailed(f"{api}: the proxy failed ({cause})") from None
        if not answer.succeeded:
            raise ActivationFailed(f"{api}: refused ({answer.code})", Outcome.REJECTED)
        try:
            return answer.data(answer_type)
        except ValidationError as exc:
            raise ActivationFailed(f"{api}: the answer is not a {answer_type.__name__} ({_first_error(exc)})") from None

    async def _record_owner(self, token_reference_id: str) -> None:
        """Every token endpoint, Alipay+'s activation notice and a tap's pay check this record."""
        recorded = await workflow.execute_local_activity_method(
            NfcTokenActivities.record_token_owner,
            TokenOwnerRecord(
                token_reference_id=token_reference_id,
                customer_id=self._request.customer_id,
                device_id=self._request.device_id,
            ),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
        )
        if not recorded:
            raise ActivationFailed("queryToken: the token is recorded as another customer's", Outcome.REJECTED)

    async def _notify_new_device(self) -> None:
        request = self._request
        try:
            await workflow.execute_activity_method(
                NfcTokenActivities.notify_new_device,
                NewDeviceNotice(
                    customer_id=request.customer_id,
                    device_id=request.device_id,
                    activation_id=f"{workflow.info().workflow_id}/{workflow.info().run_id}",
                ),
                start_to_close_timeout=DB_TIMEOUT,
                schedule_to_close_timeout=NOTICE_WINDOW,
                retry_policy=DB_RETRY,
            )
        except ActivityError as error:  # the token works; the notice is not worth failing it for
            workflow.logger.warning("new-device SMS not sent: %s", error.cause or error)

    async def _poll(self, data: SdkRequestData, answer_type: type[PolledT], done: str) -> PolledT:
        """Ask again on a durable timer until ``done``; REJECTED or the poll limit end it."""
        request, api = self._request, data.API
        for attempt in range(request.poll_limit):
            if attempt:
                await workflow.sleep(request.poll_interval)
            answer = await self._sdk(data, answer_type)
            if answer.status == done:
                return answer
            if answer.status == TokenRequestStatus.REJECTED:
                raise ActivationFailed(
                    f"{api}: the application was rejected ({answer.reason or 'no reason'})", Outcome.REJECTED
                )
        raise ActivationFailed(f"{api}: no answer after {request.poll_limit} polls")

    async def _on_device(self, step: DeviceStep, payload: dict[str, Any]) -> None:
        """Ask the phone to do ``step`` and wait for its report."""
        self._device_action = DeviceAction(step=step, payload=payload)
        self._phase = Phase.WAITING_FOR_DEVICE
        try:
            await workflow.wait_condition(lambda: step in self._device_reports, timeout=self._request.device_timeout)
        except TimeoutError:
            raise ActivationFailed(f"{step}: the phone did not answer (offline?)", Outcome.PHONE) from None
        finally:
            self._device_action = None
        if not self._device_reports[step]:
            raise ActivationFailed(f"{step}: the phone could not do it", Outcome.PHONE)
        self._phase = Phase.RUNNING

    async def _await_confirmation(self, timeout: timedelta) -> None:
        self._phase, self._status = Phase.WAITING_FOR_CONFIRMATION, TokenStatus.AWAITING_CONFIRMATION
        try:
            await workflow.wait_condition(lambda: self._confirmed, timeout=timeout)
        except TimeoutError:
            raise ActivationFailed("the user did not confirm the silent activation", Outcome.UNCONFIRMED) from None
        self._phase, self._status = Phase.RUNNING, TokenStatus.IN_ACTIVATION


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "the payload"
    return f"{where}: {error['msg']}"
