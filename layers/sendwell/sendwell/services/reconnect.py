"""Reconnect an inbox through a link: prove it is the same mailbox, store its new sign-in.

The flow, as the owner lives it:

1. ``open_link``: the emailed token is exchanged for a server-side session (the browser gets a
   random cookie; only its SHA-256 is stored), so the token leaves the address bar at once.
2. ``start_authorization`` (Google, Microsoft) or ``submit_password`` (custom inboxes), each
   behind the session's CSRF token.
3. ``finish_authorization``: the one-time ``state`` is taken from the session with a conditional
   write, the code is redeemed, the granted scopes are checked and the mailbox must be the one the
   inbox recorded (issuer + subject) at the address it has. Any refusal stores nothing.
4. ``_complete``: the link is consumed (a conditional write: one winner), and one transaction
   stores the new credentials (their own item) and, under the inbox's conditions, moves the inbox
   to ``reconnecting`` (dispatch skips it) and records the link as the reconnect still to finish.
   The page answers at once with what happens next; the catch-up poll, the paced backlog release
   and the notices run in the reconnect worker (``services.catch_up``), outside the HTTP request.

A fault between the steps of ``_complete`` leaves the link used by this session: the owner's
retry (a reload, a second submit) runs the same steps again, and every one of them is safe to
repeat. A reconnect whose task is lost is queued again by the reminders function.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from pynamodb.exceptions import DoesNotExist
from pynamodb.expressions.condition import Condition

from sendwell import writes
from sendwell.clock import epoch
from sendwell.failures import Provider
from sendwell.models import BacklogMode, Inbox, InboxStatus, LinkState, Models, ReconnectLink, WebSession
from sendwell.ports.messages import ReconnectTask
from sendwell.ports.platform import Cipher, CredentialVault
from sendwell.ports.signin import Authorizer, LoginCheck, LoginFailed, MailboxGrant, ReconnectError
from sendwell.services import activity, links
from sendwell.services.backlog import BacklogRelease
from sendwell.services.inbox_health import reconnect_watch
from sendwell.services.reconnected import ReconnectOutcome

SESSION_LIFETIME = timedelta(hours=1)
MAX_PASSWORD_LENGTH = 1024

# The URL path segment of each OAuth provider's callback, and the inbox provider it serves.
CALLBACK_PROVIDERS: Mapping[str, Provider] = MappingProxyType({"google": Provider.GMAIL, "microsoft": Provider.OUTLOOK})


# ---------------------------------------------------------------------------------------------
# Errors: each becomes its own page (the handler maps them in one place). What an adapter can
# raise (declined consent, a refused sign-in, a failed login) is in ``sendwell.ports.signin``.


class SessionMissing(ReconnectError):
    """No cookie, an unknown one, or an expired session: open the link again."""


class RequestRejected(ReconnectError):
    """A CSRF token or an OAuth ``state`` that does not match (forged, replayed or stale)."""


class ScopesMissing(ReconnectError):
    """Granular consent dropped a scope the inbox needs (Google lets people untick "send")."""

    def __init__(self, provider: str, purposes: Sequence[str]) -> None:
        super().__init__(", ".join(purposes))
        self.provider = provider
        self.purposes = tuple(purposes)


class MailboxMismatch(ReconnectError):
    def __init__(self, *, signed_in: str, expected: str, same_address: bool) -> None:
        super().__init__("a different mailbox signed in")
        self.signed_in = signed_in
        self.expected = expected
        self.same_address = same_address  # the address matches, the account (issuer + subject) doesn't


class PasswordRejected(ReconnectError):
    """The form's password is empty, too long or holds line breaks: nothing was tried."""


class AlreadyReconnected(ReconnectError):
    """The session's reconnect is done already (a double submit, a reload): show its success."""

    def __init__(self, inbox_id: str) -> None:
        super().__init__(inbox_id)
        self.inbox_id = inbox_id


def finished_reconnect(ctx: ReconnectContext, done: AlreadyReconnected) -> Inbox | None:
    """The inbox a finished session reconnected, as it is now (None if it was deleted since)."""
    try:
        return ctx.models.inbox.get(done.inbox_id, consistent_read=True)
    except DoesNotExist:
        return None


class InboxChanged(ReconnectError):
    """The inbox was deleted or changed state under us; nothing was stored."""


# ---------------------------------------------------------------------------------------------
# Context and results


