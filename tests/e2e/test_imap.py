"""The IMAP adapter against a real Dovecot: incremental polls, resyncs, the Sent folder, failures."""

from __future__ import annotations

import imaplib
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sendwell.adapters.imap import ImapCursor, ImapMailbox
from sendwell.failures import FailureKind, ProviderFailure
from sendwell.inbound import parse_message_ids
from sendwell.ports.mailbox import InboundMessage
from tests.unit.test_inbound import CORPUS, EXPECTED, assert_matches_expected, classify

if TYPE_CHECKING:  # the dovecot fixture comes from tests/e2e/conftest.py
    from local.imapserver import DovecotServer

pytestmark = pytest.mark.dovecot

NOW = datetime.now(UTC)
SINCE = NOW - timedelta(days=1)
LONG_AGO = NOW - timedelta(days=30)
BATCH = 10  # small, so the corpus takes several FETCH commands


@dataclass(frozen=True)
class Account:
    server: DovecotServer
    name: str
    password: str

    def mailbox(self, password: str | None = None) -> ImapMailbox:
        return ImapMailbox(self.server.host, self.server.port, self.name, password or self.password, timeout=5)

    def append(self, *raws: bytes, received: datetime | None = None) -> None:
        client = self.server.connect(self.name)
        try:
            for raw in raws:
                when = imaplib.Time2Internaldate(received) if received else None
                typ, data = client.append("INBOX", None, when, raw)
                assert typ == "OK", data
        finally:
            client.logout()


def make_account(server: DovecotServer, label: str) -> Account:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", label)
    server.add_user(name, "app-password-1")
    return Account(server, name, "app-password-1")


@pytest.fixture
def account(dovecot: DovecotServer, request: pytest.FixtureRequest) -> Account:
    return make_account(dovecot, request.node.name)


def small_message(subject: str) -> tuple[str, bytes]:
    """A prospect's reply: (its Message-ID without brackets, raw bytes)."""
    message = EmailMessage()
    message["From"] = "Ravi Shah <ravi@orbit-freight.example>"
    message["To"] = "dana.whitfield@brightpath.test"
    message["Subject"] = subject
    message["Date"] = format_datetime(NOW)
    message["Message-ID"] = make_msgid(domain="orbit-freight.example")
    message.set_content("Thanks, let's talk next week.\n")
    return parse_message_ids(message["Message-ID"])[0], message.as_bytes()


def ids_of(messages: list[InboundMessage]) -> list[str]:
    return [parse_message_ids(m.message["Message-ID"])[0] for m in messages]


# --- the corpus, end to end through Dovecot ---------------------------------------------------------


@dataclass(frozen=True)
class PolledCorpus:
    account: Account
    messages: dict[str, InboundMessage]  # corpus file name -> what the poll returned
    cursor: ImapCursor
    commands: tuple[str, ...]


@pytest.fixture(scope="module")
def polled_corpus(dovecot: DovecotServer) -> Iterator[PolledCorpus]:
    account = make_account(dovecot, "corpus")
    account.append(*(small_message(f"Old mail {n}")[1] for n in range(2)), received=LONG_AGO)
    names = sorted(EXPECTED)
    account.append(*((CORPUS / name).read_bytes() for name in names))
    with account.mailbox() as box:
        messages, cursor = box.fetch_new(None, since=SINCE, batch=BATCH)
        commands = box.commands
    # Appended in order after the two old messages: the corpus holds UIDs 3, 4, ...
    by_uid = {int(m.provider_id): m for m in messages}
    by_name = {name: by_uid[uid] for uid, name in enumerate(names, start=3) if uid in by_uid}
    yield PolledCorpus(account, by_name, cursor, commands)


