"""Our API as the NFC SDK calls it: the app session, the proxy, the activation and token endpoints.

Every call needs the network and a JSON object back. Its failures come in the two forms the callers
report: an activation run ends with a result, so its calls raise ``ApiFailure`` (a short reason, and
whether our API refused to bind the card to this phone); every other call raises ``NfcSdkError``
(with our API's detail and HTTP status) to the app. A session our API refuses (401) disconnects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from ._nfc_types import NfcResultCode, NfcSdkError, PinProblem

_TIMEOUT = 15.0  # above Alipay+'s 10 s answer time for proxied requests
_ACTIVATIONS = "/app/v1/nfc/activations"
_TOKENS = "/app/v1/nfc/tokens"

# Our API's refusals to bind a card to this phone (a start or a confirmation), and what the
# PIN had to do with it: 409 is the device quota.
_BINDING_REFUSED: dict[int, PinProblem | None] = {
    401: PinProblem.WRONG,
    403: PinProblem.NOT_SET,
    409: None,
    429: PinProblem.TOO_MANY_TRIES,
}


class ApiFailure(Exception):
    """A call to our API without its JSON object. ``failure`` is the short reason an activation run
    ends with; ``error()`` the ``NfcSdkError`` any other caller raises (``message`` adds our API's
    detail). ``binding_refused``: our API refused to bind the card to this phone, ``pin_problem`` why."""

    def __init__(
        self,
        code: NfcResultCode,
        failure: str,
        *,
        message: str | None = None,
        http_status: int | None = None,
        binding_refused: bool = False,
        pin_problem: PinProblem | None = None,
    ) -> None:
        super().__init__(failure)
        self.code = code
        self.failure = failure
        self.message = message or failure
        self.http_status = http_status
        self.binding_refused = binding_refused
        self.pin_problem = pin_problem

    def error(self) -> NfcSdkError:
        return NfcSdkError(self.code, self.message, self.http_status)


class NfcApi:
    """The SDK's HTTP client of our API, bound to the user's app session between connect and disconnect."""

    def __init__(self, api_url: str, *, online: Callable[[], bool], transport: httpx.AsyncBaseTransport | None) -> None:
        self.client = httpx.AsyncClient(base_url=api_url, transport=transport, timeout=_TIMEOUT)
        self._online = online  # asked at every call: the app may swap the phone's NFC facts
        self._connected = False

    async def aclose(self) -> None:
        await self.client.aclose()

    # --- the app session -----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def online(self) -> bool:
        return self._online()

    def open_session(self, session_token: str) -> None:
        self.client.headers["Authorization"] = f"Bearer {session_token}"
        self._connected = True

    def close_session(self) -> None:
        self.client.headers.pop("Authorization", None)
        self._connected = False

    # --- the activation endpoints: ApiFailure ends the run with a result -----------------------

    async def start_activation(self, device_id: str, pin: str | None) -> dict[str, Any]:
        """The user's start with the wallet PIN, or the silent run on login without one."""
        if pin is not None:
            body: dict[str, Any] = {"deviceId": device_id, "silent": False, "pin": pin}
        else:
            body = {"deviceId": device_id, "silent": True}
        return await self.call("POST", _ACTIVATIONS, body, binding=True)

    async def confirm_activation(self, device_id: str, pin: str) -> dict[str, Any]:
        return await self.call("POST", f"{_ACTIVATIONS}/{device_id}/confirm", {"pin": pin}, binding=True)

    async def report_device_step(self, device_id: str, step: str, ok: bool) -> dict[str, Any]:
        return await self.call("POST", f"{_ACTIVATIONS}/{device_id}/device", {"step": step, "ok": ok})

    async def activation_progress(self, device_id: str) -> dict[str, Any]:
        return await self.call("GET", f"{_ACTIVATIONS}/{device_id}")

    # --- the token endpoints, the proxy and the app's own query: NfcSdkError -------------------

    async def token_state(self, reference: str) -> dict[str, Any]:
        return await self.request("GET", f"{_TOKENS}/{reference}")

    async def manage_token(self, reference: str, action: str) -> dict[str, Any]:
        """``lock`` or ``unlock`` at our server; the answer is the token's state."""
        return await self.request("POST", f"{_TOKENS}/{reference}/{action}")

    async def delete_token(self, reference: str) -> None:
        await self.request("DELETE", f"{_TOKENS}/{reference}")

    async def replenish(self, reference: str) -> dict[str, Any]:
        return await self.request("POST", f"{_TOKENS}/{reference}/replenish")

    async def confirm_credentials(self, reference: str, credentials: list[dict[str, Any]]) -> None:
        """The credentials the phone now holds, so our server stops offering them."""
        await self.request("POST", f"{_TOKENS}/{reference}/credentials", {"credentials": credentials})

    async def report_tap(self, report: dict[str, Any]) -> None:
        path = f"{_TOKENS}/{report['tokenReferenceId']}/taps"
        body = {"atc": report["atc"], "customData": report.get("customData"), "tappedAt": report["tappedAt"]}
        await self.request("POST", path, body)

    async def proxy(self, device_id: str, sdk_request_header: str, sdk_request_data: str) -> tuple[str, str]:
        body = {"deviceId": device_id, "sdkRequestHeader": sdk_request_header, "sdkRequestData": sdk_request_data}
        answer = await self.request("POST", "/app/v1/nfc/proxy", body)
        header, data = answer.get("sdkResponseHeader"), answer.get("sdkResponseData")
        if not isinstance(header, str) or not isinstance(data, str):
            raise NfcSdkError(NfcResultCode.INNER_EXCEPTION, "the proxy answered without the SDK's response")
        return header, data

    async def payment_for_tap(self, custom_data: bytes) -> dict[str, Any] | None:
        """The payment our server recorded for the tap that carried ``custom_data``; None (404) while
        Alipay+'s pay for it has not arrived."""
        try:
            return await self.request("GET", f"/app/v1/nfc/payments?customData={custom_data.hex().upper()}")
        except NfcSdkError as exc:
            if exc.http_status == 404:
                return None
            raise

    # --- one exchange ------------------------------------------------------------------------------

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Our API's JSON answer, or ``NfcSdkError``."""
        try:
            return await self.call(method, path, body)
        except ApiFailure as failure:
            raise failure.error() from failure.__cause__

    async def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, binding: bool = False
    ) -> dict[str, Any]:
        """Our API's JSON answer, or ``ApiFailure``. With ``binding`` (a start or a confirmation) our
        API's refusal to bind, with its reason, is one too, and a 401 without WWW-Authenticate is the PIN's."""
        if not self.online:
            raise ApiFailure(NfcResultCode.NETWORK_EXCEPTION, "the phone is offline")
        try:
            response = await self.client.request(method, path, json=body)
        except httpx.TransportError as exc:
            raise ApiFailure(NfcResultCode.NETWORK_EXCEPTION, f"{path}: {exc}") from exc
        # a session our API refuses is a 401 with WWW-Authenticate; a wrong PIN's 401 has none
        refused = response.status_code in _BINDING_REFUSED and "WWW-Authenticate" not in response.headers
        if binding and refused:
            failure = _detail(response) or f"{path}: HTTP {response.status_code}"
            problem = _BINDING_REFUSED[response.status_code]
            raise ApiFailure(NfcResultCode.PROVISION_FAILED, failure, binding_refused=True, pin_problem=problem)
        if response.status_code == 401:
            self.close_session()
            raise ApiFailure(NfcResultCode.SDK_NOT_CONNECTED, "our API no longer accepts the session")
        if response.is_error:
            code = NfcResultCode.NETWORK_EXCEPTION if response.status_code >= 500 else NfcResultCode.INNER_EXCEPTION
            failure = f"{path}: HTTP {response.status_code}"
            detail = _detail(response)
            message = failure + (f" ({detail})" if detail else "")
            raise ApiFailure(code, failure, message=message, http_status=response.status_code)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise ApiFailure(NfcResultCode.INNER_EXCEPTION, f"{path}: not a JSON object")
        return answer


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return ""
    return str(detail) if detail else ""
