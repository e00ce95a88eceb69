"""A stand-in for Alipay+ so the whole Easy Pay flow runs on one machine.

``create_app`` serves what the MPP calls (notifyPayment, authNotify, the SMS gateway, the
result page); ``AlipayPlusDriver`` sends what Alipay+ sends (pay, inquiryPayment);
``InquiryScheduleWorkflow`` is Alipay+'s inquiry schedule on Temporal.

Names load lazily: the Temporal workflow sandbox re-imports ``sandbox.alipayplus.inquiry``
and, with it, this package; eager imports of FastAPI/httpx here would fail its validation.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app
    from .driver import AlipayPlusDriver, easy_pay_evaluation, easy_pay_order, sample_requests
    from .inquiry import (
        SANDBOX_TASK_QUEUE,
        InquiryOutcome,
        InquirySchedule,
        InquiryScheduleWorkflow,
        SandboxActivities,
        inquiry_workflow_id,
    )
    from .peer import Behaviour, Received, SandboxAlipayPlus, Sms
    from .transport import TimeoutASGITransport

_MODULE_OF: dict[str, str] = {
    "create_app": ".app",
    "AlipayPlusDriver": ".driver",
    "easy_pay_evaluation": ".driver",
    "easy_pay_order": ".driver",
    "sample_requests": ".driver",
    "SANDBOX_TASK_QUEUE": ".inquiry",
    "InquiryOutcome": ".inquiry",
    "InquirySchedule": ".inquiry",
    "InquiryScheduleWorkflow": ".inquiry",
    "SandboxActivities": ".inquiry",
    "inquiry_workflow_id": ".inquiry",
    "Behaviour": ".peer",
    "Received": ".peer",
    "SandboxAlipayPlus": ".peer",
    "Sms": ".peer",
    "TimeoutASGITransport": ".transport",
}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_MODULE_OF[name], __name__), name)


def __dir__() -> list[str]:
    return __all__
