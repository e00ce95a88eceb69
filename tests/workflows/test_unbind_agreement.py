"""The user unbinds an agreement in the app, on the time-skipping server: the agreement and its every
token die and Alipay+ hears TOKEN_CANCELED; someone else's agreement, or one unbound already, is
NOT_FOUND with nothing changed; with consultUnbinding, the merchant's "no" is REFUSED with nothing
changed, and an Alipay+ that does not answer is asked again until it does.

The sandbox Alipay+ does not serve consultUnbinding, so those tests give the real
``AgreementActivities.consult_unbinding`` a scripted stand-in for the signed client (``ScriptedConsult``)
and run the workflow on a worker of their own whose only difference is that activity: for the refusal on
the package's server, for the retries and the give-up on a time-skipping server of their own, whose clock
no activity another test left running can hold while an hour of retries is skipped.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.agreements import AgreementActivities
from alipayplus import (
    AuthorizationNotifyType,
    ConsultUnbindingRequest,
    ConsultUnbindingResponse,
    Result,
    ResultCode,
    TransportError,
)
from sandbox.alipayplus.peer import SandboxAlipayPlus
from tests.conftest import new_user, real_activities, save_history, time_skipping_server
from wallet import workflow_ids
from wallet.agreements import Agreements, CancelledBy, UnbindOutcome, UnbindRequest
from wallet.deliveries import Delivery, DeliveryReport
from wallet.ledger import Ledger
from wallet.records import Agreement, AgreementStatus, OAuthToken
from wallet.settings import Settings
from workers.worker import build_worker
from workflows.auth_notify import AuthNotifyWorkflow
from workflows.unbind_agreement import UnbindAgreementWorkflow

from ._agreements import AUTH_CLIENT_ID, Bound, bind
from .conftest import Harness

UnbindHandle = WorkflowHandle[UnbindAgreementWorkflow, UnbindOutcome]
SILENCE = None  # a scripted consultUnbinding that gets no answer (a timeout, a 5xx)


# --- helpers -----------------------------------------------------------------------------


async def unbind(client: Client, task_queue: str, request: UnbindRequest) -> UnbindHandle:
    """The workflow the app's ``DELETE /app/v1/agreements/{id}`` starts."""
    return await client.start_workflow(
        UnbindAgreementWorkflow.run,
        request,
        id=workflow_ids.auto_debit_unbinding(request.agreement_id),
        task_queue=task_queue,
    )


def agreement_of(engine: Engine, agreement_id: str) -> Agreement:
    with Session(engine) as session:
        found = session.get(Agreement, agreement_id)
        assert found is not None
        session.expunge(found)
    return found


def pairs_of(engine: Engine, agreement_id: str) -> list[OAuthToken]:
    with Session(engine) as session:
        found = list(session.exec(select(OAuthToken).where(col(OAuthToken.agreement_id) == agreement_id)).all())
        for pair in found:
            session.expunge(pair)
    return found


def assert_untouched(engine: Engine, settings: Settings, bound: Bound) -> None:
    """Still bound, its token still pays."""
    assert agreement_of(engine, bound.agreement_id).status == AgreementStatus.ACTIVE
    assert all(pair.revoked_at is None for pair in pairs_of(engine, bound.agreement_id))
    owner = Agreements(engine, settings.secret_key).token_owner(bound.access_token)
    assert (owner.result_code, owner.customer_id) == (ResultCode.SUCCESS, bound.customer_id)


def cancellation_notice(client: Client, bound: Bound) -> WorkflowHandle[AuthNotifyWorkflow, DeliveryReport]:
    """The agreement's TOKEN_CANCELED delivery."""
    return client.get_workflow_handle_for(
        AuthNotifyWorkflow.run,
        workflow_ids.agreement_notification(bound.agreement_id, AuthorizationNotifyType.TOKEN_CANCELED),
    )


async def no_cancellation_notice(client: Client, alipayplus: SandboxAlipayPlus, bound: Bound) -> bool:
    """No TOKEN_CANCELED delivery was started, and Alipay+ heard nothing of this agreement."""
    try:
        await cancellation_notice(client, bound).describe()
    except RPCError:
        return not alipayplus.auth_notifications(bound.reference_agreement_id)
    return False


class ScriptedConsult:
    """Stands in for the ``SignedClient`` of ``AgreementActivities``: answers consultUnbinding as
    scripted (``True``/``False``: allowUnbinding; ``SILENCE``: no answer), the last answer for ever."""

    def __init__(self, *answers: bool | None) -> None:
        self._answers = deque(answers)
        self.requests: list[ConsultUnbindingRequest] = []

    async def call(self, path: str, request: ConsultUnbindingRequest, response_type: type[Any]) -> Any:
        assert path == ConsultUnbindingRequest.PATH and response_type is ConsultUnbindingResponse
        self.requests.append(request)
        answer = self._answers.popleft() if len(self._answers) > 1 else self._answers[0]
        if answer is SILENCE:
            raise TransportError(f"POST {path}: HTTP 503")
        return ConsultUnbindingResponse(result=Result.success(), allow_unbinding=answer)


