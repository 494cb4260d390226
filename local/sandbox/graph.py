"""Microsoft Graph (v1.0) mail, as far as a mail client goes: /me, sendMail (MIME), message lists
with the $select, $filter, $top and $skip a client uses, single messages and their MIME, and delta
queries on a folder for incremental sync."""

import base64
import binascii
import re
import secrets
import time
from email.message import EmailMessage
from email.utils import getaddresses, parsedate_to_datetime
from types import MappingProxyType
from typing import Final
from urllib.parse import unquote, urlencode

from local.sandbox.api import MailApi, Refusal
from local.sandbox.errors import (
    graph_access_denied,
    graph_error,
    graph_folder_not_found,
    graph_item_not_found,
    graph_unauthenticated,
)
from local.sandbox.http import Request, Response, Route, json_response, route
from local.sandbox.mime import ensure_message_id, has_recipients, parse_mime, preview, text_body, thread_ids
from local.sandbox.scopes import GRAPH_ME_SCOPES, GRAPH_READ_SCOPES, GRAPH_SEND_SCOPES
from local.sandbox.state import DeltaState, GraphMailbox, GraphMessage, Surface
from local.sandbox.util import iso

_GRAPH_FOLDERS: Final = MappingProxyType({"inbox": "inbox", "sentitems": "sentitems"})
_GRAPH_PROPERTIES: Final = frozenset(
    [
        "id", "createdDateTime", "lastModifiedDateTime", "receivedDateTime", "sentDateTime", "hasAttachments",
        "internetMessageId", "subject", "bodyPreview", "importance", "parentFolderId", "conversationId",
        "isRead", "isDraft", "body", "sender", "from", "toRecipients", "ccRecipients", "bccRecipients",
        "replyTo", "internetMessageHeaders",
    ]
)  # fmt: skip
_GRAPH_FILTER: Final = re.compile(r"\s*internetMessageId\s+eq\s+'((?:[^']|'')*)'\s*")


def _graph_addresses(message: EmailMessage, header: str) -> list[dict[str, object]]:
    values = [str(v) for v in message.get_all(header, [])]
    return [
        {"emailAddress": {"name": name or address, "address": address}}
        for name, address in getaddresses(values)
    ]


def new_mailbox(email: str) -> GraphMailbox:
    """An empty mailbox, its well-known folders under ids shaped like Exchange's."""
    folder_ids = {f: "AAMkAG" + secrets.token_urlsafe(24) + "AAA=" for f in _GRAPH_FOLDERS.values()}
    return GraphMailbox(email, folder_ids)