@dataclass(frozen=True, slots=True)
class ReconnectContext:
    models: Models
    cipher: Cipher  # KMS: the OAuth flow a page visit keeps (context = session)
    credentials: CredentialVault  # where a finished sign-in is stored
    authorizers: Mapping[str, Authorizer]  # by inbox provider value ("gmail", "outlook")
    login_check: LoginCheck
    public_base_url: str
    session_lifetime: timedelta = SESSION_LIFETIME

    def callback_url(self, provider: Provider) -> str:
        slug = next(slug for slug, served in CALLBACK_PROVIDERS.items() if served is provider)
        return f"{self.public_base_url}/oauth/callback/{slug}"


@dataclass(frozen=True, slots=True)
class OpenedSession:
    cookie: str  # the only copy of the session secret: it goes into the Set-Cookie header
    max_age: int


@dataclass(frozen=True, slots=True)
class ReconnectStarted:
    """A reconnect whose new sign-in is stored; the reconnect worker finishes it (``task``)."""

    inbox: Inbox
    link: ReconnectLink
    renewed: bool  # the inbox was connected already: its new sign-in replaces the old one

    @property
    def task(self) -> ReconnectTask:
        return ReconnectTask(inbox_id=self.inbox.inbox_id, link_hash=self.link.token_hash)

    def next_steps(self) -> tuple[str, ...]:
        """What happens next, in the owner's words, for the success page."""
        if self.renewed:
            return ("Its new sign-in replaces the old one; sending goes on as before.",)
        mode = BacklogMode(self.link.backlog_mode)
        release = {
            BacklogMode.PACED: "its waiting emails go out spread over its sending hours, within its daily limit",
            BacklogMode.IMMEDIATE: "its waiting emails go out as fast as its limits allow",
            BacklogMode.HOLD: "sending stays paused until an admin resumes it",
        }[mode]
        return (
            "First, the mail that arrived while it was disconnected is checked, so nobody who replied "
            "gets a follow-up. This takes a minute or two.",
            f"Then {release}.",
        )


@dataclass(frozen=True, slots=True)
class Visit:
    session: WebSession
    link: ReconnectLink
    inbox: Inbox


# ---------------------------------------------------------------------------------------------
# The flow


def open_link(ctx: ReconnectContext, token: str, *, now: datetime) -> tuple[OpenedSession, ReconnectLink]:
    """Exchange a link token for a new session; raises the LinkError that says why it can't be used."""
    link = links.verify(ctx.models, token, now=now)
    cookie = secrets.token_urlsafe(32)
    ctx.models.session(
        session_hash=links.token_hash(cookie),
        token_hash=link.token_hash,
        inbox_id=link.inbox_id,
        created_at=now,
        expires_ttl=epoch(now + ctx.session_lifetime),
        csrf_token=secrets.token_urlsafe(32),
    ).save()
    return OpenedSession(cookie=cookie, max_age=int(ctx.session_lifetime.total_seconds())), link


def load_visit(ctx: ReconnectContext, cookie: str | None, *, now: datetime) -> Visit:
    """The session, its link (still usable) and its inbox; raises SessionMissing or a LinkError."""
    if not cookie or len(cookie) > 100:
        raise SessionMissing("no session cookie")
    try:
        session = ctx.models.session.get(links.token_hash(cookie), consistent_read=True)
    except DoesNotExist:
        raise SessionMissing("unknown session") from None
    if session.expires_ttl <= epoch(now):  # TTL deletes lazily: an expired row may still be there
        raise SessionMissing("session expired")
    if session.finished_at is not None:
        raise AlreadyReconnected(session.inbox_id)  # a double submit, a reload: it is done
    link = _usable_link(ctx.models, session.token_hash, now, session=session)
    try:
        inbox = ctx.models.inbox.get(session.inbox_id, consistent_read=True)
    except DoesNotExist:
        raise links.LinkInvalid("inbox deleted") from None
    return Visit(session=session, link=link, inbox=inbox)


def start_authorization(ctx: ReconnectContext, cookie: str | None, csrf_token: str, *, now: datetime) -> str:
    """Bind a fresh one-time ``state`` (and PKCE verifier) to the session; returns the sign-in URL."""
    visit = load_visit(ctx, cookie, now=now)
    _check_csrf(visit.session, csrf_token)
    authorizer = ctx.authorizers.get(visit.inbox.provider)
    if authorizer is None:
        raise RequestRejected(f"no sign-in for {visit.inbox.provider} inboxes")
    provider = Provider(visit.inbox.provider)
    request = authorizer.authorization_request(login_hint=visit.inbox.address, redirect_uri=ctx.callback_url(provider))
    table = ctx.models.session
    visit.session.update(
        actions=[
            table.oauth_state.set(request.state),
            table.oauth_flow.set(ctx.cipher.encrypt(request.flow, context=_flow_context(visit.session))),
        ]
    )
    return request.url