def consulted_by(activities: list[Any], engine: Engine, settings: Settings, alipayplus: ScriptedConsult) -> list[Any]:
    """``activities`` with consultUnbinding answered by ``alipayplus``."""
    consult = AgreementActivities(Agreements(engine, settings.secret_key), alipayplus)  # type: ignore[arg-type]
    replaced = [found for found in activities if getattr(found, "__name__", "") != "consult_unbinding"]
    assert len(replaced) == len(activities) - 1
    return [*replaced, consult.consult_unbinding]


@asynccontextmanager
async def consulting_worker(
    client: Client, settings: Settings, activities: list[Any], engine: Engine, alipayplus: ScriptedConsult
) -> AsyncIterator[str]:
    """A worker on a task queue of its own, its consultUnbinding answered by ``alipayplus``; the
    TOKEN_CANCELED delivery still runs on the package's worker (``settings``' task queue)."""
    own = settings.model_copy(update={"temporal_task_queue": f"unbind-{uuid.uuid4().hex[:8]}"})
    async with build_worker(client, own, consulted_by(activities, engine, settings, alipayplus)):
        yield own.temporal_task_queue


@asynccontextmanager
async def consulting_server(
    settings: Settings, engine: Engine, peer: SandboxAlipayPlus, alipayplus: ScriptedConsult
) -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of its own, with a worker whose consultUnbinding is answered by
    ``alipayplus`` (TOKEN_CANCELED goes to the sandbox ``peer``). Skipping through retries needs a clock
    nothing else holds: on the package's server any activity another test left running stops it."""
    async with (
        time_skipping_server(settings) as env,
        real_activities(env.client, settings, peer) as activities,
        build_worker(env.client, settings, consulted_by(activities, engine, settings, alipayplus)),
    ):
        yield env


# --- unbound ------------------------------------------------------------------------------


async def test_unbinding_an_active_agreement_revokes_it_and_tells_alipayplus(harness: Harness) -> None:
    client, settings, engine = harness.client, harness.settings, harness.engine
    bound = harness.bound_user(balance=0)
    user = bound.customer_id
    assert_untouched(engine, settings, bound)

    handle = await unbind(
        client, settings.temporal_task_queue, UnbindRequest(agreement_id=bound.agreement_id, customer_id=user)
    )

    assert await handle.result() is UnbindOutcome.UNBOUND
    agreement = agreement_of(engine, bound.agreement_id)
    assert (agreement.status, agreement.cancelled_by) == (AgreementStatus.CANCELLED, CancelledBy.USER)
    assert agreement.cancelled_at is not None
    pairs = pairs_of(engine, bound.agreement_id)
    assert pairs and all(pair.revoked_at is not None for pair in pairs)
    agreements = Agreements(engine, settings.secret_key)
    assert agreements.token_owner(bound.access_token).result_code is ResultCode.INVALID_TOKEN
    assert agreements.of_customer(user) == []  # gone from the app's list
    notice = cancellation_notice(client, bound)
    assert notice.id == f"auth/{bound.agreement_id}/TOKEN_CANCELED"
    assert (await notice.result()).delivery is Delivery.ACKNOWLEDGED
    received = harness.alipayplus.auth_notifications(bound.reference_agreement_id)
    assert len(received) == 1
    body = received[0].body
    assert body["authorizationNotifyType"] == "TOKEN_CANCELED"
    assert (body["authClientId"], body["referenceAgreementId"], body["customerId"]) == (
        AUTH_CLIENT_ID,
        bound.reference_agreement_id,
        user,
    )
    assert "accessToken" not in body and "authCode" not in body  # a cancellation carries no credential
    await save_history(handle, "unbind_agreement")


async def test_another_users_agreement_is_not_found_and_nothing_changes(harness: Harness) -> None:
    client, settings, engine = harness.client, harness.settings, harness.engine
    owner, stranger = harness.new_user(balance=0), harness.new_user(balance=0)
    bound = harness.bind(owner)

    handle = await unbind(
        client, settings.temporal_task_queue, UnbindRequest(agreement_id=bound.agreement_id, customer_id=stranger)
    )

    assert await handle.result() is UnbindOutcome.NOT_FOUND
    assert_untouched(engine, settings, bound)
    assert await no_cancellation_notice(client, harness.alipayplus, bound)


async def test_an_unknown_agreement_is_not_found(client: Client, settings: Settings, worker: Worker) -> None:
    request = UnbindRequest(agreement_id=uuid.uuid4().hex, customer_id="2160220037535021")

    handle = await unbind(client, settings.temporal_task_queue, request)

    assert await handle.result() is UnbindOutcome.NOT_FOUND


