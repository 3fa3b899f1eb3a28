"""Customer data in Temporal: payloads encrypted with rotating keys, the codec endpoint the Web
UI decodes them through, and the connection settings for a managed Temporal service."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from pydantic import ValidationError
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import TLSConfig
from temporalio.testing import WorkflowEnvironment

from payload_codec import ENCODING, KEY_ID, EncryptionCodec, PayloadKeyError, parse_keys
from service import create_app
from settings import Settings, TemporalSettings, WhatsAppSettings
from store.repo import Role, Store
from temporal_client import connect, connect_options
from tests.fakes.graph import FakeGraph
from tests.fakes.server import free_port, serve
from tests.menu_rig import PHONE, Rig, running_rig, text
from tests.menus import shop_menu
from worker import whatsapp_channel

K1 = base64.b64encode(b"1" * 32).decode()
K2 = base64.b64encode(b"2" * 32).decode()
UI = "https://temporal.shop.example"


def clear(data: bytes, encoding: bytes = b"json/plain") -> Payload:
    return Payload(metadata={"encoding": encoding}, data=data)


# --- the codec -------------------------------------------------------------------------


async def test_payloads_are_encrypted_under_the_first_key_and_read_back() -> None:
    codec = EncryptionCodec(parse_keys(f"k1:{K1}"))
    secret = clear(b'{"to": "+15551239876"}')
    [sealed] = await codec.encode([secret])
    assert sealed.metadata["encoding"] == ENCODING
    assert sealed.metadata[KEY_ID] == b"k1"
    assert b"15551239876" not in sealed.SerializeToString()
    assert b"json/plain" not in sealed.SerializeToString(), "the inner encoding is hidden too"
    assert await codec.decode([sealed]) == [secret]
    [again] = await codec.encode([secret])
    assert again.data != sealed.data, "a fresh nonce each time"


async def test_after_rotation_old_payloads_still_decode_and_new_ones_use_the_new_key() -> None:
    old = EncryptionCodec(parse_keys(f"k1:{K1}"))
    written_before = await old.encode([clear(b'"answer"')])
    rotated = EncryptionCodec(parse_keys(f"k2:{K2},k1:{K1}"))
    assert await rotated.decode(written_before) == [clear(b'"answer"')]
    [written_after] = await rotated.encode([clear(b'"answer"')])
    assert written_after.metadata[KEY_ID] == b"k2"
    with pytest.raises(PayloadKeyError, match=r"'k2'.*not among.*k1"):
        await old.decode([written_after])


async def test_a_payload_in_clear_passes_and_a_tampered_one_is_refused() -> None:
    codec = EncryptionCodec(parse_keys(f"k2:{K2},k1:{K1}"))
    assert await codec.decode([clear(b"1")]) == [clear(b"1")], "written before the key was set"
    [sealed] = await codec.encode([clear(b"1")])
    relabelled = Payload(metadata={**sealed.metadata, KEY_ID: b"k1"}, data=sealed.data)
    with pytest.raises(PayloadKeyError, match="'k1' does not decrypt"):
        await codec.decode([relabelled])


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (K1, "key 1 is not written <key id>:<base64"),
        (f"k1:{K1},k 2:{K2}", "key 2 is not written"),
        ("k1:not base64!", "key 'k1' is not valid base64"),
        (f"k1:{base64.b64encode(b'short').decode()}", "key 'k1' is 5 bytes; AES-256 needs 32"),
        (f"k1:{K1},k1:{K2}", "key id 'k1' is given twice"),
    ],
)
def test_a_malformed_key_is_a_settings_error_naming_it(value: str, error: str) -> None:
    with pytest.raises(ValidationError, match=error) as raised:
        TemporalSettings(encryption_key=value)
    assert K1 not in str(raised.value) and K2 not in str(raised.value), "no secret in errors"
    with pytest.raises(ValidationError) as raised, pytest.MonkeyPatch.context() as env:
        env.setenv("NUDGE_TEMPORAL__ENCRYPTION_KEY", value)
        Settings(_env_file=None)
    assert K1 not in str(raised.value) and K2 not in str(raised.value), "nor from the env"


# --- TLS and API key ---------------------------------------------------------------------


@pytest.fixture
def pem_files(tmp_path: Path) -> dict[str, Path]:
    files = {}
    for name in ("cert", "key", "ca"):
        files[name] = tmp_path / f"{name}.pem"
        files[name].write_bytes(f"-----{name}-----\n".encode())
    return files


def test_no_tls_no_key_no_codec_by_default() -> None:
    options = connect_options(TemporalSettings())
    assert options == {
        "target_host": "127.0.0.1:7233",
        "namespace": "default",
        "data_converter": pydantic_data_converter,
        "tls": False,
        "api_key": None,
    }


def test_mtls_reads_the_certificate_files(pem_files: dict[str, Path]) -> None:
    settings = TemporalSettings(
        address="shop.a1b2c.tmprl.cloud:7233",
        namespace="shop.a1b2c",
        tls_cert=str(pem_files["cert"]),
        tls_key=str(pem_files["key"]),
        tls_ca=str(pem_files["ca"]),
        tls_server_name="temporal.internal",
    )
    options = connect_options(settings)
    assert options["tls"] == TLSConfig(
        server_root_ca_cert=b"-----ca-----\n",
        domain="temporal.internal",
        client_cert=b"-----cert-----\n",
        client_private_key=b"-----key-----\n",
    )
    assert (options["target_host"], options["namespace"]) == (settings.address, settings.namespace)


def test_an_api_key_turns_tls_on() -> None:
    options = connect_options(TemporalSettings(api_key="cloud-api-key"))
    assert options["api_key"] == "cloud-api-key"
    assert options["tls"] == TLSConfig()
    assert "cloud-api-key" not in repr(TemporalSettings(api_key="cloud-api-key"))


def test_an_encryption_key_puts_the_codec_in_the_converter() -> None:
    converter = connect_options(TemporalSettings(encryption_key=f"k1:{K1}"))["data_converter"]
    assert isinstance(converter.payload_codec, EncryptionCodec)
    assert converter.payload_converter_class is pydantic_data_converter.payload_converter_class


@pytest.mark.parametrize("given", ["cert", "key"])
def test_a_certificate_without_its_key_is_a_settings_error(
    given: str, pem_files: dict[str, Path]
) -> None:
    missing = "tls_key" if given == "cert" else "tls_cert"
    with pytest.raises(ValidationError, match=f"{missing}: mTLS needs .* NUDGE_TEMPORAL__"):
        TemporalSettings(**{f"tls_{given}": str(pem_files[given])})


def test_a_missing_certificate_file_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"nowhere\.pem is not a file"):
        TemporalSettings(tls_ca=str(tmp_path / "nowhere.pem"))


def test_settings_come_from_the_environment(
    pem_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NUDGE_TEMPORAL__ENCRYPTION_KEY", f"k2:{K2}, k1:{K1}")
    monkeypatch.setenv("NUDGE_TEMPORAL__TLS_CERT", str(pem_files["cert"]))
    monkeypatch.setenv("NUDGE_TEMPORAL__TLS_KEY", str(pem_files["key"]))
    monkeypatch.setenv("NUDGE_TEMPORAL__API_KEY", "secret")
    monkeypatch.setenv("NUDGE_TEMPORAL__UI_ORIGIN", f"{UI},http://127.0.0.1:8233")
    temporal = Settings(_env_file=None).temporal
    assert [key.id for key in parse_keys(temporal.encryption_key.get_secret_value())] == [
        "k2",
        "k1",
    ]
    assert temporal.tls_cert == pem_files["cert"] and temporal.uses_tls
    assert temporal.ui_origins == [UI, "http://127.0.0.1:8233"]


# --- a conversation with encryption on, end to end ---------------------------------------


def payloads_in(message: Message) -> Iterator[Payload]:
    """Every Payload anywhere in a history event (inputs, results, signals, summaries...)."""
    if isinstance(message, Payload):
        yield message
        return
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            values = list(value.values())
        elif isinstance(value, Message):
            values = [value]
        else:  # a repeated field
            values = list(value)
        for item in values:
            if isinstance(item, Message):
                yield from payloads_in(item)


@pytest.fixture
async def encrypted_rig(
    dev_env: WorkflowEnvironment, store: Store, task_queue: str
) -> AsyncIterator[Rig]:
    """The menu rig on the dev server, its client connected the way every Nudge process
    connects (``temporal_client.connect``) with an encryption key set."""
    settings = Settings(
        _env_file=None,
        temporal=TemporalSettings(
            address=dev_env.client.service_client.config.target_host,
            task_queue=task_queue,
            encryption_key=f"k1:{K1}",
        ),
    )
    env = WorkflowEnvironment.from_client(await connect(settings))
    graph = FakeGraph()
    with serve(graph.app) as server:
        channel = whatsapp_channel(
            WhatsAppSettings(
                token=graph.token, phone_number_id=graph.phone_number_id, graph_url=server.url
            )
        )
        async with running_rig(env, store, task_queue, channel, graph=graph) as made:
            yield made


async def test_a_conversation_leaves_no_phone_number_or_answer_in_its_history(
    encrypted_rig: Rig,
) -> None:
    rig = encrypted_rig
    rig.store.save_menu(shop_menu())
    assert await rig.say("hi") == "trigger:main_menu"
    await rig.replies(1)
    for said, reply_id in (("New Order", "order"), ("Fern", "fern"), ("Small pot", "small")):
        await rig.exchange(said, reply_id)
    assert text(await rig.exchange("4711")) == "Order for 4711 plants noted!"
    result = await rig.result()
    assert (result.status, result.context) == ("completed", {"qty": "4711"})
    assert await (await rig.handle().describe()).static_summary() == (
        f"Menu main_menu with contact {rig.contact_id}"
    )

    history = await rig.handle().fetch_history()
    stored = b"".join(event.SerializeToString() for event in history.events)
    for clear_text in (PHONE.lstrip("+").encode(), b"4711", b"plants noted", b"Fern"):
        assert clear_text not in stored, clear_text
    payloads = [p for event in history.events for p in payloads_in(event)]
    searchable = {b"json/plain"}  # search attributes: ids and statuses, never encrypted
    encrypted = [p for p in payloads if p.metadata.get("encoding") not in searchable]
    assert encrypted and all(p.metadata["encoding"] == ENCODING for p in encrypted)


# --- the codec endpoint ------------------------------------------------------------------


@pytest.fixture
def codec_api(store: Store) -> Iterator[tuple[httpx.Client, dict[str, str]]]:
    settings = Settings(
        _env_file=None,
        temporal=TemporalSettings(
            address=f"127.0.0.1:{free_port()}",
            encryption_key=f"k2:{K2},k1:{K1}",
            ui_origin=UI,
        ),
    )
    with (
        serve(create_app(settings, store=store)) as server,
        httpx.Client(base_url=server.url, timeout=15) as client,
    ):
        yield client, {"Authorization": f"Bearer {store.create_token(Role.user)}"}


def as_json(*payloads: Payload) -> dict[str, Any]:
    body: dict[str, Any] = json_format.MessageToDict(Payloads(payloads=payloads))
    return body


def from_json(body: dict[str, Any]) -> list[Payload]:
    return list(json_format.ParseDict(body, Payloads()).payloads)


def test_the_web_ui_decodes_through_the_endpoint(
    codec_api: tuple[httpx.Client, dict[str, str]],
) -> None:
    client, token = codec_api
    answer = clear(b'{"qty": "4711"}')
    headers = {**token, "X-Namespace": "default", "Origin": UI}
    encoded = client.post("/codec/encode", json=as_json(answer), headers=headers)
    assert encoded.status_code == 200, encoded.text
    [sealed] = from_json(encoded.json())
    assert sealed.metadata[KEY_ID] == b"k2" and b"4711" not in sealed.data
    # The protocol's JSON form: bytes (metadata values too) as base64.
    assert encoded.json()["payloads"][0]["metadata"]["encoding"] == "YmluYXJ5L2VuY3J5cHRlZA=="

    decoded = client.post("/codec/decode", json=encoded.json(), headers=headers)
    assert decoded.status_code == 200, decoded.text
    assert from_json(decoded.json()) == [answer]
    assert decoded.headers["access-control-allow-origin"] == UI
    assert decoded.headers["access-control-allow-credentials"] == "true"


async def test_payloads_written_with_an_older_key_decode_through_the_endpoint(
    codec_api: tuple[httpx.Client, dict[str, str]],
) -> None:
    client, token = codec_api
    written = await EncryptionCodec(parse_keys(f"k1:{K1}")).encode([clear(b'"old"')])
    decoded = client.post("/codec/decode", json=as_json(*written), headers=token)
    assert from_json(decoded.json()) == [clear(b'"old"')]

    unknown = await EncryptionCodec(parse_keys(f"k0:{K1}")).encode([clear(b'"lost"')])
    refused = client.post("/codec/decode", json=as_json(*unknown), headers=token)
    assert refused.status_code == 422
    assert "'k0', which is not among" in refused.json()["detail"]


def test_decoding_needs_a_nudge_token(codec_api: tuple[httpx.Client, dict[str, str]]) -> None:
    client, _ = codec_api
    body = as_json(clear(b"1"))
    anonymous = client.post("/codec/decode", json=body, headers={"Origin": UI})
    assert anonymous.status_code == 401
    assert anonymous.headers["access-control-allow-origin"] == UI, "readable by the UI"
    forged = client.post("/codec/decode", json=body, headers={"Authorization": "Bearer nope"})
    assert forged.status_code == 401


def test_signing_in_lets_the_web_ui_send_credentials(
    codec_api: tuple[httpx.Client, dict[str, str]],
) -> None:
    client, token = codec_api
    refused = client.post("/codec/sign-in", data={"token": "nope"})
    assert refused.status_code == 401
    signed_in = client.post("/codec/sign-in", data={"token": token["Authorization"][7:]})
    assert signed_in.status_code == 200
    assert "httponly" in signed_in.headers["set-cookie"].lower()
    assert client.post("/codec/decode", json=as_json(clear(b"1"))).status_code == 200
    # A cross-site form or text post carries the cookie without a preflight: refused.
    posted = client.post("/codec/decode", content=b"{}", headers={"Content-Type": "text/plain"})
    assert posted.status_code == 415


def test_the_preflight_is_answered_for_the_ui_origin_only(
    codec_api: tuple[httpx.Client, dict[str, str]],
) -> None:
    client, _ = codec_api
    asked = {"Access-Control-Request-Method": "POST"}
    for path in ("/codec/decode", "/codec/encode"):
        preflight = client.options(path, headers={**asked, "Origin": UI})
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == UI
        assert "x-namespace" in preflight.headers["access-control-allow-headers"]
        assert "authorization" in preflight.headers["access-control-allow-headers"]
    elsewhere = client.options("/codec/decode", headers={**asked, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in elsewhere.headers


def test_another_namespace_is_not_decoded(
    codec_api: tuple[httpx.Client, dict[str, str]],
) -> None:
    client, token = codec_api
    other = client.post(
        "/codec/decode", json=as_json(clear(b"1")), headers={**token, "X-Namespace": "other"}
    )
    assert other.status_code == 404 and "serves namespace 'default'" in other.json()["detail"]


def test_without_a_key_the_endpoint_says_the_codec_is_not_configured(store: Store) -> None:
    settings = Settings(
        _env_file=None, temporal=TemporalSettings(address=f"127.0.0.1:{free_port()}")
    )
    token = {"Authorization": f"Bearer {store.create_token(Role.user)}"}
    with (
        serve(create_app(settings, store=store)) as server,
        httpx.Client(base_url=server.url, timeout=15) as client,
    ):
        answer = client.post("/codec/decode", json=as_json(clear(b"1")), headers=token)
    assert answer.status_code == 409
    assert "NUDGE_TEMPORAL__ENCRYPTION_KEY is empty" in answer.json()["detail"]
