"""Activation (spec §7): the phone's half of our server's tokenization workflow.

It checks the preconditions (connected, NFC on, default payment app, a SHA-256 device fingerprint),
starts or joins the activation through our API, polls its progress for the progress bar, and does
what the workflow asks of the phone (store the token, activate it locally, store the credentials).
The user's own start and every confirmation of a silent run ask the app's ``PinPad`` once for the
wallet PIN (issue 13, step-up), send it in that request's body only, and never log or keep it.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from alipayplus.nfc_sdk import TokenStatus

from ._nfc_http import ApiFailure, NfcApi
from ._nfc_records import StoredToken
from ._nfc_types import (
    ActivateCardListener,
    ActivationProgress,
    ActivationResult,
    DeviceFingerPrintService,
    NfcDevice,
    NfcResultCode,
    NfcSdkError,
    PinPad,
    PinProblem,
    ProgressCallback,
    SettingsRequired,
)
from .secure_store import SecureStoreError

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_WALLET_PIN = re.compile(r"[0-9]{4,12}")  # what our API takes as a wallet PIN


class _Stop(Exception):
    """Ends an activation run early with a result (not connected, offline, ...)."""

    def __init__(self, result: ActivationResult) -> None:
        super().__init__(result.failure)
        self.result = result


class Activation:
    """Manual and silent activation, and the confirmation of a silent one; one run at a time."""

    def __init__(
        self,
        token: StoredToken,
        api: NfcApi,
        *,
        device: Callable[[], NfcDevice],
        fingerprint_service: DeviceFingerPrintService | None,
        pin_pad: PinPad | None,
        clock: Callable[[], datetime],
        sleep: Callable[[float], Awaitable[None]],
        poll_interval: float,
        activation_timeout: timedelta,
    ) -> None:
        self._token = token
        self._api = api
        self._device = device  # asked each time: the app may swap the phone's NFC facts
        self._fingerprints = fingerprint_service
        self._pin_pad = pin_pad
        self._clock = clock
        self._sleep = sleep
        self._poll_interval = poll_interval
        self._activation_timeout = activation_timeout
        self._running = False

    async def apply_card(
        self,
        request_code: int,
        apdu_service_name: str,
        listener: ActivateCardListener | None,
        on_progress: ProgressCallback | None,
    ) -> ActivationResult:
        if not apdu_service_name:
            return self._result(NfcResultCode.PARAMS_ERROR, "no APDU service name")
        if not self._api.connected:
            return self._result(NfcResultCode.SDK_NOT_CONNECTED, "connect after login")
        settings = self._settings_required()
        if settings is not None:  # the configuration page stays open: nothing started
            status = self._token.status()
            return ActivationResult(status, NfcResultCode.PROVISION_FAILED, settings, f"NFC settings: {settings}")
        result = await self._activate(silent=False, on_progress=on_progress)
        if listener is not None and result.code is not NfcResultCode.PARAMS_ERROR:
            listener.on_result(result.status, request_code)
        return result

    async def activate_silently(self) -> ActivationResult:
        if not self._api.connected:
            return self._result(NfcResultCode.SDK_NOT_CONNECTED, "connect after login")
        return await self._activate(silent=True, on_progress=None)

    async def confirm_activation(self, on_progress: ProgressCallback | None) -> ActivationResult:
        if not self._api.connected:
            return self._result(NfcResultCode.SDK_NOT_CONNECTED, "connect after login")
        if self._token.status() != TokenStatus.AWAITING_CONFIRMATION:
            return self._result(NfcResultCode.INVALID_INPUT_PARAMETERS, "no activation awaits confirmation")
        return await self._activate(silent=False, on_progress=on_progress)

    def _settings_required(self) -> SettingsRequired | None:
        if not self._device().nfc_enabled:
            return SettingsRequired.TURN_ON_NFC
        if not self._device().default_payment_app:
            return SettingsRequired.SET_DEFAULT_PAYMENT_APP
        return None

    def device_id(self) -> str:
        """The fingerprint from the app's SPI, checked: SHA-256 hex, else ``PARAMS_ERROR``."""
        if self._fingerprints is None:
            raise NfcSdkError(NfcResultCode.PARAMS_ERROR, "no DeviceFingerPrintService")
        try:
            fingerprint = self._fingerprints.get_device_fingerprint()
        except Exception as exc:  # the app's SPI failed: the SDK reports it, it does not crash
            raise NfcSdkError(NfcResultCode.PARAMS_ERROR, f"the fingerprint service failed: {exc}") from exc
        if not isinstance(fingerprint, str) or not _SHA256_HEX.fullmatch(fingerprint):
            raise NfcSdkError(NfcResultCode.PARAMS_ERROR, "the device fingerprint is not a SHA-256 digest")
        return fingerprint.lower()

    async def _activate(self, *, silent: bool, on_progress: ProgressCallback | None) -> ActivationResult:
        try:
            device_id = self.device_id()
        except NfcSdkError as exc:
            return self._result(exc.code, str(exc))
        if not self._device().online:
            return self._result(NfcResultCode.NETWORK_EXCEPTION, "the phone is offline")
        if self._running:
            return self._result(NfcResultCode.ACTIVATION_IN_PROGRESS, "an activation is already running")
        status = self._token.status()
        if status == TokenStatus.QUERY_FAILED:
            return self._result(NfcResultCode.INNER_EXCEPTION, "the secure store cannot be read")
        self._running = True
        try:
            return await self._run(device_id, status, silent, _Bar(on_progress))
        except _Stop as stop:
            return stop.result
        except SecureStoreError as exc:  # the store cannot keep the activation's state
            return self._result(NfcResultCode.INNER_EXCEPTION, str(exc))
        finally:
            self._running = False

    async def _run(self, device_id: str, status: int, silent: bool, bar: _Bar) -> ActivationResult:
        if status not in (TokenStatus.NO_CARD, TokenStatus.IN_ACTIVATION, TokenStatus.AWAITING_CONFIRMATION):
            return ActivationResult(status, NfcResultCode.SUCCESS)  # a card exists already
        if status == TokenStatus.AWAITING_CONFIRMATION and silent:
            return ActivationResult(status, NfcResultCode.SUCCESS)  # nothing to do until the user confirms
        # the user's own start or confirmation binds the card to this phone: the wallet PIN, asked once
        # for this run and held only in this frame (the silent run on login has none)
        pin = None if silent else await self._wallet_pin()
        if pin is not None and status == TokenStatus.AWAITING_CONFIRMATION:
            progress = await self._call(self._api.confirm_activation(device_id, pin))
        else:
            progress = await self._call(self._api.start_activation(device_id, pin))
        deadline = self._clock() + self._activation_timeout
        while True:
            self._token.remember_activation(progress)
            bar.report(progress)
            phase = progress.get("phase")
            if phase == "DONE":
                self._token.activation_done()
                return ActivationResult(self._token.status(), NfcResultCode.SUCCESS)
            if phase == "FAILED":
                self._token.forget()
                failure = str(progress.get("failure") or "the activation failed")
                return ActivationResult(self._token.status(), NfcResultCode.PROVISION_FAILED, failure=failure)
            if phase == "WAITING_FOR_CONFIRMATION":
                if pin is None:  # silent: the user confirms later, with the PIN
                    return ActivationResult(TokenStatus.AWAITING_CONFIRMATION, NfcResultCode.SUCCESS)
                # joined a silent run: the user already agreed, with the PIN typed for this apply
                progress = await self._call(self._api.confirm_activation(device_id, pin))
                continue
            action = progress.get("deviceAction")
            if isinstance(action, dict):
                step = str(action.get("step"))
                ok = self._token.perform_device_step(step, action.get("payload") or {})
                progress = await self._call(self._api.report_device_step(device_id, step, ok))
                continue
            if self._clock() >= deadline:
                code = NfcResultCode.ACTIVATION_IN_PROGRESS
                return ActivationResult(TokenStatus.IN_ACTIVATION, code, failure="still running; ask again later")
            await self._sleep(self._poll_interval)
            progress = await self._call(self._api.activation_progress(device_id))

    async def _call(self, exchange: Awaitable[dict[str, Any]]) -> dict[str, Any]:
        """Our API's JSON answer; a failure (our API's refusal to bind, with its reason, too) stops the run."""
        try:
            return await exchange
        except ApiFailure as failure:
            if failure.binding_refused:
                raise _Stop(self._binding_refused(failure.pin_problem, failure.failure)) from failure
            raise _Stop(self._result(failure.code, failure.failure)) from failure

    async def _wallet_pin(self) -> str:
        """The PIN the user types on the app's ``PinPad``; a cancel or a failing pad ends the run
        before anything is sent. Never logged: failures name the exception's type only."""
        if self._pin_pad is None:
            raise _Stop(self._result(NfcResultCode.PARAMS_ERROR, "no PinPad: binding a card needs the wallet PIN"))
        try:
            pin = await self._pin_pad.request_wallet_pin()
        except Exception as exc:  # the app's SPI failed: the SDK reports it, it does not crash
            failure = f"the PIN pad failed: {type(exc).__name__}"
            raise _Stop(self._result(NfcResultCode.PARAMS_ERROR, failure)) from None
        if pin is None:
            raise _Stop(self._binding_refused(PinProblem.CANCELLED, "the user cancelled the wallet PIN"))
        if not isinstance(pin, str) or not _WALLET_PIN.fullmatch(pin):
            raise _Stop(self._binding_refused(PinProblem.WRONG, "the wallet PIN is 4 to 12 digits"))
        return pin

    def _binding_refused(self, problem: PinProblem | None, failure: str) -> ActivationResult:
        """Binding refused before anything changed at our server: the status stays as it was."""
        return ActivationResult(
            self._token.status(), NfcResultCode.PROVISION_FAILED, failure=failure, pin_problem=problem
        )

    def _result(self, code: NfcResultCode, failure: str) -> ActivationResult:
        return ActivationResult(self._token.status(), code, failure=failure)


class _Bar:
    """The progress bar: only forward, one tick per step (and one more when its status changes)."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self._callback = callback
        self._last = (0, 0)

    def report(self, progress: dict[str, Any]) -> None:
        try:
            step, total = int(progress["step"]), int(progress["stepsTotal"])
        except (KeyError, TypeError, ValueError):
            return
        status = int(progress.get("statusCode", TokenStatus.IN_ACTIVATION))
        if self._callback is None or (step, status) == self._last or step < self._last[0]:
            return
        self._last = (step, status)
        self._callback(ActivationProgress(step, total, str(progress.get("stepName", "")), status))
