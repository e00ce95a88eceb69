"""The code rules and the scripted answers of the sandbox code identification service."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from alipayplus import Result, ResultCode, ResultStatus
from alipayplus.sdk import (
    CodeIdentificationInitRequest,
    CodeIdentificationInitResult,
    IdentifyCodeRequest,
    IdentifyCodeResult,
    PostCodeMatchAction,
)

# The sandbox Alipay+'s QR code values (sandbox.alipayplus.mpm issues them).
ORDER_CODE_PREFIX = "https://qr.alipayplus.sandbox/o/"  # an order code: amount fixed, decode it
ENTRY_CODE_PREFIX = "https://qr.alipayplus.sandbox/e/"  # a store's entry code: open its cashier page
RULES_VERSION = "sandbox-1"

# What the client SDK is told to do with each kind of Alipay+ code, by prefix.
_ACTIONS: dict[str, PostCodeMatchAction] = {
    ORDER_CODE_PREFIX: PostCodeMatchAction.DECODE,
    ENTRY_CODE_PREFIX: PostCodeMatchAction.OPEN_URL,
}

# A non-S answer of the service: the result code behind each scripted status.
_FAILURES: dict[ResultStatus, ResultCode] = {
    ResultStatus.FAIL: ResultCode.PROCESS_FAIL,
    ResultStatus.UNKNOWN: ResultCode.UNKNOWN_EXCEPTION,
}


def _scripted(status: ResultStatus, what: str) -> Result:
    return Result.of(_FAILURES[status], f"{what} answered {status} (scripted in the sandbox)")


class CodeService:
    """``CodeIdentificationService#init`` / ``#identify`` with answers tests can script.

    ``init_status`` is what every init answers (S, or F/U to test that the MPP blocks its
    start-up); ``script_identify`` queues non-S identify answers (U to test the MPP's retries),
    used up one per call before the rules answer again. Calls are counted.
    """

    def __init__(self, init_status: ResultStatus | str = ResultStatus.SUCCESS) -> None:
        self.init_status = ResultStatus(init_status)
        self.init_calls = 0
        self.identify_calls = 0
        self.identified: list[IdentifyCodeRequest] = []  # every identify received, oldest first
        self._identify_script: deque[ResultStatus] = deque()

    def script_identify(self, statuses: Iterable[ResultStatus | str]) -> None:
        """Queue answers for the next identify calls: "U" (unknown, retry) or "F" (failed)."""
        queued = [ResultStatus(status) for status in statuses]
        if ResultStatus.SUCCESS in queued:
            raise ValueError("queue only U or F answers; without a script identify follows the rules")
        self._identify_script.extend(queued)

    def init(self, request: CodeIdentificationInitRequest) -> CodeIdentificationInitResult:
        self.init_calls += 1
        if self.init_status is not ResultStatus.SUCCESS:
            return CodeIdentificationInitResult(result=_scripted(self.init_status, "init"))
        return CodeIdentificationInitResult(result=Result.success(), rules_version=RULES_VERSION)

    def identify(self, request: IdentifyCodeRequest) -> IdentifyCodeResult:
        self.identify_calls += 1
        self.identified.append(request)
        if self._identify_script:
            return IdentifyCodeResult(result=_scripted(self._identify_script.popleft(), "identify"))
        return identify_by_rules(request.code_value)


def identify_by_rules(code_value: str) -> IdentifyCodeResult:
    """Alipay+'s code rules: an order or entry code of the sandbox Alipay+ is an Alipay+ code;
    anything else is not (S with isAcCode false: the MPP treats it as invalid or its own)."""
    for prefix, action in _ACTIONS.items():
        if code_value.startswith(prefix):
            return IdentifyCodeResult(
                result=Result.success(),
                is_ac_code=True,
                post_code_match_action_type=action,
                ac_decode_config=f'{{"rulesVersion":"{RULES_VERSION}"}}',  # opaque to the MPP: pass to the client SDK
            )
    return IdentifyCodeResult(result=Result.success(), is_ac_code=False)
