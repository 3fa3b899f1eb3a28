"""Message templates: one text per locale, declared variables, and the one renderer.

A template says one thing on one channel, in as many languages as the shop writes
(``{"en": "Hi {{lead_name}}", "ta": "வணக்கம் {{lead_name}}"}``). Placeholders are read by the
scanner menus use (``domain.text``, the ``TEMPLATE`` dialect): ``{{name}}`` always, and the
original scripts' ``{lead_name}`` for declared names only, so the ``{`` of a JSON-ish text
stays as written. ``problems`` finds what is wrong before a template is saved; ``render``
refuses (``MissingVariables``) rather than send a placeholder to a customer.
"""

# No ``from __future__ import annotations``: a template may be carried into a workflow, and
# pydantic resolves its annotations inside the workflow sandbox.

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from domain import limits, whatsapp
from domain.channels import WHATSAPP_CHANNELS, ChannelName, Template
from domain.durations import Duration
from domain.scheduled_followups import TemplateType
from domain.text import NAME, TEMPLATE, Slot, pieces, substitute

TEMPLATE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
"""A template's own name: what rules and URLs name it by."""
VARIABLE = re.compile(NAME)
LOCALE = re.compile(r"[A-Za-z]{2,8}(?:[-_][A-Za-z0-9]{1,8})*")
"""A BCP 47 tag (``en``, ``pt-BR``) or a WhatsApp language code (``en_US``)."""
DEFAULT_LOCALE = "en"
META_TEMPLATE_NAME = re.compile(r"[a-z0-9_]+")
"""Meta accepts lower-case letters, digits and underscores in an approved template's name."""
TWILIO_CONTENT_SID = re.compile(r"HX[0-9a-fA-F]{32}")
_STRAY_PLACEHOLDER = re.compile(r"\{\{[^{}]*\}\}")
"""``{{1}}``, ``{{ }}``, ``{{lead-name}}``: looks like a placeholder, names no variable."""

LocaleKey = Annotated[str, StringConstraints(max_length=limits.LOCALE)]
VariantText = Annotated[str, StringConstraints(max_length=limits.TEMPLATE_TEXT)]
VariableName = Annotated[str, StringConstraints(max_length=limits.KEY_NAME)]
TitleText = Annotated[str, StringConstraints(max_length=limits.TEMPLATE_TITLE)]
ServiceType = Annotated[str, StringConstraints(min_length=1, max_length=limits.SERVICE_TYPE)]


