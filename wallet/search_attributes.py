"""Search attributes that let an operator find any payment in the Temporal Web UI."""

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")
PRODUCT = SearchAttributeKey.for_keyword("Product")
PAYMENT_STATUS = SearchAttributeKey.for_keyword("PaymentStatus")
PAYMENT_REQUEST_ID = SearchAttributeKey.for_keyword("PaymentRequestId")
# notifyPayment / authNotify: DELIVERING, then how it ended (ACKNOWLEDGED, REJECTED, GAVE_UP)
DELIVERY_STATUS = SearchAttributeKey.for_keyword("DeliveryStatus")

ALL = [CUSTOMER_ID, PRODUCT, PAYMENT_STATUS, PAYMENT_REQUEST_ID, DELIVERY_STATUS]


def at_start(product: str, payment_request_id: str | None, status: str) -> TypedSearchAttributes:
    """What a payment's process carries from its start (a process with no payment, e.g. an unlinked
    refund, has no PaymentRequestId); workflows upsert status and customer later."""
    pairs = [SearchAttributePair(PRODUCT, product), SearchAttributePair(PAYMENT_STATUS, status)]
    if payment_request_id:
        pairs.insert(1, SearchAttributePair(PAYMENT_REQUEST_ID, payment_request_id))
    return TypedSearchAttributes(pairs)
