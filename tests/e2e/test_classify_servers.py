"""The provider error classifier, fed what real servers on 127.0.0.1 answer: SMTP errors from smtplib
talking to a real SMTP server (aiosmtpd) that answers as Gmail or Exchange would, IMAP errors from
imaplib talking to a scripted IMAP server, and what the client libraries raise when a server hangs up,
never greets, or is not there. The cases that need no server are in ``tests/unit/test_classify.py``.
"""

from __future__ import annotations

import contextlib
import imaplib
import smtplib
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from sendwell.adapters.imap import ImapMailbox
from sendwell.adapters.smtp import SmtpSender
from sendwell.classify import (
    classify_imap_error,
    classify_smtp_error,
)
from sendwell.failures import Failure, FailureKind, ProviderFailure
from tests.smtp_server import TEST_PASSWORD, TEST_USER, Command, SmtpTestServer
from tests.unit.test_classify import (
    AUTH_LOST,
    BAD_MESSAGE,
    RATE_LIMITED,
    RECIPIENT_REJECTED,
    SIGN_IN_CONTINUATION,
    TRANSIENT,
    USER_ACTION,
    check,
)

HOST = "127.0.0.1"
PROSPECT = "jorg.muller@beispiel.de"

# --- SMTP -----------------------------------------------------------------------------------------


@pytest.fixture(name="smtp", scope="module")
def smtp_fixture() -> Iterator[SmtpTestServer]:
    with SmtpTestServer(users={TEST_USER: TEST_PASSWORD}) as server:
        yield server


def smtp_error(server: SmtpTestServer, command: Command, reply: str) -> smtplib.SMTPException:
    """Log in and send one email while the server answers ``command`` with ``reply``."""
    server.clear_replies()
    server.reply_with(command, reply)
    with (
        pytest.raises(smtplib.SMTPException) as caught,
        smtplib.SMTP(server.host, server.port, timeout=5) as client,
    ):
        client.login(TEST_USER, TEST_PASSWORD)
        client.sendmail(TEST_USER, [PROSPECT], b"Subject: Quick question\r\n\r\nHi Jorg\r\n")
    server.clear_replies()
    return caught.value


def multiline(code: int, *lines: str) -> str:
    """An SMTP reply as servers send it: "550-..." on every line but the last."""
    return "\r\n".join(f"{code}{'-' if n < len(lines) - 1 else ' '}{line}" for n, line in enumerate(lines))


GSMTP = "d2e1a72fcca58-7390d9a2b1asm1234567b3a.12 - gsmtp"


OUTLOOK_HOST = "[SN7PR04CA0105.namprd04.prod.outlook.com 2025-06-03T10:00:00.000Z 08DD9F1234567890]"


STOREDRV = (
    "STOREDRV.Submission.Exception:{}; Failed to process message due to a permanent exception with message "
    "[BeginDiagnosticData]Cannot submit message. 0.35250:0A000000, 1.36674:0A000000 [EndDiagnosticData] "
    "[Hostname=BY5PR04MB1234.namprd04.prod.outlook.com]"
)


