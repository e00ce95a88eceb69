"""The token's entity workflow on the time-skipping server: started by its activation notice."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from temporalio.client import Client
from temporalio.worker import Worker

from alipayplus.nfc import AccountSource
from tests.conftest import save_history
from workers.settings import Settings
from workflows.token import TokenActivated, TokenLifecycle, TokenStart, TokenWorkflow

NOTICE = TokenActivated(
    customer_id="2160220037535021",
    wallet_id="216",
    token_requestor_id="50110030273",
    account_source=AccountSource.ACCOUNT_ADDED_MANUALLY,
    service_request_time=datetime(2026, 11, 22, 4, 1, 1, tzinfo=UTC),
    token_activated_time=datetime(2026, 11, 22, 4, 1, 27, tzinfo=UTC),
)


async def test_the_activation_notice_starts_the_token_and_a_repeat_changes_nothing(
    client: Client, settings: Settings, worker: Worker
) -> None:
    reference = f"DAPLMC{uuid.uuid4().hex[:26]}"
    handle = await client.start_workflow(
        TokenWorkflow.run,
        TokenStart(token_reference_id=reference),
        id=f"token/{reference}",
        task_queue=settings.temporal_task_queue,
        start_signal="activation_notified",
        start_signal_args=[NOTICE],
    )
    later = NOTICE.model_copy(update={"token_activated_time": datetime(2026, 11, 23, tzinfo=UTC)})
    await handle.signal(TokenWorkflow.activation_notified, later)

    state = await handle.query(TokenWorkflow.state)

    assert state.token_reference_id == reference and state.lifecycle is TokenLifecycle.ACTIVE
    assert state.activated_at == NOTICE.token_activated_time  # the first notice counts
    assert state.activation_notices == 2 and state.customer_id == NOTICE.customer_id
    await save_history(handle, "token_activated")
    await handle.terminate("test over")  # an entity workflow runs until terminated
