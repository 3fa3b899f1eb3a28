"""An automation rule: on a trigger, after a delay, for the contacts its conditions pick, do one
thing (send a message, update the contact, or call a webhook).

The body is the original Django system's (``name``, ``type``, ``trigger``, ``delay_hours``,
``delay_days``, ``channel``, ``message_template``, ``conditions``, ``enabled``), field for
field, so a rule written for it is accepted here unchanged; what Nudge adds (``action``,
``template``, ``message_class``, ``repeat``, ``set``, ``webhook_url``, ``webhook_secret``) has
defaults that keep such a rule doing what it did there.

What the delay means depends on the trigger: after the event for an event trigger; the quiet
spell (N days without contact) for ``no_contact_days``; how long before the booking for
``booking_reminder_hours``. Which conditions a rule may hold is ``domain.conditions``.
"""

# No ``from __future__ import annotations``: rules cross the workflow boundary and pydantic
# resolves their annotations inside the workflow sandbox.

import hashlib
import hmac
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from domain import limits
from domain.channels import ChannelName, MessageClass
from domain.conditions import Conditions, ConditionsField
from domain.durations import LONGEST, format_duration
from domain.events import Trigger, json_size, type_problem
from domain.templates import TEMPLATE_NAME

TIMER_TRIGGERS = frozenset({Trigger.no_contact_days, Trigger.booking_reminder_hours})
"""Triggers no event raises: Nudge schedules them from the contact's or the booking's clock."""

SIGNATURE_HEADER = "X-Nudge-Signature"
"""The header a webhook's receiver checks: ``t=<unix seconds>,sha256=<hex>`` (see ``signature``)."""
WEBHOOK_SECRET_MIN = 16
"""Characters of a signing secret at least: a shorter one can be guessed."""
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
"""Hosts a webhook may reach over plain http: nothing else leaves the machine unencrypted."""
ORIGINAL_READ_ONLY = frozenset(
    {"id", "user", "times_triggered", "last_triggered", "created_at", "updated_at"}
)
"""Fields the original system returned with a rule and kept itself; a rule exported from it
carries them, and they are ignored rather than refused."""


class AutomationType(StrEnum):
    """What a rule is for, as the original grouped rules; it decides defaults, not behaviour."""

    lead_followup = "lead_followup"
    booking_reminder = "booking_reminder"
    confirmation = "confirmation"
    post_session = "post_session"
    crm_update = "crm_update"


class Action(StrEnum):
    send = "send"
    """A message on ``channel``: ``template``, else ``message_template``, else the LLM's."""
    update_contact = "update_contact"
    """Changes the contact as ``set`` says."""
    webhook = "webhook"
    """POSTs the event and the contact to ``webhook_url``, signed, retried."""


TRANSACTIONAL_TYPES = frozenset({AutomationType.confirmation, AutomationType.booking_reminder})
"""Rules of these types answer something the customer did (booked): their messages are
transactional unless the rule says otherwise, so quiet hours and the frequency cap never hold
a reminder past the booking it reminds of."""

Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=limits.TAG)]


