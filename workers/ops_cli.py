"""``mpp ops``: the operator's view of notifyPayment / authNotify deliveries, over the operator
listener's HTTP API (``/ops/deliveries``, ``api.routers.deliveries``), with the operator's token.

mpp ops deliveries [--state S] [--kind K] [--limit N]   list deliveries (a table)
mpp ops delivery ID                                     one delivery and its attempts
mpp ops redeliver ID                                    deliver again one that was rejected or gave up

The token is read from ``MPP_OPS_TOKEN_FILE``; the listener is ``--url``, by default
``http://{MPP_OPS_HOST}:{MPP_OPS_PORT}`` (8002, the dev stack's, when no port is set).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer
from rich.console import Console
from rich.table import Table

from wallet.keys import InsecureSecretError, read_secret_file
from wallet.settings import Settings

DEFAULT_OPS_PORT = 8002  # `mpp dev`'s operator listener, and the README's `mpp api --ops-port 8002`
TIMEOUT = 15.0  # seconds; the detail asks the workflow a query, which may take a few

ops_app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
console = Console()

Url = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="The operator listener (default http://MPP_OPS_HOST:MPP_OPS_PORT, port 8002 if unset)",
        show_default=False,
    ),
]


class OpsError(Exception):
    """The operator listener could not be asked, or refused: the message says why."""


def ops_url(settings: Settings) -> str:
    return f"http://{settings.ops_host}:{settings.ops_port or DEFAULT_OPS_PORT}"


def _client(ctx: typer.Context, url: str | None) -> httpx.Client:
    """A client of the listener with the operator's token; ``ctx.obj`` may carry a transport (tests)."""
    settings = Settings()
    try:
        token = read_secret_file(settings.ops_token_file, check_mode=settings.key_file_mode_check).decode().strip()
    except (OSError, UnicodeDecodeError, InsecureSecretError) as exc:
        raise OpsError(
            f"cannot read the operator token (MPP_OPS_TOKEN_FILE={settings.ops_token_file}): {exc}"
        ) from None
    transport = ctx.obj if isinstance(ctx.obj, httpx.BaseTransport) else None
    return httpx.Client(
        base_url=url or ops_url(settings),
        headers={"Authorization": f"Bearer {token}"},
        timeout=TIMEOUT,
        transport=transport,
    )


def _ask(ctx: typer.Context, url: str | None, method: str, path: str, **params: Any) -> Any:
    """The JSON answer of ``method path``; OpsError with the listener's reason on anything but 2xx."""
    try:
        with _client(ctx, url) as http:
            response = http.request(method, path, params={k: v for k, v in params.items() if v is not None})
    except httpx.HTTPError as exc:
        raise OpsError(f"cannot reach the operator listener: {type(exc).__name__}: {exc}") from None
    if response.is_success:
        return response.json()
    try:
        reason = response.json().get("detail", response.text)
    except ValueError:
        reason = response.text
    if isinstance(reason, list):  # FastAPI's 422: one entry per refused parameter
        reason = "; ".join(f"{'.'.join(map(str, entry.get('loc', [])[1:]))}: {entry.get('msg')}" for entry in reason)
    raise OpsError(f"HTTP {response.status_code}: {reason}")


def _run(call: Any) -> Any:
    try:
        return call()
    except OpsError as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(1) from None


def _path(delivery_id: str) -> str:
    return "/ops/deliveries/" + quote(delivery_id, safe="/")


def _time(value: str | None) -> str:
    # ISO 8601 from the API; shown to the second, in UTC as sent
    return value.replace("T", " ")[:19] if value else "-"


@ops_app.command()
def deliveries(
    ctx: typer.Context,
    state: Annotated[
        str | None,
        typer.Option(help="DELIVERING, ACKNOWLEDGED, REJECTED or GAVE_UP (all if absent)", show_default=False),
    ] = None,
    kind: Annotated[
        str | None, typer.Option(help="notifyPayment or authNotify (both if absent)", show_default=False)
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many (up to 500)")] = 50,
    url: Url = None,
) -> None:
    """List notifyPayment / authNotify deliveries, newest first, with their attempts so far."""
    answer = _run(lambda: _ask(ctx, url, "GET", "/ops/deliveries", state=state, kind=kind, limit=limit))
    table = Table(title=f"Deliveries{f' {state}' if state else ''}{f' ({kind})' if kind else ''}")
    for column in ("Delivery", "Kind", "State", "Workflow", "Attempts", "Last answer", "Last attempt (UTC)"):
        table.add_column(column, justify="right" if column == "Attempts" else "left")
    for item in answer["deliveries"]:
        table.add_row(
            item["delivery_id"],
            item["kind"],
            item["state"],
            item["workflow_status"],
            str(item["attempts"]),
            item["last_answer"] or "-",
            _time(item["last_attempt_at"]),
        )
    console.print(table)
    console.print(f"{len(answer['deliveries'])} shown (limit {answer['limit']})", highlight=False)


@ops_app.command()
def delivery(
    ctx: typer.Context,
    delivery_id: Annotated[str, typer.Argument(help="notify/{paymentRequestId} or auth/{referenceAgreementId}")],
    url: Url = None,
) -> None:
    """One delivery: its state, its progress and every attempt (time, answer, code, latency)."""
    answer = _run(lambda: _ask(ctx, url, "GET", _path(delivery_id)))
    console.print(
        f"{answer['delivery_id']}  {answer['kind']}  {answer['state']}  (workflow {answer['workflow_status']})",
        highlight=False,
    )
    progress = answer.get("progress")
    if progress:
        console.print(
            f"attempts {progress['attempts']}, first {_time(progress['first_attempt_at'])}, "
            f"gives up at {_time(progress['gives_up_at'])}, last: {progress['last_detail'] or '-'}",
            highlight=False,
        )
    table = Table(title="Attempts")
    for column in ("#", "Time (UTC)", "Answer", "Code", "Latency ms", "Detail"):
        table.add_column(column, justify="right" if column in ("#", "Latency ms") else "left")
    for number, attempt in enumerate(answer["attempts"], start=1):
        table.add_row(
            str(number),
            _time(attempt["attempted_at"]),
            attempt["answer"],
            attempt["result_code"] or "-",
            str(attempt["latency_ms"]),
            attempt["detail"],
        )
    console.print(table)


@ops_app.command()
def redeliver(
    ctx: typer.Context,
    delivery_id: Annotated[str, typer.Argument(help="notify/{paymentRequestId} or auth/{referenceAgreementId}")],
    url: Url = None,
) -> None:
    """Deliver again one that Alipay+ rejected (F) or that gave up: a new run, the same message."""
    answer = _run(lambda: _ask(ctx, url, "POST", _path(delivery_id) + "/redeliver"))
    console.print(f"{answer['delivery_id']} delivering again (run {answer['run_id']})", highlight=False)
