"""The SMTP e-mail channel against a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import html
from collections.abc import Iterator
from typing import Any

import pytest

from domain.channels import ChannelName, MessageClass
from integrations.channels import OutboundMessage
from integrations.email_smtp import SmtpChannel
from integrations.errors import Rejected, RetryLater
from settings import SmtpSettings
from tests.fakes.server import free_port
from tests.fakes.smtp import Command, FakeSmtp
from worker import smtp_channel

FROM = "Shop <hello@shop.example>"
UNSUBSCRIBE = "https://shop.example/u/one-click?contact=c-42&sig=" + "9f" * 40
"""Longer than a 78-character header line, as a signed URL is."""


def channel(smtp: FakeSmtp, **settings: Any) -> SmtpChannel:
    values: dict[str, Any] = {
        "host": smtp.host,
        "port": smtp.port,
        "from": FROM,
        "security": "none",
        "timeout": 5,
    }
    values.update(settings)
    tls_context = smtp.client_tls_context() if smtp.tls else None
    return smtp_channel(SmtpSettings.model_validate(values), tls_context=tls_context)


def email(key: str = "followup:c-42:1", **fields: Any) -> OutboundMessage:
    values: dict[str, Any] = {
        "to": "ann@example.com",
        "subject": "Your basket is waiting",
        "text": "Hi Ann, your basket is still there.",
    }
    values.update(fields)
    return OutboundMessage(channel=ChannelName.email, idempotency_key=key, **values)


@pytest.fixture
def smtp() -> Iterator[FakeSmtp]:
    with FakeSmtp() as server:
        yield server


async def test_plain_text_message(smtp: FakeSmtp) -> None:
    receipt = await channel(smtp).send(email(text="Hi Ann, déjà vu: your basket is still there."))

    assert receipt.status == "sent"
    [received] = smtp.received
    assert received.mail_from == "hello@shop.example"
    assert received.rcpt_tos == ("ann@example.com",)
    sent = received.message
    assert sent["From"] == FROM
    assert sent["To"] == "ann@example.com"
    assert sent["Subject"] == "Your basket is waiting"
    assert sent["Date"] is not None
    assert sent["Message-ID"] == receipt.provider_message_id
    assert sent.get_content_type() == "text/plain"
    assert sent.get_content() == "Hi Ann, déjà vu: your basket is still there.\n"
    assert received.raw.isascii(), "7-bit only, so any relay takes it"


async def test_text_and_html_are_alternatives(smtp: FakeSmtp) -> None:
    await channel(smtp).send(email(html="<p>Hi Ann, your <b>basket</b> is still there.</p>"))

    sent = smtp.messages[0]
    assert sent.get_content_type() == "multipart/alternative"
    parts = [part.get_content_type() for part in sent.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    plain = sent.get_body(preferencelist=("plain",))
    html = sent.get_body(preferencelist=("html",))
    assert plain is not None and plain.get_content() == "Hi Ann, your basket is still there.\n"
    assert html is not None
    assert html.get_content() == "<p>Hi Ann, your <b>basket</b> is still there.</p>\n"


async def test_marketing_carries_one_click_unsubscribe_headers(smtp: FakeSmtp) -> None:
    await channel(smtp).send(
        email(message_class=MessageClass.marketing, unsubscribe_url=UNSUBSCRIBE)
    )

    received = smtp.received[0]
    # On the wire, whole: a folded or RFC 2047-encoded URL is no URL to a mail client.
    assert f"\r\nList-Unsubscribe: <{UNSUBSCRIBE}>\r\n".encode() in received.raw
    assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in received.raw
    assert received.message.get_all("List-Unsubscribe") == [f"<{UNSUBSCRIBE}>"]
    assert received.message.get_all("List-Unsubscribe-Post") == ["List-Unsubscribe=One-Click"]


async def test_marketing_shows_the_unsubscribe_link_in_text_and_html(smtp: FakeSmtp) -> None:
    """Many clients never show List-Unsubscribe: the reader must see a link in the mail."""
    await channel(smtp).send(
        email(
            message_class=MessageClass.marketing,
            unsubscribe_url=UNSUBSCRIBE,
            html="<html><body><p>Hi Ann, your <b>basket</b> is still there.</p></body></html>",
        )
    )

    sent = smtp.messages[0]
    plain = sent.get_body(preferencelist=("plain",))
    markup = sent.get_body(preferencelist=("html",))
    assert plain is not None and markup is not None
    assert plain.get_content() == (
        f"Hi Ann, your basket is still there.\n\n--\nUnsubscribe from these e-mails: {UNSUBSCRIBE}\n"
    )
    link = f'<a href="{html.escape(UNSUBSCRIBE)}">Unsubscribe from these e-mails</a>'
    body = markup.get_content()
    assert link in body
    assert body.index("basket") < body.index(link) < body.index("</body>"), (
        "after the message, inside the body"
    )


async def test_an_html_only_marketing_mail_gets_the_line_in_both_parts(smtp: FakeSmtp) -> None:
    await channel(smtp).send(
        email(
            message_class=MessageClass.marketing,
            unsubscribe_url=UNSUBSCRIBE,
            text="",
            html="<p>New plants</p>",
        )
    )

    sent = smtp.messages[0]
    plain = sent.get_body(preferencelist=("plain",))
    markup = sent.get_body(preferencelist=("html",))
    assert plain is not None and markup is not None
    assert plain.get_content() == f"--\nUnsubscribe from these e-mails: {UNSUBSCRIBE}\n"
    assert markup.get_content().startswith("<p>New plants</p>\n<p ")
    assert f'href="{html.escape(UNSUBSCRIBE)}"' in markup.get_content()


@pytest.mark.parametrize(
    ("message_class", "url"),
    [(MessageClass.transactional, UNSUBSCRIBE), (MessageClass.marketing, "")],
)
async def test_no_unsubscribe_headers_otherwise(
    smtp: FakeSmtp, message_class: MessageClass, url: str
) -> None:
    await channel(smtp).send(
        email(message_class=message_class, unsubscribe_url=url, html="<p>Receipt</p>")
    )

    received = smtp.received[0]
    assert b"List-Unsubscribe" not in received.raw
    assert b"nsubscribe" not in received.raw, "and no visible line either"


async def test_starttls_with_login() -> None:
    with FakeSmtp(tls="starttls", auth=("shop", "s3cret")) as smtp:
        receipt = await channel(smtp, security="starttls", username="shop", password="s3cret").send(
            email()
        )

        [received] = smtp.received
    assert received.tls and received.login == "shop"
    assert received.message["Message-ID"] == receipt.provider_message_id


async def test_implicit_tls_with_login() -> None:
    with FakeSmtp(tls="implicit", auth=("shop", "s3cret")) as smtp:
        await channel(smtp, security="tls", username="shop", password="s3cret").send(email())

        [received] = smtp.received
    assert received.tls and received.login == "shop"


async def test_untrusted_certificate_is_not_used() -> None:
    with FakeSmtp(tls="starttls") as smtp:
        settings = SmtpSettings.model_validate(
            {"host": smtp.host, "port": smtp.port, "from": FROM, "security": "starttls"}
        )
        # The system's trust store does not know the fake's self-signed certificate.
        with pytest.raises(RetryLater) as caught:
            await smtp_channel(settings).send(email())

        assert smtp.received == []
    assert not caught.value.maybe_delivered


@pytest.mark.parametrize(
    ("code", "at"), [(421, "DATA"), (451, "DATA"), (452, "RCPT"), (450, "RCPT")]
)
async def test_temporary_refusals_retry_later(smtp: FakeSmtp, code: int, at: Command) -> None:
    smtp.fail_next(code, "4.3.0 Try again later", at=at)
    sender = channel(smtp)

    with pytest.raises(RetryLater) as caught:
        await sender.send(email())

    assert caught.value.provider == "smtp"
    assert caught.value.status == code
    assert not caught.value.maybe_delivered, "the server said no: nothing was delivered"
    assert smtp.received == []
    await sender.send(email())  # the retry goes through
    assert len(smtp.received) == 1


@pytest.mark.parametrize(
    ("code", "at"), [(550, "DATA"), (554, "DATA"), (550, "RCPT"), (553, "RCPT")]
)
async def test_permanent_refusals_are_rejected(smtp: FakeSmtp, code: int, at: Command) -> None:
    smtp.fail_next(code, "5.1.1 Mailbox unavailable", at=at)

    with pytest.raises(Rejected) as caught:
        await channel(smtp).send(email())

    assert caught.value.provider == "smtp"
    assert caught.value.status == code
    assert "Mailbox unavailable" in caught.value.body
    assert smtp.received == []


async def test_wrong_password_is_rejected() -> None:
    with FakeSmtp(tls="starttls", auth=("shop", "s3cret")) as smtp:
        sender = channel(smtp, security="starttls", username="shop", password="wrong")
        with pytest.raises(Rejected) as caught:
            await sender.send(email())

        assert smtp.received == []
    assert caught.value.status == 535


async def test_connection_refused_retries_later() -> None:
    settings = SmtpSettings.model_validate(
        {"host": "127.0.0.1", "port": free_port(), "from": FROM, "security": "none"}
    )

    with pytest.raises(RetryLater) as caught:
        await smtp_channel(settings).send(email())

    assert caught.value.provider == "smtp"
    assert not caught.value.maybe_delivered


async def test_slow_confirmation_may_have_delivered(smtp: FakeSmtp) -> None:
    smtp.stall_next_data(2)

    with pytest.raises(RetryLater) as caught:
        await channel(smtp, timeout=0.3).send(email())

    assert caught.value.maybe_delivered
    # The fake keeps a message before it stalls, so it is there by the time the client gives up.
    assert len(smtp.received) == 1, "the server did take it: a resend would be a duplicate"


@pytest.mark.parametrize(
    "to",
    [
        "ann.example.com",
        "ann@",
        "@example.com",
        "Ann <ann@example.com>",
        "ann smith@example.com",
        "ann@example.com\r\nBcc: eve@example.com",
        "ann@example.com, eve@example.com",
        "anné@example.com",
    ],
)
async def test_invalid_address_is_rejected_without_connecting(smtp: FakeSmtp, to: str) -> None:
    with pytest.raises(Rejected):
        await channel(smtp).send(email(to=to))

    assert smtp.connections == 0


async def test_message_id_is_stable_per_idempotency_key(smtp: FakeSmtp) -> None:
    sender = channel(smtp)

    first = await sender.send(email("followup:c-42:1"))
    again = await sender.send(email("followup:c-42:1"))
    other = await sender.send(email("followup:c-42:2"))

    assert first.provider_message_id == again.provider_message_id
    assert other.provider_message_id != first.provider_message_id
    assert first.provider_message_id.startswith("<")
    assert first.provider_message_id.endswith("@shop.example>")
    assert [m["Message-ID"] for m in smtp.messages] == [
        first.provider_message_id,
        first.provider_message_id,
        other.provider_message_id,
    ]
    assert smtp.connections == 3