class ApprovedTemplate(BaseModel):
    """The provider-approved template that says the same thing, for outside WhatsApp's
    24-hour window: Meta's by ``name`` and ``language``, Twilio's by ``content_sid``.
    ``parameters`` are declared variables, in the order of the approved template's
    ``{{1}}``, ``{{2}}``..."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="", max_length=limits.TEMPLATE_NAME)
    language: str = Field(default=DEFAULT_LOCALE, max_length=limits.LOCALE)
    content_sid: str = Field(default="", max_length=limits.TWILIO_SID)
    parameters: list[VariableName] = Field(
        default_factory=list, max_length=limits.MAX_TEMPLATE_VARIABLES
    )


class MessageTemplate(BaseModel):
    """A template as operators write it (and as it is stored)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=limits.MESSAGE_TEMPLATE_NAME)
    channel: ChannelName
    subject: str | None = Field(default=None, max_length=limits.SUBJECT)
    """An e-mail's subject (e-mail only); it may hold placeholders too."""
    variants: dict[LocaleKey, VariantText] = Field(max_length=limits.MAX_TEMPLATE_VARIANTS)
    """The text per locale: ``{"en": "...", "ta": "..."}``."""
    variables: list[VariableName] = Field(
        default_factory=list, max_length=limits.MAX_TEMPLATE_VARIABLES
    )
    """The names a caller must give values for: the only single-brace placeholders."""
    default_locale: str = Field(default="", max_length=limits.LOCALE)
    """The variant for a contact whose locale has none: ``en`` when there is one, otherwise
    the first variant written."""
    approved: dict[ChannelName, ApprovedTemplate] = Field(default_factory=dict, max_length=2)
    """``{"whatsapp": {...}, "whatsapp_twilio": {...}}``: what is sent outside the window."""
    template_type: TemplateType = TemplateType.custom
    """What the template is for; ``session_followup`` ones are scheduled when a session
    completes (``POST /v1/sessions/{id}/complete``)."""
    credits_cost: int | None = Field(default=None, ge=0, le=limits.MAX_CREDITS)
    """Credits a scheduled follow-up from this template costs; None: the settings'
    ``default_credits_cost``."""
    is_active: bool = True
    """An inactive template is kept but not used for new follow-ups."""
    description: str | None = Field(default=None, max_length=limits.TEMPLATE_TEXT)
    titles: dict[LocaleKey, TitleText] = Field(
        default_factory=dict, max_length=limits.MAX_TEMPLATE_VARIANTS
    )
    """Display names per locale (the original's ``name`` and ``tamil_name``)."""
    service_types: list[ServiceType] = Field(default_factory=list, max_length=limits.MAX_TAGS)
    """For ``session_followup``: the sessions' service types it follows; empty: all."""
    send_after: Duration = Field(default=timedelta(days=1), le=timedelta(days=3650))
    """For ``session_followup``: how long after the session it is sent."""

    @model_validator(mode="after")
    def _default_locale(self) -> "MessageTemplate":
        if not self.default_locale:
            self.default_locale = (
                DEFAULT_LOCALE
                if DEFAULT_LOCALE in self.variants or not self.variants
                else next(iter(self.variants))
            )
        return self


@dataclass(frozen=True)
class Rendered:
    subject: str | None
    text: str
    locale_used: str


@dataclass(frozen=True)
class Problem:
    loc: tuple[str | int, ...]
    """Where, from the template's root: ``("variants", "ta")``."""
    message: str

    def __str__(self) -> str:
        return ".".join(str(part) for part in self.loc) + f": {self.message}"


class TemplateError(ValueError):
    """A template that cannot be rendered as asked: never sent, never retried."""


class MissingVariables(TemplateError):
    def __init__(self, names: list[str], where: str) -> None:
        self.names = names
        self.where = where
        listed = ", ".join(names)
        super().__init__(f"no value for {listed} (used in {where}); give values for: {listed}")


class RenderedTooLong(TemplateError):
    pass


# --- choosing and rendering --------------------------------------------------------------


def _locale_key(locale: str) -> str:
    return locale.replace("_", "-").casefold()


def choose_locale(template: MessageTemplate, locale: str | None) -> str:
    """The variant for ``locale``: the same tag (``pt-BR``, ``pt_br`` alike), then its
    language (``pt``), then the template's ``default_locale``, then its first variant."""
    by_key = {_locale_key(key): key for key in template.variants}
    if locale:
        wanted = _locale_key(locale)
        for candidate in (wanted, wanted.split("-")[0]):
            if candidate in by_key:
                return by_key[candidate]
    if template.default_locale in template.variants:
        return template.default_locale
    return next(iter(template.variants))