def test_first_poll_takes_what_arrived_since_the_date(polled_corpus: PolledCorpus) -> None:
    assert sorted(polled_corpus.messages) == sorted(EXPECTED)
    uids = sorted(int(m.provider_id) for m in polled_corpus.messages.values())
    assert uids == list(range(3, 3 + len(EXPECTED)))  # not UIDs 1 and 2: they arrived a month ago
    assert polled_corpus.cursor.last_uid == uids[-1]
    fetches = -(-len(EXPECTED) // BATCH)
    assert polled_corpus.commands == ("LOGIN", "EXAMINE", "UID SEARCH", *["UID FETCH"] * fetches)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_message_is_classified_after_the_poll(polled_corpus: PolledCorpus, name: str) -> None:
    polled = polled_corpus.messages[name]
    assert polled.raw.replace(b"\r\n", b"\n") == (CORPUS / name).read_bytes()
    assert_matches_expected(name, classify(name, polled.message))


def test_poll_with_nothing_new_fetches_and_searches_nothing(polled_corpus: PolledCorpus) -> None:
    with polled_corpus.account.mailbox() as box:
        messages, cursor = box.fetch_new(polled_corpus.cursor, since=SINCE)
        assert messages == []
        assert cursor == polled_corpus.cursor
        assert box.commands == ("LOGIN", "EXAMINE")  # UIDNEXT in EXAMINE's answer says it all


# --- incremental polling -------------------------------------------------------------------------


def test_poll_returns_exactly_the_new_messages(account: Account) -> None:
    first = [small_message(f"Re: first {n}") for n in range(3)]
    account.append(*(raw for _mid, raw in first))
    with account.mailbox() as box:
        messages, cursor = box.fetch_new(None, since=SINCE)
    assert ids_of(messages) == [mid for mid, _raw in first]

    later = [small_message(f"Re: later {n}") for n in range(2)]
    account.append(*(raw for _mid, raw in later))
    with account.mailbox() as box:
        messages, after = box.fetch_new(ImapCursor.from_str(cursor.to_str()), since=SINCE)
        again, unchanged = box.fetch_new(after)
    assert ids_of(messages) == [mid for mid, _raw in later]
    assert [m.provider_id for m in messages] == ["4", "5"]
    assert after == ImapCursor(cursor.uidvalidity, 5)
    assert (again, unchanged) == ([], after)


def test_a_new_message_expunged_before_the_poll_fetches_nothing(account: Account) -> None:
    account.append(*(raw for _mid, raw in (small_message("Re: one"), small_message("Re: two"))))
    with account.mailbox() as box:
        _messages, cursor = box.fetch_new(None, since=SINCE)
    account.append(small_message("Re: deleted soon")[1])
    client = account.server.connect(account.name)
    client.select("INBOX")
    client.uid("STORE", "3", "+FLAGS", r"(\Deleted)")
    client.expunge()
    client.logout()
    with account.mailbox() as box:
        # UIDNEXT moved on, so the poll asks; "UID 3:*" then answers with UID 2, which is not new.
        messages, after = box.fetch_new(cursor)
        assert box.commands == ("LOGIN", "EXAMINE", "UID SEARCH")
    assert messages == []
    assert after == cursor


def test_without_cursor_or_date_the_poll_starts_after_the_newest_message(account: Account) -> None:
    account.append(small_message("Re: before we connected")[1])
    with account.mailbox() as box:
        messages, cursor = box.fetch_new(None)
    assert messages == []
    assert cursor.last_uid == 1
    new_id, raw = small_message("Re: after")
    account.append(raw)
    with account.mailbox() as box:
        messages, _cursor = box.fetch_new(cursor)
    assert ids_of(messages) == [new_id]


def test_a_changed_uidvalidity_resyncs_by_date(account: Account) -> None:
    account.append(small_message("Re: from last month")[1], received=LONG_AGO)
    recent = [small_message(f"Re: recent {n}") for n in range(2)]
    account.append(*(raw for _mid, raw in recent))
    with account.mailbox() as box:
        _messages, cursor = box.fetch_new(None, since=SINCE)
    # The server renumbers the mailbox (a migration, a restore): UIDs seen so far mean nothing now.
    account.server.set_uidvalidity(account.name, "INBOX", cursor.uidvalidity + 1000)
    newest_id, raw = small_message("Re: after the migration")
    account.append(raw)

    with account.mailbox() as box:
        messages, after = box.fetch_new(cursor, since=SINCE)
        assert "UID SEARCH" in box.commands  # SINCE, not "UID 4:*"
    # Everything received since the date again, and nothing older: the caller dedups by Message-ID.
    assert ids_of(messages) == [*(mid for mid, _raw in recent), newest_id]
    assert after == ImapCursor(cursor.uidvalidity + 1000, 4)


def test_poll_leaves_messages_unread(account: Account) -> None:
    account.append(small_message("Re: unread")[1])
    with account.mailbox() as box:
        box.fetch_new(None, since=SINCE)
    client = account.server.connect(account.name)
    client.select("INBOX", readonly=True)
    _typ, data = client.uid("FETCH", "1", "(FLAGS)")
    client.logout()
    assert b"\\Seen" not in data[0]


# --- the Sent folder -------------------------------------------------------------------------------


def test_sent_folder_search_finds_our_message_and_only_ours(account: Account) -> None:
    sent_id, raw = small_message("Routing costs at Orbit Freight")
    with account.mailbox() as box:
        box.append_sent(raw)
        assert box.find_sent_by_message_id(sent_id)
        assert box.find_sent_by_message_id(f"<{sent_id}>")
        assert not box.find_sent_by_message_id("0123456789abcdef@send.sendwell.test")
    client = account.server.connect(account.name)
    client.select("Sent", readonly=True)
    _typ, data = client.uid("FETCH", "1:*", "(FLAGS)")
    client.logout()
    assert len(data) == 1 and b"\\Seen" in data[0]


# --- logins and failures ----------------------------------------------------------------------


def test_verify_login_signs_in_and_reads_nothing(account: Account) -> None:
    """Signing in, then opening INBOX read-only: the second command is what proves the password at
    servers that accept any LOGIN (Outlook), and it changes no flag."""
    with account.mailbox() as box:
        box.verify_login()
        assert box.commands == ("LOGIN", "EXAMINE")


def test_a_password_outside_ascii_signs_in_with_sasl_plain(dovecot: DovecotServer) -> None:
    dovecot.add_user("jurgen", "Passwört-Grüße")
    with ImapMailbox(dovecot.host, dovecot.port, "jurgen", "Passwört-Grüße", timeout=5) as box:
        box.verify_login()
        assert box.commands == ("AUTHENTICATE", "EXAMINE")


def test_a_wrong_password_is_auth_lost(account: Account) -> None:
    with account.mailbox(password="the-old-password") as box, pytest.raises(ProviderFailure) as caught:
        box.fetch_new(None, since=SINCE)
    assert caught.value.failure.kind is FailureKind.AUTH_LOST
    assert caught.value.failure.code == "imap:AUTHENTICATIONFAILED"
    assert "the-old-password" not in str(caught.value)


def test_a_closed_port_is_transient() -> None:
    # A bound socket that never listens: the port stays ours, and connecting to it is refused.
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        port = reserved.getsockname()[1]
        with (
            ImapMailbox("127.0.0.1", port, "user", "password", timeout=2) as box,
            pytest.raises(ProviderFailure) as caught,
        ):
            box.verify_login()
    assert caught.value.failure.kind is FailureKind.TRANSIENT


@pytest.mark.parametrize(("use_ssl", "starttls"), [(True, False), (False, True)])
def test_a_tls_setting_the_server_does_not_speak_is_transient(account: Account, use_ssl: bool, starttls: bool) -> None:
    # This Dovecot speaks plain IMAP only: a TLS handshake gets no answer it understands, and
    # STARTTLS is not offered. Neither is a reason to disconnect the inbox.
    box = ImapMailbox(
        account.server.host,
        account.server.port,
        account.name,
        account.password,
        timeout=0.5,
        use_ssl=use_ssl,
        starttls=starttls,
    )
    with box, pytest.raises(ProviderFailure) as caught:
        box.verify_login()
    assert caught.value.failure.kind is FailureKind.TRANSIENT


def test_a_missing_dovecot_that_cannot_be_installed_fails_loudly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from local import imapserver as dovecot

    broken_install = tmp_path / "install-dovecot.sh"
    broken_install.write_text("echo 'E: Unable to locate package dovecot-imapd' >&2\nexit 100\n")
    monkeypatch.setattr(dovecot, "INSTALL_SCRIPT", broken_install)
    monkeypatch.setattr(dovecot, "dovecot_binary", lambda: None)
    with pytest.raises(RuntimeError, match=r"(?s)could not install it \(exit 100\).*Unable to locate"):
        dovecot.ensure_dovecot()
