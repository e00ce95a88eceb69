"""Configuration from the environment (prefix ``MPP_``; ``DATABASE_URL`` as is).

Defaults run the embedded local stack: Temporal dev server on 127.0.0.1:7233, SQLite
under ``var/``, keys under ``var/keys/``, the sandbox Alipay+ on 127.0.0.1:8001.
"""

from __future__ import annotations

from datetime import time, timedelta
from enum import StrEnum
from functools import cached_property
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import Engine

from alipayplus import KeyRegistry, Signer, Verifier
from wallet.credentials import ACCOUNT_POLICY, ADDRESS_POLICY, Credentials, GuessPolicy
from wallet.deliveries import DeliverySchedule
from wallet.secrets import PIN_SCRYPT_COST

from .codec import EncryptionCodec
from .keys import InsecureSecretError, read_secret_file
from .telemetry.logs import LogFormat

VAR_DIR = Path("var")


class CodeSolution(StrEnum):
    """How the wallet sorts scanned codes before asking Alipay+'s server SDK (seed 003, step 3)."""

    ALLOWLIST = "ALLOWLIST"  # allowlisted codes go to our own logic (recommended)
    BLOCKLIST = "BLOCKLIST"  # blocklisted codes are rejected as invalid


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MPP_", env_file=".env", extra="ignore")

    # Temporal
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_task_queue: str = "mpp-payments"
    temporal_tls: bool = False
    temporal_tls_cert_file: Path | None = None
    temporal_tls_key_file: Path | None = None
    temporal_tls_ca_file: Path | None = None
    temporal_api_key: str | None = None

    # Records and ledger
    database_url: str = Field(
        default=f"sqlite:///{VAR_DIR / 'mpp.sqlite'}",
        validation_alias=AliasChoices("DATABASE_URL", "MPP_DATABASE_URL"),
    )

    # Alipay+ partnership
    alipayplus_base_url: str = "http://127.0.0.1:8001"
    client_id: str = "SANDBOX_5YC47N2ZQHJ004124"
    psp_id: str = "1022160000000000000"
    key_version: str = "1"
    mpp_private_key_file: Path = VAR_DIR / "keys" / "mpp_private.pem"
    mpp_public_key_file: Path = VAR_DIR / "keys" / "mpp_public.pem"
    alipayplus_public_key_file: Path = VAR_DIR / "keys" / "alipayplus_public.pem"
    alipayplus_key_version: str = "1"

    # Our API, as users and Alipay+ reach it
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    public_base_url: str = "http://127.0.0.1:8000"
    max_body_bytes: int = 1024 * 1024

    # Easy Pay
    verification_attempts: int = 3
    default_payment_expiry: timedelta = timedelta(minutes=10)
    otp_ttl: timedelta = timedelta(minutes=5)
    sms_gateway_url: str = "http://127.0.0.1:8001/sandbox/sms"
    # Agreement tokens (Easy Pay one-click, Auto Debit bindings): access > 10 minutes, refresh > 1.5 years
    # (seed 003); the merchant refreshes by applyToken, and either dies with cancelToken or an unbinding
    access_token_ttl: timedelta = Field(default=timedelta(days=30), gt=timedelta(minutes=10))
    refresh_token_ttl: timedelta = Field(default=timedelta(days=730), gt=timedelta(days=548))
    secret_key_file: Path = VAR_DIR / "keys" / "mpp_secret.key"

    # Pages: where a final payment may send the browser (JSON lists of host names: exact, `*.suffix`
    # for any host under suffix, `*` for any host); elsewhere, the user stays on our result page
    redirect_hosts: list[str] = ["ac.alipay.com", "127.0.0.1", "localhost"]  # Easy Pay: Alipay+'s result page
    mpm_redirect_hosts: list[str] = ["*"]  # MPM: the merchant's page, trusted by seed 003 (narrow it here)

    # Guessing PINs and OTPs (wallet.credentials), one counter per account and per client address, JSON
    # like MPP_ACCOUNT_GUESSING='{"free_failures":5,"backoff":"PT30S","backoff_max":"PT15M","lockout_after":10,
    # "lockout_for":"P1D","forget_after":"P1D"}'; PINs are stored as scrypt with N = 2**pin_scrypt_cost
    account_guessing: GuessPolicy = ACCOUNT_POLICY
    address_guessing: GuessPolicy = ADDRESS_POLICY
    pin_scrypt_cost: int = Field(default=PIN_SCRYPT_COST, ge=10, le=20)

    # Merchant-presented mode (seed 003)
    app_session_ttl: timedelta = timedelta(hours=360)  # "auth login is normally valid for 360 hours"
    auth_code_ttl: timedelta = timedelta(minutes=5)
    mpm_access_token_ttl: timedelta = Field(default=timedelta(hours=1), gt=timedelta(minutes=10))
    mpm_refresh_token_ttl: timedelta = Field(default=timedelta(days=730), gt=timedelta(days=548))  # > 1.5 years
    mpm_payment_expiry: timedelta = Field(default=timedelta(minutes=3), le=timedelta(minutes=3))
    code_service_url: str = "http://127.0.0.1:8001"  # Alipay+'s server SDK (the sandbox's in dev)

    # Auto Debit (spec §§2, 7, 9.5): a token payment closes after at most a minute without its own
    # paymentExpiryTime; consultUnbinding asks Alipay+ before the user unbinds in the app (optional);
    # the risk challenge's OTPs: at least 3 per token a day, a new one no sooner than 30-60 s after the last
    auto_debit_payment_expiry: timedelta = Field(default=timedelta(minutes=1), le=timedelta(minutes=1))
    consult_unbinding: bool = False
    risk_otp_daily_limit: int = Field(default=5, ge=3)
    risk_otp_resend_gap: timedelta = Field(
        default=timedelta(seconds=30), ge=timedelta(seconds=30), le=timedelta(seconds=60)
    )
    code_solution: CodeSolution = CodeSolution.ALLOWLIST
    code_allowlist: list[str] = []  # prefixes of partner codes our own logic handles
    code_blocklist: list[str] = []  # prefixes of codes refused outright
    local_code_prefixes: list[str] = ["mppwallet://", "https://pay.mppwallet.example/"]
    code_identify_attempts: int = Field(default=3, ge=1)  # U answers are retried

    # NFC (seeds 000–002): the SDK request proxy and activation
    mastercard_base_url: str = "http://127.0.0.1:8001"  # Mastercard's digitization service (the sandbox's in dev)
    nfc_poll_interval: timedelta = timedelta(seconds=2)  # queryToken / queryNTUResult
    nfc_poll_limit: int = Field(default=10, ge=1)
    nfc_device_timeout: timedelta = timedelta(minutes=1)  # the phone must answer a device step by then
    nfc_max_proxy_bytes: int = 64 * 1024
    nfc_replenish_below: int = Field(default=10, ge=1)  # seed 001: the server replenishes below this many credentials
    nfc_max_devices: int = Field(default=5, ge=1)  # per customer: devices with a live token or activation
    nfc_replenish_count: int = Field(default=10, ge=1, le=100)  # credentials fetched per replenish

    # Encryption of workflow payloads (histories hold personal data); older keys stay readable
    payload_key_file: Path = VAR_DIR / "keys" / "payload.key"
    payload_key_id: str = "1"
    payload_previous_key_files: dict[str, Path] = {}
    codec_cors_origins: list[str] = ["http://127.0.0.1:8233", "http://localhost:8233"]  # the Web UI

    # Operator listener and request limits
    # The ops listener (the Web UI's codec) runs beside the API in `mpp api` when given a port
    # (`--ops-port`); every route on it needs the token in ops_token_file as `Authorization: Bearer`
    # (or, with ops_token_in_path, as /codec/{token}/…, for the dev server's Web UI).
    ops_host: str = "127.0.0.1"
    ops_port: int | None = None
    ops_token_file: Path = VAR_DIR / "keys" / "ops.token"
    ops_token_in_path: bool = False
    ops_max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0)  # the codec's payloads
    max_app_body_bytes: int = Field(default=64 * 1024, gt=0)  # every public route but /aps and the NFC proxy
    max_json_depth: int = Field(default=32, ge=1)  # JSON bodies on the public routes but /aps
    openapi_enabled: bool = True  # /docs, /redoc and /openapi.json on the public app

    # The worker's capacity (``mpp worker``): activity threads, task slots and pollers per process.
    # Defaults suit a small machine; on a bigger one raise them or run several worker processes
    # (``mpp worker --processes N``), which spreads workflow code over cores the GIL keeps apart.
    # Activities are blocking (database, HTTP): each runs on a thread, one per slot.
    worker_max_activities: int = Field(default=32, ge=1)
    worker_max_local_activities: int = Field(default=32, ge=1)
    worker_max_workflow_tasks: int = Field(default=100, ge=1)
    worker_workflow_pollers: int = Field(default=10, ge=2)  # at least 2: the sticky and the normal queue
    worker_activity_pollers: int = Field(default=5, ge=1)
    worker_cached_workflows: int = Field(default=2000, ge=0)
    # A worker whose Temporal has not answered a health check for this long exits 1 (its supervisor
    # restarts it); the SDK alone would retry for ever and look alive
    worker_lost_connection_exit: timedelta = Field(default=timedelta(minutes=5), gt=timedelta(0))

    # Refunds and cancellation (spec §5, §6): refunds are accepted for at least 366 days
    refund_window: timedelta = Field(default=timedelta(days=366), ge=timedelta(days=366))
    cancel_cutoff: time = time(0, 30)  # cancels are accepted until this time (UTC+8) on T+1

    # notifyPayment and authNotify: the waits after an unanswered attempt (the last repeats), and
    # how long after the first attempt a delivery gives up (visibly: DeliveryStatus = GAVE_UP);
    # unset, workflows.delivery.DeliverySchedule's: 5 s, 30 s, 1 min … 1 h, for 3 days
    delivery_retry_delays: list[timedelta] | None = Field(default=None, min_length=1)
    delivery_horizon: timedelta | None = Field(default=None, gt=timedelta(0))

    # Operations (wallet.telemetry): each process serves /metrics, /healthz and /readyz on a monitoring
    # listener of its own, when given a port: the API process on metrics_port, a worker on
    # worker_metrics_port (plus i for the i-th of `mpp worker --processes N`). Traces follow the standard
    # OTEL_* variables (OTEL_TRACES_EXPORTER=otlp|console|none, OTEL_EXPORTER_OTLP_ENDPOINT, …); none by default.
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    worker_metrics_port: int | None = None
    log_format: LogFormat = LogFormat.JSON  # `mpp dev` and `mpp demo` write text for a person
    log_level: str = "INFO"

    # Transport
    # MPP_REQUEST_TIME_WINDOW (e.g. PT5M): also refuse an Alipay+ request whose Request-Time lies further than
    # this from now, either way (F PARAM_ILLEGAL). Unset by default: the spec sets no window and Alipay+ resends
    # a request later. Request-Time must be ISO 8601 with an offset either way.
    request_time_window: timedelta | None = Field(default=None, gt=timedelta(0))
    # Refuse a private key or secret file that group or others may read (wallet.keys.read_secret_file);
    # off only for test keys committed to git, which git stores as 0644
    key_file_mode_check: bool = True

    def temporal_transport_problem(self) -> str | None:
        """Why connecting to Temporal as configured would be unsafe, or None: an API key (Temporal
        Cloud) is a bearer credential, never sent without TLS (as wallet.temporal.connect sets it up)."""
        uses_tls = self.temporal_tls or self.temporal_tls_cert_file or self.temporal_tls_ca_file
        if self.temporal_api_key and not uses_tls:
            return (
                "MPP_TEMPORAL_API_KEY is set but TLS is off, so the key would cross the network in plaintext: set "
                "MPP_TEMPORAL_TLS=true (or MPP_TEMPORAL_TLS_CA_FILE / MPP_TEMPORAL_TLS_CERT_FILE), or unset the key"
            )
        return None

    def model_post_init(self, context: object, /) -> None:
        """Refuse at start-up (``mpp worker``, ``mpp api``) what ``temporal_transport_problem`` names:
        ``InsecureSecretError``, which, unlike a ValidationError, does not print the key."""
        super().model_post_init(context)
        problem = self.temporal_transport_problem()
        if problem:
            raise InsecureSecretError(problem)

    # Deadlines under Alipay+'s own timeouts (pay 8 s, inquiry 5 s)
    pay_answer_deadline: timedelta = timedelta(seconds=6)
    inquiry_answer_deadline: timedelta = timedelta(seconds=3)

    def load_keys(self) -> None:
        """Read every key now, so that a missing or bad file stops start-up, not the first payment."""
        _ = self.signer, self.verifier, self.secret_key, self.payload_codec

    @cached_property
    def signer(self) -> Signer:
        """Signs what the MPP sends (requests to Alipay+, answers to Alipay+)."""
        pem = read_secret_file(self.mpp_private_key_file, check_mode=self.key_file_mode_check)
        return Signer.from_pem(self.client_id, pem, self.key_version)

    @cached_property
    def verifier(self) -> Verifier:
        """Checks what Alipay+ sends the MPP, with Alipay+'s public keys."""
        keys = KeyRegistry()
        keys.add_file(self.client_id, self.alipayplus_key_version, self.alipayplus_public_key_file)
        return Verifier(self.client_id, keys, request_time_window=self.request_time_window)

    @cached_property
    def payload_codec(self) -> EncryptionCodec:
        check, previous = self.key_file_mode_check, self.payload_previous_key_files
        keys = {key_id: read_secret_file(path, check_mode=check) for key_id, path in previous.items()}
        keys[self.payload_key_id] = read_secret_file(self.payload_key_file, check_mode=check)
        return EncryptionCodec(keys, self.payload_key_id)

    @cached_property
    def secret_key(self) -> bytes:
        """Server secret for keyed digests of PINs, OTPs and tokens."""
        return read_secret_file(self.secret_key_file, check_mode=self.key_file_mode_check)

    def delivery_schedule(self) -> DeliverySchedule:
        """The deployment's notifyPayment / authNotify schedule (``MPP_DELIVERY_*``): the workflow's
        default where unset. Deliveries start with it, and so do redeliveries."""
        configured = {"delays": self.delivery_retry_delays, "horizon": self.delivery_horizon}
        return DeliverySchedule(**{name: value for name, value in configured.items() if value is not None})

    def credentials(self, engine: Engine) -> Credentials:
        """The guessing limits and PIN checks over the database at ``engine``."""
        return Credentials(
            engine, self.secret_key, self.account_guessing, self.address_guessing, pin_cost=self.pin_scrypt_cost
        )
