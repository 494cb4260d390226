"""The Gmail API (v1), as far as a mail client goes: profile, messages.send, messages.list with the
search terms a client needs, messages.get in every format, and history.list for incremental sync."""

import binascii
import datetime as dt
import json
import math
import re
import secrets
import shlex
import time
from collections.abc import Callable, Sequence
from email.message import EmailMessage
from typing import TypeVar, cast
from urllib.parse import unquote

from local.sandbox.api import MailApi, Refusal
from local.sandbox.errors import (
    gmail_bad_request,
    gmail_insufficient_scopes,
    gmail_not_found,
    gmail_unauthenticated,
    google_api_error,
)
from local.sandbox.http import Request, Response, Route, json_response, route
from local.sandbox.mime import ensure_message_id, has_recipients, parse_mime, part_bytes, preview, thread_ids
from local.sandbox.scopes import GMAIL_METADATA, GMAIL_PROFILE_SCOPES, GMAIL_READ_SCOPES, GMAIL_SEND_SCOPES
from local.sandbox.state import GmailMailbox, GmailMessage, HistoryRecord, Surface
from local.sandbox.util import account_key, b64url, b64url_decode, b64url_unpadded

_Item = TypeVar("_Item")


class _GmailQuery:
    """The part of Gmail's search syntax a mail client needs: rfc822msgid:, after:, before:, in:, label:."""

    def __init__(self, text: str) -> None:
        self.message_id: str | None = None
        self.after = -math.inf
        self.before = math.inf
        self.labels: set[str] = set()
        for term in shlex.split(text):
            name, sep, value = term.partition(":")
            name = name.lower()
            if not sep or not value:
                raise ValueError(f"search term {term!r} is not supported by the sandbox")
            if name == "rfc822msgid":
                self.message_id = value.strip("<>")
            elif name in ("after", "before"):
                setattr(self, name, self._instant(value))
            elif name in ("in", "label"):
                self.labels.add(value.upper())
            elif name == "is" and value.lower() == "unread":
                self.labels.add("UNREAD")
            else:
                raise ValueError(f"search term {term!r} is not supported by the sandbox")

    @staticmethod
    def _instant(value: str) -> float:
        if value.isdigit():
            return float(value)
        try:
            return dt.datetime.strptime(value, "%Y/%m/%d").replace(tzinfo=dt.UTC).timestamp()
        except ValueError:
            raise ValueError(f"date {value!r} is neither epoch seconds nor YYYY/MM/DD") from None

    def matches(self, message: GmailMessage) -> bool:
        return (
            (self.message_id is None or message.message_id.strip("<>") == self.message_id)
            and self.after <= message.internal_date < self.before
            and self.labels <= set(message.label_ids)
        )


def _gmail_payload(
    part: EmailMessage, part_id: str, header_filter: frozenset[str] | None
) -> dict[str, object]:
    headers = [
        {"name": name, "value": str(value)}
        for name, value in part.items()
        if header_filter is None or name.lower() in header_filter
    ]
    payload: dict[str, object] = {
        "partId": part_id,
        "mimeType": part.get_content_type(),
        "filename": part.get_filename() or "",
        "headers": headers,
    }
    if header_filter is not None:  # format=metadata: headers only
        return payload
    if part.get_content_maintype() == "multipart":
        payload["body"] = {"size": 0}
        children = cast(list[EmailMessage], part.get_payload())
        payload["parts"] = [
            _gmail_payload(child, f"{part_id}.{index}" if part_id else str(index), None)
            for index, child in enumerate(children)
        ]
    else:
        data = part_bytes(part)
        payload["body"] = {"size": len(data), "data": b64url_unpadded(data)}
    return payload


def _window(request: Request) -> tuple[int, int]:
    """(offset, size) of the page a list call asks for: pageToken is an offset, maxResults a size up to 500."""
    size = min(max(int(request.param("maxResults") or 100), 1), 500)
    return int(request.param("pageToken") or 0), size


