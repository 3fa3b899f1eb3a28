"""A real SMTP server (aiosmtpd) on 127.0.0.1 in a background thread.

``tls=False`` speaks plain SMTP; ``"starttls"`` insists on STARTTLS before anything but
EHLO/NOOP/QUIT; ``"implicit"`` wraps the socket in TLS from the first byte (port 465 style).
The certificate is a throwaway self-signed one for 127.0.0.1 and localhost, made when the
server starts; ``client_tls_context()`` trusts exactly it. With ``auth=(user, password)`` the
server offers AUTH PLAIN/LOGIN, answers wrong credentials with 535 and refuses MAIL before
a successful login.

Every accepted message is kept with its envelope and its bytes as they crossed the wire,
so a test can check a header as sent, not only as a parser reads it back. ``fail_next``
makes the next RCPT or DATA answer with a given reply instead; ``stall_next_data`` keeps the
next message but answers only after a delay, like a relay that is slow to confirm.

Handlers run on the server's thread and tests read from theirs, hence the lock.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.fakes.server import free_port

Tls = Literal[False, "starttls", "implicit"]
Command = Literal["RCPT", "DATA"]


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    """The message exactly as it arrived after DATA (dot-unstuffed, CRLF line ends)."""
    message: EmailMessage
    tls: bool
    """Whether the session was encrypted (STARTTLS or implicit TLS) when DATA arrived."""
    login: str | None
    """The username the client authenticated as, if it did."""


def _self_signed(directory: Path) -> tuple[Path, Path, bytes]:
    """A key and a certificate for 127.0.0.1 and localhost, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert_pem)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file, cert_pem


class _CountingController(Controller):
    """aiosmtpd builds one ``SMTP`` instance per accepted connection: count them."""

    def __init__(self, fake: FakeSmtp, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fake = fake

    def factory(self) -> SMTP:
        self._fake._connected()
        return SMTP(self.handler, **self.SMTP_kwargs)  # what the base factory() does


class _Handler:
    def __init__(self, fake: FakeSmtp) -> None:
        self._fake = fake

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        # Checked here rather than with aiosmtpd's auth_required, which warns whenever AUTH
        # may go unencrypted, as it must on plain SMTP and (to aiosmtpd's eyes) implicit TLS.
        if self._fake.auth is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        failure = self._fake._take_failure("RCPT")
        if failure is not None:
            return failure
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        failure = self._fake._take_failure("DATA")
        if failure is not None:
            return failure
        stall = self._fake._take_stall()
        raw = envelope.original_content or b""
        # Parsed with local line ends, as a mailbox stores it; ``raw`` keeps the CRLFs.
        message = BytesParser(policy=default_policy).parsebytes(raw.replace(b"\r\n", b"\n"))
        assert isinstance(message, EmailMessage)
        transport = server.transport
        credentials = session.auth_data
        self._fake._keep(
            Received(
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                raw=raw,
                message=message,
                tls=transport is not None and transport.get_extra_info("ssl_object") is not None,
                login=(
                    credentials.login.decode() if isinstance(credentials, LoginPassword) else None
                ),
            )
        )
        await asyncio.sleep(stall)
        return "250 OK: queued"


class FakeSmtp:
    def __init__(self, tls: Tls = False, auth: tuple[str, str] | None = None) -> None:
        self.tls = tls
        self.auth = auth
        self.port = free_port()
        self.host = "127.0.0.1"
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._failures: dict[Command, list[str]] = {"RCPT": [], "DATA": []}
        self._connections = 0
        self._stalls: list[float] = []
        self._certs: tempfile.TemporaryDirectory[str] | None = None
        self._cert_pem = b""
        self._controller: Controller | None = None

    # What tests read and arrange.

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    @property
    def messages(self) -> list[EmailMessage]:
        return [r.message for r in self.received]

    @property
    def connections(self) -> int:
        """Connections accepted since the server started (its own start-up probe excluded)."""
        with self._lock:
            return self._connections

    def fail_next(self, code: int, text: str, times: int = 1, *, at: Command = "DATA") -> None:
        """Answer the next ``times`` DATA (or, with ``at="RCPT"``, RCPT) commands with
        ``code text`` instead of accepting them."""
        with self._lock:
            self._failures[at].extend([f"{code} {text}"] * times)

    def stall_next_data(self, seconds: float) -> None:
        """Keep the next message, but answer its DATA only after ``seconds``."""
        with self._lock:
            self._stalls.append(seconds)

    def client_tls_context(self) -> ssl.SSLContext:
        """A client context that trusts this server's certificate (and nothing else)."""
        if not self._cert_pem:
            raise RuntimeError("this FakeSmtp has no certificate: it was made with tls=False")
        return ssl.create_default_context(cadata=self._cert_pem.decode())

    # Life cycle.

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        server_context: ssl.SSLContext | None = None
        if self.tls:
            self._certs = tempfile.TemporaryDirectory(prefix="fake-smtp-")
            cert_file, key_file, self._cert_pem = _self_signed(Path(self._certs.name))
            server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server_context.load_cert_chain(cert_file, key_file)
        options: dict[str, Any] = {}
        if self.auth is not None:
            options.update(authenticator=self._authenticate)
        if self.tls == "starttls":
            options.update(tls_context=server_context, require_starttls=True)
        else:
            # aiosmtpd cannot tell that an implicit-TLS socket is encrypted and would hide
            # AUTH until a STARTTLS that never comes (aiosmtpd issue #281); on plain SMTP
            # tests want AUTH without TLS anyway.
            options.update(auth_require_tls=False)
        self._controller = _CountingController(
            self,
            _Handler(self),
            hostname=self.host,
            port=self.port,
            ssl_context=server_context if self.tls == "implicit" else None,
            **options,
        )
        self._controller.start()
        with self._lock:
            self._connections = 0  # start() probes the server with a connection of its own

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
        if self._certs is not None:
            self._certs.cleanup()
            self._certs = None

    # Called from the server's thread.

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert self.auth is not None
        user, password = self.auth
        if isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
            user.encode(),
            password.encode(),
        ):
            return AuthResult(success=True, auth_data=auth_data)
        # handled=False: aiosmtpd answers "535 5.7.8 Authentication credentials invalid".
        return AuthResult(success=False, handled=False)

    def _connected(self) -> None:
        with self._lock:
            self._connections += 1

    def _take_failure(self, command: Command) -> str | None:
        with self._lock:
            pending = self._failures[command]
            return pending.pop(0) if pending else None

    def _take_stall(self) -> float:
        with self._lock:
            return self._stalls.pop(0) if self._stalls else 0.0

    def _keep(self, received: Received) -> None:
        with self._lock:
            self._received.append(received)