def finish_authorization(
    ctx: ReconnectContext, cookie: str | None, provider_slug: str, response: Mapping[str, str], *, now: datetime
) -> ReconnectStarted:
    visit = load_visit(ctx, cookie, now=now)
    session, inbox = visit.session, visit.inbox
    provider = CALLBACK_PROVIDERS.get(provider_slug)
    authorizer = ctx.authorizers.get(inbox.provider)
    if provider is None or provider.value != inbox.provider or authorizer is None:
        raise RequestRejected("callback of another provider")
    flow = _take_flow(ctx, session, response.get("state", ""))
    grant = authorizer.redeem(flow, response, redirect_uri=ctx.callback_url(provider))
    missing = [purpose for scope, purpose in authorizer.required_scopes.items() if scope not in grant.scopes]
    if missing:
        raise ScopesMissing(inbox.provider, missing)
    _prove_same_mailbox(ctx, inbox, grant, now)
    return _complete(ctx, visit, grant.credentials, identity=(grant.issuer, grant.subject), now=now)


def submit_password(
    ctx: ReconnectContext, cookie: str | None, csrf_token: str, password: str, *, now: datetime
) -> ReconnectStarted:
    visit = load_visit(ctx, cookie, now=now)
    _check_csrf(visit.session, csrf_token)
    if visit.inbox.provider != Provider.CUSTOM:
        raise RequestRejected("a password form for an OAuth inbox")
    if not password or len(password) > MAX_PASSWORD_LENGTH or any(ch in password for ch in "\r\n\0"):
        raise PasswordRejected(f"Enter the password: one line, at most {MAX_PASSWORD_LENGTH} characters.")
    failures = ctx.login_check.check(visit.inbox, password)
    if failures:
        activity.record(
            ctx.models,
            now=now,
            kind="inbox.reconnect_failed",
            message=f"A new password for {visit.inbox.address} was refused: "
            + ", ".join(f"{f.part} {f.stage}" for f in failures),
            inbox_id=visit.inbox.inbox_id,
            details={"link_id": visit.link.link_id},
        )
        raise LoginFailed(failures)
    return _complete(ctx, visit, {"password": password}, identity=None, now=now)


# ---------------------------------------------------------------------------------------------
# Completing a reconnect


def _complete(
    ctx: ReconnectContext,
    visit: Visit,
    credentials: dict[str, Any],
    *,
    identity: tuple[str, str] | None,
    now: datetime,
) -> ReconnectStarted:
    models, link, inbox = ctx.models, visit.link, visit.inbox
    # The gate: of two people finishing with one link at once, one goes on; this session's own
    # second try (a double submit, a retry after a fault) goes on too.
    links.consume(models, link, now=now, by=visit.session.session_hash)
    renewed = inbox.status == InboxStatus.CONNECTED
    _store_credentials(ctx, inbox, link, credentials, identity, now)
    links.revoke_all(models, inbox.inbox_id, now=now)
    # The session can start nothing more; a second submit or a reload shows the success again.
    writes.update(visit.session, actions=[ctx.models.session.finished_at.set(now)], condition=None)
    return ReconnectStarted(inbox=inbox, link=link, renewed=renewed)


