"""Issue 13, item 7: what reaches us and what we send must be what it claims to be.

- ``Request-Time`` is parsed (ISO 8601 with an offset or ``Z``), else the signed answer is F
  PARAM_ILLEGAL naming the header; an optional freshness window (``MPP_REQUEST_TIME_WINDOW``).
- A Temporal API key is never sent without TLS: ``Settings`` refuses it at start-up, ``connect`` too.
- Failure messages and stack traces reach Temporal's history encrypted, and still decode.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from pydantic import ValidationError
from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.api.failure.v1 import Failure
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.converter import DataConverter
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, Worker

from alipayplus import (
    ErrorResponse,
    InquiryPaymentRequest,
    KeyRegistry,
    Message,
    Result,
    ResultCode,
    SignatureError,
    Signer,
    Verifier,
)
from alipayplus._signing import parse_request_time
from api.inbound import inbound
from tests.conftest import FIXTURES
from wallet.codec import ENCODING
from wallet.keys import InsecureSecretError
from wallet.settings import Settings
from wallet.temporal import connect, data_converter

CLIENT_ID = "SANDBOX_5YC47N2ZQHJ004124"
PATH = InquiryPaymentRequest.PATH
WINDOW = timedelta(minutes=5)
_UTC8 = "+08:00"


def transport_settings(**overrides: Any) -> Settings:
    """The test keys (committed 0644, hence no mode check) and whatever the test changes."""
    fields: dict[str, Any] = {
        "mpp_private_key_file": FIXTURES / "test_mpp_private.pem",
        "mpp_public_key_file": FIXTURES / "test_mpp_public.pem",
        "alipayplus_public_key_file": FIXTURES / "test_alipayplus_public.pem",
        "secret_key_file": FIXTURES / "test_secret.key",
        "payload_key_file": FIXTURES / "test_payload.key",
        "key_file_mode_check": False,
        **overrides,
    }
    return Settings(**fields)


# --- Request-Time through the inbound endpoint -------------------------------------------------


class Inbound:
    """``api.inbound``'s wrapper around a handler that counts its calls: what Alipay+ would get."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.handled = 0
        self.alipayplus = Signer.from_pem(CLIENT_ID, (FIXTURES / "test_alipayplus_private.pem").read_bytes())
        mpp_keys = KeyRegistry()
        mpp_keys.add_file(CLIENT_ID, "1", FIXTURES / "test_mpp_public.pem")
        self.answers = Verifier(CLIENT_ID, mpp_keys)
        router = APIRouter()

        @inbound(router, PATH, InquiryPaymentRequest)
        async def inquiry(message: InquiryPaymentRequest, services: Any) -> Message:
            self.handled += 1
            return ErrorResponse(result=Result.success())

        self.app = FastAPI()
        self.app.include_router(router)
        self.app.state.services = SimpleNamespace(settings=settings)  # all that inbound() reads

    def body(self) -> bytes:
        return InquiryPaymentRequest(
            acquirer_id="1022188000000000001", psp_id=self.settings.psp_id, payment_request_id=uuid.uuid4().hex
        ).to_wire()

    async def post(self, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://mpp") as http:
            response = await http.post(PATH, content=body, headers=headers)
        assert response.status_code == 200, response.text
        self.answers.check(PATH, response.headers, response.content, response=True)  # answered signed
        answer: dict[str, Any] = response.json()
        return answer["result"]

    async def call(self, request_time: str | None) -> dict[str, Any]:
        """A request signed over ``request_time`` (``None``: sent without the header; ``""``: empty)."""
        body = self.body()
        headers = self.alipayplus.headers(PATH, body, time=request_time or "2019-05-28T12:12:12+08:00")
        if request_time is None:
            del headers["Request-Time"]
        elif not request_time:
            headers["Request-Time"] = request_time
        return await self.post(headers, body)


def refused(result: dict[str, Any]) -> str:
    """The message of an F PARAM_ILLEGAL answer that names Request-Time."""
    assert (result["resultStatus"], result["resultCode"]) == ("F", "PARAM_ILLEGAL"), result
    message: str = result["resultMessage"]
    assert message.startswith("Request-Time: "), message
    return message


@pytest.fixture(scope="module")
def endpoint() -> Inbound:
    return Inbound(transport_settings())


@pytest.mark.parametrize(
    "request_time",
    [
        None,
        "",
        "not-a-time",
        "2019-05-28T12:12:12",  # no zone
        "2019-05-28",
        "2019-05-28 12:12:12+08:00",  # not ISO 8601's "T"
        "2019-05-28T12:12+08:00",
        "2019-13-28T12:12:12+08:00",  # no 13th month
        "2019-05-28T12:12:12+24:00",
        "1559016732",  # epoch seconds
    ],
    ids=["missing", "empty", "not-a-time", "no-zone", "date-only", "space", "no-seconds", "month-13", "+24", "epoch"],
)
async def test_an_unusable_request_time_is_answered_f_param_illegal_naming_it(
    endpoint: Inbound, request_time: str | None
) -> None:
    before = endpoint.handled

    message = refused(await endpoint.call(request_time))

    assert "ISO 8601" in message or "missing" in message
    assert endpoint.handled == before  # nothing reached the handler


@pytest.mark.parametrize(
    "request_time",
    ["2019-05-28T12:12:12+08:00", "2019-05-28T04:12:12Z", "2019-05-28T12:12:12.123-05:30", "2001-01-01T00:00:00Z"],
    ids=["+08:00", "Z", "fraction", "2001-without-a-window"],
)
async def test_an_iso_8601_request_time_with_a_zone_is_accepted(endpoint: Inbound, request_time: str) -> None:
    before = endpoint.handled

    result = await endpoint.call(request_time)

    assert (result["resultStatus"], result["resultCode"]) == ("S", "SUCCESS")
    assert endpoint.handled == before + 1


async def test_a_bad_signature_is_reported_before_a_bad_request_time(endpoint: Inbound) -> None:
    body = endpoint.body()
    headers = endpoint.alipayplus.headers(PATH, body, time="not-a-time")

    result = await endpoint.post(headers, body + b" ")  # the body no longer matches the signature

    assert (result["resultStatus"], result["resultCode"]) == ("F", "INVALID_SIGNATURE")


def at(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


@pytest.mark.parametrize(
    "offset, accepted",
    [
        (timedelta(0), True),
        (-timedelta(minutes=4), True),
        (timedelta(minutes=4), True),
        (-timedelta(minutes=6), False),  # stale: a replay, or a sender's slow clock
        (timedelta(minutes=6), False),  # from the future: a sender's fast clock
        (-timedelta(days=365 * 25), False),  # the 2001-era date
    ],
    ids=["now", "4-min-old", "4-min-ahead", "6-min-old", "6-min-ahead", "25-years-old"],
)
async def test_with_a_window_a_request_time_too_far_from_now_is_refused(offset: timedelta, accepted: bool) -> None:
    windowed = Inbound(transport_settings(request_time_window=WINDOW))

    result = await windowed.call(at(datetime.now(UTC) + offset))

    if accepted:
        assert (result["resultStatus"], result["resultCode"]) == ("S", "SUCCESS")
    else:
        message = refused(result)
        assert "is more than 300 s from this server's time" in message and "clock" in message
        assert windowed.handled == 0


def test_the_window_comes_from_mpp_request_time_window(monkeypatch: pytest.MonkeyPatch) -> None:
    assert transport_settings().verifier.request_time_window is None  # off unless set

    monkeypatch.setenv("MPP_REQUEST_TIME_WINDOW", "PT5M")
    assert transport_settings().verifier.request_time_window == WINDOW

    monkeypatch.setenv("MPP_REQUEST_TIME_WINDOW", "PT0S")
    with pytest.raises(ValidationError, match="request_time_window"):
        transport_settings()


# --- Request-Time in the protocol package ------------------------------------------------------


def test_request_time_parses_with_its_offset() -> None:
    assert parse_request_time("2019-05-28T12:12:12+08:00") == datetime(2019, 5, 28, 4, 12, 12, tzinfo=UTC)
    assert parse_request_time("2019-05-28T04:12:12Z") == datetime(2019, 5, 28, 4, 12, 12, tzinfo=UTC)
    assert parse_request_time("2019-05-28T12:12:12+08:00").utcoffset() == timedelta(hours=8)


def verifier_at(now: datetime, window: timedelta | None) -> tuple[Signer, Verifier]:
    signer = Signer.from_pem(CLIENT_ID, (FIXTURES / "test_mpp_private.pem").read_bytes())
    keys = KeyRegistry()
    keys.add_file(CLIENT_ID, "1", FIXTURES / "test_mpp_public.pem")
    return signer, Verifier(CLIENT_ID, keys, request_time_window=window, clock=lambda: now)


def test_the_window_holds_to_the_second_in_both_directions() -> None:
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    signer, verifier = verifier_at(now, WINDOW)
    body = b"{}"

    for edge in (now - WINDOW, now + WINDOW):
        verifier.check(PATH, signer.headers(PATH, body, time=at(edge)), body)  # accepted: raises otherwise
    for beyond in (now - WINDOW - timedelta(seconds=1), now + WINDOW + timedelta(seconds=1)):
        with pytest.raises(SignatureError) as failure:
            verifier.check(PATH, signer.headers(PATH, body, time=at(beyond)), body)
        assert failure.value.code is ResultCode.PARAM_ILLEGAL


def test_answers_keep_their_rules_response_time_is_not_windowed() -> None:
    """The window and the format rule are for requests; our client still reads any signed answer."""
    signer, verifier = verifier_at(datetime(2026, 3, 1, tzinfo=UTC), WINDOW)
    body = b"{}"
    verifier.check(
        PATH, signer.headers(PATH, body, time="2019-05-28T12:12:12+08:00", response=True), body, response=True
    )

    with pytest.raises(SignatureError) as failure:
        verifier.check(PATH, {"Client-Id": CLIENT_ID, "Signature": "x"}, body, response=True)
    assert failure.value.code is ResultCode.INVALID_SIGNATURE  # a missing Response-Time, as before


@pytest.mark.parametrize("window", [timedelta(0), -timedelta(seconds=1)])
def test_a_window_must_be_positive(window: timedelta) -> None:
    with pytest.raises(ValueError, match="positive"):
        verifier_at(datetime.now(UTC), window)


# --- an API key never without TLS ---------------------------------------------------------------

KEY_WITHOUT_TLS = "MPP_TEMPORAL_API_KEY is set but TLS is off"


def test_settings_refuse_an_api_key_without_tls() -> None:
    with pytest.raises(InsecureSecretError, match=KEY_WITHOUT_TLS) as refused:
        Settings(temporal_api_key="secret-key")
    assert "secret-key" not in str(refused.value)  # a ValidationError would print every input, the key too


def test_settings_refuse_an_api_key_from_the_environment_without_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPP_TEMPORAL_API_KEY", "secret-key")
    with pytest.raises(InsecureSecretError, match="MPP_TEMPORAL_TLS=true"):
        Settings()

    monkeypatch.setenv("MPP_TEMPORAL_TLS", "true")
    assert Settings().temporal_api_key == "secret-key"


def test_an_api_key_with_tls_or_tls_files_is_accepted(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"not read until connect")

    assert Settings(temporal_api_key="k", temporal_tls=True).temporal_api_key == "k"
    assert Settings(temporal_api_key="k", temporal_tls_ca_file=ca).temporal_api_key == "k"
    assert Settings(temporal_api_key="k", temporal_tls_cert_file=ca, temporal_tls_key_file=ca).temporal_api_key == "k"
    assert Settings().temporal_api_key is None  # no key, no TLS: the local dev server


async def test_connect_refuses_an_api_key_without_tls_before_any_network() -> None:
    settings = Settings(temporal_api_key="secret-key", temporal_tls=True, temporal_address="192.0.2.1:7233")
    settings.temporal_tls = False  # changed after validation: connect checks again

    with pytest.raises(InsecureSecretError, match=KEY_WITHOUT_TLS):
        await connect(settings)  # raises at once: 192.0.2.1 (TEST-NET-1) is never dialled


@pytest.mark.parametrize("command", ["worker", "api"])
def test_mpp_worker_and_api_stop_at_start_up_naming_the_problem(command: str, tmp_path: Path) -> None:
    environment = {name: value for name, value in os.environ.items() if not name.startswith("MPP_")}
    environment["MPP_TEMPORAL_API_KEY"] = "secret-key"

    finished = subprocess.run(
        [sys.executable, "-c", "from workers.cli import app; app()", command],
        cwd=tmp_path,  # no .env here
        env={**environment, "PYTHONPATH": str(Path(__file__).parents[2])},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert finished.returncode != 0
    assert KEY_WITHOUT_TLS in finished.stderr
    assert "secret-key" not in finished.stderr + finished.stdout  # the message names the variable, not the key


# --- failures reach history encrypted ------------------------------------------------------------

SECRET = "card 5413330089604111 refused for 852-95303585"


@activity.defn
async def refuse_card() -> None:
    raise ApplicationError(SECRET, {"login": "852-95303585"}, type="CardRefused", non_retryable=True)


@workflow.defn
class RefusedCardWorkflow:
    @workflow.run
    async def run(self) -> None:
        await workflow.execute_activity(
            refuse_card, start_to_close_timeout=timedelta(seconds=10), retry_policy=RetryPolicy(maximum_attempts=1)
        )


def failures_in(history_json: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if "failure" in value and isinstance(value["failure"], dict):
                found.append(value["failure"])
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(json.loads(history_json))
    return found


async def test_a_failure_reaches_history_encrypted_and_decodes(client: Client, settings: Settings) -> None:
    task_queue = f"security-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[RefusedCardWorkflow],
        activities=[refuse_card],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        handle = await client.start_workflow(
            RefusedCardWorkflow.run, id=f"security/refused-{uuid.uuid4().hex}", task_queue=task_queue
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    history = await handle.fetch_history()

    # decoded by the client's converter: the text, its type and details are all there
    activity_error = failed.value.cause
    assert isinstance(activity_error, ActivityError)
    application_error = activity_error.cause
    assert isinstance(application_error, ApplicationError)
    assert (application_error.message, application_error.type) == (SECRET, "CardRefused")
    assert application_error.details == ({"login": "852-95303585"},)

    # at rest: neither the message nor the stack trace, in the raw events or their JSON
    raw = b"".join(event.SerializeToString() for event in history.events)
    text = history.to_json()
    for leak in (SECRET, "852-95303585", "test_transport.py", "raise ApplicationError"):  # text, trace
        assert leak.encode() not in raw and leak not in text, leak
    failed_events = [
        event
        for event in history.events
        if event.event_type
        in (EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED)
    ]
    assert len(failed_events) == 2
    stored = [
        event.activity_task_failed_event_attributes.failure
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED
        else event.workflow_execution_failed_event_attributes.failure
        for event in failed_events
    ]
    for failure in stored:
        assert failure.message == "Encoded failure" and failure.stack_trace == ""
        assert failure.encoded_attributes.metadata["encoding"] == ENCODING
    assert all(f["message"] == "Encoded failure" for f in failures_in(text))

    # decoded from history with the payload key: the text comes back
    converter = data_converter(settings)
    from_activity = await converter.decode_failure(stored[0])
    assert isinstance(from_activity, ApplicationError) and from_activity.message == SECRET
    assert "refuse_card" in from_activity.failure.stack_trace  # type: ignore[union-attr]
    from_workflow = await converter.decode_failure(stored[1])
    assert isinstance(from_workflow, ActivityError)
    assert isinstance(from_workflow.cause, ApplicationError) and from_workflow.cause.message == SECRET

    # and the history replays, as every recorded one must
    await Replayer(
        workflows=[RefusedCardWorkflow], data_converter=converter, workflow_runner=UnsandboxedWorkflowRunner()
    ).replay_workflow(history)


async def test_failures_stored_before_encryption_still_decode(settings: Settings) -> None:
    """Histories recorded before this change hold plain failures; the new converter reads them as they are."""
    before = DataConverter(payload_codec=settings.payload_codec)  # the default failure converter
    plain = Failure()
    await before.encode_failure(ApplicationError(SECRET, type="CardRefused"), plain)
    assert plain.message == SECRET and not plain.HasField("encoded_attributes")

    decoded = await data_converter(settings).decode_failure(plain)

    assert isinstance(decoded, ApplicationError) and (decoded.message, decoded.type) == (SECRET, "CardRefused")


async def test_failure_attributes_are_sealed_with_the_payload_key(settings: Settings) -> None:
    encoded = Failure()
    await data_converter(settings).encode_failure(ApplicationError(SECRET), encoded)

    sealed = encoded.encoded_attributes
    assert isinstance(sealed, Payload) and sealed.metadata["encoding"] == ENCODING
    assert SECRET.encode() not in sealed.data
    [opened] = await settings.payload_codec.decode([sealed])
    assert SECRET in json.loads(opened.data)["message"]
