"""Every process's workflow id, one function each: what the Web UI lists and what makes a start,
an update-with-start or a signal reach the one workflow of a business key."""

from __future__ import annotations


def payment(payment_request_id: str) -> str:
    """A payment order, whatever the product (Easy Pay, MPM, NFC)."""
    return f"pay/{payment_request_id}"


def evaluation(payment_request_id: str) -> str:
    """Easy Pay's pay #1: can this account pay this?"""
    return f"evaluation/{payment_request_id}"


def refund(refund_request_id: str) -> str:
    return f"refund/{refund_request_id}"


def cancellation(payment_request_id: str) -> str:
    return f"cancel/{payment_request_id}"


def adjust_refund(refund_request_id: str) -> str:
    return f"adjust-refund/{refund_request_id}"


def payment_notification(payment_request_id: str) -> str:
    """notifyPayment's delivery."""
    return f"notify/{payment_request_id}"


def auth_notification(reference_agreement_id: str) -> str:
    """authNotify's delivery after one-click consent."""
    return f"auth/{reference_agreement_id}"


def agreement_notification(agreement_id: str, notify_type: str) -> str:
    """authNotify's delivery for an Auto Debit agreement: AUTHCODE_CREATED or TOKEN_CANCELED."""
    return f"auth/{agreement_id}/{notify_type}"


def auto_debit_unbinding(agreement_id: str) -> str:
    """The user unbinding an agreement in the app: consultUnbinding, revocation, TOKEN_CANCELED."""
    return f"unbind/{agreement_id}"


def activation(customer_id: str, device_id: str) -> str:
    """An NFC activation of one customer's device."""
    return f"activation/{customer_id}/{device_id}"


def token(token_reference_id: str) -> str:
    """An NFC token's life, from activation to deletion."""
    return f"token/{token_reference_id}"