SMTP_CASES = [
    pytest.param(
        "AUTH",
        multiline(
            535,
            "5.7.8 Username and Password not accepted. For more information, go to",
            f"5.7.8  https://support.google.com/mail/?p=BadCredentials {GSMTP}",
        ),
        AUTH_LOST,
        "smtp:535 5.7.8",
        id="535-5.7.8-gmail",
    ),
    pytest.param("AUTH", "535 Authentication failed", AUTH_LOST, "smtp:535", id="535-plain"),
    pytest.param(
        "AUTH",
        multiline(
            534,
            "5.7.9 Application-specific password required. For more information, go to",
            f"5.7.9  https://support.google.com/mail/?p=InvalidSecondFactor {GSMTP}",
        ),
        USER_ACTION,
        "smtp:534 5.7.9",
        id="534-5.7.9-app-password",
    ),
    pytest.param(
        "AUTH",
        multiline(
            534,
            f"5.7.14 <https://accounts.google.com/signin/continue?sarp=1&scc=1&plt={SIGN_IN_CONTINUATION}>",
            "5.7.14 Please log in via your web browser and then try again.",
            "5.7.14  Learn more at",
            f"5.7.14  https://support.google.com/mail/answer/78754 {GSMTP}",
        ),
        USER_ACTION,
        "smtp:534 5.7.14",
        id="534-5.7.14-web-login",
    ),
    pytest.param(
        "AUTH",
        "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit "
        f"https://aka.ms/smtp_auth_disabled for more information. {OUTLOOK_HOST}",
        USER_ACTION,
        "smtp:535 5.7.139",
        id="535-5.7.139-tenant",
    ),
    pytest.param(
        "AUTH",
        f"535 5.7.139 Authentication unsuccessful, basic authentication is disabled. {OUTLOOK_HOST}",
        USER_ACTION,
        "smtp:535 5.7.139",
        id="535-5.7.139-basic-auth",
    ),
    pytest.param(
        "AUTH",
        "535 5.7.3 Authentication unsuccessful [BN9PR03CA0123.namprd03.prod.outlook.com]",
        USER_ACTION,
        "smtp:535 5.7.3",
        id="535-5.7.3",
    ),
    pytest.param(
        "AUTH",
        multiline(
            454,
            "4.7.0 Too many login attempts, please try again later. For more information, go to",
            f"4.7.0  https://support.google.com/mail/answer/7126229 {GSMTP}",
        ),
        TRANSIENT,
        "smtp:454 4.7.0",
        id="454",
    ),
    pytest.param("MAIL", "421 4.7.0 Try again later, closing connection.", TRANSIENT, "smtp:421 4.7.0", id="421"),
    pytest.param(
        "RCPT",
        multiline(
            450,
            "4.2.1 The user you are trying to contact is receiving mail at a rate that",
            "4.2.1 prevents additional messages from being delivered. Please resend your",
            f"4.2.1 message at a later time. {GSMTP}",
        ),
        TRANSIENT,
        "smtp:450 4.2.1",
        id="450-rcpt",
    ),
    pytest.param(
        "DATA",
        "451 4.3.0 Mail server temporarily rejected message.",
        TRANSIENT,
        "smtp:451 4.3.0",
        id="451",
    ),
    pytest.param("MAIL", "452 4.3.1 Insufficient system storage", TRANSIENT, "smtp:452 4.3.1", id="452"),
    pytest.param(
        "RCPT",
        multiline(
            550,
            "5.1.1 The email account that you tried to reach does not exist. Please try",
            "5.1.1 double-checking the recipient's email address for typos or",
            "5.1.1 unnecessary spaces. For more information, go to",
            f"5.1.1  https://support.google.com/mail/?p=NoSuchUser {GSMTP}",
        ),
        RECIPIENT_REJECTED,
        "smtp:550 5.1.1",
        id="550-5.1.1",
    ),
    pytest.param(
        "RCPT",
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
        RECIPIENT_REJECTED,
        "smtp:550 5.1.10",
        id="550-5.1.10-exchange",
    ),
    pytest.param(
        "RCPT",
        f"550 5.1.0 <{PROSPECT}>: Recipient address rejected: User unknown",
        RECIPIENT_REJECTED,
        "smtp:550 5.1.0",
        id="550-5.1.0",
    ),
    pytest.param(
        "RCPT",
        "550 Requested action not taken: mailbox unavailable",
        RECIPIENT_REJECTED,
        "smtp:550",
        id="550-rcpt-no-enhanced-code",
    ),
    pytest.param(
        "DATA",
        "552 5.3.4 Message size exceeds fixed maximum message size",
        BAD_MESSAGE,
        "smtp:552 5.3.4",
        id="552-5.3.4",
    ),
    pytest.param(
        "DATA",
        multiline(
            552,
            "5.2.3 Your message exceeded Google's message size limits. For more information, go to",
            f"5.2.3  https://support.google.com/mail/?p=MaxSizeError {GSMTP}",
        ),
        BAD_MESSAGE,
        "smtp:552 5.2.3",
        id="552-5.2.3-gmail",
    ),
    pytest.param(
        "DATA",
        "550 5.6.11 SMTPSEND.BareLinefeedsAreIllegal; message contains bare linefeeds, which cannot be sent via DATA",
        BAD_MESSAGE,
        "smtp:550 5.6.11",
        id="550-5.6.11",
    ),
    pytest.param(
        "DATA",
        multiline(
            550,
            "5.4.5 Daily user sending limit exceeded. For more information on Gmail",
            "5.4.5 sending limits go to",
            f"5.4.5  https://support.google.com/a/answer/166852 {GSMTP}",
        ),
        RATE_LIMITED,
        "smtp:550 5.4.5",
        id="550-5.4.5-gmail-daily",
    ),
    pytest.param(
        "DATA",
        "554 5.2.0 " + STOREDRV.format("SubmissionQuotaExceededException"),
        RATE_LIMITED,
        "smtp:554 5.2.0 SubmissionQuotaExceededException",
        id="554-5.2.0-exchange-quota",
    ),
    pytest.param(
        "DATA",
        "554 5.2.0 " + STOREDRV.format("SendAsDeniedException.MapiExceptionSendAsDenied"),
        USER_ACTION,
        "smtp:554 5.2.0 SendAsDeniedException",
        id="554-5.2.0-exchange-send-as",
    ),
    pytest.param(
        "MAIL",
        "550 5.7.60 SMTP; Client does not have permissions to send as this sender",
        USER_ACTION,
        "smtp:550 5.7.60",
        id="550-5.7.60",
    ),
    pytest.param(
        "MAIL",
        "550 5.1.8 Access denied, bad outbound sender AS(42004) [BN8NAM12FT123.eop-nam12.prod.protection.outlook.com]",
        USER_ACTION,
        "smtp:550 5.1.8",
        id="550-5.1.8-restricted-sender",
    ),
    pytest.param(
        "DATA",
        "550 5.7.26 This mail has been blocked because the sender is unauthenticated.",
        TRANSIENT,
        "smtp:550 5.7.26",
        id="unknown-5xx",
    ),
]