def _page(
    key: str, items: Sequence[_Item], window: tuple[int, int], render: Callable[[_Item], object]
) -> dict[str, object]:
    """A list body: the page's items under ``key`` (left out when none) and nextPageToken if more follow."""
    offset, size = window
    body: dict[str, object] = {}
    if page := items[offset : offset + size]:
        body[key] = [render(item) for item in page]
    if offset + size < len(items):
        body["nextPageToken"] = str(offset + size)
    return body


class GmailApi(MailApi):
    provider = "google"

    def routes(self) -> list[Route]:
        user = r"/gmail/v1/users/(?P<user>[^/]+)"
        return [
            route("GET", user + r"/profile", self.profile),
            route("POST", user + r"/messages/send", self.send),
            route("GET", user + r"/messages", self.list_messages),
            route("GET", user + r"/messages/(?P<id>[^/]+)", self.get_message),
            route("GET", user + r"/history", self.history),
        ]

    def deliver(self, email: str, raw: bytes, thread_id: str | None, labels: tuple[str, ...]) -> GmailMessage:
        mailbox = self._state.gmail[email]
        message_id, referenced = thread_ids(raw)
        if thread_id is None:
            # Gmail threads an incoming reply with the message it answers.
            thread_id = next((m.thread_id for m in mailbox.messages.values() if m.message_id in referenced), None)
        new_id = secrets.token_hex(8)
        mailbox.history_id += 1
        message = GmailMessage(new_id, thread_id or new_id, raw, labels, time.time(), mailbox.history_id, message_id)
        mailbox.messages[new_id] = message
        mailbox.history.append(HistoryRecord(mailbox.history_id, new_id, message.internal_date))
        return message

    def _refuse(self, refusal: Refusal, request: Request, required: frozenset[str]) -> Response:
        if refusal == "insufficient_scope":
            return gmail_insufficient_scopes(required)
        return gmail_unauthenticated()

    def _caller(
        self, request: Request, match: re.Match[str], surface: Surface, required: frozenset[str]
    ) -> GmailMailbox | Response:
        token = self._bearer(request, surface, required)
        if isinstance(token, Response):
            return token
        user = unquote(match["user"])
        if user != "me" and account_key(user) != token.email:
            return google_api_error(403, "PERMISSION_DENIED", f"Delegation denied for {user}", "forbidden")
        return self._state.gmail[token.email]

    def profile(self, request: Request, match: re.Match[str]) -> Response:
        mailbox = self._caller(request, match, "read", GMAIL_PROFILE_SCOPES)
        if isinstance(mailbox, Response):
            return mailbox
        return json_response(
            200,
            {
                "emailAddress": self._state.google_accounts[mailbox.email].email,
                "messagesTotal": len(mailbox.messages),
                "threadsTotal": len({m.thread_id for m in mailbox.messages.values()}),
                "historyId": str(mailbox.history_id),
            },
        )

    def send(self, request: Request, match: re.Match[str]) -> Response:
        mailbox = self._caller(request, match, "send", GMAIL_SEND_SCOPES)
        if isinstance(mailbox, Response):
            return mailbox
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            return gmail_bad_request("Invalid JSON payload received.")
        raw_text = body.get("raw") if isinstance(body, dict) else None
        if not isinstance(raw_text, str) or not raw_text:
            return gmail_bad_request(
                "'raw' RFC822 payload message string or uploading message via /upload/* URL required"
            )
        try:
            raw = b64url_decode(raw_text)
        except (binascii.Error, ValueError):
            return gmail_bad_request("Invalid value for ByteString: raw")
        if not has_recipients(parse_mime(raw)):
            return gmail_bad_request("Recipient address required")
        raw, _ = ensure_message_id(raw, "mail.gmail.com")
        thread_id = body.get("threadId")
        message = self.deliver(
            mailbox.email, raw, thread_id if isinstance(thread_id, str) else None, ("SENT",)
        )
        if not isinstance(thread_id, str):
            message.thread_id = message.id  # an API send starts a thread unless threadId names one
        mailbox.sent.append(raw)
        return json_response(
            200, {"id": message.id, "threadId": message.thread_id, "labelIds": list(message.label_ids)}
        )

    def list_messages(self, request: Request, match: re.Match[str]) -> Response:
        mailbox = self._caller(request, match, "read", GMAIL_READ_SCOPES)
        if isinstance(mailbox, Response):
            return mailbox
        try:
            query = _GmailQuery(request.param("q") or "")
            window = _window(request)
        except ValueError as error:
            return gmail_bad_request(str(error))
        labels = set(request.query.get("labelIds", []))
        found = [m for m in reversed(mailbox.messages.values()) if query.matches(m) and labels <= set(m.label_ids)]
        body = _page("messages", found, window, lambda m: {"id": m.id, "threadId": m.thread_id})
        body["resultSizeEstimate"] = len(found)
        return json_response(200, body)

    def get_message(self, request: Request, match: re.Match[str]) -> Response:
        mailbox = self._caller(request, match, "read", GMAIL_READ_SCOPES)
        if isinstance(mailbox, Response):
            return mailbox
        message = mailbox.messages.get(unquote(match["id"]))
        if message is None:
            return gmail_not_found()
        form = request.param("format") or "full"
        if form not in ("minimal", "full", "raw", "metadata"):
            return gmail_bad_request(f"Invalid value at 'format' ({form})")
        parsed = parse_mime(message.raw)
        body: dict[str, object] = {
            "id": message.id,
            "threadId": message.thread_id,
            "labelIds": list(message.label_ids),
            "snippet": preview(parsed, 200),
            "sizeEstimate": len(message.raw),
            "historyId": str(message.history_id),
            "internalDate": str(int(message.internal_date * 1000)),
        }
        if form == "raw":
            body["raw"] = b64url(message.raw)
        elif form == "metadata":
            wanted = request.query.get("metadataHeaders")
            header_filter = (
                frozenset(h.lower() for h in wanted) if wanted else frozenset(k.lower() for k in parsed)
            )
            body["payload"] = _gmail_payload(parsed, "", header_filter)
        elif form == "full":
            body["payload"] = _gmail_payload(parsed, "", None)
        return json_response(200, body)

    def history(self, request: Request, match: re.Match[str]) -> Response:
        mailbox = self._caller(request, match, "read", GMAIL_READ_SCOPES | {GMAIL_METADATA})
        if isinstance(mailbox, Response):
            return mailbox
        try:
            start = int(request.param("startHistoryId") or "")
            window = _window(request)
        except ValueError:
            return gmail_bad_request("Invalid startHistoryId, maxResults or pageToken")
        horizon = time.time() - self._state.gmail_history_retention
        while mailbox.history and mailbox.history[0].at < horizon:
            mailbox.history_floor = max(mailbox.history_floor, mailbox.history.pop(0).id)
        if start < mailbox.history_floor:
            return gmail_not_found()
        types = request.query.get("historyTypes")
        label = request.param("labelId")
        records = [
            r
            for r in mailbox.history
            if r.id > start
            and (not types or "messageAdded" in types)
            and (label is None or label in mailbox.messages[r.message_id].label_ids)
        ]
        body = _page("history", records, window, lambda r: self._history_record(mailbox, r))
        body["historyId"] = str(mailbox.history_id)
        return json_response(200, body)

    @staticmethod
    def _history_record(mailbox: GmailMailbox, record: HistoryRecord) -> dict[str, object]:
        message = mailbox.messages[record.message_id]
        summary = {"id": message.id, "threadId": message.thread_id}
        return {
            "id": str(record.id),
            "messages": [summary],
            "messagesAdded": [{"message": {**summary, "labelIds": list(message.label_ids)}}],
        }
