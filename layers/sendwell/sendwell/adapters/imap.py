"""Read a custom inbox over IMAP: new mail since the last poll, and our own sent copies.

A poll must cost the same for a mailbox of a hundred messages and one of a hundred thousand, so
nothing here searches or fetches the whole mailbox. The cursor is (UIDVALIDITY, last UID seen):
SELECT's UIDNEXT answers "anything new?" with no further command, and ``UID SEARCH UID n+1:*`` names
exactly the new messages. Only a changed UIDVALIDITY (the server renumbered the mailbox) or a first
poll falls back to ``SEARCH SINCE <date>``, which the server answers from its date index.

The mailbox is opened read-only and bodies are fetched with ``BODY.PEEK[]``: polling must never mark
a prospect's reply as read in the owner's mail client.
"""

from __future__ import annotations

import contextlib
import imaplib
import re
import ssl
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self

from sendwell.adapters.tls import default_client_context
from sendwell.classify import classify_imap_error
from sendwell.failures import ProviderFailure
from sendwell.ports.mailbox import InboundMessage

INBOX = "INBOX"
# Where providers put sent mail when the server does not flag it \Sent (RFC 6154), most common first.
SENT_FOLDER_NAMES = ("Sent", "Sent Items", "Sent Messages", "[Gmail]/Sent Mail", "INBOX.Sent", "INBOX/Sent")

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_LIST_LINE = re.compile(rb'^\((?P<flags>[^)]*)\) (?:"(?:[^"\\]|\\.)*"|NIL) (?P<name>.*)$')
_FETCH_UID = re.compile(rb"\bUID (\d+)")
_SAFE_MESSAGE_ID = re.compile(r"[!-;=?-~]+@[!-;=?-~]+")  # printable ASCII without < > (no quotes either)


@dataclass(frozen=True, slots=True)
class ImapCursor:
    """Where the last poll stopped: valid only while the mailbox keeps its UIDVALIDITY."""

    uidvalidity: int
    last_uid: int

    def to_str(self) -> str:
        return f"{self.uidvalidity}:{self.last_uid}"

    @classmethod
    def from_str(cls, value: str) -> ImapCursor:
        uidvalidity, sep, last_uid = value.partition(":")
        if not sep or not uidvalidity.isdigit() or not last_uid.isdigit():
            raise ValueError("an IMAP cursor looks like '<uidvalidity>:<last uid>'")
        return cls(int(uidvalidity), int(last_uid))


