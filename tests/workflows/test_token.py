"""The token's entity workflow on the time-skipping server: activation notice, credentials counted by
ATC (duplicated and reordered tap reports counted once), automatic and manual replenishment, and
token management (lock, unlock, delete) through the Ant server, surviving continue-as-new."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from alipayplus.nfc import AccountSource
from tests.conftest import save_history
from wallet.nfc_proxy import SdkAnswer, SdkCall
from workflows.token import (
    REPLENISH_BACKOFF,
    Credential,
    TapReport,
    TokenActivated,
    TokenLifecycle,
    TokenRefusal,
    TokenStart,
    TokenState,
    TokenWorkflow,
)

CUSTOMER = "2160220037535021"
NOTICE = TokenActivated(
    customer_id=CUSTOMER,
    wallet_id="216",
    token_requestor_id="50110030273",
    account_source=AccountSource.ACCOUNT_ADDED_MANUALLY,
    service_request_time=datetime(2026, 11, 22, 4, 1, 1, tzinfo=UTC),
    token_activated_time=datetime(2026, 11, 22, 4, 1, 27, tzinfo=UTC),
)
TAPPED = datetime(2026, 11, 22, 5, 0, tzinfo=UTC)


def credentials(atcs: range) -> list[Credential]:
    return [Credential(atc=atc, single_use_key="00" * 16) for atc in atcs]


@dataclass
class AntReplenish:
    """The Ant server through the proxy: replenish gives ``count`` new credentials after the last ATC;
    lockToken/unlockToken/deleteToken answer SUCCESS unless listed in ``refuse`` (then SYSTEM_ERROR)."""

    fail: bool = False  # a non-retryable failure
    unreachable: bool = False  # a retryable one (e.g. a timeout)
    refuse: set[str] = field(default_factory=set)
    calls: list[dict[str, object]] = field(default_factory=list)
    next_atc: int = 11

    @activity.defn(name="sdk_request")
    async def sdk_request(self, call: SdkCall) -> SdkAnswer:
        payload = json.loads(call.sdk_request_data)
        self.calls.append({"api": call.api, "customer": call.customer_id, **payload})
        if self.fail:
            raise ApplicationError("Ant unreachable", non_retryable=True)
        if self.unreachable:
            raise ConnectionError("Ant did not answer")
        header = json.loads(call.sdk_request_header) | {
            "code": "SYSTEM_ERROR" if call.api in self.refuse else "SUCCESS"
        }
        if call.api != "replenish":
            return SdkAnswer(sdk_response_header=json.dumps(header), sdk_response_data="{}")
        count = int(payload["count"])
        fresh = [{"atc": atc, "singleUseKey": "11" * 16} for atc in range(self.next_atc, self.next_atc + count)]
        self.next_atc += count
        return SdkAnswer(sdk_response_header=json.dumps(header), sdk_response_data=json.dumps({"credentials": fresh}))

    def apis(self) -> list[object]:
        return [call["api"] for call in self.calls]


@pytest.fixture
async def ant(client: Client) -> AsyncIterator[tuple[AntReplenish, str]]:
    fake = AntReplenish()
    task_queue = f"token-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=task_queue, workflows=[TokenWorkflow], activities=[fake.sdk_request]):
        yield fake, task_queue


async def activated(
    client: Client, task_queue: str, stored: range, history_limit: int | None = None
) -> WorkflowHandle[TokenWorkflow, None]:
    reference = f"DAPLMC{uuid.uuid4().hex[:26]}"
    handle = await client.start_workflow(
        TokenWorkflow.run,
        TokenStart(token_reference_id=reference, history_limit=history_limit),
        id=f"token/{reference}",
        task_queue=task_queue,
        start_signal="activation_notified",
        start_signal_args=[NOTICE],
    )
    await handle.signal(TokenWorkflow.credentials_stored, credentials(stored))
    return handle


async def until(handle: WorkflowHandle[TokenWorkflow, None], done: Callable[[TokenState], bool]) -> TokenState:
    """Query until ``done`` (10 s at most). A query that meets a continue-as-new on the time-skipping
    server can hang until its deadline, so each has a short one (timing out as CANCELLED) and is asked again."""
    deadline = asyncio.get_running_loop().time() + 10
    state: TokenState | None = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            state = await handle.query(TokenWorkflow.state, rpc_timeout=timedelta(seconds=1))
        except RPCError as exc:
            if exc.status not in (RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.NOT_FOUND):
                raise
            continue
        if done(state):
            return state
        await asyncio.sleep(0.02)
    raise AssertionError(f"never reached: {state}")


async def test_the_activation_notice_starts_the_token_and_a_repeat_changes_nothing(
    client: Client, ant: tuple[AntReplenish, str]
) -> None:
    _, task_queue = ant
    handle = await activated(client, task_queue, range(1, 21))
    later = NOTICE.model_copy(update={"token_activated_time": datetime(2026, 11, 23, tzinfo=UTC)})
    await handle.signal(TokenWorkflow.activation_notified, later)

    state = await until(handle, lambda s: s.activation_notices == 2)

    assert state.lifecycle is TokenLifecycle.ACTIVE and state.customer_id == CUSTOMER
    assert state.activated_at == NOTICE.token_activated_time  # the first notice counts
    await save_history(handle, "token_activated")
    await handle.terminate("test over")  # an entity workflow runs until terminated


async def test_the_notice_names_the_owner_even_when_a_phone_report_started_the_token(
    client: Client, ant: tuple[AntReplenish, str]
) -> None:
    _, task_queue = ant
    reference = f"DAPLMC{uuid.uuid4().hex[:26]}"
    handle = await client.start_workflow(  # a report came first, from whoever claimed to hold the token
        TokenWorkflow.run,
        TokenStart(token_reference_id=reference, customer_id="2160220099999999"),
        id=f"token/{reference}",
        task_queue=task_queue,
    )
    await handle.signal(TokenWorkflow.activation_notified, NOTICE)

    state = await until(handle, lambda s: s.activation_notices == 1)

    assert state.customer_id == CUSTOMER  # Alipay+'s word, not the first caller's
    await handle.terminate("test over")


async def test_duplicated_and_reordered_tap_reports_count_each_credential_once(
    client: Client, ant: tuple[AntReplenish, str]
) -> None:
    fake, task_queue = ant
    handle = await activated(client, task_queue, range(1, 31))

    for atc in (3, 1, 3, 2, 1, 5, 2):  # a retried report, a late one, a duplicate
        await handle.signal(TokenWorkflow.tap_reported, TapReport(atc=atc, tapped_at=TAPPED))
    state = await until(handle, lambda s: s.taps == 4)

    assert state.used_atcs == [1, 2, 3, 5] and state.credentials_left == 26
    assert fake.calls == []  # 26 left: no replenish
    await handle.terminate("test over")


async def test_fewer_than_ten_left_replenishes_through_the_proxy(client: Client, ant: tuple[AntReplenish, str]) -> None:
    fake, task_queue = ant
    handle = await activated(client, task_queue, range(1, 11))

    await handle.signal(TokenWorkflow.tap_reported, TapReport(atc=1, tapped_at=TAPPED))  # 9 left
    fetched = await until(handle, lambda s: s.replenishments == 1)
    await handle.signal(TokenWorkflow.credentials_stored, fetched.undelivered)  # the phone collects them
    stored = await until(handle, lambda s: not s.undelivered)

    assert [c.atc for c in fetched.undelivered] == list(range(11, 21))
    assert fake.calls == [
        {"api": "replenish", "customer": CUSTOMER, "tokenReferenceId": fetched.token_reference_id, "count": 10}
    ]
    assert stored.credentials_left == 19 and stored.replenishments == 1
    await save_history(handle, "token_replenished")
    await handle.terminate("test over")


async def test_a_failed_replenish_is_tried_again_after_a_back_off_and_the_phone_can_ask_at_once(
    env: WorkflowEnvironment, client: Client, ant: tuple[AntReplenish, str]
) -> None:
    fake, task_queue = ant
    fake.fail = True
    handle = await activated(client, task_queue, range(1, 6))  # 5 left: below the threshold at once

    first = await until(handle, lambda s: s.replenish_failures == 1)
    assert first.replenish_again_at is not None and len(fake.calls) == 1  # waits, does not hammer Ant
    await env.sleep(timedelta(minutes=2))  # past the first back-off (1 minute)
    second = await until(handle, lambda s: s.replenish_failures == 2)
    assert second.replenish_again_at is not None and second.replenish_again_at > first.replenish_again_at
    fake.fail = False
    asked = await handle.execute_update(TokenWorkflow.replenish)  # the phone need not wait for the back-off

    assert asked.replenishments == 1 and asked.replenish_failures == 0 and len(asked.undelivered) == 10
    assert asked.replenish_again_at is None
    await save_history(handle, "token_replenish_backoff")
    await handle.terminate("test over")


async def test_automatic_replenishment_recovers_after_the_ant_server_comes_back(
    env: WorkflowEnvironment, client: Client, ant: tuple[AntReplenish, str]
) -> None:
    fake, task_queue = ant
    fake.fail = True
    handle = await activated(client, task_queue, range(1, 6))
    waits = [*REPLENISH_BACKOFF, REPLENISH_BACKOFF[-1]]  # 1 min, 5 min, 30 min, then hourly: never for good
    for failures, wait in enumerate(waits, start=1):
        failed = await until(handle, lambda s, failures=failures: s.replenish_failures == failures)
        if failures == len(waits):
            fake.fail = False  # the Ant server is back before the next try
        assert len(fake.calls) == failures
        await env.sleep(wait + timedelta(seconds=1))

    recovered = await until(handle, lambda s: s.replenishments == 1)
    assert failed.replenish_again_at is not None and len(fake.calls) == len(waits) + 1
    assert recovered.replenish_failures == 0 and len(recovered.undelivered) == 10
    await handle.terminate("test over")


async def test_a_token_locked_during_the_back_off_waits_quietly_and_replenishes_once_unlocked(
    env: WorkflowEnvironment, client: Client, ant: tuple[AntReplenish, str]
) -> None:
    fake, task_queue = ant
    fake.fail = True
    handle = await activated(client, task_queue, range(1, 6))
    await until(handle, lambda s: s.replenish_failures == 1)
    fake.fail = False
    await handle.execute_update(TokenWorkflow.lock)
    await env.sleep(timedelta(minutes=10))  # the back-off passes while the token is locked: no replenish

    locked = await until(handle, lambda s: s.lifecycle is TokenLifecycle.LOCKED)
    assert locked.replenishments == 0 and fake.apis() == ["replenish", "lockToken"]
    await handle.execute_update(TokenWorkflow.unlock)
    unlocked = await until(handle, lambda s: s.replenishments == 1)
    assert fake.apis() == ["replenish", "lockToken", "unlockToken", "replenish"]
    assert unlocked.replenish_failures == 0 and unlocked.replenish_again_at is None
    await handle.terminate("test over")


# --- token management: lock, unlock, delete ------------------------------------------------------


async def test_lock_and_unlock_go_to_the_ant_server_first_and_repeats_change_nothing(
    client: Client, ant: tuple[AntReplenish, str]
) -> None:
    fake, task_queue = ant
    handle = await activated(client, task_queue, range(1, 21))

    locked = await handle.execute_update(TokenWorkflow.lock)
    again = await handle.execute_update(TokenWorkflow.lock)
    unlocked = await handle.execute_update(TokenWorkflow.unlock)
    unlocked_again = await handle.execute_update(TokenWorkflow.unlock)

    assert locked.lifecycle is TokenLifecycle.LOCKED and again.lifecycle is TokenLifecycle.LOCKED
    assert unlocked.lifecycle is unlocked_again.lifecycle is TokenLifecycle.ACTIVE
    assert fake.calls == [
        {"api": "lockToken", "customer": CUSTOMER, "tokenReferenceId": locked.token_reference_id},
        {"api": "unlockToken", "customer": CUSTOMER, "tokenReferenceId": locked.token_reference_id},
    ]
    await save_history(handle, "token_locked")
    await handle.terminate("test over")


@pytest.mark.parametrize("how", ["refused", "unreachable"])
@pytest.mark.parametrize("api", ["lockToken", "deleteToken"])
async def test_a_failed_ant_call_leaves_the_token_as_it_was(
    client: Client, ant: tuple[AntReplenish, str], api: str, how: str
) -> None:
    fake, task_queue = ant
    handle = await activated(client, task_queue, range(1, 21))
    fake.refuse, fake.unreachable = ({api}, False) if how == "refused" else (set(), True)
    update = TokenWorkflow.lock if api == "lockToken" else TokenWorkflow.delete

    with pytest.raises(WorkflowUpdateFailedError) as failed:
        await handle.execute_update(update)
    state = await handle.query(TokenWorkflow.state)

    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == TokenRefusal.ANT_FAILED
    assert api in cause.message
    assert state.lifecycle is TokenLifecycle.ACTIVE and state.credentials_left == 20
    assert fake.apis() == [api] * (1 if how == "refused" else 3)  # unreachable: retried, then failed
    fake.refuse, fake.unreachable = set(), False
    assert (await handle.execute_update(update)).lifecycle is not TokenLifecycle.ACTIVE  # works once Ant does
    if api == "lockToken":
        await handle.terminate("test over")


async def test_a_locked_token_counts_its_taps_but_is_not_replenished_until_unlocked(
    client: Client, ant: tuple[AntReplenish, str]
) -> None:
    fake, task_queue = ant
    handle = await activated(client, task_queue, range(1, 11))  # 10 left: at the threshold
    await handle.execute_update(TokenWorkflow.lock)

    for atc in (2, 1, 3, 2):  # taps from before the lock, reported late and twice
        await handle.signal(TokenWorkflow.tap_reported, TapReport(atc=atc, tapped_at=TAPPED))
    locked = await until(handle, lambda s: s.taps == 3)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(TokenWorkflow.replenish)
    await handle.execute_update(TokenWorkflow.unlock)
    unlocked = await until(handle, lambda s: s.replenishments == 1)

    assert locked.lifecycle is TokenLifecycle.LOCKED and locked.credentials_left == 7
    assert isinstance(refused.value.cause, ApplicationError) and refused.value.cause.type == TokenRefusal.LOCKED
    assert fake.apis() == ["lockToken", "unlockToken", "replenish"]  # nothing fetched while locked
    assert unlocked.lifecycle is TokenLifecycle.ACTIVE and len(unlocked.undelivered) == 10
    await handle.terminate("test over")


async def test_a_deleted_token_ends_its_workflow(client: Client, ant: tuple[AntReplenish, str]) -> None:
    fake, task_queue = ant
    handle = await activated(client, task_queue, range(1, 6))  # 5 left: replenished at once
    await until(handle, lambda s: s.replenishments == 1)
    await handle.execute_update(TokenWorkflow.lock)  # a locked token can be deleted (status 3)

    deleted = await handle.execute_update(TokenWorkflow.delete)
    await handle.result()  # ended, not continued
    final = await handle.query(TokenWorkflow.state)  # the closed workflow still answers

    assert deleted.lifecycle is final.lifecycle is TokenLifecycle.DELETED
    assert deleted.undelivered == []  # never to be collected
    assert fake.apis() == ["replenish", "lockToken", "deleteToken"]
    with pytest.raises(RPCError) as closed:
        await handle.execute_update(TokenWorkflow.unlock)
    assert closed.value.status is RPCStatusCode.NOT_FOUND  # what the API answers 410 for
    await save_history(handle, "token_deleted")


async def test_continue_as_new_keeps_the_lock_and_the_count(client: Client, ant: tuple[AntReplenish, str]) -> None:
    fake, task_queue = ant
    handle = await activated(client, task_queue, range(1, 31), history_limit=40)
    await handle.execute_update(TokenWorkflow.lock)

    for atc in range(1, 16):
        await handle.signal(TokenWorkflow.tap_reported, TapReport(atc=atc, tapped_at=TAPPED))
    state = await until(handle, lambda s: s.taps == 15)
    run = await handle.describe()
    unlocked = await handle.execute_update(TokenWorkflow.unlock)

    assert run.run_id != handle.first_execution_run_id  # continued as new at least once
    assert state.lifecycle is TokenLifecycle.LOCKED and state.credentials_left == 15
    assert unlocked.lifecycle is TokenLifecycle.ACTIVE and unlocked.activated_at == NOTICE.token_activated_time
    assert fake.apis() == ["lockToken", "unlockToken"]
    await handle.terminate("test over")
