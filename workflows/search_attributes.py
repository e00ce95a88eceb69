"""Search attributes that let an operator find any payment in the Temporal Web UI."""

from temporalio.common import SearchAttributeKey

CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")
PRODUCT = SearchAttributeKey.for_keyword("Product")
PAYMENT_STATUS = SearchAttributeKey.for_keyword("PaymentStatus")
PAYMENT_REQUEST_ID = SearchAttributeKey.for_keyword("PaymentRequestId")

ALL = [CUSTOMER_ID, PRODUCT, PAYMENT_STATUS, PAYMENT_REQUEST_ID]