class ImapMailbox:
    """One IMAP session. Connects on first use; every failure is raised as ``ProviderFailure``."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        password: str,
        *,
        use_ssl: bool = False,
        starttls: bool = False,
        timeout: float = 20.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if use_ssl and starttls:
            raise ValueError("choose implicit TLS (use_ssl) or STARTTLS, not both")
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        self._use_ssl = use_ssl
        self._starttls = starttls
        self._timeout = timeout
        self._ssl_context = ssl_context
        self._client: imaplib.IMAP4 | None = None
        self._sent_folder: str | None = None
        self._commands: list[str] = []

    def __repr__(self) -> str:  # the default would show the password
        return f"ImapMailbox({self.host!r}, {self.port}, username={self.username!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def commands(self) -> tuple[str, ...]:
        """IMAP commands this session issued, in order: names only, never their arguments."""
        return tuple(self._commands)

    def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            with contextlib.suppress(imaplib.IMAP4.error, OSError):  # the session is over either way
                client.logout()

    def verify_login(self) -> None:
        """Sign in (if not yet signed in) and open INBOX read-only: proves the credentials without
        changing any mail. The second command is the proof at Outlook, which accepts LOGIN with a
        wrong password and refuses the next command ("User is authenticated but not connected")."""
        with _provider_failures():
            client = self._session()
            self._check("EXAMINE", client.select(INBOX, readonly=True))

    def fetch_new(
        self, cursor: ImapCursor | None, *, since: datetime | None = None, batch: int = 200
    ) -> tuple[list[InboundMessage], ImapCursor]:
        """Messages that arrived in INBOX after ``cursor``, and the cursor to store for next time.

        Without a cursor, or when the server renumbered the mailbox (UIDVALIDITY changed), the poll
        resyncs: messages received at or after ``since`` (timezone-aware), or none when ``since`` is
        None, with the cursor then set past the newest message. ``batch`` caps the UIDs per FETCH.
        """
        if since is not None and since.utcoffset() is None:
            raise ValueError("since must be timezone-aware")
        if batch < 1:
            raise ValueError("batch must be at least 1")
        with _provider_failures():
            client = self._session()
            self._check("EXAMINE", client.select(INBOX, readonly=True))
            uidvalidity = _response_int(client, "UIDVALIDITY")
            uid_next = _response_int(client, "UIDNEXT")  # optional in RFC 3501: None if not sent
            if uidvalidity is None:
                raise imaplib.IMAP4.error("EXAMINE command error: no UIDVALIDITY in the response")

            if cursor is not None and cursor.uidvalidity == uidvalidity:
                return self._poll_after(client, cursor, uid_next, batch)
            return self._resync(client, uidvalidity, uid_next, since, batch)

    def find_sent_by_message_id(self, message_id: str) -> bool:
        """Whether the Sent folder holds a message with this Message-ID (brackets optional).

        False as well when the mailbox has no Sent folder at all: there is nothing that was saved.
        """
        bare = message_id.removeprefix("<").removesuffix(">")
        if not _SAFE_MESSAGE_ID.fullmatch(bare):
            raise ValueError("not a single Message-ID")
        with _provider_failures():
            client = self._session()
            folder = self._find_sent_folder(client)
            if folder is None:
                return False
            self._check("EXAMINE", client.select(_quote(folder), readonly=True))
            return bool(self._search(client, "HEADER", "Message-ID", _quote(f"<{bare}>")))

    def append_sent(self, raw: bytes) -> None:
        """Save a copy of a message we sent, for SMTP servers that don't keep one themselves."""
        with _provider_failures():
            client = self._session()
            folder = self._find_sent_folder(client)
            if folder is None:
                folder = SENT_FOLDER_NAMES[0]
                self._check("CREATE", client.create(_quote(folder)))
                self._sent_folder = folder
            when = imaplib.Time2Internaldate(time.time())
            self._check("APPEND", client.append(_quote(folder), r"(\Seen)", when, raw))

    # --- internals -----------------------------------------------------------------------------

    def _session(self) -> imaplib.IMAP4:
        if self._client is None:
            context = self._ssl_context or (default_client_context() if self._use_ssl or self._starttls else None)
            client: imaplib.IMAP4
            if self._use_ssl:
                client = imaplib.IMAP4_SSL(self.host, self.port, ssl_context=context, timeout=self._timeout)
            else:
                client = imaplib.IMAP4(self.host, self.port, timeout=self._timeout)
            try:
                if self._starttls:
                    self._commands.append("STARTTLS")
                    client.starttls(context)
                self._login(client)
            except BaseException:  # cleanup only: the error goes on to the caller
                with contextlib.suppress(imaplib.IMAP4.error, OSError):
                    client.shutdown()
                raise
            self._client = client
        return self._client

    def _login(self, client: imaplib.IMAP4) -> None:
        try:
            if f"{self.username}{self._password}".isascii():
                self._commands.append("LOGIN")
                client.login(self.username, self._password)
            else:
                # imaplib sends LOGIN arguments as ASCII; SASL PLAIN carries UTF-8 (RFC 4616).
                self._commands.append("AUTHENTICATE")
                credentials = f"\0{self.username}\0{self._password}".encode()
                client.authenticate("PLAIN", lambda _challenge: credentials)
        except imaplib.IMAP4.error as exc:
            if isinstance(exc, imaplib.IMAP4.abort):
                raise
            # Read here, where it is known to answer the sign-in: a NO refuses the credentials.
            raise ProviderFailure(classify_imap_error(exc, at_login=True)) from exc

    def _check(self, command: str, result: tuple[str, list[Any]]) -> list[Any]:
        """Count the command, and turn a NO into the error imaplib raises for BAD (same shape)."""
        self._commands.append(command)
        typ, data = result
        if typ != "OK":
            raise imaplib.IMAP4.error(f"{command} command error: {typ} {data!r}")
        return data

    def _search(self, client: imaplib.IMAP4, *criteria: str) -> list[int]:
        data = self._check("UID SEARCH", client.uid("SEARCH", *criteria))
        return sorted({int(uid) for line in data if line for uid in line.split()})

    def _poll_after(
        self, client: imaplib.IMAP4, cursor: ImapCursor, uid_next: int | None, batch: int
    ) -> tuple[list[InboundMessage], ImapCursor]:
        if uid_next is not None and uid_next <= cursor.last_uid + 1:
            return [], cursor  # nothing new, known from EXAMINE alone
        # "n+1:*" always matches the newest message, even an old one: keep only what is newer.
        uids = [uid for uid in self._search(client, "UID", f"{cursor.last_uid + 1}:*") if uid > cursor.last_uid]
        messages = self._fetch(client, uids, batch=batch, since=None)
        return messages, ImapCursor(cursor.uidvalidity, max([cursor.last_uid, *uids]))

    def _resync(
        self,
        client: imaplib.IMAP4,
        uidvalidity: int,
        uid_next: int | None,
        since: datetime | None,
        batch: int,
    ) -> tuple[list[InboundMessage], ImapCursor]:
        # One day earlier: SEARCH SINCE compares dates in the server's time zone; _fetch trims exactly.
        uids = self._search(client, "SINCE", _imap_date(since - timedelta(days=1))) if since else []
        messages = self._fetch(client, uids, batch=batch, since=since)
        # Without UIDNEXT, "UID SEARCH UID *" names the highest UID alone: still no full search.
        newest = uid_next - 1 if uid_next is not None else max(self._search(client, "UID", "*"), default=0)
        return messages, ImapCursor(uidvalidity, max([newest, *uids]))

    def _fetch(
        self, client: imaplib.IMAP4, uids: Sequence[int], *, batch: int, since: datetime | None
    ) -> list[InboundMessage]:
        messages: list[InboundMessage] = []
        for start in range(0, len(uids), batch):
            chunk = _uid_set(uids[start : start + batch])
            data = self._check("UID FETCH", client.uid("FETCH", chunk, "(UID INTERNALDATE BODY.PEEK[])"))
            for uid, internal_date, raw in _fetched_bodies(data):
                if since is None or internal_date is None or internal_date >= since:
                    messages.append(InboundMessage.parse(str(uid), raw))
        return sorted(messages, key=lambda message: int(message.provider_id))

    def _find_sent_folder(self, client: imaplib.IMAP4) -> str | None:
        if self._sent_folder is None:
            self._sent_folder = pick_sent_folder(self._check("LIST", client.list()))
        return self._sent_folder


