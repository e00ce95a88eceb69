"""The NFC SDK as the card and the token's manager: taps through ``process_apdu`` (the kernel-2 APDU
sequence a POS sends), the lock states (3 server, 4 local) declining taps, tap reports queued durably
and flushed, auto-replenish above the threshold, and delete only in statuses 1, 2 and 3 — against a
fake of our token API that counts credentials by ATC as the token workflow does."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from hce_device import tlv
from hce_device.card import PermitResult, TapResult, TransactionInfo, TransactionListener
from hce_device.nfc_sdk import AlipayPlusNfcSdk, NfcDevice, NfcResultCode, NfcSdkError, TokenStatus
from hce_device.secure_store import DeviceKeystore, SecureStore
from tests.hce_device.test_card import (
    NOW,
    SELECT_AID,
    SELECT_PPSE,
    cdol1_data,
    credentials,
    gen_ac,
    gpo,
    issuer_arqc,
    ok,
    profile,
    session_key,
)

pytestmark = pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")

API = "http://mpp.test"
SESSION = "session-1"
REF = "DAPLMC0000000000000000000000taps"
TOKEN_PATH = f"/app/v1/nfc/tokens/{REF}"
FINGERPRINT = "ab" * 32


@dataclass
class FakeTokenApi:
    """Our API's token endpoints over one token, counting as ``TokenWorkflow`` does: a credential is
    its ATC; issued minus used is what is left; replenished credentials wait until confirmed."""

    issued: set[int] = field(default_factory=set)
    used: set[int] = field(default_factory=set)
    undelivered: list[dict[str, Any]] = field(default_factory=list)
    lifecycle: str = "ACTIVE"
    next_atc: int = 100
    down: bool = False  # the network to our API is gone
    ant_fails: bool = False  # lock/unlock/delete: the Ant server refuses (our API answers 502)
    lose_answers: int = 0  # the next N requests are done, but their answers are lost (503)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("no route to host", request=request)
        body: Any = json.loads(request.content) if request.content else None
        self.requests.append((request.method, request.url.path, body))
        if request.headers.get("Authorization") != f"Bearer {SESSION}":
            return httpx.Response(401, json={"detail": "Sign in first."})
        response = self._answer(request.method, request.url.path.removeprefix(TOKEN_PATH), body)
        if self.lose_answers:
            self.lose_answers -= 1
            return httpx.Response(503, json={"detail": "gateway timeout"})
        return response

    def _answer(self, method: str, action: str, body: Any) -> httpx.Response:
        if self.lifecycle == "DELETED" and (method, action) != ("GET", ""):
            return httpx.Response(410, json={"detail": "The token was deleted."})
        if (method, action) == ("POST", "/taps"):
            self.used.add(body["atc"])
            self.issued.add(body["atc"])
            return httpx.Response(202, json={"accepted": True})
        if (method, action) == ("POST", "/credentials"):
            stored = {credential["atc"] for credential in body["credentials"]}
            self.issued |= stored
            self.undelivered = [c for c in self.undelivered if c["atc"] not in stored]
        elif (method, action) == ("POST", "/replenish"):
            if self.lifecycle == "LOCKED":
                return httpx.Response(409, json={"detail": "The token is locked."})
            if not self.undelivered:
                self.undelivered = self.fresh(10)
        elif method in ("POST", "DELETE") and action in ("/lock", "/unlock", ""):
            if self.ant_fails:
                return httpx.Response(502, json={"detail": "lockToken: the Ant server answered SYSTEM_ERROR"})
            self.lifecycle = {"/lock": "LOCKED", "/unlock": "ACTIVE", "": "DELETED"}[action]
        elif (method, action) != ("GET", ""):
            return httpx.Response(404)
        return httpx.Response(200, json=self.state())

    def fresh(self, count: int) -> list[dict[str, Any]]:
        """Replenished credentials whose keys the issuer (pyemv) knows."""
        first, self.next_atc = self.next_atc, self.next_atc + count
        return credentials(*range(first, self.next_atc))

    @property
    def credentials_left(self) -> int:
        return len(self.issued - self.used)

    def state(self) -> dict[str, Any]:
        return {
            "tokenReferenceId": REF,
            "lifecycle": self.lifecycle,
            "issuedAtcs": sorted(self.issued),
            "usedAtcs": sorted(self.used),
            "undelivered": self.undelivered,
        }

    def calls(self, method: str, action: str) -> list[Any]:
        return [body for m, path, body in self.requests if m == method and path == TOKEN_PATH + action]


class Recorder(TransactionListener):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_transaction_started(self) -> None:
        self.events.append(("started",))

    def on_transaction_finished(self, result: TapResult, atc: int, custom_data: bytes | None) -> None:
        self.events.append(("finished", atc, custom_data))

    def on_transaction_failed(self, code: str) -> None:
        self.events.append(("failed", code))

    def failures(self) -> list[str]:
        return [event[1] for event in self.events if event[0] == "failed"]


@dataclass
class Phone:
    sdk: AlipayPlusNfcSdk
    api: FakeTokenApi
    store: SecureStore
    device: NfcDevice
    listener: Recorder

    def unused(self) -> int:
        return sum(1 for c in (self.store.get("credentials") or {})["credentials"] if not c.get("used"))


def make_phone(
    api: FakeTokenApi | None = None,
    atcs: range = range(1, 13),
    *,
    store: SecureStore | None = None,
    stored: bool = True,
    **options: Any,
) -> Phone:
    """An activated phone (token, card profile, credentials as activation leaves them) on ``api``."""
    api = api or FakeTokenApi(issued=set(atcs))
    store = store or SecureStore(DeviceKeystore())
    if stored:
        store.put("token", {"tokenReferenceId": REF, "cardProfile": profile(), "active": True})
        store.put("credentials", {"credentials": credentials(*atcs)})
    device = NfcDevice()
    sdk = AlipayPlusNfcSdk(
        API,
        device=device,
        fingerprint_service=None,
        store=store,
        transport=httpx.MockTransport(api),
        clock=lambda: NOW,
        **options,
    )
    sdk.init()
    sdk.connect(SESSION)
    listener = Recorder()
    sdk.set_transaction_listener(listener)
    return Phone(sdk, api, store, device, listener)


def pos_tap(sdk: AlipayPlusNfcSdk, amount: int = 1500, un: str = "1A2B3C4D") -> bytes:
    """What a POS sends, through ``sdk.process_apdu`` only: SELECT PPSE, SELECT AID, GPO, the AFL's
    records, GENERATE AC (ARQC requested). The GENERATE AC response, SW included."""
    ok(sdk.process_apdu(SELECT_PPSE))
    ok(sdk.process_apdu(SELECT_AID))
    afl = tlv.flatten(ok(sdk.process_apdu(gpo())))["94"]
    for offset in range(0, len(afl), 4):
        sfi, first, last = afl[offset] >> 3, afl[offset + 1], afl[offset + 2]
        for record in range(first, last + 1):
            ok(sdk.process_apdu(bytes([0x00, 0xB2, record, (sfi << 3) | 4, 0x00])))
    return sdk.process_apdu(gen_ac(cdol1_data(amount, un)))


def atc_of(response: bytes) -> int:
    return int.from_bytes(tlv.flatten(ok(response))["9F36"], "big")


# --- taps through process_apdu ---------------------------------------------------------------------


async def test_a_tap_is_an_arqc_the_issuer_verifies_and_its_report_reaches_our_api() -> None:
    phone = make_phone()
    phone.sdk.set_custom_data(b"ORDER-0001")

    response = pos_tap(phone.sdk)
    queued = phone.sdk.pending_tap_reports()
    waiting = await phone.sdk.report_taps()

    fields = tlv.flatten(ok(response))
    assert fields["9F27"] == b"\x80" and atc_of(response) == 1
    assert fields["9F26"] == issuer_arqc(response, 1500, "1A2B3C4D", bytes.fromhex("1A80"))
    assert fields["9F10"][18:] == b"ORDER-0001"
    assert queued == [
        {"tokenReferenceId": REF, "atc": 1, "customData": b"ORDER-0001".hex(), "tappedAt": NOW.isoformat()}
    ]
    assert waiting == 0 and phone.sdk.pending_tap_reports() == []
    assert phone.api.calls("POST", "/taps") == [
        {"atc": 1, "customData": b"ORDER-0001".hex(), "tappedAt": NOW.isoformat()}
    ]
    assert phone.listener.events == [("started",), ("finished", 1, b"ORDER-0001")]
    assert phone.api.credentials_left == phone.unused() == 11


async def test_the_apps_permit_and_cdcvm_apply_to_sdk_taps() -> None:
    class Decline:
        def is_allowed(self, auth_before: bool, info: TransactionInfo) -> PermitResult:
            return PermitResult.DECLINE

    phone = make_phone(cvm_limit=5000)
    phone.sdk.set_transaction_permit(Decline())
    declined = pos_tap(phone.sdk)
    phone.sdk.set_transaction_permit(None)
    needs_cdcvm = pos_tap(phone.sdk, amount=9000)
    phone.sdk.verify_consumer()
    verified = pos_tap(phone.sdk, amount=9000)
    await phone.sdk.report_taps()

    assert tlv.flatten(ok(declined))["9F27"] == b"\x00" and tlv.flatten(ok(needs_cdcvm))["9F27"] == b"\x00"
    assert tlv.flatten(ok(verified))["9F27"] == b"\x80" and atc_of(verified) == 1  # declines burn nothing
    assert phone.listener.failures() == ["APP_DECLINE", "10003"]
    assert phone.api.used == {1}


async def test_without_a_card_select_answers_6a82_and_the_listener_hears_10009() -> None:
    phone = make_phone(stored=False)
    assert phone.sdk.is_payment_available() == TokenStatus.NO_CARD
    assert phone.sdk.process_apdu(SELECT_PPSE) == b"\x6a\x82"
    assert phone.sdk.process_apdu(gpo()) == b"\x69\x85"
    assert phone.listener.failures() == ["10009"]
    with pytest.raises(NfcSdkError) as raised:
        phone.sdk.set_custom_data(b"x")
    assert raised.value.code is NfcResultCode.TOKEN_DOES_NOT_EXIST


async def test_a_card_without_credentials_declines_with_10007() -> None:
    phone = make_phone(atcs=range(1, 2))
    assert atc_of(pos_tap(phone.sdk)) == 1
    phone.device.online = False  # no replenishment now
    assert phone.sdk.is_payment_available() == TokenStatus.NO_CREDENTIALS

    assert pos_tap(phone.sdk) == b"\x69\x85"
    assert phone.listener.failures() == ["10007"]


async def test_a_disconnected_sdk_declines_taps() -> None:
    phone = make_phone()
    phone.sdk.disconnect()
    assert pos_tap(phone.sdk) == b"\x69\x85"
    assert phone.listener.failures() == ["10006"] and phone.unused() == 12


# --- lock, unlock, local lock ----------------------------------------------------------------------


async def test_lock_needs_our_server_then_taps_decline_with_10008_until_unlock() -> None:
    phone = make_phone()

    locked = await phone.sdk.lock()
    declined = pos_tap(phone.sdk)
    unlocked = await phone.sdk.unlock()
    paid = pos_tap(phone.sdk)

    assert (locked.code, locked.status) == (NfcResultCode.SUCCESS, TokenStatus.LOCKED)
    assert declined == b"\x69\x85" and phone.listener.failures() == ["10008"]
    assert (unlocked.code, unlocked.status) == (NfcResultCode.SUCCESS, TokenStatus.PAYMENT_ALLOWED)
    assert atc_of(paid) == 1  # the declined tap used no credential
    assert [m for m, path, _ in phone.api.requests if path.endswith(("/lock", "/unlock"))] == ["POST", "POST"]


@pytest.mark.parametrize("failure", ["offline", "api down", "ant fails"])
async def test_lock_without_our_server_changes_nothing(failure: str) -> None:
    phone = make_phone()
    phone.device.online = failure != "offline"
    phone.api.down = failure == "api down"
    phone.api.ant_fails = failure == "ant fails"

    result = await phone.sdk.lock()

    assert (result.code, result.status) == (NfcResultCode.NETWORK_EXCEPTION, TokenStatus.PAYMENT_ALLOWED)
    assert result.failure and not result.ok
    assert phone.api.lifecycle == "ACTIVE" and atc_of(pos_tap(phone.sdk)) == 1


async def test_a_local_lock_needs_no_network_and_only_local_unlock_clears_it() -> None:
    phone = make_phone()
    phone.device.online = False

    locked = phone.sdk.lock_locally()
    declined = pos_tap(phone.sdk)
    unlock = await phone.sdk.unlock()  # the server's unlock cannot clear it (and needs the network)
    cleared = phone.sdk.local_unlock()

    assert (locked.code, locked.status) == (NfcResultCode.SUCCESS, TokenStatus.LOCKED_LOCALLY)
    assert declined == b"\x69\x85" and phone.listener.failures() == ["10008"]
    assert unlock.code is NfcResultCode.NETWORK_EXCEPTION and unlock.status == TokenStatus.LOCKED_LOCALLY
    assert (cleared.code, cleared.status) == (NfcResultCode.SUCCESS, TokenStatus.PAYMENT_ALLOWED)
    assert phone.api.requests == []


async def test_the_server_lock_shows_over_a_local_one_and_outlives_local_unlock() -> None:
    phone = make_phone()
    phone.sdk.lock_locally()
    assert (await phone.sdk.lock()).status == TokenStatus.LOCKED

    assert phone.sdk.local_unlock().status == TokenStatus.LOCKED
    assert (await phone.sdk.unlock()).status == TokenStatus.PAYMENT_ALLOWED


async def test_a_lock_our_server_learnt_elsewhere_reaches_the_phone() -> None:
    phone = make_phone(atcs=range(1, 11))
    phone.api.lifecycle = "LOCKED"  # e.g. the answer to our lock() was lost
    pos_tap(phone.sdk)  # 9 left: the phone asks our server

    await phone.sdk.report_taps()

    assert phone.sdk.is_payment_available() == TokenStatus.LOCKED
    assert phone.api.calls("POST", "/replenish") == []  # a locked token is not replenished


@pytest.mark.parametrize("call", ["lock", "unlock", "lock_locally", "local_unlock"])
async def test_lock_calls_need_a_card(call: str) -> None:
    phone = make_phone(stored=False)
    outcome = getattr(phone.sdk, call)()
    result = await outcome if asyncio.iscoroutine(outcome) else outcome
    assert (result.code, result.status) == (NfcResultCode.TOKEN_DOES_NOT_EXIST, TokenStatus.NO_CARD)
    assert phone.api.requests == []


# --- tap reports ---------------------------------------------------------------------------------


async def test_reports_wait_in_the_secure_store_while_our_api_is_down_then_go_once(tmp_path: Path) -> None:
    keystore = DeviceKeystore(tmp_path / "device.key")
    phone = make_phone(store=SecureStore(keystore, tmp_path / "records"))
    phone.api.down = True
    for _ in range(3):
        pos_tap(phone.sdk)
    assert await phone.sdk.report_taps() == 3
    await phone.sdk.aclose()

    # the app restarts: the queued reports are still there, sealed at rest
    restarted = make_phone(phone.api, store=SecureStore(keystore, tmp_path / "records"), stored=False)
    assert [r["atc"] for r in restarted.sdk.pending_tap_reports()] == [1, 2, 3]
    assert b'"atc"' not in (tmp_path / "records" / "taps.sealed").read_bytes()
    restarted.api.down = False
    restarted.api.lose_answers = 1  # the first report arrives, its answer does not: kept, sent again

    assert await restarted.sdk.report_taps() == 3
    assert await restarted.sdk.report_taps() == 0
    sent = [body["atc"] for body in restarted.api.calls("POST", "/taps")]
    assert sent == [1, 1, 2, 3]
    assert restarted.api.used == {1, 2, 3}
    assert restarted.api.credentials_left == restarted.unused() == 19  # 9 left: replenished


async def test_a_tap_inside_an_event_loop_is_reported_in_the_background() -> None:
    phone = make_phone()
    pos_tap(phone.sdk)
    for _ in range(50):
        if phone.api.used:
            break
        await asyncio.sleep(0)

    assert phone.api.used == {1} and phone.sdk.pending_tap_reports() == []
    assert await phone.sdk.report_taps() == 0 and len(phone.api.calls("POST", "/taps")) == 1


async def test_a_tap_without_an_event_loop_waits_for_report_taps() -> None:
    phone = make_phone()

    def tap_in_a_thread() -> None:  # HostApduService's thread: no loop there
        pos_tap(phone.sdk)

    await asyncio.to_thread(tap_in_a_thread)
    assert [r["atc"] for r in phone.sdk.pending_tap_reports()] == [1] and phone.api.used == set()
    assert await phone.sdk.report_taps() == 0 and phone.api.used == {1}


# --- auto-replenish and manual replenish ---------------------------------------------------------


async def test_auto_replenish_keeps_the_phone_at_the_threshold_and_agrees_with_the_server() -> None:
    phone = make_phone(atcs=range(1, 13))  # 12 credentials, threshold 10
    lefts = []
    for _ in range(5):
        pos_tap(phone.sdk)
        await phone.sdk.report_taps()
        lefts.append((phone.unused(), phone.api.credentials_left))

    assert lefts == [(11, 11), (10, 10), (19, 19), (18, 18), (17, 17)]  # below 10: ten more, once
    assert len(phone.api.calls("POST", "/replenish")) == 1
    assert [c["atc"] for c in phone.api.calls("POST", "/credentials")[0]["credentials"]] == list(range(100, 110))
    assert phone.api.undelivered == []
    # the replenished credentials pay, and the issuer verifies them
    for _ in range(7):  # ATC 6 to 12 first
        pos_tap(phone.sdk)
    response = pos_tap(phone.sdk, un="0BADCAFE")
    assert atc_of(response) == 100
    assert tlv.flatten(ok(response))["9F26"] == issuer_arqc(response, 1500, "0BADCAFE", bytes.fromhex("1A80"))


async def test_credentials_our_server_already_holds_are_collected_without_a_new_replenish() -> None:
    phone = make_phone(atcs=range(1, 11), replenish_below=5)
    phone.api.undelivered = phone.api.fresh(10)  # our server replenished on its own
    for _ in range(6):
        pos_tap(phone.sdk)

    await phone.sdk.report_taps()

    assert phone.api.calls("POST", "/replenish") == [] and phone.api.undelivered == []
    assert phone.unused() == phone.api.credentials_left == 14


async def test_manual_replenish_turns_status_1_into_2() -> None:
    phone = make_phone(atcs=range(1, 3))
    phone.device.online = False
    pos_tap(phone.sdk)
    pos_tap(phone.sdk)
    assert phone.sdk.is_payment_available() == TokenStatus.NO_CREDENTIALS
    offline = await phone.sdk.replenish()
    phone.device.online = True

    result = await phone.sdk.replenish()

    assert offline.code is NfcResultCode.NETWORK_EXCEPTION and offline.status == TokenStatus.NO_CREDENTIALS
    assert (result.code, result.status) == (NfcResultCode.SUCCESS, TokenStatus.PAYMENT_ALLOWED)
    assert phone.api.used == {1, 2} and phone.unused() == phone.api.credentials_left == 10


async def test_replenish_of_a_locked_token_is_unavailable() -> None:
    phone = make_phone()
    await phone.sdk.lock()
    assert (await phone.sdk.replenish()).code is NfcResultCode.TOKEN_UNAVAILABLE
    phone.store.put("lock", {"local": True})  # the phone missed the server lock (say, restored from a backup)

    result = await phone.sdk.replenish()

    assert (result.code, result.status) == (NfcResultCode.TOKEN_UNAVAILABLE, TokenStatus.LOCKED)  # learnt
    assert phone.api.calls("POST", "/replenish") == []


# --- delete --------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [1, 2, 3])
async def test_delete_in_1_2_3_deletes_at_our_server_then_forgets_the_token(status: int) -> None:
    phone = make_phone(atcs=range(1, 2) if status == 1 else range(1, 13))
    if status == 1:
        pos_tap(phone.sdk)  # its report still waits
    if status == 3:
        await phone.sdk.lock()
    assert phone.sdk.is_payment_available() == status

    result = await phone.sdk.delete_token()

    assert (result.code, result.status) == (NfcResultCode.SUCCESS, TokenStatus.NO_CARD)
    assert phone.api.lifecycle == "DELETED" and phone.api.calls("DELETE", "") == [None]
    assert phone.api.used == ({1} if status == 1 else set())  # reported before the token went
    for record in ("token", "credentials", "lock", "taps"):
        assert phone.store.get(record) is None
    assert phone.sdk.process_apdu(SELECT_PPSE) == b"\x6a\x82"


@pytest.mark.parametrize(
    ("prepare", "code"),
    [
        ("no card", NfcResultCode.TOKEN_DOES_NOT_EXIST),
        ("locked locally", NfcResultCode.TOKEN_UNAVAILABLE),
        ("in activation", NfcResultCode.ACTIVATION_IN_PROGRESS),
        ("awaiting confirmation", NfcResultCode.ACTIVATION_IN_PROGRESS),
        ("disconnected", NfcResultCode.SDK_NOT_CONNECTED),
    ],
)
async def test_delete_is_refused_in_other_statuses(prepare: str, code: NfcResultCode) -> None:
    phone = make_phone(stored=prepare != "no card")
    if prepare == "locked locally":
        phone.sdk.lock_locally()
    elif prepare in ("in activation", "awaiting confirmation"):
        phase = "RUNNING" if prepare == "in activation" else "WAITING_FOR_CONFIRMATION"
        phone.store.put("activation", {"phase": phase, "statusCode": 11})
    elif prepare == "disconnected":
        phone.sdk.disconnect()
    before = phone.sdk.is_payment_available()

    result = await phone.sdk.delete_token()

    assert before not in (1, 2, 3)
    assert (result.code, result.status) == (code, before)
    assert phone.api.requests == []


async def test_delete_waits_for_undelivered_tap_reports_and_keeps_the_token() -> None:
    phone = make_phone()
    phone.api.down = True
    pos_tap(phone.sdk)

    result = await phone.sdk.delete_token()

    assert result.code is NfcResultCode.NETWORK_EXCEPTION and result.status == TokenStatus.PAYMENT_ALLOWED
    assert phone.api.lifecycle == "ACTIVE" and len(phone.sdk.pending_tap_reports()) == 1
    phone.api.down = False
    assert (await phone.sdk.delete_token()).ok and phone.api.used == {1}


async def test_a_token_deleted_at_our_server_is_forgotten_by_the_phone() -> None:
    phone = make_phone(atcs=range(1, 11))
    phone.api.lifecycle = "DELETED"  # e.g. the user reported the phone lost
    pos_tap(phone.sdk)

    assert await phone.sdk.report_taps() == 0  # a deleted token's report can never count: dropped
    assert phone.sdk.is_payment_available() == TokenStatus.NO_CARD


async def test_credentials_expire_for_the_count_as_for_the_card() -> None:
    phone = make_phone(atcs=range(1, 2))
    phone.store.put("credentials", {"credentials": [*credentials(1, expires=NOW - timedelta(seconds=1))]})
    assert phone.sdk.is_payment_available() == TokenStatus.NO_CREDENTIALS
    phone.store.put("credentials", {"credentials": [{"atc": 7, "singleUseKey": session_key(7).hex()}]})
    assert phone.sdk.is_payment_available() == TokenStatus.PAYMENT_ALLOWED  # no expiresAt: never expires
    assert atc_of(pos_tap(phone.sdk)) == 7
