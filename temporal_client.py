"""The one way every process connects to Temporal: same address, namespace, converter (and,
when configured, payload encryption, TLS and API key)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.service import TLSConfig

from payload_codec import EncryptionCodec, parse_keys
from settings import Settings, TemporalSettings


def data_converter(settings: TemporalSettings) -> DataConverter:
    """Pydantic payloads, encrypted when ``NUDGE_TEMPORAL__ENCRYPTION_KEY`` is set."""
    codec = payload_codec(settings)
    if codec is None:
        return pydantic_data_converter
    return dataclasses.replace(pydantic_data_converter, payload_codec=codec)


def payload_codec(settings: TemporalSettings) -> EncryptionCodec | None:
    keys = parse_keys(settings.encryption_key.get_secret_value())
    return EncryptionCodec(keys) if keys else None


def connect_options(settings: TemporalSettings) -> dict[str, Any]:
    """Keyword arguments for ``Client.connect``: kept apart so what reaches a managed
    Temporal service (TLS, client certificate, API key) can be checked without one."""
    tls: TLSConfig | bool = False
    if settings.uses_tls:
        tls = TLSConfig(
            server_root_ca_cert=_read(settings.tls_ca),
            domain=settings.tls_server_name or None,
            client_cert=_read(settings.tls_cert),
            client_private_key=_read(settings.tls_key),
        )
    return {
        "target_host": settings.address,
        "namespace": settings.namespace,
        "data_converter": data_converter(settings),
        "tls": tls,
        "api_key": settings.api_key.get_secret_value() or None,
    }


def _read(path: Path | None) -> bytes | None:
    return None if path is None else path.read_bytes()


async def connect(settings: Settings) -> Client:
    return await Client.connect(**connect_options(settings.temporal))


async def ensure_search_attributes(client: Client, namespace: str) -> list[str]:
    """Register the Keyword attributes Nudge's workflows set; returns the ones it added.

    Idempotent. Clusters where workers may not use the operator API register them out of
    band (docker-compose does); a refusal here is then harmless.
    """
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import (
        AddSearchAttributesRequest,
        ListSearchAttributesRequest,
    )

    from workflows.search_attributes import ALL

    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    missing = {
        key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
        for key in ALL
        if key.name not in listed.custom_attributes
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )
    return sorted(missing)


class TemporalConnector:
    """Connects on first use and again after a failure, so the API starts before Temporal."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Client:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                self._client = await asyncio.wait_for(connect(self.settings), timeout=5)
            return self._client