def render(
    template: MessageTemplate,
    locale: str | None,
    values: Mapping[str, str],
    *,
    channel: ChannelName | None = None,
) -> Rendered:
    """The subject and text for a contact of ``locale``, with every placeholder filled, to
    be sent on ``channel`` (the template's own when None): its length is held to that
    channel's, and only an e-mail keeps the subject (an e-mail without one gets the
    channel's default subject).

    Raises ``MissingVariables`` naming every placeholder without a value: a template never
    leaves with ``{{lead_name}}`` in it. Values not asked for are ignored (a caller may pass
    all it knows about the contact).
    """
    if not template.variants:
        raise TemplateError("the template has no variants")
    used = choose_locale(template, locale)
    declared = set(template.variables)
    text = pieces(template.variants[used], TEMPLATE, declared)
    channel = channel or template.channel
    subject = (
        pieces(template.subject, TEMPLATE, declared)
        if template.subject is not None and channel == ChannelName.email
        else None
    )
    missing = [
        part.name
        for part in [*text, *(subject or [])]
        if isinstance(part, Slot) and part.name not in values
    ]
    if missing:
        raise MissingVariables(list(dict.fromkeys(missing)), f"the {used!r} variant or subject")
    rendered = Rendered(
        subject=None
        if subject is None
        # One line: a value must not start a new header.
        else " ".join(substitute(subject, lambda slot: values[slot.name]).split()),
        text=substitute(text, lambda slot: values[slot.name]),
        locale_used=used,
    )
    if channel in WHATSAPP_CHANNELS and len(rendered.text) > whatsapp.TEXT:
        raise RenderedTooLong(
            f"the {used!r} variant has {len(rendered.text)} characters once filled in; "
            f"WhatsApp takes at most {whatsapp.TEXT}"
        )
    if rendered.subject is not None and len(rendered.subject) > limits.SUBJECT:
        raise RenderedTooLong(
            f"the subject has {len(rendered.subject)} characters once filled in; "
            f"at most {limits.SUBJECT}"
        )
    return rendered


def approved_template(
    template: MessageTemplate, channel: ChannelName, values: Mapping[str, str]
) -> Template | None:
    """The approved template to send on ``channel`` outside WhatsApp's window, its
    parameters filled in; None when the template maps none for that channel."""
    approved = template.approved.get(channel)
    if approved is None:
        return None
    missing = [name for name in approved.parameters if name not in values]
    if missing:
        raise MissingVariables(missing, f"the approved {channel.value} template")
    filled = [values[name] for name in approved.parameters]
    if channel == ChannelName.whatsapp_twilio:
        return Template(
            content_sid=approved.content_sid,
            variables={str(i): value for i, value in enumerate(filled, start=1)},
        )
    body = [{"type": "text", "text": value} for value in filled]
    return Template(
        name=approved.name,
        language=approved.language,
        components=[{"type": "body", "parameters": body}] if body else [],
    )


# --- save-time checks --------------------------------------------------------------------


def problems(template: MessageTemplate) -> list[Problem]:
    """Everything wrong with a template, each with where it is; empty when it can be saved."""
    return [
        *_name_problems(template),
        *_variable_problems(template),
        *_variant_problems(template),
        *_subject_problems(template),
        *_approved_problems(template),
    ]


def _name_problems(template: MessageTemplate) -> Iterator[Problem]:
    if not TEMPLATE_NAME.fullmatch(template.name):
        yield Problem(
            ("name",),
            f"{template.name[:40]!r} is not a template name: lower-case letters, digits, _ and -",
        )


def _texts(template: MessageTemplate) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """(loc, text) of every text a placeholder may be in."""
    if template.subject is not None:
        yield ("subject",), template.subject
    for locale, text in template.variants.items():
        yield ("variants", locale), text


def _variable_problems(template: MessageTemplate) -> Iterator[Problem]:
    declared = set(template.variables)
    used = {name for _, text in _texts(template) for name in _placeholders(text, declared)}
    used.update(name for approved in template.approved.values() for name in approved.parameters)
    seen: set[str] = set()
    for i, name in enumerate(template.variables):
        if not VARIABLE.fullmatch(name):
            yield Problem(
                ("variables", i),
                f"{name[:40]!r} is not a variable name: letters, digits and _, "
                "not starting with a digit",
            )
        elif name in seen:
            yield Problem(("variables", i), f"{name} is declared twice")
        elif name not in used:
            # An error, not a warning: a declared name nothing uses is most often a typo in
            # a text (``{lead_nme}``), which would otherwise go out as written.
            yield Problem(
                ("variables", i),
                f"{name} is declared but no variant, subject or approved template uses it; "
                f"write {{{{{name}}}}} where it goes, or remove it",
            )
        seen.add(name)


