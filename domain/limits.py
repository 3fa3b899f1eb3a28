"""How long each bounded value may be, in characters: one constant per thing.

Validation (menu checks, API models, webhook parsing) and the columns that store the value
(``store/models.py``) read the same constant, so a value validation lets through always fits
its column; ``tests/test_limits.py`` checks that every ``String`` column is one of these.
Where a provider may send more than we can keep (an inbound reply id), the value is cut
deliberately before it is stored (``cut``), never left to become a database error.
"""

from __future__ import annotations

from domain import whatsapp

# --- what customers and providers send ---------------------------------------------------

ADDRESS = 320
"""An address on any channel. The longest is an e-mail address: RFC 5321 allows a 64-character
local part, ``@`` and a 255-character domain (E.164 phone numbers have at most 15 digits)."""
BUTTON_ID = whatsapp.BUTTON_ID
"""A reply button's id: WhatsApp documents 256 characters."""
ROW_ID = whatsapp.ROW_ID
"""A list row's id: WhatsApp documents 200 characters."""
REPLY_ID = max(BUTTON_ID, ROW_ID)
"""The id of the button or row a customer tapped, as stored: the longest id we can send. A
longer one from a provider (a template button's payload) names none of our options and is
cut to this."""
PROVIDER_MESSAGE_ID = 255
"""A provider's message id: Meta's ``wamid`` is under 100 characters, a Twilio SID 34. A
longer one is cut to this (it is only ever compared with what we stored)."""
MESSAGE_KIND = 40
"""``text``, ``interactive``, ``button``...: Meta's message types are single words; a longer
one is cut."""
CONTACT_NAME = 255
"""A contact's name; a WhatsApp profile name longer than this is cut."""
ERROR_CODE = 40
"""A provider's error code (Twilio's are five digits, Meta's up to six)."""
DEVICE_TOKEN = 512
"""An FCM registration token (about 160 characters today; Google documents no maximum, so
room to grow)."""
TWILIO_SID = 34
"""A Twilio SID (Content SID ``HX`` + 32 hex digits), as Twilio documents."""

# --- what operators write ------------------------------------------------------------------

MENU_NAME = 64
"""A menu's name (``domain.menu_definition.NAME``): short, it is typed in ``next`` targets."""
STEP_NAME = 255
"""A menu step's name, stored as a session's ``last_step``."""
EVENT_NAME = 120
"""The ``event`` a menu's end step emits, read by automation rules."""
EVENT_SOURCE = 120
"""Who emitted a business event: ``menu:{menu name}``, ``api``, ``inbound:{channel}``."""
EVENT_KEY = 200
"""The idempotency key a caller of ``POST /v1/events`` gives (stored as ``api:{key}``)."""
EVENT_DATA = 16_000
"""An event's ``data``, as compact JSON: what a rule reads, not a document store."""
EVENT_TEXT = 4096
"""The text of a message kept in its ``message_received`` event (WhatsApp's longest body;
the message itself is kept whole)."""
LEAD_STATUS = 64
"""A contact's lead status (``new``, ``contacted``, ``won``): free text of the operator's."""
LEAD_SOURCE = 120
"""Where a lead came from, as the operator names it (``facebook_ad``, ``referral:anna``)."""
TAG = 64
"""One of a contact's tags."""
MAX_TAGS = 50
CUSTOM_FIELDS = 16_000
"""A contact's custom ``fields``, as compact JSON."""
TRIGGER_KEYWORD = 100
"""A menu's trigger keyword: a few words a customer types."""
MAX_TRIGGER_KEYWORDS = 100
TEMPLATE_NAME = 512
"""A WhatsApp message template's name: Meta documents at most 512 characters."""
MAX_TEMPLATE_COMPONENTS = 20
"""A template has a header, a body, a footer and at most 10 buttons; room to spare."""
TEMPLATE_VARIABLE = whatsapp.BODY
"""One value put into a template (no parameter can be longer than a body)."""
MAX_TEMPLATE_VARIABLES = 100
MESSAGE_TEMPLATE_NAME = 64
"""One of Nudge's own message templates (``/v1/templates/{name}``): short, rules name it."""
TEMPLATE_TEXT = 20_000
"""A template variant's text (a WhatsApp one is held to ``whatsapp.TEXT`` by the checks): a
long e-mail, not a document."""
MAX_TEMPLATE_VARIANTS = 50
"""Locales of one template."""
KEY_NAME = 128
"""The name of a template variable or of a push message's data field."""
SUBJECT = 255
"""An e-mail subject: RFC 5322 advises lines under 78 characters; a few lines at most."""
HTML = 102_000
"""An e-mail's HTML: Gmail clips a message whose HTML is over about 102 kB."""
PUSH_DATA = 4096
"""An FCM message's data: FCM refuses a payload over 4096 bytes."""
MAX_PUSH_DATA_KEYS = 100
MAX_DEVICE_TOKENS = 20
"""FCM tokens of one contact: one per app install."""
MESSAGE_KEY = 120
"""The idempotency key a caller of ``POST /v1/messages`` may give (``message:{key}``)."""
SUPPRESSION_REASON = 255
TIMEZONE = 64
"""An IANA zone name; the longest in the database has about 30 characters."""
LOCALE = 20
"""A BCP 47 language tag (``en``, ``pt-BR``, ``zh-Hant-TW``) or a WhatsApp language code."""
TOKEN_NAME = 120
"""What an API token is for, as its creator names it."""
MAX_FOLLOWUP_STEPS = 20
"""Waits of one follow-up sequence (the default has two); each step is a few history events,
so even 20 keeps a run's history small."""
AUTOMATION_NAME = 255
"""An automation rule's name, a few words a person types: 255, the size a name column
usually has (the original system documents none), so names moved over from it fit."""
MAX_CONDITIONS = 50
"""Keys of one rule's ``conditions``: a filter, not a program (the original's examples have
two)."""
CONDITION_KEY = len("fields.") + KEY_NAME
"""A condition's key: ``fields.`` or ``event.`` and a name as long as a data field's."""
CONDITION_VALUE = ADDRESS
"""A value a condition compares with: a status, source, tag, field value or an address
(``event.to``), the longest of which is an address."""
MAX_CONDITION_VALUES = 100
"""Values of one any-of list: more is a segment, better kept as a tag."""
MAX_REPEAT = 10
"""Messages a ``no_contact_days`` rule sends in one quiet spell: past ten unanswered it is
nagging, and each is a timer in a contact's watch."""
WEBHOOK_URL = 2048
"""A webhook's URL: the length browsers and most servers accept (2 kB)."""
WEBHOOK_SECRET = 256
"""A webhook's signing secret: an HMAC-SHA256 key gains nothing past 64 bytes; room for any
generator's encoding."""
AUTOMATION_TYPE = 40
"""An automation rule's ``type`` (``lead_followup`` ... ``crm_update``), as stored."""
RUN_OCCURRENCE = 120
"""What an automation run is a run for, as it ends its workflow id: ``event-{id}``,
``quiet-{spell start}-{n}``, ``booking-{id}-{start}``, ``test-{hex}``."""
BOOKING_SERVICE = 255
"""A booking's service, a few words a person types (``Initial consultation``)."""
BOOKING_LOCATION = 512
"""Where a booking happens: an address or a video-call link."""
BOOKING_NOTES = 4000
"""A booking's notes, free text."""

