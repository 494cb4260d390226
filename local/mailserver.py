"""A real SMTP server (aiosmtpd) that requires AUTH, for the tests and the local demo.

``SmtpTestServer`` is a plain class (a context manager) so the demo can run one outside pytest;
the fixtures at the bottom wrap it for tests. It listens on 127.0.0.1 on a free port, checks
logins against ``users`` (and XOAUTH2 bearer tokens against ``tokens``), both of which a test may
change while the server runs (a password change), records every accepted message, and can be told
to answer a command with a given reply, the way a real provider refuses things.
"""

from __future__ import annotations

import base64
import datetime
import email
import ipaddress
import json
import socket
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Security = Literal["plain", "starttls", "tls"]
Command = Literal["AUTH", "MAIL", "RCPT", "DATA"]

TEST_USER = "ana@sendwell-test.example.com"
TEST_PASSWORD = "correct horse battery staple"
TEST_TOKEN = "ya29.test-access-token"
HOST = "127.0.0.1"

AUTH_REQUIRED = "530 5.7.0 Authentication required"
BAD_CREDENTIALS = "535 5.7.8 Username and Password not accepted"
# What Gmail sends (base64 JSON) before refusing an XOAUTH2 token; the client answers with an empty line.
XOAUTH2_ERROR = json.dumps({"status": "401", "schemes": "Bearer", "scope": "https://mail.google.com/"})


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    login: str
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes  # the DATA as received: CRLF line endings, dot-stuffing removed

    def parsed(self) -> EmailMessage:
        message = email.message_from_bytes(self.data, policy=policy.default)
        assert isinstance(message, EmailMessage)
        return message


@dataclass(frozen=True, slots=True)
class SelfSignedCert:
    """A throwaway certificate for localhost / 127.0.0.1."""

    cert_pem: bytes
    key_pem: bytes

    @classmethod
    def generate(cls) -> SelfSignedCert:
        key = ec.generate_private_key(ec.SECP256R1())  # fast to make, unlike RSA
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return cls(cert.public_bytes(serialization.Encoding.PEM), key_pem)

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        # load_cert_chain reads only files; they are needed for the call alone.
        with tempfile.TemporaryDirectory() as folder:
            cert_file, key_file = Path(folder, "cert.pem"), Path(folder, "key.pem")
            cert_file.write_bytes(self.cert_pem)
            key_file.write_bytes(self.key_pem)
            context.load_cert_chain(cert_file, key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A normal verifying client context that trusts this certificate alone."""
        return ssl.create_default_context(cadata=self.cert_pem.decode("ascii"))


class SmtpTestServer:
    def __init__(
        self,
        *,
        users: Mapping[str, str] | None = None,
        tokens: Mapping[str, str] | None = None,
        security: Security = "plain",
    ) -> None:
        self.users: dict[str, str] = dict(users or {})
        self.tokens: dict[str, str] = dict(tokens or {})
        self.received: list[ReceivedMessage] = []
        self.security: Security = security
        self.host = HOST
        self.port = _free_port()
        self._replies: dict[str, str] = {}
        self._cert = SelfSignedCert.generate() if security != "plain" else None
        self._controller = self._make_controller()

    def reply_with(self, command: Command, reply: str) -> None:
        """Answer every later ``command`` with ``reply`` (e.g. "550 5.1.1 ..."), until cleared."""
        self._replies[command] = reply

    def clear_replies(self) -> None:
        self._replies.clear()
        self.hang_up_after_data = False

    # Take the next messages, then close the connection instead of answering the final "." (the
    # acknowledgement is lost on the way back): the client can't know the message was taken.
    hang_up_after_data = False

    def client_ssl_context(self) -> ssl.SSLContext:
        if self._cert is None:
            raise RuntimeError("this server does not use TLS")
        return self._cert.client_context()

    def start(self) -> SmtpTestServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> SmtpTestServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # aiosmtpd handler hooks, called on the server's own thread.

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        # Enforced here rather than with aiosmtpd's auth_required, which warns when AUTH is
        # allowed without TLS (the plain variant does exactly that on purpose).
        if not session.authenticated:
            return AUTH_REQUIRED
        if reply := self._replies.get("MAIL"):
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if reply := self._replies.get("RCPT"):
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if reply := self._replies.get("DATA"):
            return reply
        assert envelope.mail_from is not None and envelope.original_content is not None
        self.received.append(
            ReceivedMessage(
                login=str(session.auth_data),
                mail_from=envelope.mail_from,
                rcpt_tos=tuple(envelope.rcpt_tos),
                data=envelope.original_content,
            )
        )
        if self.hang_up_after_data and server.transport is not None:
            server.transport.close()
        return "250 2.0.0 OK queued"

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        """SASL XOAUTH2 as Gmail and Microsoft 365 speak it."""
        if reply := self._replies.get("AUTH"):
            return AuthResult(success=False, handled=False, message=reply)
        if len(args) == 2:
            initial = base64.b64decode(args[1])
        else:
            response = await server.challenge_auth("")
            if response is MISSING:
                return AuthResult(success=False, handled=True)
            assert isinstance(response, bytes)
            initial = response
        fields = dict(part.split("=", 1) for part in initial.decode().split("\x01") if "=" in part)
        user, bearer = fields.get("user", ""), fields.get("auth", "")
        if user in self.tokens and bearer == f"Bearer {self.tokens[user]}":
            return AuthResult(success=True, auth_data=user)
        if await server.challenge_auth(XOAUTH2_ERROR) is MISSING:
            return AuthResult(success=False, handled=True)
        return AuthResult(success=False, handled=False, message=BAD_CREDENTIALS)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: object
    ) -> AuthResult:
        """The aiosmtpd authenticator for the built-in PLAIN and LOGIN mechanisms."""
        if reply := self._replies.get("AUTH"):
            return AuthResult(success=False, handled=False, message=reply)
        assert isinstance(auth_data, LoginPassword)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        if self.users.get(login) == password:
            return AuthResult(success=True, auth_data=login)
        return AuthResult(success=False, handled=False, message=BAD_CREDENTIALS)

    def _make_controller(self) -> Controller:
        tls_context = self._cert.server_context() if self._cert is not None else None
        return Controller(
            self,
            hostname=self.host,
            port=self.port,
            server_hostname="localhost",  # skips a reverse-DNS lookup of this machine
            ssl_context=tls_context if self.security == "tls" else None,
            tls_context=tls_context if self.security == "starttls" else None,
            require_starttls=self.security == "starttls",
            # aiosmtpd only counts STARTTLS as TLS; with implicit TLS every byte is encrypted anyway.
            auth_require_tls=self.security == "starttls",
            authenticator=self._authenticate,
        )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port
