"""An Outlook / Microsoft 365 inbox through Microsoft Graph, with tokens from msal.

Credentials stored for an Outlook inbox (JSON, encrypted by ``CredentialStore``)::

    {"refresh_token": "0.A...", "access_token": "EwB...", "expires_at": 1767225600,
     "scopes": ["Mail.Read", "Mail.Send"]}

``expires_at`` is when the access token expires, in epoch seconds. The stored access token is used
while it has more than five minutes left, so most sends and polls cost no token request. Microsoft
rotates the refresh token on every refresh: the new one is saved at once with a version-conditioned
write. When a concurrent refresh saved first, its tokens are kept and used from then on; ours is
never written over them.

Sending posts the MIME itself (``sendMail`` with a base64 body), so our Message-ID and threading
headers reach the recipient as built. Polling follows a delta query on the Inbox; the cursor is the
``@odata.deltaLink`` (or, when a poll stopped at its limit, the ``@odata.nextLink`` to resume from).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import msal
import requests
from msal.exceptions import MsalServiceError

from sendwell.classify import (
    classify_graph_exception,
    classify_graph_response,
    classify_msal_exception,
    classify_msal_result,
)
from sendwell.failures import ProviderFailure, handed_over_if_transient
from sendwell.mime import to_bytes
from sendwell.ports.mailbox import InboundMessage, SentReceipt

API_VERSION = "/v1.0"
GRAPH_SCOPES = ("https://graph.microsoft.com/Mail.Send", "https://graph.microsoft.com/Mail.Read")
REFRESH_MARGIN_SECONDS = 300
# A poll fetches at most about this many messages; it stops at a page boundary and resumes there.
POLL_LIMIT = 200
_PAGE_SIZE = 50
_DELTA_SELECT = "id,conversationId,receivedDateTime,isDraft"
_MICROSOFT_LOGIN_HOST = "login.microsoftonline.com"
# Graph's answers when a delta token can no longer be resumed: start a new round.
_SYNC_STATE_LOST = frozenset({"syncStateNotFound", "syncStateInvalid", "resyncRequired"})

SaveCredentials = Callable[[dict[str, Any]], dict[str, Any]]


class _SyncStateLost(Exception):
    """Graph can no longer resume the stored delta round (too old, or reset): start a new one."""


class MicrosoftTokens:
    """The inbox's Graph access token: the stored one while it lasts, else a fresh one from msal."""

    def __init__(
        self,
        credentials: Mapping[str, Any],
        *,
        client_id: str,
        client_secret: str,
        authority: str,
        session: requests.Session,
        save: SaveCredentials,
        timeout: float = 20.0,
    ) -> None:
        """``save`` stores refreshed credentials and returns what is stored then (ours, or newer ones
        a concurrent refresh saved first)."""
        self._credentials = dict(credentials)
        self._client_id = client_id
        self._client_secret = client_secret
        self._authority = authority
        self._session = session
        self._save = save
        self._timeout = timeout
        self._app: msal.ConfidentialClientApplication | None = None

    def current(self) -> str:
        token = self._credentials.get("access_token")
        expires_at = self._credentials.get("expires_at")
        fresh = isinstance(expires_at, int | float) and expires_at - time.time() > REFRESH_MARGIN_SECONDS
        if isinstance(token, str) and fresh:
            return token
        return self.refresh()

    def refresh(self) -> str:
        refresh_token = self._credentials.get("refresh_token")
        try:
            result = self._msal().acquire_token_by_refresh_token(refresh_token, scopes=list(GRAPH_SCOPES))
        except (requests.RequestException, MsalServiceError, json.JSONDecodeError) as error:
            raise ProviderFailure(classify_msal_exception(error)) from error
        access_token = result.get("access_token")
        if not isinstance(access_token, str):
            raise ProviderFailure(classify_msal_result(result))
        granted = str(result.get("scope") or "").split()
        self._credentials = self._save(
            {
                **self._credentials,
                "access_token": access_token,
                "expires_at": int(time.time()) + int(result.get("expires_in") or 3600),
                "refresh_token": result.get("refresh_token") or refresh_token,
                "scopes": granted or self._credentials.get("scopes", []),
            }
        )
        # If a concurrent refresh saved first, its tokens are what is stored and what later calls
        # use; the access token we just got is as good for this call.
        return access_token

    def _msal(self) -> msal.ConfidentialClientApplication:
        # Built on first refresh only: msal fetches the authority's metadata when it is built.
        if self._app is None:
            try:
                self._app = msal.ConfidentialClientApplication(
                    self._client_id,
                    client_credential=self._client_secret,
                    authority=self._authority,
                    http_client=_TimedHttp(self._session, self._timeout),
                    # For another host, msal would ask login.microsoftonline.com to vouch for it.
                    instance_discovery=None if urlsplit(self._authority).hostname == _MICROSOFT_LOGIN_HOST else False,
                )
            except (requests.RequestException, ValueError) as error:  # metadata unreachable or unreadable
                raise ProviderFailure(classify_msal_exception(error)) from error
        return self._app


