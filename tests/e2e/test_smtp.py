"""SmtpSender against a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest

from sendwell.adapters.smtp import SmtpSender
from sendwell.failures import FailureKind, ProviderFailure
from sendwell.mime import to_bytes
from tests.smtp_server import TEST_PASSWORD, TEST_TOKEN, TEST_USER, SmtpTestServer
from tests.unit.test_smtp_sender import PROSPECT, step_message


def sender_for(server: SmtpTestServer, **overrides: Any) -> SmtpSender:
    settings: dict[str, Any] = {
        "security": {"plain": "none", "starttls": "starttls", "tls": "tls"}[server.security],
        "username": TEST_USER,
        "password": TEST_PASSWORD,
        "timeout": 5.0,
    }
    if server.security != "plain":
        settings["ssl_context"] = server.client_ssl_context()
    return SmtpSender(server.host, server.port, **(settings | overrides))


def failure_kind(sender: SmtpSender, msg: EmailMessage | None = None) -> tuple[FailureKind, str]:
    with pytest.raises(ProviderFailure) as caught:
        sender.send(msg or step_message())
    return caught.value.failure.kind, caught.value.failure.code


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port on which nothing listens (bound, so nothing else takes it meanwhile)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]


def test_send_delivers_the_exact_bytes_with_our_message_id(smtp_server: SmtpTestServer) -> None:
    msg = step_message()

    message_id = sender_for(smtp_server).send(msg)

    assert message_id == msg["Message-ID"]
    [received] = smtp_server.received
    assert received.login == TEST_USER
    assert received.mail_from == TEST_USER
    assert received.rcpt_tos == (PROSPECT,)
    assert received.data == to_bytes(msg)  # a lone "." line survived dot-stuffing too
    assert received.parsed()["Message-ID"] == message_id


def test_send_over_starttls(starttls_smtp_server: SmtpTestServer) -> None:
    msg = step_message()

    assert sender_for(starttls_smtp_server).send(msg) == msg["Message-ID"]
    assert [r.parsed()["Message-ID"] for r in starttls_smtp_server.received] == [msg["Message-ID"]]


def test_send_over_implicit_tls(tls_smtp_server: SmtpTestServer) -> None:
    msg = step_message()

    assert sender_for(tls_smtp_server).send(msg) == msg["Message-ID"]
    assert len(tls_smtp_server.received) == 1


def test_untrusted_certificate_is_refused_by_default(starttls_smtp_server: SmtpTestServer) -> None:
    sender = SmtpSender(
        starttls_smtp_server.host, starttls_smtp_server.port, security="starttls",
        username=TEST_USER, password=TEST_PASSWORD, timeout=5.0,
    )

    assert failure_kind(sender) == (FailureKind.TRANSIENT, "smtp:tls")
    assert starttls_smtp_server.received == []


def test_starttls_is_never_skipped_when_the_server_lacks_it(smtp_server: SmtpTestServer) -> None:
    sender = sender_for(smtp_server, security="starttls")

    kind, _ = failure_kind(sender)

    assert kind is FailureKind.TRANSIENT
    assert smtp_server.received == []


def test_xoauth2_login_sends(starttls_smtp_server: SmtpTestServer) -> None:
    sender = sender_for(starttls_smtp_server, password=None, oauth_token=TEST_TOKEN)

    sender.send(step_message())

    assert [r.login for r in starttls_smtp_server.received] == [TEST_USER]


def test_revoked_xoauth2_token_is_auth_lost(smtp_server: SmtpTestServer) -> None:
    sender = sender_for(smtp_server, password=None, oauth_token="ya29.revoked-token")

    assert failure_kind(sender) == (FailureKind.AUTH_LOST, "smtp:535 5.7.8")


def test_password_change_is_auth_lost(smtp_server: SmtpTestServer) -> None:
    sender = sender_for(smtp_server)
    sender.send(step_message())

    smtp_server.users[TEST_USER] = "a brand new password"

    with pytest.raises(ProviderFailure) as caught:
        sender.send(step_message())
    assert caught.value.failure.kind is FailureKind.AUTH_LOST
    assert caught.value.failure.kind.disconnects
    assert TEST_PASSWORD not in str(caught.value)
    assert len(smtp_server.received) == 1
    sender_for(smtp_server, password="a brand new password").verify_login()


def test_smtp_auth_disabled_by_tenant_needs_user_action(smtp_server: SmtpTestServer) -> None:
    smtp_server.reply_with(
        "AUTH",
        "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.",
    )

    with pytest.raises(ProviderFailure) as caught:
        sender_for(smtp_server).verify_login()

    assert caught.value.failure.kind is FailureKind.USER_ACTION
    assert caught.value.failure.code == "smtp:535 5.7.139"
    assert "SMTP AUTH" in caught.value.failure.reason


def test_unknown_recipient_is_rejected_for_that_recipient(smtp_server: SmtpTestServer) -> None:
    smtp_server.reply_with("RCPT", "550 5.1.1 The email account that you tried to reach does not exist.")

    assert failure_kind(sender_for(smtp_server)) == (FailureKind.RECIPIENT_REJECTED, "smtp:550 5.1.1")
    assert smtp_server.received == []


def test_try_again_later_is_transient(smtp_server: SmtpTestServer) -> None:
    smtp_server.reply_with("MAIL", "421 4.7.0 Try again later, closing connection.")

    assert failure_kind(sender_for(smtp_server)) == (FailureKind.TRANSIENT, "smtp:421 4.7.0")

    smtp_server.clear_replies()
    sender_for(smtp_server).send(step_message())
    assert len(smtp_server.received) == 1


def test_content_refused_at_data_is_a_bad_message(smtp_server: SmtpTestServer) -> None:
    smtp_server.reply_with("DATA", "554 5.6.0 Message contained unexpected binary content.")

    assert failure_kind(sender_for(smtp_server)) == (FailureKind.BAD_MESSAGE, "smtp:554 5.6.0")


def test_connection_refused_is_transient(refused_port: int) -> None:
    sender = SmtpSender("127.0.0.1", refused_port, security="none", username=TEST_USER, password="x")

    assert failure_kind(sender) == (FailureKind.TRANSIENT, "smtp:connection_refused")


def test_server_that_never_greets_is_transient() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel completes the handshake; nobody ever answers
        sender = SmtpSender(
            "127.0.0.1", silent.getsockname()[1], security="none",
            username=TEST_USER, password=TEST_PASSWORD, timeout=0.3,
        )

        # smtplib reports a read timeout as SMTPServerDisconnected; the classifier looks beneath it.
        assert failure_kind(sender) == (FailureKind.TRANSIENT, "smtp:timeout")


def test_verify_login_sends_nothing(smtp_server: SmtpTestServer) -> None:
    sender_for(smtp_server).verify_login()

    assert smtp_server.received == []
    with pytest.raises(ProviderFailure) as caught:
        sender_for(smtp_server, password="wrong").verify_login()
    assert caught.value.failure.kind is FailureKind.AUTH_LOST
