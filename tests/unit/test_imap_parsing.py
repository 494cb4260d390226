"""What the IMAP adapter decides without a server: message ids it refuses to search for, which folder
is the Sent folder, and the cursor it stores. Against a real Dovecot: ``tests/e2e/test_imap.py``."""

from __future__ import annotations

import pytest

from sendwell.adapters.imap import ImapCursor, ImapMailbox, pick_sent_folder


@pytest.mark.parametrize(
    "message_id", ['<a@b.test>" OR ALL', "a@b.test\r\nA1 DELETE INBOX", "<a@b.test> <c@d.test>", "no-at-sign"]
)
def test_sent_folder_search_refuses_what_is_not_one_message_id(message_id: str) -> None:
    with ImapMailbox("127.0.0.1", 9, "user", "password") as box, pytest.raises(ValueError):
        box.find_sent_by_message_id(message_id)  # refused before any connection is opened


@pytest.mark.parametrize(
    ("listing", "sent"),
    [
        (  # Gmail flags it (RFC 6154)
            [
                b'(\\HasNoChildren) "/" "INBOX"',
                b'(\\HasChildren \\Noselect) "/" "[Gmail]"',
                b'(\\HasNoChildren \\Sent) "/" "[Gmail]/Sent Mail"',
                b'(\\HasNoChildren) "/" "Sent"',
            ],
            "[Gmail]/Sent Mail",
        ),
        ([b'(\\HasNoChildren) "/" Inbox', b'(\\HasNoChildren) "/" "Sent Items"'], "Sent Items"),
        ([b'(\\HasNoChildren) "." INBOX.Drafts', b'(\\HasNoChildren) "." INBOX.Sent'], "INBOX.Sent"),
        ([(b'(\\HasNoChildren \\Sent) "/" {11}', b"Envoy&AOk-s")], "Envoy&AOk-s"),  # a literal, mUTF-7
        ([b'(\\HasNoChildren) "/" INBOX', None], None),
    ],
)
def test_the_sent_folder_is_found_by_flag_then_by_name(
    listing: list[bytes | tuple[bytes, bytes] | None], sent: str | None
) -> None:
    assert pick_sent_folder(listing) == sent


@pytest.mark.parametrize("stored", ["1795333292:0", "1:18446744073709551615"])
def test_cursor_survives_storage(stored: str) -> None:
    assert ImapCursor.from_str(stored).to_str() == stored


@pytest.mark.parametrize("stored", ["", "12", "a:1", "1:-1", "1:2:3", " 1:2"])
def test_a_damaged_cursor_is_refused(stored: str) -> None:
    with pytest.raises(ValueError):
        ImapCursor.from_str(stored)