class ContactUpdate(BaseModel):
    """What an ``update_contact`` rule changes (``set``). ``fields`` is a JSON merge patch of
    the contact's custom fields, as ``PATCH /v1/contacts`` takes it: null removes a field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: str | None = Field(default=None, min_length=1, max_length=limits.LEAD_STATUS)
    fields: dict[str, Any] = {}
    tags: list[Tag] = Field(default=[], max_length=limits.MAX_TAGS)
    """Tags added."""
    remove_tags: list[Tag] = Field(default=[], max_length=limits.MAX_TAGS)

    @field_validator("fields")
    @classmethod
    def _bounded(cls, fields: dict[str, Any]) -> dict[str, Any]:
        if json_size(fields) > limits.CUSTOM_FIELDS:
            raise ValueError(f"at most {limits.CUSTOM_FIELDS} characters as JSON")
        return fields

    @property
    def empty(self) -> bool:
        return self.status is None and not (self.fields or self.tags or self.remove_tags)


class AutomationRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=limits.AUTOMATION_NAME)
    type: AutomationType
    trigger: str = Field(max_length=limits.EVENT_NAME)
    """A ``Trigger`` or the type of any other event (a slug: ``shop:order.paid``)."""
    delay_hours: int = Field(default=0, le=LONGEST.days * 24)
    delay_days: int = Field(default=0, le=LONGEST.days)
    channel: ChannelName | None = None
    message_template: str = Field(default="", max_length=limits.TEMPLATE_TEXT)
    """The text to send, with ``{placeholders}``; empty: the LLM writes it (or the fallback)."""
    conditions: ConditionsField = Conditions()
    enabled: bool = True
    action: Action = Action.send
    """Default ``send``; ``update_contact`` for a ``crm_update`` rule (see ``_defaults``)."""
    template: str | None = Field(
        default=None, min_length=1, max_length=limits.MESSAGE_TEMPLATE_NAME
    )
    """A stored template's name (``/v1/templates/{name}``), instead of ``message_template``."""
    message_class: MessageClass = MessageClass.marketing
    """Default ``marketing``; ``transactional`` for ``TRANSACTIONAL_TYPES``."""
    repeat: int = Field(default=1, ge=1, le=limits.MAX_REPEAT)
    """``no_contact_days`` only: messages per quiet spell, each ``delay`` after the last."""
    set: ContactUpdate | None = None
    webhook_url: str | None = Field(default=None, max_length=limits.WEBHOOK_URL)
    webhook_secret: str | None = Field(
        default=None, min_length=WEBHOOK_SECRET_MIN, max_length=limits.WEBHOOK_SECRET, repr=False
    )

    @property
    def delay(self) -> timedelta:
        """``delay_days`` and ``delay_hours`` together (the original allowed both: 2 d + 6 h)."""
        return timedelta(days=self.delay_days, hours=self.delay_hours)

    @property
    def timer_based(self) -> bool:
        return self.trigger in TIMER_TRIGGERS

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        """Defaults that depend on ``type``, and the original's read-only fields dropped.

        A ``crm_update`` rule did not message anyone in the original (it updated and logged),
        so one moved over unchanged updates the contact instead of sending on its ``channel``.
        """
        if not isinstance(data, dict):
            return data
        data = {
            k: v for k, v in data.items() if k in cls.model_fields or k not in ORIGINAL_READ_ONLY
        }
        kind = data.get("type")
        if data.get("action") is None:
            data["action"] = Action.update_contact if kind == "crm_update" else Action.send
        if data.get("message_class") is None:
            transactional = kind in TRANSACTIONAL_TYPES
            data["message_class"] = "transactional" if transactional else "marketing"
        # null where the original left them empty
        for nullable in ("message_template", "conditions"):
            if nullable in data and data[nullable] is None:
                del data[nullable]
        return data

    @field_validator("channel", mode="before")
    @classmethod
    def _channel_any_case(cls, value: Any) -> Any:
        """The original's documentation writes ``SMS`` and ``WhatsApp``."""
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("trigger")
    @classmethod
    def _trigger(cls, value: str) -> str:
        if value in Trigger.__members__.values():
            return Trigger(value)
        problem = type_problem(value)
        if problem:
            builtin = ", ".join(Trigger)
            raise ValueError(f"trigger: {problem}; use one of {builtin} or an event type")
        return value

    @field_validator("delay_hours", "delay_days")
    @classmethod
    def _not_negative(cls, value: int, info: ValidationInfo) -> int:
        if value < 0:
            raise ValueError(f"{info.field_name}: {value} is negative; a delay is 0 or more")
        return value

    @field_validator("template")
    @classmethod
    def _template_name(cls, name: str | None) -> str | None:
        if name is not None and not TEMPLATE_NAME.fullmatch(name):
            raise ValueError(f"template: {name[:40]!r} is not a template name (a-z, 0-9, _ and -)")
        return name

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        problem = webhook_url_problem(url)
        if problem:
            raise ValueError(f"webhook_url: {problem}")
        return url

    @model_validator(mode="after")
    def _consistent(self) -> "AutomationRule":
        """Every field that does not fit the others, each at its own location."""
        found: list[tuple[str, str]] = []
        found += self._delay_problems()
        found += self._action_problems()
        if self.repeat != 1 and self.trigger != Trigger.no_contact_days:
            found.append(("repeat", "only a no_contact_days rule repeats; remove repeat"))
        if found:
            raise _errors(found, self)
        return self

    def _delay_problems(self) -> list[tuple[str, str]]:
        if self.delay > LONGEST:
            return [("delay_days", f"the delay is over {format_duration(LONGEST)} in all")]
        if self.delay or not self.timer_based:
            return []
        if self.trigger == Trigger.no_contact_days:
            field, meaning = "delay_days", "how long without contact before it runs"
        else:
            field, meaning = "delay_hours", "how long before the booking it runs"
        needs = f"a {self.trigger} rule needs delay_days and/or delay_hours above 0: {meaning}"
        return [(field, needs)]

    def _action_problems(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        needs = {
            "channel": self.action is Action.send and self.channel is None,
            "set": self.action is Action.update_contact
            and (self.set is None or self.set.empty)
            and self.type is not AutomationType.crm_update,
            "webhook_url": self.action is Action.webhook and self.webhook_url is None,
            "webhook_secret": self.action is Action.webhook and self.webhook_secret is None,
        }
        what = {
            "channel": f"the channel to send on ({', '.join(ChannelName)})",
            "set": "what to change: status, fields, tags or remove_tags",
            "webhook_url": "the https URL to POST the event to",
            "webhook_secret": (
                f"at least {WEBHOOK_SECRET_MIN} characters the receiver checks the "
                f"{SIGNATURE_HEADER} header with"
            ),
        }
        for name, missing in needs.items():
            if missing:
                found.append((name, f"a {self.action} rule needs {name}: {what[name]}"))
        only = {
            "set": Action.update_contact,
            "webhook_url": Action.webhook,
            "webhook_secret": Action.webhook,
            "template": Action.send,
        }
        for name, action in only.items():
            if getattr(self, name) is not None and self.action is not action:
                found.append(
                    (
                        name,
                        f"only a rule with action {action} has {name} (this one has {self.action})",
                    )
                )
        if self.template is not None and self.message_template:
            found.append(("template", "give template or message_template, not both"))
        return found


def _errors(found: list[tuple[str, str]], rule: AutomationRule) -> ValidationError:
    """One 422 entry per field, located at the field and naming it in words too (a client
    that shows only ``msg`` still says which)."""
    details = [
        InitErrorDetails(
            type=PydanticCustomError("value_error", f"{name}: {message}"),
            loc=(name,),
            input=getattr(rule, name),
        )
        for name, message in found
    ]
    return ValidationError.from_exception_data(AutomationRule.__name__, details)


def webhook_url_problem(url: str) -> str | None:
    """Why ``url`` cannot take a rule's webhook, or None. Plain http only to this machine:
    the body carries a contact's details."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - a port out of range raises here
    except ValueError as exc:
        return f"not a URL: {exc}"
    if parts.scheme not in ("https", "http") or not host:
        return "write an https:// URL (http:// only to localhost)"
    if parts.scheme == "http" and host not in LOCAL_HOSTS and not host.endswith(".localhost"):
        return f"http:// only to localhost; use https:// for {host}"
    if parts.username or parts.password:
        return "no user or password in the URL; the signature header authenticates the call"
    return None


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The ``SIGNATURE_HEADER`` value for a webhook call: HMAC-SHA256 of ``{timestamp}.`` and the
    body, so a receiver can refuse a replayed call (an old timestamp) as well as a forged one."""
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},sha256={digest}"