async def test_unbinding_twice_the_second_is_not_found_and_tells_alipayplus_once(harness: Harness) -> None:
    client, settings, engine = harness.client, harness.settings, harness.engine
    bound = harness.bound_user(balance=0)
    request = UnbindRequest(agreement_id=bound.agreement_id, customer_id=bound.customer_id)

    first = await (await unbind(client, settings.temporal_task_queue, request)).result()
    cancelled_at = agreement_of(engine, bound.agreement_id).cancelled_at
    second = await (await unbind(client, settings.temporal_task_queue, request)).result()

    assert (first, second) == (UnbindOutcome.UNBOUND, UnbindOutcome.NOT_FOUND)
    assert agreement_of(engine, bound.agreement_id).cancelled_at == cancelled_at  # not revoked again
    notice = cancellation_notice(client, bound)
    assert (await notice.result()).delivery is Delivery.ACKNOWLEDGED
    assert len(harness.alipayplus.auth_notifications(bound.reference_agreement_id)) == 1


# --- consultUnbinding ----------------------------------------------------------------------


async def test_the_merchant_refusing_unbinding_is_refused_and_nothing_is_revoked(
    harness: Harness, activities: list[Any]
) -> None:
    client, settings, engine = harness.client, harness.settings, harness.engine
    bound = harness.bound_user(balance=0)
    consult = ScriptedConsult(False)

    async with consulting_worker(client, settings, activities, engine, consult) as task_queue:
        handle = await unbind(
            client,
            task_queue,
            UnbindRequest(agreement_id=bound.agreement_id, customer_id=bound.customer_id, consult=True),
        )
        outcome = await handle.result()

    assert outcome is UnbindOutcome.REFUSED
    assert len(consult.requests) == 1
    asked = consult.requests[0]
    assert (asked.auth_client_id, asked.reference_merchant_id, asked.access_token) == (
        AUTH_CLIENT_ID,
        AUTH_CLIENT_ID,
        bound.access_token,  # the agreement named by its live access token
    )
    assert_untouched(engine, settings, bound)
    assert await no_cancellation_notice(client, harness.alipayplus, bound)
    await save_history(handle, "unbind_agreement_refused")


@dataclass(frozen=True)
class ConsultedUnbinding:
    env: WorkflowEnvironment
    bound: Bound
    handle: UnbindHandle
    started: datetime  # the server's time just before the unbinding started


@asynccontextmanager
async def consulted_unbinding(
    settings: Settings, database: Ledger, engine: Engine, peer: SandboxAlipayPlus, alipayplus: ScriptedConsult
) -> AsyncIterator[ConsultedUnbinding]:
    """A fresh user's agreement, its unbinding with consultUnbinding started on a ``consulting_server``."""
    bound = bind(engine, settings, new_user(engine, database, balance=0))
    async with consulting_server(settings, engine, peer, alipayplus) as env:
        started = await env.get_current_time()
        handle = await unbind(
            env.client,
            settings.temporal_task_queue,
            UnbindRequest(agreement_id=bound.agreement_id, customer_id=bound.customer_id, consult=True),
        )
        yield ConsultedUnbinding(env, bound, handle, started)


@pytest.mark.parametrize("silences", [1, 4], ids=["one silence", "four silences"])
async def test_consult_unanswered_for_a_while_is_asked_again_until_allowed(
    settings: Settings, database: Ledger, engine: Engine, alipayplus: SandboxAlipayPlus, silences: int
) -> None:
    consult = ScriptedConsult(*[SILENCE] * silences, True)

    async with consulted_unbinding(settings, database, engine, alipayplus, consult) as unbinding:
        outcome = await unbinding.handle.result()
        elapsed = await unbinding.env.get_current_time() - unbinding.started
        delivered = (await cancellation_notice(unbinding.env.client, unbinding.bound).result()).delivery
    bound = unbinding.bound

    assert outcome is UnbindOutcome.UNBOUND
    assert len(consult.requests) == silences + 1
    assert len({request.access_token for request in consult.requests}) == 1  # every retry asks the same
    assert elapsed >= timedelta(seconds=2 * (2**silences - 1))  # 2 s, 4 s, 8 s, … between the attempts
    assert agreement_of(engine, bound.agreement_id).status == AgreementStatus.CANCELLED
    assert Agreements(engine, settings.secret_key).token_owner(bound.access_token).result_code is (
        ResultCode.INVALID_TOKEN
    )
    assert delivered is Delivery.ACKNOWLEDGED
    assert [n.body["authorizationNotifyType"] for n in alipayplus.auth_notifications(bound.reference_agreement_id)] == [
        "TOKEN_CANCELED"
    ]


async def test_consult_never_answered_gives_up_after_an_hour_with_nothing_changed(
    settings: Settings, database: Ledger, engine: Engine, alipayplus: SandboxAlipayPlus
) -> None:
    consult = ScriptedConsult(SILENCE)

    async with consulted_unbinding(settings, database, engine, alipayplus, consult) as unbinding:
        outcome = await unbinding.handle.result()  # an hour of retries, skipped
        elapsed = await unbinding.env.get_current_time() - unbinding.started
        with pytest.raises(RPCError):
            await cancellation_notice(
                unbinding.env.client, unbinding.bound
            ).describe()  # no TOKEN_CANCELED delivery started
    bound = unbinding.bound

    assert outcome is UnbindOutcome.UNANSWERED
    assert len(consult.requests) > 10
    assert elapsed >= timedelta(minutes=55)
    assert_untouched(engine, settings, bound)
    assert not alipayplus.auth_notifications(bound.reference_agreement_id)