# --- ours: ids and keys Nudge builds -------------------------------------------------------

WORKFLOW_ID = 255
"""A workflow id: ``followup:reamaze:{slug}``, ``message:{key}``, ``menu:{channel}:{contact}``
are built to fit (Temporal itself allows 1000)."""
CONVERSATION_SLUG = 200
"""A Re:amaze conversation slug (Re:amaze documents no maximum; its slugs come from a
subject): ``followup:reamaze:{slug}`` stays well within ``WORKFLOW_ID``, and the stored slug
(``followups.conversation``) within the same length as its workflow id."""
RUN_ID = 64
RECORD_ID = 2**31 - 1
"""The largest id a table's key holds (PostgreSQL ``integer``): a contact id in a URL above
it names no record, so it is refused before it reaches the database."""
MAX_OFFSET = RECORD_ID
"""The furthest a listing can skip (``offset``): beyond the largest id there is nothing."""
"""A Temporal run id (a UUID, 36 characters)."""
SESSION_ID = WORKFLOW_ID + 1 + PROVIDER_MESSAGE_ID
"""A menu session: ``{workflow id}:{id of the message that began it}``."""
IDEMPOTENCY_KEY = 1024
"""An outbox row's or a business event's key: a session id and a step name or a count
(``SESSION_ID`` + ``STEP_NAME`` is 767), or ``fallback:{channel}:{address}:{message id}``."""
CHANNEL = 40
"""A channel, provider, helpdesk or source name (``whatsapp_twilio`` is the longest today)."""
STATUS = 20
"""A status, scope, message class, role or platform: single words of ours."""
HOLD_REASON = 40
"""Why a held message waits (``domain.policy.HoldReason``: ``frequency cap``, ``quiet hours``)."""
FOLLOWUP_STATUS = 40
"""A finished follow-up's status (``FollowUpStatus``: ``conversation_gone`` is the longest)."""
TOKEN_HASH = 64
"""SHA-256 in hex."""


def cut(value: str, limit: int) -> str:
    """At most ``limit`` characters, for provider data we keep but do not control."""
    return value[:limit]


# --- credits and scheduled follow-ups ------------------------------------------------------
CREDIT_KIND = 20
"""A ledger entry's kind (``grant``, ``reserve``, ``capture``, ``release``, ``adjust``)."""
CREDIT_REASON = 255
"""Why credits moved, a sentence a person reads in the ledger."""
CREDIT_REFERENCE = WORKFLOW_ID
"""What an entry is for: a scheduled follow-up's workflow id (``scheduled:{id}``) or the
operator's own reference (an order number)."""
CREDIT_KEY = 200
"""The idempotency key an operator gives a grant or an adjustment (stored as ``api:{key}``)."""
MAX_CREDITS = 1_000_000_000
"""The most credits one entry moves, well inside a 32-bit column even summed a little."""
CURRENCY = 3
"""An ISO 4217 currency code (``INR``, ``EUR``)."""
TEMPLATE_TYPE = 40
"""A template's type (``session_followup``, ``check_in``, ``custom``...)."""
TEMPLATE_TITLE = 120
"""A template's display name in one locale (the original's ``name`` and ``tamil_name``)."""
SERVICE_TYPE = 120
"""A session's service type, a few words of the business's (``career_guidance``)."""
SERVICE_SESSION_ID = 255
"""A consultation session's id as the platform that ran it names it."""
SCHEDULE_STATUS = 20
"""A scheduled follow-up's status (``pending`` ... ``suppressed``)."""
DURATION_TEXT = 40
"""A duration as written (``3d``, ``12h``), kept so it comes back the same way."""
SETTING_KEY = 64
"""A stored settings group's name (``followup``)."""