class GraphMailbox:
    """One Outlook inbox. Every failure is raised as ``ProviderFailure``."""

    def __init__(
        self, tokens: MicrosoftTokens, *, api_url: str, session: requests.Session, timeout: float = 20.0
    ) -> None:
        self._tokens = tokens
        self._api = f"{api_url}{API_VERSION}"
        self._http = session
        self._timeout = timeout

    # -- Mailbox --------------------------------------------------------------------------------------

    # Sent Items gets the copy of an accepted message within seconds; a retry comes a minute later.
    confirms_by_sent = True

    def send(self, message: EmailMessage, *, thread_id: str | None) -> SentReceipt:
        # Graph threads by In-Reply-To/References, which the message carries; it takes no thread id.
        with handed_over_if_transient():
            response = self._call(
                "POST", f"{self._api}/me/sendMail", data=base64.b64encode(to_bytes(message)), content_type="text/plain"
            )
            self._checked(response)
        # sendMail answers 202 without an id; the copy in Sent Items has it (and the conversation).
        # The message is accepted already, so a failed lookup must not fail the send (that would
        # send it again); replies are then matched by their In-Reply-To alone.
        try:
            return self.find_sent(str(message["Message-ID"])) or SentReceipt(None, None)
        except ProviderFailure:
            return SentReceipt(None, None)

    def find_sent(self, message_id: str) -> SentReceipt | None:
        wanted = f"<{message_id.strip().strip('<>')}>".replace("'", "''")  # OData doubles quotes
        query = _query({"$filter": f"internetMessageId eq '{wanted}'", "$select": "id,conversationId", "$top": "1"})
        page = self._json(self._call("GET", f"{self._api}/me/mailFolders/sentitems/messages?{query}"))
        for item in page.get("value", []):
            return SentReceipt(provider_message_id=str(item["id"]), thread_id=item.get("conversationId"))
        return None

    def poll(self, cursor: str | None, *, since: datetime) -> tuple[list[InboundMessage], str]:
        """New Inbox mail after the delta link in ``cursor``; the cursor returned is the next one."""
        # A stored link is followed only to our own Graph endpoint: the request carries the token.
        if cursor is not None and cursor.startswith(f"{self._api}/"):
            try:
                return self._delta(cursor, since=None)
            except _SyncStateLost:
                pass  # resync below
        # Graph's times have whole seconds: a message of the same second as ``since`` counts.
        since = since.astimezone(UTC).replace(microsecond=0)
        start = _query({"$select": _DELTA_SELECT, "$filter": f"receivedDateTime ge {_iso(since)}"})
        return self._delta(f"{self._api}/me/mailFolders/inbox/messages/delta?{start}", since=since)

    # -- polling --------------------------------------------------------------------------------------

    def _delta(self, link: str, *, since: datetime | None) -> tuple[list[InboundMessage], str]:
        """Follow a delta round from ``link``: resuming a stored one (``since`` None) or a new one."""
        fetched: list[InboundMessage] = []
        while True:
            response = self._call("GET", link, prefer=f"odata.maxpagesize={_PAGE_SIZE}")
            if since is None and _sync_state_lost(response):
                raise _SyncStateLost
            page = self._json(response)
            for item in page.get("value", []):
                # Graph applies the resync's $filter itself; checking again keeps it bounded anyway.
                if "@removed" in item or item.get("isDraft") or (since is not None and _received(item) < since):
                    continue
                message = self._fetch(str(item["id"]), item.get("conversationId"))
                if message is not None:
                    fetched.append(message)
            next_link = page.get("@odata.nextLink")
            if next_link is None:
                return fetched, str(page["@odata.deltaLink"])
            if len(fetched) >= POLL_LIMIT:
                return fetched, str(next_link)  # the rest of this round is for the next poll
            link = str(next_link)

    def _fetch(self, message_id: str, conversation_id: str | None) -> InboundMessage | None:
        response = self._call("GET", f"{self._api}/me/messages/{quote(message_id, safe='')}/$value")
        if response.status_code == 404:
            return None  # deleted since the delta listed it
        self._checked(response)
        return InboundMessage.parse(message_id, response.content, thread_id=conversation_id)

    # -- HTTP -----------------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        url: str,
        *,
        data: bytes | None = None,
        content_type: str | None = None,
        prefer: str | None = None,
    ) -> requests.Response:
        headers = {name: value for name, value in (("Content-Type", content_type), ("Prefer", prefer)) if value}
        response = self._exchange(method, url, self._tokens.current(), headers, data)
        if response.status_code == 401:
            # The token was revoked or expired early: one fresh token and one more try. A second
            # 401 means the grant itself is gone (classify_graph_response reads it so).
            response = self._exchange(method, url, self._tokens.refresh(), headers, data)
        return response

    def _exchange(
        self, method: str, url: str, token: str, headers: Mapping[str, str], data: bytes | None
    ) -> requests.Response:
        try:
            return self._http.request(
                method, url, headers={**headers, "Authorization": f"Bearer {token}"}, data=data, timeout=self._timeout
            )
        except requests.RequestException as error:
            raise ProviderFailure(classify_graph_exception(error)) from error

    @staticmethod
    def _checked(response: requests.Response) -> requests.Response:
        if response.status_code >= 400:
            raise ProviderFailure(classify_graph_response(response.status_code, response.content, response.headers))
        return response

    @classmethod
    def _json(cls, response: requests.Response) -> dict[str, Any]:
        cls._checked(response)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):  # a proxy's page with a 200, say
            raise ProviderFailure(classify_graph_response(response.status_code, response.content, response.headers))
        return body


@dataclass(frozen=True, slots=True)
class _TimedHttp:
    """msal's HTTP client: the shared session, with our timeout on every call.

    msal ignores its own ``timeout`` when given a client, and without a client of our own it would
    build a session that lets REQUESTS_CA_BUNDLE override the CA bundle we configured.
    """

    session: requests.Session
    timeout: float

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return self.session.get(url, timeout=self.timeout, **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        return self.session.post(url, timeout=self.timeout, **kwargs)

    def close(self) -> None:
        """The session is shared with every other inbox: it stays open."""


def _sync_state_lost(response: requests.Response) -> bool:
    if response.status_code == 410:
        return True
    if response.status_code != 400:
        return False
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return False
    return code in _SYNC_STATE_LOST


def _query(params: Mapping[str, str]) -> str:
    # Spaces as %20, not '+': OData reads the query's expressions itself.
    return urlencode(params, quote_via=quote)


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _received(item: Mapping[str, Any]) -> datetime:
    value = item.get("receivedDateTime")
    try:
        return datetime.fromisoformat(str(value)).astimezone(UTC)
    except ValueError:
        return datetime.max.replace(tzinfo=UTC)  # unknown: keep the message rather than miss it