def pick_sent_folder(list_response: Sequence[bytes | tuple[bytes, bytes] | None]) -> str | None:
    """The Sent folder in a LIST response: the one flagged \\Sent, else the first well-known name."""
    folders: dict[str, str] = {}  # name -> flags, in server order
    for item in list_response:
        # imaplib returns a name sent as a literal as (b'(flags) "/" {n}', b'name').
        line, literal = item if isinstance(item, tuple) else (item, None)
        match = _LIST_LINE.match(line or b"")
        if match is None:
            continue
        name = literal if literal is not None else match["name"]
        folders[_unquote(name.decode("ascii", "replace"))] = match["flags"].decode("ascii", "replace")
    flagged = next((name for name, flags in folders.items() if "\\sent" in flags.lower().split()), None)
    if flagged is not None:
        return flagged
    by_name = {name.lower(): name for name in folders}
    return next((by_name[known.lower()] for known in SENT_FOLDER_NAMES if known.lower() in by_name), None)


@contextlib.contextmanager
def _provider_failures() -> Iterator[None]:
    try:
        yield
    except (imaplib.IMAP4.error, OSError) as exc:
        raise ProviderFailure(classify_imap_error(exc)) from exc


def _response_int(client: imaplib.IMAP4, code: str) -> int | None:
    _name, values = client.response(code)
    value = values[-1] if values else None
    return int(value) if isinstance(value, bytes) and value.isdigit() else None


def _fetched_bodies(data: Sequence[Any]) -> Iterator[tuple[int, datetime | None, bytes]]:
    """(uid, internal date, raw message) from a UID FETCH response, whatever order the items come in."""
    pending: tuple[bytes, bytes] | None = None  # a body whose UID came after the literal
    for item in data:
        if isinstance(item, tuple):
            meta, raw = item
            uid = _FETCH_UID.search(meta)
            if uid is None:
                pending = (meta, raw)
                continue
            yield int(uid[1]), _internal_date(meta), raw
        elif isinstance(item, bytes) and pending is not None:
            uid = _FETCH_UID.search(item)
            if uid is not None:
                yield int(uid[1]), _internal_date(pending[0] + item), pending[1]
            pending = None


def _internal_date(meta: bytes) -> datetime | None:
    parsed = imaplib.Internaldate2tuple(meta)
    return datetime.fromtimestamp(time.mktime(parsed), UTC) if parsed else None


def _uid_set(uids: Sequence[int]) -> str:
    """Compact UID set: [1, 2, 3, 7, 9, 10] -> "1:3,7,9:10" (short commands even for long batches)."""
    ranges: list[list[int]] = []
    for uid in sorted(uids):
        if ranges and uid == ranges[-1][1] + 1:
            ranges[-1][1] = uid
        else:
            ranges.append([uid, uid])
    return ",".join(str(first) if first == last else f"{first}:{last}" for first, last in ranges)


def _imap_date(moment: datetime) -> str:
    """IMAP's date (RFC 3501 date-text), spelled without the locale strftime('%b') would use."""
    day = moment.astimezone(UTC)
    return f"{day.day}-{_MONTHS[day.month - 1]}-{day.year}"


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value
