"""Identify a scanned code (seed 003, step 3): ours, Alipay+'s, or not valid.

The allowlist or blocklist solution (``Settings.code_solution``) sorts the code first; a
code neither list nor our own prefixes claim goes to Alipay+'s server SDK
(``CodeIdentificationService``; the sandbox plays it in dev). The service is initialised at
start-up and a failure stops the API, as the seed requires; U answers are retried.
"""

from __future__ import annotations

import asyncio
import logging
from enum import StrEnum
from typing import TypeVar

import httpx
from pydantic import ValidationError

from alipayplus import CamelModel, ResultStatus
from alipayplus.sdk import (
    CodeIdentificationInitRequest,
    CodeIdentificationInitResult,
    IdentifyCodeRequest,
    IdentifyCodeResult,
    PostCodeMatchAction,
)
from wallet.secrets import keyed_digest
from wallet.settings import CodeSolution, Settings

log = logging.getLogger(__name__)
AnswerT = TypeVar("AnswerT", CodeIdentificationInitResult, IdentifyCodeResult)

INVALID_CODE_MESSAGE = "This code is not valid. Check that you scanned the merchant's payment code and try again."
LOCAL_CODE_MESSAGE = "A wallet code: the wallet handles it itself."
RETRY_LATER_MESSAGE = "We could not check this code just now. Please scan it again in a moment."
_RETRY_DELAY_SECONDS = 0.2


class Verdict(StrEnum):
    ALIPAY_PLUS = "ALIPAY_PLUS"  # hand it to Alipay+'s client SDK to decode
    LOCAL = "LOCAL"  # our own (or an allowlisted partner's) code: our own logic
    INVALID = "INVALID"  # show the invalid-code message
    RETRY_LATER = "RETRY_LATER"  # the identification service stayed unsure


class CodeVerdict(CamelModel):
    verdict: Verdict
    message: str
    post_code_match_action: PostCodeMatchAction | None = None
    ac_decode_config: str | None = None


class CodeServiceUnavailable(RuntimeError):
    """The server SDK did not initialise: the API must not start."""


class CodeIdentification:
    def __init__(self, settings: Settings, http: httpx.AsyncClient) -> None:
        self._settings = settings
        self._http = http

    async def init(self) -> None:
        """``CodeIdentificationService#init``; anything but S stops start-up with the reason."""
        request = CodeIdentificationInitRequest(client_id=self._settings.client_id)
        where = f"{self._settings.code_service_url}{CodeIdentificationInitRequest.PATH}"
        try:
            answer = await self._call(CodeIdentificationInitRequest.PATH, request, CodeIdentificationInitResult)
        except (httpx.HTTPError, ValidationError) as exc:
            raise CodeServiceUnavailable(
                f"Alipay+ server SDK (code identification) at {where} could not be initialised: {exc!r}. "
                "The API does not start without it (seed 003, step 3); check MPP_CODE_SERVICE_URL."
            ) from exc
        result = answer.result
        if result.result_status is not ResultStatus.SUCCESS:
            raise CodeServiceUnavailable(
                f"Alipay+ server SDK (code identification) at {where} refused to initialise: "
                f"{result.result_status}/{result.result_code} {result.result_message or ''}. "
                "The API does not start without it (seed 003, step 3)."
            )

    async def identify(self, code_value: str, customer_id: str) -> CodeVerdict:
        settings = self._settings
        if settings.code_solution is CodeSolution.BLOCKLIST and _matches(code_value, settings.code_blocklist):
            return CodeVerdict(verdict=Verdict.INVALID, message=INVALID_CODE_MESSAGE)
        allowlisted = settings.code_solution is CodeSolution.ALLOWLIST and _matches(code_value, settings.code_allowlist)
        if allowlisted or _matches(code_value, settings.local_code_prefixes):
            return CodeVerdict(verdict=Verdict.LOCAL, message=LOCAL_CODE_MESSAGE)
        # openId: a keyed hash of the user, so Alipay+'s grey release never sees our customer id
        request = IdentifyCodeRequest(
            code_value=code_value, open_id=keyed_digest(settings.secret_key, "open-id", customer_id, "")
        )
        for attempt in range(settings.code_identify_attempts):
            if attempt:
                await asyncio.sleep(_RETRY_DELAY_SECONDS * attempt)
            try:
                answer = await self._call(IdentifyCodeRequest.PATH, request, IdentifyCodeResult)
            except (httpx.HTTPError, ValidationError) as exc:
                log.warning("code identification attempt %d failed: %r", attempt + 1, exc)
                continue
            status = answer.result.result_status
            if status is ResultStatus.UNKNOWN:
                continue
            if status is ResultStatus.SUCCESS and answer.is_ac_code:
                return CodeVerdict(
                    verdict=Verdict.ALIPAY_PLUS,
                    message="An Alipay+ code.",
                    post_code_match_action=answer.post_code_match_action_type,
                    ac_decode_config=answer.ac_decode_config,
                )
            if status is ResultStatus.FAIL:
                log.info("code identification refused a code: %s", answer.result.result_code)
            return CodeVerdict(verdict=Verdict.INVALID, message=INVALID_CODE_MESSAGE)
        return CodeVerdict(verdict=Verdict.RETRY_LATER, message=RETRY_LATER_MESSAGE)

    async def _call(
        self, path: str, request: CodeIdentificationInitRequest | IdentifyCodeRequest, answer_type: type[AnswerT]
    ) -> AnswerT:
        response = await self._http.post(
            f"{self._settings.code_service_url}{path}",
            content=request.to_wire(),
            headers={"Content-Type": "application/json"},
        )
        response.raise_for_status()
        return answer_type.from_wire(response.content)


def _matches(code_value: str, prefixes: list[str]) -> bool:
    return any(code_value.startswith(prefix) for prefix in prefixes if prefix)
