"""The NFC SDK's public vocabulary (result codes, token statuses, results, the app's SPIs) and the
names of its records in the secure store. ``nfc_sdk`` re-exports all of it; it lives here so that
the SDK's collaborators (``_nfc_http``, ``_nfc_records``, ``_nfc_activation``, ``_nfc_tokens``,
``_nfc_taps``) can share it without importing the facade that assembles them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Protocol

# the records this SDK keeps in the secure store
TOKEN, CREDENTIALS, ACTIVATION, LOCK = "token", "credentials", "activation", "lock"
TAPS = "taps"  # tap reports our API has not accepted yet
REPLENISH_BELOW = 10  # seed 001: replenish when fewer than 10 credentials remain


class NfcResultCode(IntEnum):
    """The SDK's result codes (spec §17)."""

    SUCCESS = 10000
    PROVISION_FAILED = 10001
    DEVICE_UNSAFE = 10002
    INNER_EXCEPTION = 10004
    NETWORK_EXCEPTION = 10005
    SDK_NOT_CONNECTED = 10006
    INSUFFICIENT_CREDENTIALS = 10007
    TOKEN_UNAVAILABLE = 10008  # e.g. locked
    TOKEN_DOES_NOT_EXIST = 10009
    ACTIVATION_IN_PROGRESS = 10010
    INVALID_INPUT_PARAMETERS = 10011
    PARAMS_ERROR = 10011  # seed 000's name for a bad parameter (e.g. a fingerprint that is not SHA-256)


class SettingsRequired(StrEnum):
    """What the SDK's NFC configuration page asks of the user before an activation can start."""

    TURN_ON_NFC = "TURN_ON_NFC"
    SET_DEFAULT_PAYMENT_APP = "SET_DEFAULT_PAYMENT_APP"


class PinProblem(StrEnum):
    """Why binding the card to this phone was not confirmed with the wallet PIN (the result's ``pin_problem``)."""

    CANCELLED = "CANCELLED"  # the user closed the PIN pad: nothing was sent
    WRONG = "WRONG"  # our API refused the PIN (401), or it is not 4 to 12 digits
    TOO_MANY_TRIES = "TOO_MANY_TRIES"  # 429: wait (Retry-After) or the account is locked
    NOT_SET = "NOT_SET"  # 403: the user has no wallet PIN yet


class NfcSdkError(RuntimeError):
    """An SDK call that cannot give an answer, with the SDK's result code (e.g. 10006)."""

    def __init__(self, code: NfcResultCode, message: str, http_status: int | None = None) -> None:
        super().__init__(f"{code.value} {code.name}: {message}")
        self.code = code
        self.http_status = http_status  # our API's answer, when it gave one


@dataclass
class NfcDevice:
    """The phone's NFC facts the configuration page checks (mutable: the user changes settings)."""

    nfc_enabled: bool = True
    default_payment_app: bool = True
    online: bool = True


class DeviceFingerPrintService(Protocol):
    """The app's SPI: a SHA-256 (64 hex) digest of a stable, app-scoped device identifier (§7.4)."""

    def get_device_fingerprint(self) -> str: ...


class PinPad(Protocol):
    """The app's SPI: asks the user for the wallet PIN that confirms binding the card to this phone.

    Returns the digits typed, or None when the user cancels. Awaited, as it waits for the user; the
    SDK asks at most once per apply or confirmation, sends the PIN in that request only, and keeps
    it nowhere."""

    async def request_wallet_pin(self) -> str | None: ...


class ActivateCardListener(Protocol):
    """Told the token status when an activation the user started ends (seed 000, step 3)."""

    def on_result(self, status: int, request_code: int) -> None: ...


@dataclass(frozen=True)
class ActivationProgress:
    """One tick of the progress bar: step i of n (the tokenization takes 20-30 s)."""

    step: int
    steps_total: int
    step_name: str
    status: int


ProgressCallback = Callable[[ActivationProgress], None]


@dataclass(frozen=True)
class ActivationResult:
    """How an activation call ended: the token status now, the SDK result code, and why not if not."""

    status: int
    code: NfcResultCode
    settings_required: SettingsRequired | None = None
    failure: str | None = None
    pin_problem: PinProblem | None = None  # the wallet PIN step-up did not pass: what the app shows next


@dataclass(frozen=True)
class TokenResult:
    """How a token call (lock, unlock, localUnlock, delete, replenish) ended: the SDK result code, the
    token status now, and why not if not (``ACResultCallback``'s result, errorCode and errorMsg)."""

    code: NfcResultCode
    status: int
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.code is NfcResultCode.SUCCESS
