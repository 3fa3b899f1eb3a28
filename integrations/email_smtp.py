"""E-mail over SMTP (any relay: Postmark, SES, Mailgun, a local Postfix), with aiosmtplib.

One connection per message: follow-ups are sparse, and a fresh connection never trips over a
relay that silently dropped an idle one. What to watch out for:

- The ``Message-ID`` is derived from the idempotency key, so a retried send carries the same
  id and the receiving side (and our own bounce and reply matching) can recognise it.
- The message is flattened here, not by aiosmtplib: its flattening folds header lines at 78
  characters, and a long one-click unsubscribe URL would then be turned into RFC 2047
  encoded words, which mail clients do not read as a URL. We fold only at RFC 5322's
  hard limit of 998 and send 7-bit only (bodies quoted-printable or base64 as needed), so
  any relay takes it, with or without ``8BITMIME``.
- Addresses are plain ASCII ``local@domain``; internationalised addresses (SMTPUTF8) are
  refused as ``Rejected`` rather than half supported.
- A dropped connection or a timeout once the ``DATA`` command has started may still have
  delivered the message: such failures are ``RetryLater(maybe_delivered=True)``.
- Marketing mail carries its unsubscribe link twice: in the one-click headers, which only
  some clients show, and as a visible line at the end of the text and HTML parts.
"""

from __future__ import annotations

import hashlib
import html
import re
import ssl
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, parseaddr
from typing import Literal

import aiosmtplib

from domain.channels import ChannelName, MessageClass
from integrations.channels import OutboundMessage, Receipt
from integrations.errors import ProviderError, Rejected, RetryLater

Security = Literal["starttls", "tls", "none"]

PROVIDER = "smtp"
UNSUBSCRIBE_LINE = "Unsubscribe from these e-mails"
"""The visible unsubscribe line of marketing mail (text and HTML parts)."""

_POLICY = SMTP_POLICY.clone(max_line_length=998, cte_type="7bit")
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_MAILBOX = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*")
"""RFC 5321 dot-atom local part and host name; quoted local parts and address literals are
left out because no customer address needs them and relays treat them inconsistently."""


def is_mailbox(address: str) -> bool:
    return _MAILBOX.fullmatch(address) is not None


def message_id_for(idempotency_key: str, domain: str) -> str:
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    return f"<{digest}@{domain}>"


class SmtpChannel:
    name = ChannelName.email

    def __init__(
        self,
        host: str,
        sender: str,
        *,
        port: int = 587,
        username: str = "",
        password: str = "",
        security: Security = "starttls",
        timeout: float = 30.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        """``sender`` is the From header, e.g. ``Shop <hello@shop.example>``; ``security`` is
        ``starttls`` (port 587), ``tls`` (implicit TLS, port 465) or ``none`` (local relays)."""
        address = parseaddr(sender)[1]
        if not is_mailbox(address):
            # A configuration mistake: fail when the worker starts, not at every send.
            raise ValueError(f"the sender {sender!r} has no plain address like hello@shop.example")
        self._host, self._port = host, port
        self._username, self._password = username, password
        self._security = security
        self._timeout = timeout
        self._from = sender
        self._sender = address
        self._domain = address.rpartition("@")[2]
        self._tls_context = tls_context

    def message_id(self, idempotency_key: str) -> str:
        return message_id_for(idempotency_key, self._domain)

    async def send(self, message: OutboundMessage) -> Receipt:
        recipient = message.to.strip()
        if not is_mailbox(recipient):
            raise Rejected(PROVIDER, f"{message.to!r} is not an e-mail address we can send to")
        if not message.text and not message.html:
            raise Rejected(PROVIDER, "nothing to send: the message has neither text nor html")
        url = message.unsubscribe_url
        if url and (url.split() != [url] or "<" in url or ">" in url):
            raise Rejected(PROVIDER, f"unsubscribe URL {url!r} cannot go in a header")
        message_id = self.message_id(message.idempotency_key)
        data = self._compose(message, recipient, message_id).as_bytes(policy=_POLICY)

        data_sent = False
        try:
            async with self._client() as client:
                await client.mail(self._sender)
                await client.rcpt(recipient)
                data_sent = True
                await client.data(data)
        except aiosmtplib.SMTPResponseException as exc:
            # The server answered: whatever it said, it did not take the message.
            raise _refusal(exc) from exc
        except OSError as exc:
            # Refused or dropped connections, timeouts and TLS failures (aiosmtplib's
            # connection errors and timeouts are OSErrors too).
            raise RetryLater(
                PROVIDER, f"{type(exc).__name__}: {exc}", maybe_delivered=data_sent
            ) from exc
        except aiosmtplib.SMTPException as exc:
            # The server lacks what our settings require (STARTTLS, AUTH): only an operator
            # changing the settings helps.
            raise Rejected(PROVIDER, f"{type(exc).__name__}: {exc}") from exc
        return Receipt(provider_message_id=message_id, status="sent")

    async def aclose(self) -> None:
        """Nothing to release: every send opens and closes its own connection."""

    def _client(self) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(
            hostname=self._host,
            port=self._port,
            timeout=self._timeout,
            use_tls=self._security == "tls",
            start_tls=self._security == "starttls",
            tls_context=self._tls_context,
            username=self._username or None,
            password=self._password if self._username else None,
        )

    def _compose(self, message: OutboundMessage, recipient: str, message_id: str) -> EmailMessage:
        mail = EmailMessage(policy=_POLICY)
        mail["From"] = self._from
        mail["To"] = recipient
        # Line breaks in a subject would be a header injection; any run of whitespace is one space.
        mail["Subject"] = " ".join(message.subject.split())
        mail["Date"] = format_datetime(datetime.now(UTC))
        mail["Message-ID"] = message_id
        text, markup = message.text, message.html
        url = message.unsubscribe_url
        if message.message_class == MessageClass.marketing and url:
            # RFC 8058 one-click: the mail client POSTs "List-Unsubscribe=One-Click" to the URL.
            mail["List-Unsubscribe"] = f"<{url}>"
            mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
            text = _unsubscribe_text(text, url)
            if markup:
                markup = _before_body_end(markup, _unsubscribe_html(url))
        mail.set_content(text)
        if markup:
            mail.add_alternative(markup, subtype="html")
        return mail


def _unsubscribe_text(text: str, url: str) -> str:
    footer = f"--\n{UNSUBSCRIBE_LINE}: {url}\n"
    return f"{text.rstrip()}\n\n{footer}" if text.strip() else footer


def _unsubscribe_html(url: str) -> str:
    return (
        '<p style="font-size:12px;color:#666666">'
        f'<a href="{html.escape(url)}">{UNSUBSCRIBE_LINE}</a></p>'
    )


def _before_body_end(markup: str, addition: str) -> str:
    """``addition`` just before ``</body>`` when the HTML has one, else at its end."""
    end = markup.lower().rfind("</body>")
    if end < 0:
        return f"{markup}\n{addition}"
    return f"{markup[:end]}{addition}{markup[end:]}"


def _refusal(exc: aiosmtplib.SMTPResponseException) -> ProviderError:
    reply = f"{exc.code} {exc.message}"
    what = f"server refused with {reply}"
    if 500 <= exc.code < 600:
        return Rejected(PROVIDER, what, status=exc.code, body=reply)
    # 4xx is the server's own "try again later"; anything else is a reply we cannot read.
    return RetryLater(PROVIDER, what, status=exc.code, body=reply)
