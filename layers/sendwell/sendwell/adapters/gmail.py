"""A Gmail inbox through the Gmail API and google-auth: send, find our message in Sent, poll new mail.

Credentials stored for a Gmail inbox (JSON, encrypted by ``CredentialStore``)::

    {"refresh_token": "1//0...", "access_token": "ya29...", "expires_at": 1767225600,
     "scopes": ["https://www.googleapis.com/auth/gmail.send", "https://www.googleapis.com/auth/gmail.readonly"]}

``expires_at`` is when the access token expires, in epoch seconds. The stored access token is used
until google-auth finds it about to expire; a refreshed one is saved at once (Google does not rotate
refresh tokens, but the save is version-conditioned like every other), so the next invocation does
not refresh again.

Polling follows Gmail's ``historyId``: one ``users.history.list`` answers "anything new?", so a poll
that finds nothing costs one call. Without a cursor, or when Gmail no longer keeps history that old
(404), a bounded resync lists the messages received since the last good poll and takes a fresh
``historyId`` from the profile.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote

import requests
from google.auth.exceptions import RefreshError, TransportError
from google.auth.transport.requests import AuthorizedSession, Request
from google.oauth2.credentials import Credentials

from sendwell.classify import (
    classify_gmail_exception,
    classify_gmail_response,
    classify_google_refresh_error,
    classify_google_transport_error,
)
from sendwell.failures import ProviderFailure, handed_over_if_transient
from sendwell.mime import to_gmail_raw
from sendwell.ports.mailbox import InboundMessage, SentReceipt

API_PATH = "/gmail/v1/users/me"
# A resync fetches at most this many messages (the newest): enough for days of replies, bounded
# so that a mailbox of any size costs the same.
RESYNC_LIMIT = 500
# An incremental poll fetches at most this many; the rest of the history waits for the next poll.
POLL_LIMIT = 200
_PAGE_SIZE = 500
# Our own sent mail and drafts show up in history too; they are not something that arrived.
_NOT_INBOUND = frozenset({"SENT", "DRAFT"})

SaveCredentials = Callable[[dict[str, Any]], dict[str, Any]]


class GmailMailbox:
    """One Gmail inbox. Every failure is raised as ``ProviderFailure``."""

    def __init__(
        self,
        credentials: Mapping[str, Any],
        *,
        client_id: str,
        client_secret: str,
        token_url: str,
        api_url: str,
        session: requests.Session,
        save: SaveCredentials,
        timeout: float = 20.0,
    ) -> None:
        """``save`` stores refreshed credentials and returns what is stored then (ours, or newer ones
        a concurrent refresh saved first); ``session`` is shared, configured for the CA to trust."""
        self._stored = dict(credentials)
        self._google = Credentials(  # type: ignore[no-untyped-call]
            token=credentials.get("access_token"),
            refresh_token=credentials.get("refresh_token"),
            token_uri=token_url,
            client_id=client_id,
            client_secret=client_secret,
            scopes=credentials.get("scopes") or None,
            expiry=_naive_utc(credentials.get("expires_at")),
        )
        self._saved_token: str | None = self._google.token
        self._http = AuthorizedSession(self._google, auth_request=Request(session))  # type: ignore[no-untyped-call]
        # Trust what the shared session trusts, and reuse its connection pool: one TLS handshake
        # serves every inbox polled in the same invocation.
        self._http.verify = session.verify
        self._http.trust_env = session.trust_env
        self._http.mount("https://", session.get_adapter("https://"))
        self._api = f"{api_url}{API_PATH}"
        self._save = save
        self._timeout = timeout

    # -- Mailbox --------------------------------------------------------------------------------------

    confirms_by_sent = True  # a message the API accepted is in SENT at once

    def send(self, message: EmailMessage, *, thread_id: str | None) -> SentReceipt:
        body = {"raw": to_gmail_raw(message)}
        if thread_id:
            body["threadId"] = thread_id
        with handed_over_if_transient():
            sent = self._call("POST", "/messages/send", json=body)
        return SentReceipt(provider_message_id=str(sent["id"]), thread_id=str(sent["threadId"]))

    def find_sent(self, message_id: str) -> SentReceipt | None:
        query = f"rfc822msgid:{message_id.strip().strip('<>')} in:sent"
        found = self._call("GET", "/messages", params={"q": query, "maxResults": 1})
        for item in found.get("messages", []):
            return SentReceipt(provider_message_id=str(item["id"]), thread_id=str(item["threadId"]))
        return None

    def poll(self, cursor: str | None, *, since: datetime) -> tuple[list[InboundMessage], str]:
        """New mail after the ``historyId`` in ``cursor``; the cursor returned is the next one."""
        if cursor is not None and cursor.isdigit():
            found = self._history_after(cursor)
            if found is not None:
                return found
        return self._resync(since)

    # -- polling --------------------------------------------------------------------------------------

    def _history_after(self, start: str) -> tuple[list[InboundMessage], str] | None:
        """Messages added after history id ``start``; None when Gmail no longer has that history."""
        added: dict[str, None] = {}  # an ordered set of message ids
        params: dict[str, str | int] = {
            "startHistoryId": start,
            "historyTypes": "messageAdded",
            "maxResults": _PAGE_SIZE,
        }
        while True:
            page = self._get_unless_gone("/history", params)
            if page is None:
                return None
            for record in page.get("history", []):
                for entry in record.get("messagesAdded", []):
                    message = entry.get("message", {})
                    if not _NOT_INBOUND.intersection(message.get("labelIds", [])):
                        added[str(message["id"])] = None
                if len(added) >= POLL_LIMIT:
                    # Every message up to this record is taken: the next poll starts after it.
                    return self._fetch(added), str(record["id"])
            token = page.get("nextPageToken")
            if not token:
                return self._fetch(added), str(page["historyId"])
            params["pageToken"] = str(token)

    def _resync(self, since: datetime) -> tuple[list[InboundMessage], str]:
        # The history id is read before listing: mail arriving in between is listed now *and* seen
        # by the next history.list (processing a message twice is harmless); the other order could
        # miss it.
        history_id = str(self._call("GET", "/profile")["historyId"])
        listed: dict[str, None] = {}
        params: dict[str, str | int] = {"q": f"after:{int(since.timestamp())}", "maxResults": _PAGE_SIZE}
        while len(listed) < RESYNC_LIMIT:
            page = self._call("GET", "/messages", params=params)
            listed.update((str(item["id"]), None) for item in page.get("messages", []))
            token = page.get("nextPageToken")
            if not token:
                break
            params["pageToken"] = str(token)
        # Gmail lists newest first: keep the newest, process them oldest first.
        newest = list(listed)[:RESYNC_LIMIT]
        return self._fetch(reversed(newest)), history_id

    def _fetch(self, message_ids: Iterable[str]) -> list[InboundMessage]:
        fetched: list[InboundMessage] = []
        for message_id in message_ids:
            found = self._get_unless_gone(f"/messages/{quote(message_id, safe='')}", {"format": "raw"})
            # Gone since it was listed, or (in a resync, which lists everything) our own mail.
            if found is None or _NOT_INBOUND.intersection(found.get("labelIds", [])):
                continue
            raw = base64.urlsafe_b64decode(_padded(str(found["raw"])))
            fetched.append(InboundMessage.parse(message_id, raw, thread_id=found.get("threadId")))
        return fetched

    # -- HTTP -----------------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        return self._decode(self._exchange(method, path, params=params, json=json))

    def _get_unless_gone(self, path: str, params: Mapping[str, str | int]) -> dict[str, Any] | None:
        """Like ``_call``, but a 404 answers None (a message deleted, history no longer kept)."""
        response = self._exchange("GET", path, params=params)
        return None if response.status_code == 404 else self._decode(response)

    def _exchange(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None,
        json: Mapping[str, str] | None = None,
    ) -> requests.Response:
        try:
            response: requests.Response = self._http.request(  # type: ignore[no-untyped-call]
                method, f"{self._api}{path}", params=params, json=json, timeout=self._timeout
            )
        except RefreshError as error:
            raise ProviderFailure(classify_google_refresh_error(error)) from error
        except TransportError as error:
            raise ProviderFailure(classify_google_transport_error(error)) from error
        except requests.RequestException as error:
            raise ProviderFailure(classify_gmail_exception(error)) from error
        self._save_refreshed_token()
        return response

    @staticmethod
    def _decode(response: requests.Response) -> dict[str, Any]:
        body: object = None
        if response.status_code < 400:
            try:
                body = response.json()
            except ValueError:
                pass  # not JSON: classified below like any error page
        if not isinstance(body, dict):
            raise ProviderFailure(classify_gmail_response(response.status_code, response.content, response.headers))
        return body

    def _save_refreshed_token(self) -> None:
        """Save the access token google-auth refreshed (before a call, or after a 401), once."""
        token = self._google.token
        if token == self._saved_token:
            return
        self._saved_token = token
        self._stored = self._save(
            {
                **self._stored,
                "access_token": token,
                "expires_at": _epoch(self._google.expiry),
                "refresh_token": self._google.refresh_token or self._stored.get("refresh_token"),
            }
        )


def _naive_utc(epoch_seconds: object) -> datetime | None:
    """google-auth compares expiry with a naive UTC datetime."""
    if not isinstance(epoch_seconds, int | float):
        return None
    return datetime.fromtimestamp(epoch_seconds, UTC).replace(tzinfo=None)


def _epoch(expiry: datetime | None) -> int | None:
    return None if expiry is None else int(expiry.replace(tzinfo=UTC).timestamp())


def _padded(data: str) -> str:
    return data + "=" * (-len(data) % 4)
