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

from alipayplus import KeyRegistry, Signer, Verifier

from .codec import EncryptionCodec

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
    access_token_ttl: timedelta = timedelta(days=365 * 10)
    refresh_token_ttl: timedelta = timedelta(days=365 * 10)
    secret_key_file: Path = VAR_DIR / "keys" / "mpp_secret.key"

    # Merchant-presented mode (seed 003)
    app_session_ttl: timedelta = timedelta(hours=360)  # "auth login is normally valid for 360 hours"
    auth_code_ttl: timedelta = timedelta(minutes=5)
    mpm_access_token_ttl: timedelta = Field(default=timedelta(hours=1), gt=timedelta(minutes=10))
    mpm_refresh_token_ttl: timedelta = Field(default=timedelta(days=730), gt=timedelta(days=548))  # > 1.5 years
    mpm_payment_expiry: timedelta = Field(default=timedelta(minutes=3), le=timedelta(minutes=3))
    code_service_url: str = "http://127.0.0.1:8001"  # Alipay+'s server SDK (the sandbox's in dev)
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
    nfc_replenish_count: int = Field(default=10, ge=1, le=100)  # credentials fetched per replenish

    # Encryption of workflow payloads (histories hold personal data); older keys stay readable
    payload_key_file: Path = VAR_DIR / "keys" / "payload.key"
    payload_key_id: str = "1"
    payload_previous_key_files: dict[str, Path] = {}
    codec_cors_origins: list[str] = ["http://127.0.0.1:8233", "http://localhost:8233"]  # the Web UI

    # Refunds and cancellation (spec §5, §6): refunds are accepted for at least 366 days
    refund_window: timedelta = Field(default=timedelta(days=366), ge=timedelta(days=366))
    cancel_cutoff: time = time(0, 30)  # cancels are accepted until this time (UTC+8) on T+1

    # notifyPayment and authNotify: the waits after an unanswered attempt (the last repeats), and
    # how long after the first attempt a delivery gives up (visibly: DeliveryStatus = GAVE_UP);
    # unset, workflows.delivery.DeliverySchedule's: 5 s, 30 s, 1 min … 1 h, for 3 days
    delivery_retry_delays: list[timedelta] | None = Field(default=None, min_length=1)
    delivery_horizon: timedelta | None = Field(default=None, gt=timedelta(0))

    # Deadlines under Alipay+'s own timeouts (pay 8 s, inquiry 5 s)
    pay_answer_deadline: timedelta = timedelta(seconds=6)
    inquiry_answer_deadline: timedelta = timedelta(seconds=3)

    def load_keys(self) -> None:
        """Read every key now, so that a missing or bad file stops start-up, not the first payment."""
        _ = self.signer, self.verifier, self.secret_key, self.payload_codec

    @cached_property
    def signer(self) -> Signer:
        """Signs what the MPP sends (requests to Alipay+, answers to Alipay+)."""
        return Signer.from_pem(self.client_id, self.mpp_private_key_file.read_bytes(), self.key_version)

    @cached_property
    def verifier(self) -> Verifier:
        """Checks what Alipay+ sends the MPP, with Alipay+'s public keys."""
        keys = KeyRegistry()
        keys.add_file(self.client_id, self.alipayplus_key_version, self.alipayplus_public_key_file)
        return Verifier(self.client_id, keys)

    @cached_property
    def payload_codec(self) -> EncryptionCodec:
        keys = {key_id: path.read_bytes() for key_id, path in self.payload_previous_key_files.items()}
        keys[self.payload_key_id] = self.payload_key_file.read_bytes()
        return EncryptionCodec(keys, self.payload_key_id)

    @cached_property
    def secret_key(self) -> bytes:
        """Server secret for keyed digests of PINs, OTPs and tokens."""
        return self.secret_key_file.read_bytes()
