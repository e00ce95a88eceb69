"""tokenActivationNotification (seed 002) over HTTP: signed, every field's rule, idempotent."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlmodel import Session
from temporalio.client import Client
from temporalio.service import RPCError

from alipayplus.nfc import TokenActivationNotificationRequest
from tests.api.conftest import result_of
from wallet.db import create_engine_for
from wallet.nfc_tokens import NfcTokens, TokenOwnerRecord
from wallet.records import TokenActivation
from wallet.settings import Settings
from workflows.token import TokenLifecycle, TokenWorkflow

from .conftest import AlipayPlusCaller

PATH = TokenActivationNotificationRequest.PATH
CUSTOMER = "2160220037535021"


def notification(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "tokenReferenceId": f"DAPLMC{uuid.uuid4().hex}",
        "customerId": CUSTOMER,
        "walletId": "216",
        "tokenRequestorId": "50110030273",
        "secureElementId": None,
        "accountSource": "ACCOUNT_ADDED_MANUALLY",
        "serviceRequestTime": "2026-11-22T12:01:01+08:00",
        "tokenActivatedTime": "2026-11-22T12:01:27+08:00",
        "tokenData": {"tokenPanSuffix": "4321", "tokenExpiry": "1130"},
    }
    for key, value in changes.items():
        if value is ...:
            body.pop(key)
        else:
            body[key] = value
    return body


def wire(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


async def test_an_activation_is_recorded_and_a_repeat_gets_the_same_answer(
    alipay: AlipayPlusCaller, settings: Settings
) -> None:
    body = notification()

    first = await alipay.call(PATH, wire(body))
    again = await alipay.call(PATH, wire(body))

    assert result_of(first) == result_of(again) == ("S", "SUCCESS")
    engine = create_engine_for(settings.database_url)
    with Session(engine) as session:
        stored = session.get(TokenActivation, body["tokenReferenceId"])
    engine.dispose()
    assert stored is not None and stored.customer_id == CUSTOMER
    assert stored.account_source == "ACCOUNT_ADDED_MANUALLY"
    assert json.loads(stored.token_data) == body["tokenData"]


async def test_the_activation_reaches_the_tokens_workflow_once(alipay: AlipayPlusCaller, client: Client) -> None:
    body = notification()
    await alipay.call(PATH, wire(body))
    await alipay.call(PATH, wire(body))  # Alipay+ delivers it again

    state = await client.get_workflow_handle_for(TokenWorkflow.run, f"token/{body['tokenReferenceId']}").query(
        TokenWorkflow.state
    )

    assert state.lifecycle is TokenLifecycle.ACTIVE and state.customer_id == CUSTOMER
    assert state.activation_notices == 2 and state.activated_at is not None
    assert state.activated_at == datetime(2026, 11, 22, 4, 1, 27, tzinfo=UTC)


async def test_a_conflicting_repeat_is_refused(alipay: AlipayPlusCaller) -> None:
    body = notification()
    await alipay.call(PATH, wire(body))

    changed = await alipay.call(PATH, wire({**body, "tokenActivatedTime": "2026-11-22T12:09:00+08:00"}))

    assert result_of(changed) == ("F", "PROCESS_FAIL") and "tokenReferenceId" in changed["result"]["resultMessage"]


async def test_an_unknown_customer_is_refused(alipay: AlipayPlusCaller) -> None:
    answer = await alipay.call(PATH, wire(notification(customerId="9999999999999999")))
    assert result_of(answer) == ("F", "PROCESS_FAIL") and "customerId" in answer["result"]["resultMessage"]


def recorded_owner(settings: Settings, reference: str, customer_id: str = CUSTOMER) -> None:
    """What our activation workflow records once queryToken approves the token."""
    engine = create_engine_for(settings.database_url)
    assert NfcTokens(engine).record_owner(TokenOwnerRecord(token_reference_id=reference, customer_id=customer_id))
    engine.dispose()


async def test_optional_fields_may_be_absent(alipay: AlipayPlusCaller, settings: Settings, client: Client) -> None:
    """Without customerId, the token is its activation's customer's (as our records have it)."""
    body = notification(customerId=..., walletId=..., tokenRequestorId=..., secureElementId=..., accountSource=...)
    recorded_owner(settings, body["tokenReferenceId"])
    assert result_of(await alipay.call(PATH, wire(body))) == ("S", "SUCCESS")
    state = await client.get_workflow_handle_for(TokenWorkflow.run, f"token/{body['tokenReferenceId']}").query(
        TokenWorkflow.state
    )
    assert state.customer_id == CUSTOMER


async def test_a_notification_without_customer_id_for_a_token_no_activation_knows_is_refused(
    alipay: AlipayPlusCaller, client: Client
) -> None:
    """The reproduction: such a token had no owner, and every signed-in user could read it, report
    taps on it and fetch its credentials. Now it is refused, and no token workflow starts."""
    body = notification(customerId=...)
    answer = await alipay.call(PATH, wire(body))
    assert result_of(answer) == ("F", "PARAM_ILLEGAL") and "customerId" in answer["result"]["resultMessage"]
    with pytest.raises(RPCError):
        await client.get_workflow_handle(f"token/{body['tokenReferenceId']}").describe()


async def test_a_notification_naming_another_customer_than_the_activation_is_refused(
    alipay: AlipayPlusCaller, settings: Settings
) -> None:
    body = notification(customerId="2160220037535031")  # the KRW user, not the activation's
    recorded_owner(settings, body["tokenReferenceId"])
    answer = await alipay.call(PATH, wire(body))
    assert result_of(answer) == ("F", "PARAM_ILLEGAL") and "customerId" in answer["result"]["resultMessage"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"tokenReferenceId": ...}, "tokenReferenceId"),
        ({"tokenReferenceId": "T" * 65}, "tokenReferenceId"),
        ({"customerId": "1" * 65}, "customerId"),
        ({"walletId": "W" * 17}, "walletId"),
        ({"tokenRequestorId": "5" * 17}, "tokenRequestorId"),
        ({"secureElementId": "S" * 129}, "secureElementId"),
        ({"accountSource": "ACCOUNT_FOUND_ON_THE_STREET"}, "accountSource"),
        ({"serviceRequestTime": ...}, "serviceRequestTime"),
        ({"serviceRequestTime": "22/11/2026 12:01"}, "serviceRequestTime"),
        ({"tokenActivatedTime": ...}, "tokenActivatedTime"),
        ({"tokenActivatedTime": "2026-11-22T12:01:27"}, "tokenActivatedTime"),  # no offset
        ({"tokenData": ...}, "tokenData"),
        ({"tokenData": "4321"}, "tokenData"),
    ],
    ids=[
        "tokenReferenceId missing",
        "tokenReferenceId over 64",
        "customerId over 64",
        "walletId over 16",
        "tokenRequestorId over 16",
        "secureElementId over 128",
        "accountSource unknown",
        "serviceRequestTime missing",
        "serviceRequestTime not ISO 8601",
        "tokenActivatedTime missing",
        "tokenActivatedTime without offset",
        "tokenData missing",
        "tokenData not an object",
    ],
)
async def test_each_invalid_field_is_param_illegal_naming_it(
    alipay: AlipayPlusCaller, settings: Settings, changes: dict[str, Any], field: str
) -> None:
    body = notification(**changes)

    answer = await alipay.call(PATH, wire(body))

    assert result_of(answer) == ("F", "PARAM_ILLEGAL") and answer["result"]["resultMessage"].startswith(field)
    if body.get("tokenReferenceId") and len(body["tokenReferenceId"]) <= 64:  # nothing half-recorded
        engine = create_engine_for(settings.database_url)
        with Session(engine) as session:
            assert session.get(TokenActivation, body["tokenReferenceId"]) is None
        engine.dispose()


async def test_a_tampered_notification_is_refused(alipay: AlipayPlusCaller) -> None:
    body = wire(notification())
    headers = alipay.peer.signer.headers(PATH, body)
    answer = await alipay.call(PATH, body.replace(b"4321", b"9999"), headers)
    assert result_of(answer) == ("F", "INVALID_SIGNATURE")
