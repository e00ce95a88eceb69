"""What the API keeps of the payment states it has seen: final ones answer pages without a query,
ones in process only stand in for a form's post, and the memory is bounded."""

from __future__ import annotations

import pytest

from alipayplus import ResultCode
from api.workflow_calls import _SeenStates
from wallet.states import PaymentStatus

from .test_page_words import state

pytestmark = pytest.mark.timeout(10)


def test_a_state_in_process_is_seen_but_not_final() -> None:
    seen = _SeenStates()
    waiting = state(PaymentStatus.PROCESSING, ResultCode.PAYMENT_IN_PROCESS)

    seen.keep("pay/1", waiting)

    assert seen.seen("pay/1") == waiting
    assert seen.final("pay/1") is None  # a page still asks the workflow


def test_a_final_state_is_never_replaced_by_an_older_answer() -> None:
    seen = _SeenStates()
    paid = state(PaymentStatus.SUCCESS, ResultCode.SUCCESS)

    seen.keep("pay/1", paid)
    seen.keep("pay/1", state(PaymentStatus.PROCESSING, ResultCode.PAYMENT_IN_PROCESS))  # a slow query's answer

    assert seen.final("pay/1") == paid and seen.seen("pay/1") == paid


def test_the_oldest_states_make_room() -> None:
    seen = _SeenStates(size=2)
    for number in range(3):
        seen.keep(f"pay/{number}", state(PaymentStatus.SUCCESS, ResultCode.SUCCESS))

    assert seen.seen("pay/0") is None
    assert seen.final("pay/1") is not None and seen.final("pay/2") is not None