def _store_credentials(
    ctx: ReconnectContext,
    inbox: Inbox,
    link: ReconnectLink,
    credentials: dict[str, Any],
    identity: tuple[str, str] | None,
    now: datetime,
) -> None:
    """New credentials, ``reconnecting`` unless it is connected already, and the reconnect still to
    finish (``reconnect_link``, watched by the reminders function), in one transaction: the
    credentials item and the inbox row under its conditions (``ctx.credentials.replace``).

    The new ``credentials_version`` makes a slow concurrent token refresh of the old grant lose
    instead of overwriting the new one (see ``sendwell.adapters.credentials``), and a late
    auth-failure report about the old grant say nothing about the new one.
    """
    table = ctx.models.inbox
    was_connected = inbox.status == InboxStatus.CONNECTED
    actions: list[Any] = [
        table.reconnected_at.set(now),
        table.reconnect_link.set(link.token_hash),
        *reconnect_watch(table, now=now),
    ]
    condition: Condition
    if was_connected:
        # Nothing to catch up or release: the worker only tells people.
        renewed = ReconnectOutcome(caught_up=None, backlog=BacklogRelease(mode=BacklogMode(link.backlog_mode)))
        actions.append(table.reconnect_outcome.set(renewed.to_json()))
        condition = table.status == InboxStatus.CONNECTED.value
    else:
        actions += [table.status.set(InboxStatus.RECONNECTING.value), table.reconnect_outcome.remove()]
        condition = table.status.is_in(
            InboxStatus.DISCONNECTED.value, InboxStatus.PENDING.value, InboxStatus.RECONNECTING.value
        )
    if identity is not None:
        same = (table.identity_issuer == identity[0]) & (table.identity_subject == identity[1])
        if inbox.identity_issuer is None:
            # The first sign-in records who the mailbox is, unless another first sign-in just did
            # (this very one may have: a retry after its answer was lost finds its own identity).
            actions += [table.identity_issuer.set(identity[0]), table.identity_subject.set(identity[1])]
            condition &= table.identity_issuer.does_not_exist() | same
        else:
            condition &= same
    if not ctx.credentials.replace(inbox, credentials, actions=actions, condition=condition):
        raise InboxChanged(inbox.inbox_id)
    activity.record(
        ctx.models,
        now=now,
        kind="inbox.credentials_renewed" if was_connected else "inbox.reconnecting",
        message=f"{inbox.address} signed in again"
        + ("; its new sign-in replaces the old one" if was_connected else "; checking mail that arrived meanwhile"),
        inbox_id=inbox.inbox_id,
    )


# ---------------------------------------------------------------------------------------------
# Identity, sessions, CSRF


def _prove_same_mailbox(ctx: ReconnectContext, inbox: Inbox, grant: MailboxGrant, now: datetime) -> None:
    same_address = grant.address.strip().lower() == inbox.address.strip().lower()
    known = inbox.identity_issuer is not None
    same_account = not known or (
        hmac.compare_digest(inbox.identity_issuer or "", grant.issuer)
        and hmac.compare_digest(inbox.identity_subject or "", grant.subject)
    )
    if same_address and same_account:
        return
    activity.record(
        ctx.models,
        now=now,
        kind="inbox.reconnect_mismatch",
        message=f"Someone signed in as {grant.address or 'an unknown account'} with a link for {inbox.address}: "
        "refused, nothing was changed",
        inbox_id=inbox.inbox_id,
        details={"signed_in": grant.address, "same_address": same_address},
    )
    raise MailboxMismatch(
        signed_in=grant.address or "another account", expected=inbox.address, same_address=same_address
    )


def _take_flow(ctx: ReconnectContext, session: WebSession, state: str) -> bytes:
    """The session's pending OAuth flow, if ``state`` is its one-time state; cleared either way."""
    expected = session.oauth_state
    ciphertext = session.oauth_flow
    if not expected or ciphertext is None or not hmac.compare_digest(expected.encode(), state.encode()):
        raise RequestRejected("state does not match")
    table = ctx.models.session
    if not writes.update(
        session,
        actions=[table.oauth_state.remove(), table.oauth_flow.remove()],
        condition=table.oauth_state == expected,
    ):
        raise RequestRejected("state already used")  # a replayed callback lost the race
    return ctx.cipher.decrypt(bytes(ciphertext), context=_flow_context(session))


def _check_csrf(session: WebSession, token: str) -> None:
    if not hmac.compare_digest(session.csrf_token.encode(), token.encode()):
        raise RequestRejected("csrf token does not match")


def _usable_link(models: Models, token_hash: str, now: datetime, *, session: WebSession) -> ReconnectLink:
    try:
        link = models.link.get(token_hash, consistent_read=True)
    except DoesNotExist:
        raise links.LinkInvalid("unknown") from None
    if link.state == LinkState.REVOKED:
        raise links.LinkInvalid("revoked")
    if link.state == LinkState.USED and link.used_by != session.session_hash:
        raise links.LinkUsed(link.link_id)  # used by this session, it is finishing: let it
    if link.expires_at <= now:
        raise links.LinkExpired(link.link_id)
    return link


def _flow_context(session: WebSession) -> dict[str, str]:
    return {"session": session.session_hash}
