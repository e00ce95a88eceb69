"""Issue 17: the ledger counts its postings (``mpp_postings``) and the money they move
(``mpp_posted_minor_units``), once per posting made: a replayed key, or a posting rolled back, moves
nothing and counts nothing."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from alipayplus import Amount
from wallet.ledger import InsufficientFunds, Ledger, PostingKind

pytestmark = pytest.mark.timeout(60)

CURRENCY = "XTS"  # ISO 4217's code for tests: no other test's postings count under it


def counted(kind: PostingKind) -> tuple[float, float]:
    """(postings, minor units) counted so far for ``kind`` in ``CURRENCY``."""
    labels = {"kind": kind.value, "currency": CURRENCY}
    postings = REGISTRY.get_sample_value("mpp_postings_total", labels) or 0.0
    amount = REGISTRY.get_sample_value("mpp_posted_minor_units_total", labels) or 0.0
    return postings, amount


def test_a_posting_counts_once_with_its_amount_in_minor_units(ledger: Ledger) -> None:
    account = ledger.open_user("metrics-payer", CURRENCY)
    top_ups, debits = counted(PostingKind.TOP_UP), counted(PostingKind.PAYMENT_DEBIT)

    ledger.fund_user("metrics/fund", account, Amount(currency=CURRENCY, value=10_000))
    ledger.debit_user_to_settlement("metrics/debit", "order-1", account, Amount(currency=CURRENCY, value=1_234))

    assert counted(PostingKind.TOP_UP) == (top_ups[0] + 1, top_ups[1] + 10_000)
    assert counted(PostingKind.PAYMENT_DEBIT) == (debits[0] + 1, debits[1] + 1_234)


def test_a_replayed_key_is_not_counted_again(ledger: Ledger) -> None:
    account = ledger.open_user("metrics-replay", CURRENCY)
    ledger.fund_user("metrics/replay-fund", account, Amount(currency=CURRENCY, value=5_000))
    before = counted(PostingKind.PAYMENT_DEBIT)

    first = ledger.debit_user_to_settlement("metrics/replay", "order-2", account, Amount(currency=CURRENCY, value=700))
    again = ledger.debit_user_to_settlement("metrics/replay", "order-2", account, Amount(currency=CURRENCY, value=700))

    assert (first.replayed, again.replayed) == (False, True)
    assert counted(PostingKind.PAYMENT_DEBIT) == (before[0] + 1, before[1] + 700)


def test_a_posting_rolled_back_is_not_counted(ledger: Ledger) -> None:
    account = ledger.open_user("metrics-poor", CURRENCY)
    before = counted(PostingKind.PAYMENT_DEBIT)

    with pytest.raises(InsufficientFunds):
        ledger.debit_user_to_settlement("metrics/poor", "order-3", account, Amount(currency=CURRENCY, value=1))

    assert counted(PostingKind.PAYMENT_DEBIT) == before
    assert ledger.receipt("metrics/poor") is None