def _placeholders(text: str, declared: set[str]) -> list[str]:
    return [part.name for part in pieces(text, TEMPLATE, declared) if isinstance(part, Slot)]


def _variant_problems(template: MessageTemplate) -> Iterator[Problem]:
    if not template.variants:
        yield Problem(("variants",), 'give at least one text, e.g. {"en": "Hi {{lead_name}}"}')
        return
    if template.default_locale not in template.variants:
        yield Problem(
            ("default_locale",),
            f"{template.default_locale!r} has no variant; use one of "
            + ", ".join(sorted(template.variants)),
        )
    seen: dict[str, str] = {}
    for locale, text in template.variants.items():
        loc: tuple[str | int, ...] = ("variants", locale)
        if not LOCALE.fullmatch(locale):
            yield Problem(loc, f"{locale[:40]!r} is not a language tag (en, ta, pt-BR)")
        elif _locale_key(locale) in seen:
            yield Problem(loc, f"the same locale as {seen[_locale_key(locale)]!r}")
        seen.setdefault(_locale_key(locale), locale)
        if not text.strip():
            yield Problem(loc, "the text is empty")
        if template.channel in WHATSAPP_CHANNELS and len(text) > whatsapp.TEXT:
            yield Problem(
                loc, f"{len(text)} characters; a WhatsApp message takes at most {whatsapp.TEXT}"
            )
    for loc, text in _texts(template):
        yield from _placeholder_problems(loc, text, set(template.variables))


def _placeholder_problems(
    loc: tuple[str | int, ...], text: str, declared: set[str]
) -> Iterator[Problem]:
    parts = pieces(text, TEMPLATE, declared)
    for name in dict.fromkeys(p.name for p in parts if isinstance(p, Slot)):
        if name not in declared:
            yield Problem(loc, f"{{{{{name}}}}} is not declared: add {name} to variables")
    for literal in (p for p in parts if isinstance(p, str) and p not in TEMPLATE.escapes.values()):
        for stray in _STRAY_PLACEHOLDER.findall(literal):
            yield Problem(
                loc,
                f"{stray[:40]} names no variable (letters, digits and _); "
                "write {{{{ and }}}} for literal double braces",
            )


def _subject_problems(template: MessageTemplate) -> Iterator[Problem]:
    if template.channel == ChannelName.email:
        if template.subject is None or not template.subject.strip():
            yield Problem(("subject",), "an e-mail template needs a subject")
        elif "\n" in template.subject or "\r" in template.subject:
            yield Problem(("subject",), "a subject is one line")
    elif template.subject is not None:
        yield Problem(("subject",), f"only e-mails have a subject, not {template.channel.value}")


def _approved_problems(template: MessageTemplate) -> Iterator[Problem]:
    if template.approved and template.channel not in WHATSAPP_CHANNELS:
        yield Problem(
            ("approved",), "approved templates are WhatsApp's; this template is not a WhatsApp one"
        )
    declared = set(template.variables)
    for channel, approved in template.approved.items():
        loc: tuple[str | int, ...] = ("approved", channel.value)
        if channel not in WHATSAPP_CHANNELS:
            yield Problem(loc, "approved templates are for whatsapp or whatsapp_twilio")
        elif channel == ChannelName.whatsapp_twilio:
            if not TWILIO_CONTENT_SID.fullmatch(approved.content_sid):
                yield Problem((*loc, "content_sid"), "Twilio's Content SID: HX and 32 hex digits")
        elif not META_TEMPLATE_NAME.fullmatch(approved.name):
            yield Problem(
                (*loc, "name"),
                "the approved template's name at Meta: lower-case letters, digits and _",
            )
        if not LOCALE.fullmatch(approved.language):
            yield Problem((*loc, "language"), f"{approved.language[:40]!r} is not a language code")
        for i, name in enumerate(approved.parameters):
            if name not in declared:
                yield Problem(
                    (*loc, "parameters", i), f"{name[:40]!r} is not declared: add it to variables"
                )