# What the protocol says where no table knows the reply, and codes with more than one meaning.
# Gmail's are quoted from support.google.com/a/answer/3726730 (Gmail SMTP errors and codes);
# Exchange Online's from its NDR reference (learn.microsoft.com, "Email non-delivery reports and
# SMTP errors in Exchange Online"); Zoho's, Yahoo's and iCloud's from their help pages and forums.
SMTP_PROTOCOL_CASES = [
    pytest.param(
        "MAIL",
        multiline(
            530,
            "5.7.0 Authentication Required. Learn more at",
            f"5.7.0  https://support.google.com/mail/?p=WantAuthError {GSMTP}",
        ),
        "smtp.gmail.com",
        AUTH_LOST,
        "smtp:530 5.7.0",
        id="gmail-530-at-mail-from",
    ),
    pytest.param(
        "AUTH",
        multiline(534, "5.7.9 Please log in with your web browser and then try again. For more", f"5.7.9 {GSMTP}"),
        None,
        USER_ACTION,
        "smtp:534 5.7.9 web-login",
        id="534-5.7.9-web-login",
    ),
    pytest.param(
        "AUTH", "535 5.7.0 (#AUTH005) Too many bad auth attempts.", None, AUTH_LOST, "smtp:535 5.7.0", id="yahoo-535"
    ),
    pytest.param(
        "AUTH",
        "550 5.7.1 Authentication failed: account temporarily blocked for unusual activity",
        None,
        AUTH_LOST,
        "smtp:550 5.7.1",
        id="5xx-at-auth",
    ),
    pytest.param("AUTH", "504 5.5.4 Unrecognized authentication type", None, TRANSIENT, "smtp:504 5.5.4", id="504"),
    pytest.param(
        "MAIL", "554 5.1.8 Email Outgoing Blocked.", "smtp.zoho.com", USER_ACTION, "smtp:554 5.1.8", id="zoho-5.1.8"
    ),
    pytest.param(
        "MAIL",
        "550 5.4.6 Unusual sending activity detected. Please login to unblock your account.",
        "smtppro.zoho.eu",
        USER_ACTION,
        "smtp:550 5.4.6",
        id="zoho-unusual-activity",
    ),
    pytest.param(
        "MAIL", "553 Relaying disallowed as alice@example.com", "smtp.zoho.com", USER_ACTION, "smtp:553", id="zoho-553"
    ),
    pytest.param(
        "MAIL",
        "550 5.7.0 From address is not one of your addresses",
        "smtp.mail.me.com",
        USER_ACTION,
        "smtp:550 5.7.0",
        id="icloud-not-your-address",
    ),
    pytest.param(
        "MAIL",
        "530 5.7.57 Client not authenticated to send mail. [MW4PR03CA0001.namprd03.prod.outlook.com]",
        "smtp.office365.com",
        USER_ACTION,
        "smtp:530 5.7.57",
        id="exchange-5.7.57",
    ),
    pytest.param(
        "DATA",
        "554 5.2.0 " + STOREDRV.format("OutboundSpamException"),
        "smtp.office365.com",
        USER_ACTION,
        "smtp:554 5.2.0 OutboundSpamException",
        id="exchange-outbound-spam",
    ),
    pytest.param(
        "MAIL",
        "550 5.7.501 Access denied, spam abandonment. For more information see https://aka.ms/EXOSmtpErrors",
        "smtp.office365.com",
        USER_ACTION,
        "smtp:550 5.7.501",
        id="exchange-5.7.501",
    ),
]


