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

from pydantic import BaseModel, BeforeValidator, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from domain.durations import Duration, parse_duration_list

DurationList = Annotated[list[timedelta], NoDecode, BeforeValidator(parse_duration_list)]
CsvList = Annotated[
    list[str],
    NoDecode,
    BeforeValidator(
        lambda v: [s.strip() for s in v.split(",") if s.strip()] if isinstance(v, str) else v
    ),
]


class TemporalSettings(BaseModel):
    address: str = "127.0.0.1:7233"
    namespace: str = "default"
    task_queue: str = "nudge"
    ui_port: int = 8233
    """Port of the Web UI that ``nudge dev`` starts (the UI of a remote cluster is its own)."""


class HttpSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000


class ReamazeSettings(BaseModel):
    brand: str = ""
    login_email: str = ""
    api_token: str = ""
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
    def configured(self) -> bool:
        return bool(self.base_url and self.login_email and self.api_token)


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
    api_key: str = Field(default_factory=lambda: _env_first("GOOGLE_API_KEY", "GEMINI_API_KEY"))
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
    api_key: str = ""
    base_url: str = ""
    """Any OpenAI-compatible server; empty means api.openai.com."""
    model: str = "gpt-4o-mini"


class SmtpSettings(BaseModel):
    host: str = ""
    """Empty means e-mail is in sandbox mode: recorded in the outbox, nothing sent."""
    port: int = 587
    username: str = ""
    password: str = ""
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
    auth_token: str = ""
    sms_from: str = ""
    """E.164 sender for SMS, e.g. +15005550006."""
    whatsapp_from: str = ""
    """E.164 WhatsApp sender (the ``whatsapp:`` prefix is added for you)."""
    messaging_service_sid: str = ""
    """When set, sends go through the Messaging Service instead of a From number."""
    base_url: str = "https://api.twilio.com"

    @property
    def configured(self) -> bool:
        return bool(self.account_sid and self.auth_token)


class WhatsAppSettings(BaseModel):
    """WhatsApp through Meta's Cloud API."""

    token: str = ""
    phone_number_id: str = ""
    app_secret: str = ""
    """Verifies ``X-Hub-Signature-256`` on webhooks (the app secret, not the access token)."""
    verify_token: str = ""
    """Answers Meta's ``hub.verify_token`` when the webhook is registered."""
    graph_url: str = "https://graph.facebook.com"
    api_version: str = "v23.0"

    @property
    def configured(self) -> bool:
        return bool(self.token and self.phone_number_id)


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
    token: str = ""
    """An admin token: Support Board's API accepts no other."""
    bot_user_id: str = ""
    """The bot's user id: its own messages come back as webhooks and must be ignored."""

    @property
    def configured(self) -> bool:
        return bool(self.url and self.token)


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
    """For contacts whose time zone is unknown."""
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
    )

    database_url: str = "sqlite:///.nudge/nudge.db"
    public_url: str = "http://127.0.0.1:8000"
    log_level: str = "INFO"
    secret_key: str = ""
    """Signs unsubscribe links. Empty: a random key is kept in ``.nudge/secret.key`` (fine for
    one machine; set it explicitly when several containers share the work)."""
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

    @property
    def llm_provider(self) -> Literal["gemini", "openai", "none"]:
        if self.llm.provider != "auto":
            return self.llm.provider
        if self.gemini.api_key:
            return "gemini"
        if self.openai.api_key:
            return "openai"
        return "none"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
