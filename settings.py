"""One settings tree for every process: env prefix ``NUDGE_``, nesting by ``__``.

``settings.reamaze.poll_interval`` is ``NUDGE_REAMAZE__POLL_INTERVAL``; a ``.env`` file in the
working directory is read when present. Durations are written ``90s``, ``30m``, ``24h``,
``3d`` (a bare number means seconds; ``domain.durations``) so that operators never guess the
unit.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from domain.addresses import DEFAULT_REGION, is_region
from domain.channels import ChannelName
from domain.durations import Duration, parse_duration_list

DurationList = Annotated[list[timedelta], NoDecode, BeforeValidator(parse_duration_list)]
CsvList = Annotated[
    list[str],
    NoDecode,
    BeforeValidator(
        lambda v: [s.strip() for s in v.split(",") if s.strip()] if isinstance(v, str) else v
    ),
]


SECRET_KEY_MIN_LENGTH = 32
MAKE_SECRET_KEY = (
    'Make one with: python -c "import secrets; print(secrets.token_urlsafe(32))" '
    "and give the same value to every process (e.g. in .env)."
)


class TemporalSettings(BaseModel):
    address: str = "127.0.0.1:7233"
    namespace: str = "default"
    task_queue: str = "nudge"
    max_cached_workflows: int = Field(default=1000, ge=0)
    """Workflows a worker keeps in memory between their steps (the SDK's default). A parked
    contact watch or reminder out of the cache is replayed from its history when it wakes:
    with more waiting runs than this, a burst of timers is worked through about half as fast
    (``bench/automations.py``); each cached run costs some 200 KB of the worker's memory."""
    ui_port: int = 8233
    """Port of the Web UI that ``nudge dev`` starts (the UI of a remote cluster is its own)."""
    encryption_key: SecretStr = SecretStr("")
    """Encrypts every payload (inputs, results, signals: phone numbers, answers, transcripts)
    before it reaches the Temporal server: ``k2:<base64 32 bytes>,k1:<base64 32 bytes>``, the
    first key encrypts, all decrypt (``payload_codec``). Empty: payloads are stored in clear.
    The worker, the HTTP service and ``nudge dev`` must all have the same keys."""
    ui_origin: CsvList = Field(default_factory=list)
    """Origin(s) of the Temporal Web UI allowed to call ``/codec/decode`` from the browser,
    e.g. ``https://temporal.shop.example``. Empty: the UI ``nudge dev`` starts
    (``http://127.0.0.1:{ui_port}``, ``http://localhost:{ui_port}``)."""
    tls: bool = False
    """Connect over TLS (with the system's root certificates unless ``tls_ca`` is set); on by
    itself when a client certificate, a CA or an API key is configured."""
    tls_cert: Path | None = None
    """Client certificate file (PEM) for mTLS, with ``tls_key``."""
    tls_key: Path | None = None
    """Private key file (PEM) of ``tls_cert``."""
    tls_ca: Path | None = None
    """CA certificate file (PEM) the server's certificate is checked against."""
    tls_server_name: str = ""
    """The name the server's certificate is checked against (and sent as SNI), when it is
    not the host of ``address``."""
    api_key: SecretStr = SecretStr("")
    """An API key (Temporal Cloud): sent as ``Authorization: Bearer``, over TLS."""

    model_config = ConfigDict(hide_input_in_errors=True)  # a malformed key is still a secret

    @field_validator("tls_cert", "tls_key", "tls_ca", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value in ("", None) else value

    @field_validator("tls_cert", "tls_key", "tls_ca")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a file")
        return value

    @field_validator("encryption_key")
    @classmethod
    def _keys(cls, value: SecretStr) -> SecretStr:
        from payload_codec import parse_keys

        parse_keys(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _cert_with_key(self) -> TemporalSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            missing = "tls_key" if self.tls_key is None else "tls_cert"
            raise ValueError(
                f"{missing}: mTLS needs a client certificate and its private key; set "
                f"NUDGE_TEMPORAL__{missing.upper()} too"
            )
        return self

    @property
    def ui_origins(self) -> list[str]:
        return self.ui_origin or [
            f"http://127.0.0.1:{self.ui_port}",
            f"http://localhost:{self.ui_port}",
        ]

    @property
    def uses_tls(self) -> bool:
        return bool(
            self.tls
            or self.tls_cert
            or self.tls_ca
            or self.tls_server_name
            or self.api_key.get_secret_value()
        )


class HttpSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    max_body: ByteSize = ByteSize(1024 * 1024)
    """Request bodies over this many bytes (``1MiB``, ``512KiB`` or a number) get 413 before
    they are read: webhooks are unsigned until read, so the size is the first thing checked."""


class ReamazeSettings(BaseModel):
    brand: str = ""
    login_email: str = ""
    api_token: SecretStr = SecretStr("")
    base_url: str = ""
    """Defaults to ``https://{brand}.reamaze.io/api/v1`` (the documented host)."""
    trigger_tag: str = "Needs-Sales-Followup"
    poll_interval: Duration = timedelta(seconds=60)
    remove_tag_on_finish: bool = True
    timeout: Duration = timedelta(seconds=25)

    @model_validator(mode="after")
    def _default_base_url(self) -> ReamazeSettings:
        if not self.base_url and self.brand:
            self.base_url = f"https://{self.brand}.reamaze.io/api/v1"
        self.base_url = self.base_url.rstrip("/")
        return self

    @property
    def missing(self) -> list[str]:
        """The settings Re:amaze still needs, by their env names (empty: configured)."""
        needed = {
            "NUDGE_REAMAZE__BRAND": self.base_url,
            "NUDGE_REAMAZE__LOGIN_EMAIL": self.login_email,
            "NUDGE_REAMAZE__API_TOKEN": self.api_token.get_secret_value(),
        }
        return [name for name, value in needed.items() if not value]

    @property
    def configured(self) -> bool:
        return not self.missing


class FollowupSettings(BaseModel):
    waits: DurationList = Field(
        default_factory=lambda: [timedelta(minutes=30), timedelta(hours=24)]
    )
    config_file: Path | None = None
    """The original script's own ``config.json`` (prompts, fallbacks, links, model): read unchanged."""
    purchase_indicators: CsvList = Field(
        default_factory=lambda: [
            "placed an order (",
            "payment successful",
            "order #",
            "completed my order",
        ]
    )
    history_messages: int = 15
    """How many of the latest messages the writer sees."""
    max_chars: int = 1500
    """Longer LLM output is refused and the fallback text is sent instead."""

    @field_validator("config_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value in ("", None) else value


class LLMSettings(BaseModel):
    provider: Literal["auto", "gemini", "openai", "none"] = "auto"
    """``auto`` picks Gemini when its key is set, else OpenAI when its key is set, else none."""


def _env_first(*names: str) -> str:
    for name in names:
        if os.environ.get(name):
            return os.environ[name]
    return ""


class GeminiSettings(BaseModel):
    api_key: SecretStr = Field(
        default_factory=lambda: SecretStr(_env_first("GOOGLE_API_KEY", "GEMINI_API_KEY"))
    )
    base_url: str = ""
    """Empty means Google's own endpoint."""
    model: str = "gemini-3.5-flash"
    thinking_level: Literal["minimal", "low", "medium", "high"] | None = "minimal"
    """Gemini 3 and later: thinking tokens count against the output limit, so a short
    follow-up wants the least thinking ("minimal" is for Flash models; Pro takes "low")."""
    thinking_budget: int | None = 0
    """Gemini 2.x: the thinking token budget; 0 turns thinking off where allowed."""

    @field_validator("thinking_budget", "thinking_level", mode="before")
    @classmethod
    def _empty_is_default(cls, value: Any) -> Any:
        return None if value == "" else value


class OpenAISettings(BaseModel):
    api_key: SecretStr = SecretStr("")
    base_url: str = ""
    """Any OpenAI-compatible server; empty means api.openai.com."""
    model: str = "gpt-4o-mini"


class SmtpSettings(BaseModel):
    host: str = ""
    """Empty means e-mail is in sandbox mode: recorded in the outbox, nothing sent."""
    port: int = 587
    username: str = ""
    password: SecretStr = SecretStr("")
    from_: str = Field(default="", alias="from")
    """The From address (``NUDGE_SMTP__FROM``), e.g. ``Shop <hello@shop.example>``."""
    security: Literal["starttls", "tls", "none"] = "starttls"
    """``starttls`` (port 587), ``tls`` (implicit TLS, port 465) or ``none`` (local relays)."""
    timeout: Duration = timedelta(seconds=30)

    model_config = {"populate_by_name": True}

    @property
    def configured(self) -> bool:
        return bool(self.host and self.from_)


class TwilioSettings(BaseModel):
    account_sid: str = ""
    auth_token: SecretStr = SecretStr("")
    sms_from: str = ""
    """E.164 sender for SMS, e.g. +15005550006."""
    whatsapp_from: str = ""
    """E.164 WhatsApp sender (the ``whatsapp:`` prefix is added for you)."""
    messaging_service_sid: str = ""
    """When set, sends go through the Messaging Service instead of a From number."""
    base_url: str = "https://api.twilio.com"

    @property
    def configured(self) -> bool:
        return bool(self.account_sid and self.auth_token.get_secret_value())


class WhatsAppSettings(BaseModel):
    """WhatsApp through Meta's Cloud API."""

    token: SecretStr = SecretStr("")
    phone_number_id: str = ""
    app_secret: SecretStr = SecretStr("")
    """Verifies ``X-Hub-Signature-256`` on webhooks (the app secret, not the access token)."""
    verify_token: SecretStr = SecretStr("")
    """Answers Meta's ``hub.verify_token`` when the webhook is registered."""
    graph_url: str = "https://graph.facebook.com"
    api_version: str = "v23.0"

    @property
    def configured(self) -> bool:
        return bool(self.token.get_secret_value() and self.phone_number_id)


class FcmSettings(BaseModel):
    credentials_file: Path | None = None
    """A Firebase service-account JSON file (its ``token_uri`` is where tokens come from)."""
    project_id: str = ""
    """Defaults to the service account's ``project_id``."""
    base_url: str = "https://fcm.googleapis.com"

    @field_validator("credentials_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value in ("", None) else value

    @property
    def configured(self) -> bool:
        return self.credentials_file is not None


class SupportBoardSettings(BaseModel):
    url: str = ""
    """The Support Board ``include/api.php`` URL."""
    token: SecretStr = SecretStr("")
    """An admin token: Support Board's API accepts no other."""
    bot_user_id: str = ""
    """The bot's user id: its own messages come back as webhooks and must be ignored."""

    @property
    def configured(self) -> bool:
        return bool(self.url and self.token.get_secret_value())


class DeliverySettings(BaseModel):
    """The send path itself (policy -> outbox -> channel)."""

    in_flight_grace: Duration = timedelta(minutes=2)
    """A send another attempt left ``sending`` is waited for this long (that attempt may be
    alive but slow, e.g. a worker too busy to heartbeat) before it is reported ``unknown``.
    Longer than any provider call may take; never a reason to send twice."""


class PolicySettings(BaseModel):
    quiet_hours_start: str = "21:00"
    """Marketing messages are held from here (in the contact's time zone) ..."""
    quiet_hours_end: str = "08:00"
    """... until here. Equal start and end turn quiet hours off."""
    default_timezone: str = "UTC"
    """For contacts whose time zone is unknown: set it to the shop's own zone, or quiet hours
    are judged in UTC (a shop in the Americas would find its messages held in its afternoon)."""
    default_region: str = DEFAULT_REGION
    """Where a phone number the API is given without ``+`` and a country code is read
    (``(555) 123-4567`` is ``+15551234567`` in ``US``): a two-letter region code."""
    quiet_hours_channels: Annotated[list[ChannelName], NoDecode] = Field(
        default_factory=lambda: [ChannelName.sms, ChannelName.whatsapp, ChannelName.push]
    )
    """The channels quiet hours hold marketing on (``sms,whatsapp,push``): those that ring a
    phone. E-mail and helpdesk replies (``reamaze``) wait in an inbox and are not held unless
    named here; ``whatsapp`` covers WhatsApp through Twilio too (the same phone). Empty: none."""
    frequency_cap: int = 3
    """Marketing messages per contact across all workflows within ``frequency_window``."""
    frequency_window: Duration = timedelta(hours=24)
    whatsapp_window: Duration = timedelta(hours=24)
    """Free-form WhatsApp messages only this long after the contact's last inbound message."""

    @field_validator("quiet_hours_start", "quiet_hours_end")
    @classmethod
    def _clock_time(cls, value: str) -> str:
        if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value.strip()):
            raise ValueError(f"{value!r} is not a time of day; write it like 21:00")
        return value.strip()

    @field_validator("quiet_hours_channels", mode="before")
    @classmethod
    def _known_channels(cls, value: Any) -> Any:
        """A comma-separated list in the environment; every name must be a channel."""
        if isinstance(value, str):
            value = value.split(",")
        if not isinstance(value, list | tuple | set | frozenset):
            return value
        names = [str(name).strip() for name in value if str(name).strip()]
        known = [channel.value for channel in ChannelName]
        for name in names:
            if name not in known:
                raise ValueError(
                    f"{name!r} is not a channel; quiet hours can apply to {', '.join(known)}"
                )
        return names

    @field_validator("default_region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        region = value.strip().upper()
        if not is_region(region):
            raise ValueError(
                f"{value!r} is not a region whose phone numbers are known; use a two-letter "
                "code like US, GB or FR"
            )
        return region

    @field_validator("default_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"{value!r} is not an IANA time zone like Europe/Paris") from exc
        return value


class MenusSettings(BaseModel):
    """WhatsApp menu conversations (``MenuConversation``)."""

    file: str = ""
    """A YAML or JSON file of menu definitions, loaded (and validated) when ``nudge serve`` or
    ``nudge dev`` starts; a definition in it replaces the stored menu of the same name."""
    fallback_text: str = ""
    """Auto-reply to an inbound WhatsApp message that matches no menu; empty sends none."""
    fallback_period: Duration = timedelta(hours=24)
    """At most one fallback reply per contact within this period."""
    hint: str = "Please choose one of the options."
    """Sent when a reply matches none of a menu step's options (the step is then repeated)."""
    routing_retry_interval: Duration = timedelta(seconds=30)
    """How often the HTTP service looks for inbound WhatsApp messages whose routing failed
    (Temporal unreachable, a process stopped mid-way) and routes them again."""
    routing_max_age: Duration = timedelta(hours=24)
    """Messages older than this are no longer routed again (the WhatsApp window has closed)."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="NUDGE_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        hide_input_in_errors=True,  # the value at fault may be a key or a token
    )

    database_url: str = Field(default="sqlite:///.nudge/nudge.db", repr=False)
    """Left out of ``repr``: a PostgreSQL URL carries its password."""
    public_url: str = "http://127.0.0.1:8000"
    log_level: str = "INFO"
    secret_key: SecretStr = SecretStr("")
    """Encrypts and signs unsubscribe links, so every process that makes or reads one needs the
    same key: ``nudge worker`` and ``nudge serve`` refuse to start without it. Only ``nudge
    dev`` (one machine) falls back to a random key kept in ``.nudge/secret.key``."""
    temporal: TemporalSettings = Field(default_factory=TemporalSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    reamaze: ReamazeSettings = Field(default_factory=ReamazeSettings)
    followup: FollowupSettings = Field(default_factory=FollowupSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    gemini: GeminiSettings = Field(default_factory=GeminiSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    twilio: TwilioSettings = Field(default_factory=TwilioSettings)
    whatsapp: WhatsAppSettings = Field(default_factory=WhatsAppSettings)
    fcm: FcmSettings = Field(default_factory=FcmSettings)
    support_board: SupportBoardSettings = Field(default_factory=SupportBoardSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    menus: MenusSettings = Field(default_factory=MenusSettings)

    @field_validator("secret_key")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        length = len(value.get_secret_value())
        if 0 < length < SECRET_KEY_MIN_LENGTH:
            raise ValueError(
                f"NUDGE_SECRET_KEY is {length} characters; it needs at least "
                f"{SECRET_KEY_MIN_LENGTH}. {MAKE_SECRET_KEY}"
            )
        return value

    @property
    def llm_provider(self) -> Literal["gemini", "openai", "none"]:
        if self.llm.provider != "auto":
            return self.llm.provider
        if self.gemini.api_key.get_secret_value():
            return "gemini"
        if self.openai.api_key.get_secret_value():
            return "openai"
        return "none"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