@pytest.mark.parametrize(("command", "reply", "host", "kind", "code"), SMTP_PROTOCOL_CASES)
def test_smtp_protocol_rules(
    smtp: SmtpTestServer, command: Command, reply: str, host: str | None, kind: FailureKind, code: str
) -> None:
    check(classify_smtp_error(smtp_error(smtp, command, reply), host=host), kind, code)


def test_534_5_7_9_has_a_fix_for_each_meaning(smtp: SmtpTestServer) -> None:
    app_password = classify_smtp_error(
        smtp_error(smtp, "AUTH", "534 5.7.9 Application-specific password required. Learn more at")
    )
    web_login = classify_smtp_error(
        smtp_error(smtp, "AUTH", "534 5.7.9 Please log in with your web browser and then try again.")
    )
    assert "app password" in app_password.fix and "web browser" in web_login.fix
    assert app_password.fix != web_login.fix


@pytest.mark.parametrize(
    ("host", "words"),
    [
        ("smtp.office365.com", "Microsoft Defender"),
        ("smtp.gmail.com", "Restore sending"),
        ("smtp.zoho.com", "Zoho Mail"),
        ("smtp.mail.yahoo.com", "Yahoo Mail"),
        ("mail.example.net", "webmail"),
    ],
)
def test_a_blocked_sender_is_told_its_own_providers_fix(smtp: SmtpTestServer, host: str, words: str) -> None:
    """5.1.8 means the same everywhere (RFC 3463); only Microsoft 365's fix is Microsoft's."""
    failure = classify_smtp_error(smtp_error(smtp, "MAIL", "550 5.1.8 Sender address rejected"), host=host)
    check(failure, USER_ACTION, "smtp:550 5.1.8")
    assert words in failure.fix
    assert ("Microsoft" in failure.fix) == (host == "smtp.office365.com")


class RefuseOnceThenHangUp(socketserver.StreamRequestHandler):
    """Offers PLAIN and LOGIN, refuses the first AUTH with 535 and closes the connection, as
    servers that count failed sign-ins do."""

    def handle(self) -> None:
        self.wfile.write(b"220 mail.example.net ESMTP\r\n")
        for raw in self.rfile:
            verb = raw.split(b" ", 1)[0].strip().upper()
            if verb == b"EHLO":
                self.wfile.write(b"250-mail.example.net\r\n250 AUTH PLAIN LOGIN\r\n")
            elif verb == b"AUTH":
                self.wfile.write(b"535 5.7.8 Authentication credentials invalid\r\n")
                return
            else:
                self.wfile.write(b"502 5.5.2 Error: command not recognized\r\n")


def test_a_535_survives_a_server_that_hangs_up_after_it() -> None:
    """smtplib's login() would try LOGIN after PLAIN's 535, meet a closed connection and report
    that instead; sendwell authenticates once, so the 535 is what it reads."""
    listener = socketserver.ThreadingTCPServer((HOST, 0), RefuseOnceThenHangUp)
    listener.daemon_threads = True
    with serving(listener) as server:
        port = server.server_address[1]
        with pytest.raises(smtplib.SMTPServerDisconnected), smtplib.SMTP(HOST, port, timeout=5) as client:
            client.login(TEST_USER, TEST_PASSWORD)  # what the library alone reports
        sender = SmtpSender(HOST, port, security="none", username=TEST_USER, password=TEST_PASSWORD, timeout=5)
        with pytest.raises(ProviderFailure) as caught:
            sender.verify_login()
    check(caught.value.failure, AUTH_LOST, "smtp:535 5.7.8")