class GraphApi(MailApi):
    provider = "microsoft"

    def routes(self) -> list[Route]:
        me = r"/graph/v1\.0/me"
        folder = me + r"/mailFolders/(?P<folder>[^/]+)/messages"
        return [
            route("GET", me, self.me),
            route("POST", me + r"/sendMail", self.send_mail),
            route("GET", me + r"/messages", self.list_messages),
            route("GET", folder, self.list_messages),
            route("GET", folder + r"/delta", self.delta),
            route("GET", me + r"/messages/(?P<id>[^/]+)", self.get_message),
            route("GET", me + r"/messages/(?P<id>[^/]+)/\$value", self.get_mime),
        ]

    def deliver(self, email: str, raw: bytes, folder: str, conversation_id: str | None) -> GraphMessage:
        mailbox = self._state.graph[email]
        message_id, referenced = thread_ids(raw)
        if conversation_id is None:
            conversation_id = next(
                (m.conversation_id for m in mailbox.messages.values() if m.message_id in referenced), None
            )
        mailbox.seq += 1
        message = GraphMessage(
            id="AAMkAG" + secrets.token_urlsafe(48),
            conversation_id=conversation_id or "AAQkAG" + secrets.token_urlsafe(32),
            raw=raw,
            folder=folder,
            received=time.time(),
            seq=mailbox.seq,
            message_id=message_id,
            is_read=folder == "sentitems",
        )
        mailbox.messages[message.id] = message
        return message

    def _refuse(self, refusal: Refusal, request: Request, required: frozenset[str]) -> Response:
        match refusal:
            case "no_token":
                return graph_unauthenticated(request, "Access token is empty.")
            case "unknown_token":
                return graph_unauthenticated(request, "Access token validation failure.")
            case "expired_token":
                return graph_unauthenticated(request, "Lifetime validation failed, the token is expired.")
            case "insufficient_scope":
                return graph_access_denied(request)

    def _caller(self, request: Request, surface: Surface, required: frozenset[str]) -> GraphMailbox | Response:
        token = self._bearer(request, surface, required)
        return token if isinstance(token, Response) else self._state.graph[token.email]

    def _context(self, fragment: str) -> str:
        return f"{self._state.base_url}/graph/v1.0/$metadata#{fragment}"

    def me(self, request: Request, match: re.Match[str]) -> Response:
        mailbox = self._caller(request, "read", GRAPH_ME_SCOPES)
        if isinstance(mailbox, Response):
            return mailbox
        account = self._state.microsoft_accounts[mailbox.email]
        given, _, surname = account.name.partition(" ")
        return json_response(
            200,
            {
                "@odata.context": self._context("users/$entity"),
                "businessPhones": [],
                "displayName": account.name or account.email,
                "givenName": given or None,
                "jobTitle": None,
                "mail": account.email,
                "mobilePhone": None,
                "officeLocation": None,
                "preferredLanguage": None,
                "surname": surname or None,
                "userPrincipalName": account.email,
                "id": account.oid,
            },
        )

    def send_mail(self, request: Request, match: re.Match[str]) -> Response:
        mailbox = self._caller(request, "send", GRAPH_SEND_SCOPES)
        if isinstance(mailbox, Response):
            return mailbox
        content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if content_type != "text/plain":
            message = "The sandbox accepts sendMail as MIME only: Content-Type text/plain, base64 body."
            return graph_error(400, "ErrorInvalidRequest", message, request)
        try:
            raw = base64.b64decode(request.body.strip(), validate=True)
        except binascii.Error:
            return graph_error(
                400, "ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content.", request
            )
        if not has_recipients(parse_mime(raw)):
            return graph_error(
                400, "ErrorInvalidRecipients", "At least one recipient is not valid.", request
            )
        raw, _ = ensure_message_id(raw, "sandbox.prod.outlook.com")
        self.deliver(mailbox.email, raw, "sentitems", None)
        mailbox.sent.append(raw)
        return Response(202)

    def _select(self, request: Request) -> frozenset[str] | Response | None:
        text = request.param("$select")
        if not text:
            return None
        select = frozenset(p.strip() for p in text.split(",") if p.strip())
        unknown = sorted(select - _GRAPH_PROPERTIES)
        if unknown:
            message = f"Could not find a property named '{unknown[0]}' on type 'microsoft.graph.message'."
            return graph_error(400, "RequestBroker--ParseUri", message, request)
        return select

    def _represent(
        self, mailbox: GraphMailbox, message: GraphMessage, select: frozenset[str] | None
    ) -> dict[str, object]:
        parsed = parse_mime(message.raw)
        sender = _graph_addresses(parsed, "From")
        try:
            sent = (
                parsedate_to_datetime(str(parsed["Date"])).timestamp() if parsed["Date"] else message.received
            )
        except (TypeError, ValueError):
            sent = message.received
        content_type, content = text_body(parsed)
        received = iso(message.received)
        full: dict[str, object] = {
            "id": message.id,
            "createdDateTime": received,
            "lastModifiedDateTime": received,
            "receivedDateTime": received,
            "sentDateTime": iso(sent),
            "hasAttachments": any(part.is_attachment() for part in parsed.walk()),
            "internetMessageId": message.message_id,
            "subject": str(parsed["Subject"] or ""),
            "bodyPreview": preview(parsed, 255),
            "importance": "normal",
            "parentFolderId": mailbox.folder_ids[message.folder],
            "conversationId": message.conversation_id,
            "isRead": message.is_read,
            "isDraft": False,
            "body": {"contentType": content_type, "content": content},
            "sender": sender[0] if sender else None,
            "from": sender[0] if sender else None,
            "toRecipients": _graph_addresses(parsed, "To"),
            "ccRecipients": _graph_addresses(parsed, "Cc"),
            "bccRecipients": _graph_addresses(parsed, "Bcc"),
            "replyTo": _graph_addresses(parsed, "Reply-To"),
        }
        if select is None:
            return full
        # Graph returns the transport headers only when asked for by name.
        full["internetMessageHeaders"] = [{"name": n, "value": str(v)} for n, v in parsed.items()]
        return {"id": message.id} | {name: full[name] for name in sorted(select)}

    def list_messages(self, request: Request, match: re.Match[str]) -> Response:
        mailbox = self._caller(request, "read", GRAPH_READ_SCOPES)
        if isinstance(mailbox, Response):
            return mailbox
        folder_name = match.groupdict().get("folder")
        folder = None if folder_name is None else _GRAPH_FOLDERS.get(folder_name.lower())
        if folder_name is not None and folder is None:
            return graph_folder_not_found(request)
        select = self._select(request)
        if isinstance(select, Response):
            return select
        wanted_id: str | None = None
        if text := request.param("$filter"):
            parsed_filter = _GRAPH_FILTER.fullmatch(text)
            if parsed_filter is None:
                message = "The sandbox supports $filter=internetMessageId eq '<id>' only."
                return graph_error(400, "ErrorInvalidUrlQueryFilter", message, request)
            wanted_id = parsed_filter[1].replace("''", "'")
        try:
            top = min(max(int(request.param("$top") or 10), 1), 1000)
            skip = max(int(request.param("$skip") or 0), 0)
        except ValueError:
            return graph_error(400, "ErrorInvalidUrlQuery", "Invalid $top or $skip.", request)
        found = sorted(
            (
                m
                for m in mailbox.messages.values()
                if (folder is None or m.folder == folder) and (wanted_id is None or m.message_id == wanted_id)
            ),
            key=lambda m: (m.received, m.seq),
            reverse=True,
        )
        body: dict[str, object] = {
            "@odata.context": self._context("users('me')/messages"),
            "value": [self._represent(mailbox, m, select) for m in found[skip : skip + top]],
        }
        if skip + top < len(found):
            query = {k: v[0] for k, v in request.query.items() if k != "$skip"} | {"$skip": str(skip + top)}
            next_query = urlencode(query, safe="$'")  # Graph's links carry $skip and quotes unescaped
            body["@odata.nextLink"] = f"{self._state.base_url}{request.path}?{next_query}"
        return json_response(200, body)

    def _message(self, request: Request, match: re.Match[str]) -> tuple[GraphMailbox, GraphMessage] | Response:
        """The caller's mailbox and the message the path names, or the error that answers the call."""
        mailbox = self._caller(request, "read", GRAPH_READ_SCOPES)
        if isinstance(mailbox, Response):
            return mailbox
        message = mailbox.messages.get(unquote(match["id"]))
        return graph_item_not_found(request) if message is None else (mailbox, message)

    def get_message(self, request: Request, match: re.Match[str]) -> Response:
        found = self._message(request, match)
        if isinstance(found, Response):
            return found
        mailbox, message = found
        select = self._select(request)
        if isinstance(select, Response):
            return select
        body = {
            "@odata.context": self._context("users('me')/messages/$entity"),
            **self._represent(mailbox, message, select),
        }
        return json_response(200, body)

    def get_mime(self, request: Request, match: re.Match[str]) -> Response:
        found = self._message(request, match)
        return found if isinstance(found, Response) else Response(200, found[1].raw, "text/plain")

    def delta(self, request: Request, match: re.Match[str]) -> Response:
        mailbox = self._caller(request, "read", GRAPH_READ_SCOPES)
        if isinstance(mailbox, Response):
            return mailbox
        folder = _GRAPH_FOLDERS.get(match["folder"].lower())
        if folder is None:
            return graph_folder_not_found(request)
        token = request.param("$deltatoken") or request.param("$skiptoken")
        if token is not None:
            state = self._state.delta_states.get(token)
            if state is None or state.email != mailbox.email or state.folder != folder:
                return graph_error(400, "ErrorInvalidUrlQuery", "The delta token is not valid.", request)
            if state.generation != mailbox.delta_generation:
                return graph_error(
                    410, "syncStateNotFound", "The sync state generation is not found.", request
                )
            if request.param("$deltatoken") is not None:  # a new round: everything since the last one
                state = DeltaState(
                    mailbox.email,
                    folder,
                    state.generation,
                    state.until,
                    mailbox.seq,
                    state.select,
                    state.page_size,
                )
        else:
            select = self._select(request)
            if isinstance(select, Response):
                return select
            prefer = re.search(r"odata\.maxpagesize=(\d+)", request.headers.get("prefer", ""))
            page_size = min(max(int(prefer[1]), 1), 1000) if prefer else 10
            state = DeltaState(
                mailbox.email, folder, mailbox.delta_generation, 0, mailbox.seq, select, page_size
            )
        changes = sorted(
            (
                m
                for m in mailbox.messages.values()
                if m.folder == folder and state.after < m.seq <= state.until
            ),
            key=lambda m: m.seq,
        )
        page = changes[: state.page_size]
        link_base = f"{self._state.base_url}/graph/v1.0/me/mailFolders/{folder}/messages/delta"
        next_token = secrets.token_urlsafe(32)
        body: dict[str, object] = {
            "@odata.context": self._context("Collection(message)"),
            "value": [self._represent(mailbox, m, state.select) for m in page],
        }
        if len(changes) > len(page):
            self._state.delta_states[next_token] = DeltaState(
                state.email,
                folder,
                state.generation,
                page[-1].seq,
                state.until,
                state.select,
                state.page_size,
            )
            body["@odata.nextLink"] = f"{link_base}?$skiptoken={next_token}"
        else:
            self._state.delta_states[next_token] = DeltaState(
                state.email, folder, state.generation, state.until, state.until, state.select, state.page_size
            )
            body["@odata.deltaLink"] = f"{link_base}?$deltatoken={next_token}"
        headers = {"Preference-Applied": f"odata.maxpagesize={state.page_size}"}
        return json_response(200, body, headers)
