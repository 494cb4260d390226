"""What the sandbox remembers: accounts, clients, grants, tokens, faults and mailboxes, in one ``State``.

Every record lives in memory; ``State.lock`` guards them all (the server takes it around each request).
"""

import math
import secrets
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Final, Literal

Provider = Literal["google", "microsoft"]
Surface = Literal["token", "send", "read"]

_FIRST_HISTORY_ID: Final = 1000


# --------------------------------------------------------------------------------------------------
# Public records


@dataclass(frozen=True, slots=True)
class GoogleAccount:
    email: str
    sub: str
    name: str


@dataclass(frozen=True, slots=True)
class MicrosoftAccount:
    email: str
    tid: str
    oid: str
    name: str


# --------------------------------------------------------------------------------------------------
# Identity


@dataclass(frozen=True, slots=True)
class Client:
    provider: Provider
    client_id: str
    client_secret: str
    redirect_uris: frozenset[str]


@dataclass(frozen=True, slots=True)
class PendingAuthorization:
    """An authorization request waiting for the person on the consent page."""

    provider: Provider
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str | None
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str
    tenant: str
    offline: bool
    force_consent: bool
    include_granted_scopes: bool
    client_info: bool
    response_mode: str
    expires_at: float


@dataclass(slots=True)
class AuthCode:
    provider: Provider
    client_id: str
    email: str
    scopes: frozenset[str]
    redirect_uri: str
    code_challenge: str | None
    code_challenge_method: str
    nonce: str | None
    issue_refresh_token: bool
    expires_at: float
    redeemed: bool = False


@dataclass(slots=True)
class Token:
    """An access or refresh token: whose, for which client, with which scopes."""

    provider: Provider
    client_id: str
    email: str
    scopes: frozenset[str]
    expires_at: float = math.inf
    revoked: bool = False

    def usable(self, now: float) -> bool:
        return not self.revoked and now < self.expires_at


@dataclass(slots=True)
class Fault:
    kind: str
    remaining: int | None
    retry_after: int
    hold_seconds: float


# --------------------------------------------------------------------------------------------------
# Mailboxes


@dataclass(slots=True)
class GmailMessage:
    id: str
    thread_id: str
    raw: bytes
    label_ids: tuple[str, ...]
    internal_date: float
    history_id: int
    message_id: str


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    id: int
    message_id: str
    at: float


@dataclass(slots=True)
class GmailMailbox:
    email: str
    messages: dict[str, GmailMessage] = field(default_factory=dict)
    history: list[HistoryRecord] = field(default_factory=list)
    history_id: int = _FIRST_HISTORY_ID
    # Any startHistoryId below this is older than what is kept: history.list answers 404.
    history_floor: int = 0
    sent: list[bytes] = field(default_factory=list)


@dataclass(slots=True)
class GraphMessage:
    id: str
    conversation_id: str
    raw: bytes
    folder: str
    received: float
    seq: int
    message_id: str
    is_read: bool


@dataclass(slots=True)
class GraphMailbox:
    email: str
    folder_ids: dict[str, str]
    messages: dict[str, GraphMessage] = field(default_factory=dict)
    seq: int = 0
    # Bumped to make every delta token of this mailbox unknown (410 syncStateNotFound).
    delta_generation: int = 0
    sent: list[bytes] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class DeltaState:
    email: str
    folder: str
    generation: int
    after: int
    until: int
    select: frozenset[str] | None
    page_size: int


# --------------------------------------------------------------------------------------------------
# The whole state


@dataclass(slots=True)
class State:
    """Everything the sandbox knows; every read and write happens under ``lock``."""

    gmail_history_retention: float
    lock: threading.RLock = field(default_factory=threading.RLock)
    base_url: str = ""
    google_accounts: dict[str, GoogleAccount] = field(default_factory=dict)
    microsoft_accounts: dict[str, MicrosoftAccount] = field(default_factory=dict)
    clients: dict[tuple[Provider, str], Client] = field(default_factory=dict)
    pending: dict[str, PendingAuthorization] = field(default_factory=dict)
    codes: dict[str, AuthCode] = field(default_factory=dict)
    refresh_tokens: dict[str, Token] = field(default_factory=dict)
    access_tokens: dict[str, Token] = field(default_factory=dict)
    consents: dict[tuple[Provider, str, str], frozenset[str]] = field(default_factory=dict)
    faults: dict[tuple[str, Surface], list[Fault]] = field(default_factory=dict)
    gmail: dict[str, GmailMailbox] = field(default_factory=dict)
    graph: dict[str, GraphMailbox] = field(default_factory=dict)
    delta_states: dict[str, DeltaState] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)

    def clear(self) -> None:
        for collection in (
            self.google_accounts,
            self.microsoft_accounts,
            self.clients,
            self.pending,
            self.codes,
            self.refresh_tokens,
            self.access_tokens,
            self.consents,
            self.faults,
            self.gmail,
            self.graph,
            self.delta_states,
            self.requests,
        ):
            collection.clear()

    def take_fault(self, email: str, surface: Surface) -> Fault | None:
        """The first fault armed for this account and surface, counting one use of it."""
        faults = self.faults.get((email, surface))
        if not faults:
            return None
        fault = faults[0]
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                faults.pop(0)
        return fault

    def issue(self, store: dict[str, Token], prefix: str, token: Token) -> str:
        value = prefix + secrets.token_urlsafe(48)
        store[value] = token
        return value

    def has_live_refresh_token(self, provider: Provider, client_id: str, email: str) -> bool:
        return any(
            t.provider == provider and t.client_id == client_id and t.email == email and not t.revoked
            for t in self.refresh_tokens.values()
        )

    def revoke(self, provider: Provider, email: str, *, client_id: str | None = None, access_tokens: bool) -> None:
        """End this account's grant at this provider (to one client, or to all): its refresh tokens,
        its access tokens too if asked, and its recorded consent."""

        def covers(token_provider: Provider, token_client: str, token_email: str) -> bool:
            return (token_provider, token_email) == (provider, email) and client_id in (None, token_client)

        stores = [self.refresh_tokens] + ([self.access_tokens] if access_tokens else [])
        for store in stores:
            for token in store.values():
                if covers(token.provider, token.client_id, token.email):
                    token.revoked = True
        for consent in [k for k in self.consents if covers(*k)]:
            del self.consents[consent]