@pytest.mark.parametrize(("command", "reply", "kind", "code"), SMTP_CASES)
def test_smtp_replies(smtp: SmtpTestServer, command: Command, reply: str, kind: FailureKind, code: str) -> None:
    check(classify_smtp_error(smtp_error(smtp, command, reply)), kind, code)


Server = TypeVar("Server", bound=socketserver.BaseServer)


@contextlib.contextmanager
def serving(server: Server) -> Iterator[Server]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
    return port


class HangUp(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        """Close at once, before the greeting."""


def test_smtp_server_hangs_up() -> None:
    listener = socketserver.ThreadingTCPServer((HOST, 0), HangUp)
    with serving(listener) as server, pytest.raises(smtplib.SMTPServerDisconnected) as caught:
        smtplib.SMTP(HOST, server.server_address[1], timeout=5)
    check(classify_smtp_error(caught.value), TRANSIENT, "smtp:disconnected")


def test_smtp_server_never_greets() -> None:
    with socket.socket() as silent:  # accepts connections (the backlog) but never greets
        silent.bind((HOST, 0))
        silent.listen()
        # smtplib reports the read timeout as a disconnection, raised from the TimeoutError.
        with pytest.raises(smtplib.SMTPServerDisconnected) as caught:
            smtplib.SMTP(HOST, silent.getsockname()[1], timeout=0.2)
    assert isinstance(caught.value.__context__, TimeoutError)
    check(classify_smtp_error(caught.value), TRANSIENT, "smtp:timeout")


def test_smtp_untrusted_certificate() -> None:
    with (
        SmtpTestServer(users={TEST_USER: TEST_PASSWORD}, security="tls") as server,
        pytest.raises(ssl.SSLError) as caught,
    ):
        smtplib.SMTP_SSL(server.host, server.port, timeout=5, context=ssl.create_default_context())
    check(classify_smtp_error(caught.value), TRANSIENT, "smtp:tls")


# --- IMAP -----------------------------------------------------------------------------------------


GREETING = "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] sendwell test IMAP ready"


class ScriptedImap(socketserver.StreamRequestHandler):
    """Sends ``server.greeting``, answers CAPABILITY, and answers LOGIN/AUTHENTICATE with
    ``server.login_reply``: a tagged "NO ..." / "BAD ..." text, or "* BYE ..." before hanging up."""

    server: ScriptedImapServer

    def send(self, *lines: str) -> None:
        self.wfile.write("".join(f"{line}\r\n" for line in lines).encode())

    def handle(self) -> None:
        self.send(self.server.greeting)
        for raw in self.rfile:
            tag, _, rest = raw.decode().rstrip("\r\n").partition(" ")
            command = rest.split(" ", 1)[0].upper()
            if command == "CAPABILITY":
                self.send("* CAPABILITY IMAP4rev1 AUTH=PLAIN", f"{tag} OK CAPABILITY completed")
            elif command in ("LOGIN", "AUTHENTICATE"):
                if command == "AUTHENTICATE":
                    self.send("+ ")
                    self.rfile.readline()
                if self.server.login_reply.startswith("* BYE"):
                    self.send(self.server.login_reply)
                    return
                self.send(f"{tag} {self.server.login_reply}")
            elif command in ("SELECT", "EXAMINE") and self.server.select_reply:
                self.send(f"{tag} {self.server.select_reply}")
            else:
                self.send(f"{tag} BAD unexpected command")


class ScriptedImapServer(socketserver.ThreadingTCPServer):
    daemon_threads = True

    def __init__(self, login_reply: str = "", greeting: str = GREETING, select_reply: str = "") -> None:
        super().__init__((HOST, 0), ScriptedImap)
        self.login_reply = login_reply
        self.greeting = greeting
        self.select_reply = select_reply


def imap_login_error(login_reply: str, *, authenticate: bool = False) -> imaplib.IMAP4.error:
    with serving(ScriptedImapServer(login_reply)) as server:
        imap = imaplib.IMAP4(HOST, server.server_address[1], timeout=5)
        try:
            with pytest.raises(imaplib.IMAP4.error) as caught:
                if authenticate:
                    imap.authenticate("PLAIN", lambda _challenge: f"\0{TEST_USER}\0{TEST_PASSWORD}".encode())
                else:
                    imap.login(TEST_USER, TEST_PASSWORD)
        finally:
            with contextlib.suppress(OSError):
                imap.shutdown()
    return caught.value


@pytest.mark.parametrize(
    ("login_reply", "kind", "code"),
    [
        pytest.param(
            "NO [AUTHENTICATIONFAILED] Authentication failed.",
            AUTH_LOST,
            "imap:AUTHENTICATIONFAILED",
            id="dovecot-authenticationfailed",
        ),
        pytest.param(
            "NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)",
            AUTH_LOST,
            "imap:AUTHENTICATIONFAILED",
            id="gmail-authenticationfailed",
        ),
        pytest.param(
            "NO [AUTHORIZATIONFAILED] No such authorization-ID",
            USER_ACTION,
            "imap:AUTHORIZATIONFAILED",
            id="authorizationfailed",
        ),
        pytest.param("NO [EXPIRED] That password isn't valid any more", USER_ACTION, "imap:EXPIRED", id="expired"),
        pytest.param(
            "NO [CONTACTADMIN] Account suspended, contact your administrator",
            USER_ACTION,
            "imap:CONTACTADMIN",
            id="contactadmin",
        ),
        pytest.param(
            "NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.",
            USER_ACTION,
            "imap:PRIVACYREQUIRED",
            id="privacyrequired",
        ),
        pytest.param(
            "NO [UNAVAILABLE] Temporary authentication failure. [mail01:2025-06-03 10:00:00]",
            TRANSIENT,
            "imap:UNAVAILABLE",
            id="unavailable",
        ),
        pytest.param("NO [INUSE] Mailbox in use by another session", TRANSIENT, "imap:INUSE", id="inuse"),
        pytest.param("NO [LIMIT] Too many simultaneous connections", TRANSIENT, "imap:LIMIT", id="limit"),
        pytest.param(
            "NO [SERVERBUG] Internal error occurred. Refer to server log for more information.",
            TRANSIENT,
            "imap:SERVERBUG",
            id="serverbug",
        ),
        pytest.param("BAD [CLIENTBUG] Invalid characters in atom", TRANSIENT, "imap:CLIENTBUG", id="bad-unknown-code"),
        # A NO to LOGIN refuses the credentials by the protocol's own definition (RFC 9051 6.2.3),
        # code or not. Outlook.com / Exchange Online answer a wrong password with exactly this.
        pytest.param("NO LOGIN failed.", AUTH_LOST, "imap:login-refused", id="no-code-outlook"),
        pytest.param("* BYE [UNAVAILABLE] Server shutting down.", TRANSIENT, "imap:abort", id="bye-abort"),
        # Gmail, quoted from support.google.com/mail/answer/7126229 and the threads it answers.
        pytest.param(
            "NO [ALERT] Application-specific password required: https://support.google.com/accounts/answer/185833"
            " (Failure)",
            USER_ACTION,
            "imap:ALERT app-password",
            id="gmail-alert-app-password",
        ),
        pytest.param(
            "NO [ALERT] Please log in via your web browser: https://support.google.com/mail/accounts/answer/78754"
            " (Failure)",
            USER_ACTION,
            "imap:ALERT web-login",
            id="gmail-alert-web-browser",
        ),
        pytest.param(
            f"NO [WEBALERT https://accounts.google.com/signin/continue?sarp=1&scc=1&plt={SIGN_IN_CONTINUATION}]"
            " Web login required.",
            USER_ACTION,
            "imap:WEBALERT web-login",
            id="gmail-webalert",
        ),
        pytest.param(
            "NO [ALERT] Your account is not enabled for IMAP use. Please visit your Gmail settings page and enable"
            " your account for IMAP access. (Failure)",
            USER_ACTION,
            "imap:ALERT imap-disabled",
            id="gmail-imap-disabled",
        ),
        pytest.param(
            "NO [ALERT] Invalid credentials (Failure)", AUTH_LOST, "imap:ALERT", id="gmail-alert-invalid-credentials"
        ),
        # Not about the credentials: Gmail's connection and bandwidth limits.
        pytest.param(
            "NO [ALERT] Too many simultaneous connections. (Failure)",
            TRANSIENT,
            "imap:ALERT busy",
            id="gmail-too-many-connections",
        ),
        pytest.param(
            "NO [ALERT] Account exceeded command or bandwidth limits. (Failure)",
            TRANSIENT,
            "imap:ALERT busy",
            id="gmail-bandwidth",
        ),
        # Yahoo's server-side fault, and Zoho's account without IMAP (quoted from Zoho's forums).
        pytest.param(
            "NO [UNAVAILABLE] LOGIN failure. Server error--please try again after some time. Error 1",
            TRANSIENT,
            "imap:UNAVAILABLE",
            id="yahoo-unavailable",
        ),
        pytest.param(
            "NO You are yet to enable IMAP for your account. Please contact your administrator (Failure)",
            USER_ACTION,
            "imap:login-refused imap-disabled",
            id="zoho-imap-disabled",
        ),
        pytest.param(
            "NO [AUTHENTICATIONFAILED] LOGIN Invalid credentials",
            AUTH_LOST,
            "imap:AUTHENTICATIONFAILED",
            id="yahoo-authenticationfailed",
        ),
    ],
)
def test_imap_login_errors(login_reply: str, kind: FailureKind, code: str) -> None:
    failure = classify_imap_error(imap_login_error(login_reply), at_login=True)
    check(failure, kind, code)
    assert "accounts.google.com" not in f"{failure.code} {failure.reason} {failure.fix}"


def test_a_no_to_another_command_is_not_a_refused_sign_in() -> None:
    """The same words after the sign-in (a NO to SELECT) say nothing about the credentials."""
    check(classify_imap_error(imap_login_error("NO LOGIN failed.")), TRANSIENT, "imap:error")


def test_outlook_accepts_login_and_refuses_the_next_command() -> None:
    """Outlook's LOGIN says OK to a wrong password; the EXAMINE that follows is what fails."""
    reply = "BAD User is authenticated but not connected."
    with serving(ScriptedImapServer("OK LOGIN completed.", select_reply=reply)) as server:
        box = ImapMailbox(HOST, server.server_address[1], TEST_USER, TEST_PASSWORD, use_ssl=False, timeout=5)
        with box, pytest.raises(ProviderFailure) as caught:
            box.verify_login()
    check(caught.value.failure, AUTH_LOST, "imap:not-connected")


def test_the_adapter_reads_a_refused_login_as_a_sign_in_answer() -> None:
    with serving(ScriptedImapServer("NO LOGIN failed.")) as server:
        box = ImapMailbox(HOST, server.server_address[1], TEST_USER, TEST_PASSWORD, use_ssl=False, timeout=5)
        with box, pytest.raises(ProviderFailure) as caught:
            box.verify_login()
    check(caught.value.failure, AUTH_LOST, "imap:login-refused")


def test_imap_login_error_text_is_bytes_and_authenticate_text_is_str() -> None:
    """The two shapes imaplib raises, both parsed."""
    login = imap_login_error("NO [AUTHENTICATIONFAILED] Authentication failed.")
    authenticate = imap_login_error("NO [AUTHENTICATIONFAILED] Authentication failed.", authenticate=True)
    assert isinstance(login.args[0], bytes) and isinstance(authenticate.args[0], str)
    check(classify_imap_error(authenticate), AUTH_LOST, "imap:AUTHENTICATIONFAILED")


def test_imap_greeting_refused() -> None:
    """imaplib raises the whole greeting line when it is neither OK nor PREAUTH."""
    greeting = "* BYE [UNAVAILABLE] Too many connections from your IP address"
    with (
        serving(ScriptedImapServer(greeting=greeting)) as server,
        pytest.raises(imaplib.IMAP4.error) as caught,
    ):
        imaplib.IMAP4(HOST, server.server_address[1], timeout=5)
    check(classify_imap_error(caught.value), TRANSIENT, "imap:UNAVAILABLE")


# --- Either protocol ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("connect", "classify", "code"),
    [
        pytest.param(smtplib.SMTP, classify_smtp_error, "smtp:connection_refused", id="smtp"),
        pytest.param(imaplib.IMAP4, classify_imap_error, "imap:connection_refused", id="imap"),
    ],
)
def test_connection_refused(
    connect: Callable[..., object], classify: Callable[[BaseException], Failure], code: str
) -> None:
    with pytest.raises(ConnectionRefusedError) as caught:
        connect(HOST, closed_port(), timeout=5)
    check(classify(caught.value), TRANSIENT, code)
