"""Reconnect an inbox through a link: prove it is the same mailbox, catch up, then resume paced.

The flow, as the owner lives it:

1. ``open_link``: the emailed token is exchanged for a server-side session (the browser gets a
   random cookie; only its SHA-256 is stored), so the token leaves the address bar at once.
2. ``start_authorization`` (Google, Microsoft) or ``submit_password`` (custom inboxes), each
   behind the session's CSRF token.
3. ``finish_authorization``: the one-time ``state`` is taken from the session with a conditional
   write, the code is redeemed, the granted scopes are checked and the mailbox must be the one the
   inbox recorded (issuer + subject) at the address it has. Any refusal stores nothing.
4. ``_complete``: the link is consumed (a conditional write: one winner), the inbox moves to
   ``reconnecting`` with its new credentials, the mailbox is polled for everything since the
   disconnect (dispatch skips a ``reconnecting`` inbox, so nothing is sent before that), the
   backlog is released as the link says, and only then is the inbox ``connected``.
5. ``send_notices``: the link's creator and the owner are emailed, ``inbox.reconnected`` is
   published, once each.

A crash between the steps of ``_complete`` leaves the inbox ``reconnecting``; opening a new link
for it runs the same steps again, and every one of them is safe to repeat.
"""

from __future__ import annotations

import enum
import hmac
import json
import re
import secrets
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from types import MappingProxyType
from typing import Any, Protocol

from pynamodb.exceptions import DoesNotExist, UpdateError
from pynamodb.expressions.condition import Condition

from sendwell.clock import epoch
from sendwell.failures import Provider
from sendwell.models import (
    BacklogMode,
    Campaign,
    Enrollment,
    EnrollmentState,
    Inbox,
    InboxStatus,
    LinkState,
    Models,
    ReconnectLink,
    WebSession,
)
from sendwell.pacing import InboxUsage, SendingWindow, pace_backlog, record_send
from sendwell.ports import Cipher, Email, EventPublisher, Mailer
from sendwell.services import activity, links, notices
from sendwell.services.auth_failures import Once
from sendwell.services.limits import campaign_window, jitter_for, limits_of, usage_of
from sendwell.services.lookups import campaigns_on, find_campaign
from sendwell.services.polling import PollContext, PollResult, poll_inbox, schedule_polling

SESSION_LIFETIME = timedelta(hours=1)
MAX_PASSWORD_LENGTH = 1024
_ENROLLMENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DATE = "%d %B %Y at %H:%M UTC"

# The URL path segment of each OAuth provider's callback, and the inbox provider it serves.
CALLBACK_PROVIDERS: Mapping[str, Provider] = MappingProxyType({"google": Provider.GMAIL, "microsoft": Provider.OUTLOOK})


# ---------------------------------------------------------------------------------------------
# Ports: what this service needs from the OAuth and mail adapters (sendwell.adapters.oauth).


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    url: str  # where the browser goes to sign in and consent
    state: str  # one-time, bound to the session
    flow: bytes  # everything the callback needs (PKCE verifier, nonce): kept server-side, encrypted


@dataclass(frozen=True, slots=True)
class MailboxGrant:
    """What a finished sign-in proved: who the mailbox is, what it allows, and how to use it."""

    issuer: str  # Google: the ID token's iss; Microsoft: the tenant id (tid)
    subject: str  # Google: sub; Microsoft: the object id (oid)
    address: str  # the mailbox's own address (Gmail profile, Graph /me)
    scopes: frozenset[str]
    credentials: dict[str, Any] = field(repr=False)  # stored encrypted; never logged


class Authorizer(Protocol):
    @property
    def required_scopes(self) -> Mapping[str, str]:
        """Each scope the inbox needs, with what it is for in plain words ("send email")."""

    def authorization_request(self, *, login_hint: str, redirect_uri: str) -> AuthorizationRequest: ...

    def redeem(self, flow: bytes, response: Mapping[str, str], *, redirect_uri: str) -> MailboxGrant:
        """Exchange the provider's answer; raises ConsentDeclined or AuthorizationFailed."""


class LoginPart(enum.StrEnum):
    SMTP = "SMTP"
    IMAP = "IMAP"


class LoginStage(enum.StrEnum):
    AUTHENTICATION = "authentication"  # the server answered and refused the password
    CONNECTION = "connection"  # the server could not be reached or spoke no usable TLS


@dataclass(frozen=True, slots=True)
class PartFailure:
    part: LoginPart
    stage: LoginStage
    reason: str  # the classifier's words, never the server's


class LoginCheck(Protocol):
    def check(self, inbox: Inbox, password: str) -> list[PartFailure]:
        """Log in live to the inbox's SMTP and IMAP servers; the parts that failed (none: both work)."""


# ---------------------------------------------------------------------------------------------
# Errors: each becomes its own page (the handler maps them in one place).


class ReconnectError(Exception):
    """Base of everything the person at the browser can be told."""


class SessionMissing(ReconnectError):
    """No cookie, an unknown one, or an expired session: open the link again."""


class RequestRejected(ReconnectError):
    """A CSRF token or an OAuth ``state`` that does not match (forged, replayed or stale)."""


class ConsentDeclined(ReconnectError):
    """The person said no on the provider's page. The link stays usable."""


class AuthorizationFailed(ReconnectError):
    """The provider refused the sign-in or could not be reached. The link stays usable."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code  # a short provider code for support ("invalid_grant"), never provider text


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


class LoginFailed(ReconnectError):
    def __init__(self, failures: Sequence[PartFailure]) -> None:
        super().__init__("; ".join(f"{f.part} {f.stage}" for f in failures))
        self.failures = tuple(failures)


class PasswordRejected(ReconnectError):
    """The form's password is empty, too long or holds line breaks: nothing was tried."""


class InboxChanged(ReconnectError):
    """The inbox was deleted or changed state under us; nothing was stored."""


# ---------------------------------------------------------------------------------------------
# Context and results


@dataclass(frozen=True, slots=True)
class ReconnectContext:
    models: Models
    cipher: Cipher  # KMS: inbox credentials (context = inbox id) and OAuth flows (context = session)
    poll: PollContext  # the catch-up poll
    mailer: Mailer
    events: EventPublisher
    once: Once
    authorizers: Mapping[str, Authorizer]  # by inbox provider value ("gmail", "outlook")
    login_check: LoginCheck
    workspace_name: str
    admin_emails: tuple[str, ...]
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
class Visit:
    session: WebSession
    link: ReconnectLink
    inbox: Inbox


@dataclass(frozen=True, slots=True)
class BacklogRelease:
    mode: BacklogMode
    released: int = 0  # pending steps re-timed (paced) or left due now (immediate)
    first_slot: datetime | None = None
    last_slot: datetime | None = None
    late_skipped: int = 0
    late_held: int = 0
    held: bool = False  # the inbox stays paused until an admin resumes it

    def summary(self) -> str:
        late = []
        if self.late_skipped:
            late.append(f"{_count(self.late_skipped, 'late follow-up')} skipped")
        if self.late_held:
            late.append(f"{_count(self.late_held, 'late follow-up')} held for review")
        tail = f" ({'; '.join(late)})" if late else ""
        if self.held:
            return f"Sending stays paused until an admin resumes it{tail}."
        if self.mode is BacklogMode.IMMEDIATE:
            return f"{_count(self.released, 'waiting email')} go out as fast as the inbox's limits allow{tail}."
        if not self.released or self.first_slot is None or self.last_slot is None:
            return f"No emails were waiting{tail}."
        return (
            f"{_count(self.released, 'waiting email')} spread from {self.first_slot.strftime(_DATE)} "
            f"to {self.last_slot.strftime(_DATE)}, within the inbox's daily limit and sending hours{tail}."
        )


@dataclass(frozen=True, slots=True)
class Reconnected:
    """A finished reconnect; ``send_notices`` tells the people and integrations about it."""

    inbox: Inbox
    link: ReconnectLink
    workspace_name: str
    caught_up: PollResult | None  # None when the inbox was connected already
    backlog: BacklogRelease
    at: datetime

    @property
    def catch_up_failed(self) -> bool:
        return self.caught_up is not None and self.caught_up.failure is not None

    def catch_up_summary(self) -> str:
        if self.caught_up is None:
            return "The inbox was connected already; its new sign-in replaces the old one."
        if self.caught_up.failure is not None:
            return "The mail that arrived while it was disconnected could not be checked yet."
        outcomes, fetched = self.caught_up.outcomes, self.caught_up.fetched
        if not fetched:
            return "No mail arrived while it was disconnected."
        arrived = f"{_count(fetched, 'message')} arrived while it was disconnected"
        stopped = outcomes["reply"] + outcomes["bounce"]
        if not stopped:
            return f"{arrived}; none of them needed a sequence to stop."
        return (
            f"{arrived}: {_count(outcomes['reply'], 'reply', 'replies')} and "
            f"{_count(outcomes['bounce'], 'bounce')}, whose follow-ups are stopped."
        )


def _count(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else plural or singular + 's'}"


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
    link = _usable_link(ctx.models, session.token_hash, now)
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
) -> Reconnected:
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
) -> Reconnected:
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
) -> Reconnected:
    models, link = ctx.models, visit.link
    links.consume(models, link, now=now)  # the gate: of two finishing at once, one goes on
    inbox = visit.inbox
    previous = InboxStatus(inbox.status)
    _store_credentials(ctx, inbox, credentials, identity, now)
    mode = BacklogMode(link.backlog_mode)
    if previous is InboxStatus.CONNECTED:
        caught_up: PollResult | None = None
        backlog = BacklogRelease(mode=mode)
    else:
        caught_up = poll_inbox(ctx.poll, inbox, now=now, since=inbox.failed_at)
        if caught_up.failure is None:
            backlog = release_backlog(ctx.models, inbox, mode, now=now)
        else:
            # Without the catch-up a prospect who replied could get a follow-up: hold instead.
            backlog = BacklogRelease(mode=BacklogMode.HOLD, held=True)
        _mark_connected(ctx, inbox, held=backlog.held, now=now)
        schedule_polling(models, inbox, now=now)
    campaigns = campaigns_on(models, inbox.inbox_id)
    for campaign in campaigns:
        if campaign.disconnected_inbox_ids and inbox.inbox_id in campaign.disconnected_inbox_ids:
            campaign.update(actions=[models.campaign.disconnected_inbox_ids.delete({inbox.inbox_id})])
    result = Reconnected(
        inbox=inbox, link=link, workspace_name=ctx.workspace_name, caught_up=caught_up, backlog=backlog, at=now
    )
    _log_reconnect(ctx, result, campaigns, now)
    links.revoke_all(models, inbox.inbox_id, now=now)
    visit.session.delete()  # the cookie is worth nothing from here on
    return result


def _store_credentials(
    ctx: ReconnectContext,
    inbox: Inbox,
    credentials: dict[str, Any],
    identity: tuple[str, str] | None,
    now: datetime,
) -> None:
    """New credentials, and ``reconnecting`` unless it is connected already, in one conditional write.

    Bumping ``credentials_version`` makes a slow concurrent token refresh of the old grant lose
    instead of overwriting the new one (see ``sendwell.credentials``).
    """
    table = ctx.models.inbox
    was_connected = inbox.status == InboxStatus.CONNECTED
    actions: list[Any] = [
        table.credentials.set(ctx.cipher.encrypt(_json_bytes(credentials), context={"inbox_id": inbox.inbox_id})),
        table.credentials_version.add(1),
    ]
    condition: Condition
    if was_connected:
        condition = table.status == InboxStatus.CONNECTED.value
    else:
        actions.append(table.status.set(InboxStatus.RECONNECTING.value))
        condition = table.status.is_in(
            InboxStatus.DISCONNECTED.value, InboxStatus.PENDING.value, InboxStatus.RECONNECTING.value
        )
    if identity is not None and inbox.identity_issuer is None:
        # The first sign-in records who the mailbox is, unless another first sign-in just did.
        actions += [table.identity_issuer.set(identity[0]), table.identity_subject.set(identity[1])]
        condition &= table.identity_issuer.does_not_exist()
    elif identity is not None:
        condition &= (table.identity_issuer == identity[0]) & (table.identity_subject == identity[1])
    try:
        inbox.update(actions=actions, condition=condition)
    except UpdateError as error:
        raise InboxChanged(inbox.inbox_id) from error
    activity.record(
        ctx.models,
        now=now,
        kind="inbox.credentials_renewed" if was_connected else "inbox.reconnecting",
        message=f"{inbox.address} signed in again"
        + ("; its new sign-in replaces the old one" if was_connected else "; checking mail that arrived meanwhile"),
        inbox_id=inbox.inbox_id,
    )


def _mark_connected(ctx: ReconnectContext, inbox: Inbox, *, held: bool, now: datetime) -> None:
    table = ctx.models.inbox
    actions: list[Any] = [
        table.status.set(InboxStatus.CONNECTED.value),
        table.reconnected_at.set(now),
        table.status_code.remove(),
        table.status_reason.remove(),
        table.status_fix.remove(),
        table.failed_at.remove(),
        table.incident_id.remove(),
        # Reminders stop: the attention index only holds inboxes that need one.
        table.attention_shard.remove(),
        table.attention_at.remove(),
        table.reminders_sent.set(0),
    ]
    if held:
        actions.append(table.paused.set(True))
    try:
        inbox.update(actions=actions, condition=table.status == InboxStatus.RECONNECTING.value)
    except UpdateError as error:
        raise InboxChanged(inbox.inbox_id) from error


def release_backlog(models: Models, inbox: Inbox, mode: BacklogMode, *, now: datetime) -> BacklogRelease:
    """Re-time this inbox's pending steps after a reconnect, as ``mode`` says.

    Follow-ups more than the campaign's ``late_after_seconds`` late are skipped or held first
    (``late_policy``). Then ``paced`` spreads the remaining due steps over the inbox's sending
    window, gap and daily cap (oldest first); ``immediate`` leaves them due now, so dispatch
    sends them as fast as the limits allow; ``hold`` touches nothing and keeps the inbox paused.
    """
    if mode is BacklogMode.HOLD:
        return BacklogRelease(mode=mode, held=True)
    campaigns: dict[str, Campaign | None] = {}
    late = Counter[str]()
    due_now: list[tuple[Enrollment, Campaign]] = []
    for enrollment in _pending_enrollments(models, inbox.inbox_id):
        if enrollment.campaign_id not in campaigns:
            campaigns[enrollment.campaign_id] = find_campaign(models, enrollment.campaign_id)
        campaign = campaigns[enrollment.campaign_id]
        if campaign is None:
            continue
        outcome = _handle_late(models, campaign, enrollment, now)
        if outcome:
            late[outcome] += 1
        # A skip moves on to the next follow-up, which may be due already (the update refreshed it).
        due = enrollment.due_at
        if enrollment.state == EnrollmentState.ACTIVE and due is not None and due <= epoch(now):
            due_now.append((enrollment, campaign))
    if mode is BacklogMode.IMMEDIATE:
        return BacklogRelease(mode, released=len(due_now), late_skipped=late["skipped"], late_held=late["held"])
    slots = _pace(models, inbox, due_now, now)
    return BacklogRelease(
        mode,
        released=len(slots),
        first_slot=min(slots, default=None),
        last_slot=max(slots, default=None),
        late_skipped=late["skipped"],
        late_held=late["held"],
    )


def _pace(models: Models, inbox: Inbox, due_now: list[tuple[Enrollment, Campaign]], now: datetime) -> list[datetime]:
    """Give each due step its send slot; steps of campaigns with another window queue after, in turn."""
    limits = limits_of(inbox)
    usage: InboxUsage = usage_of(inbox, now)
    groups: dict[SendingWindow, list[Enrollment]] = {}
    for enrollment, campaign in sorted(due_now, key=lambda pair: (pair[0].due_at or 0, pair[0].enrollment_id)):
        groups.setdefault(campaign_window(campaign), []).append(enrollment)
    slots: list[datetime] = []
    table = models.enrollment
    for window, group in groups.items():
        jitters = [jitter_for(f"{e.enrollment_id}:{e.step_index}") for e in group]
        group_slots = pace_backlog(now, len(group), window=window, limits=limits, usage=usage, jitters=jitters)
        for enrollment, slot in zip(group, group_slots, strict=True):
            try:
                enrollment.update(
                    actions=[table.due_at.set(epoch(slot))],
                    condition=(table.step_index == enrollment.step_index)
                    & (table.due_at == enrollment.due_at)
                    & (table.state == EnrollmentState.ACTIVE.value),
                )
            except UpdateError:
                continue  # it was sent, stopped or re-timed meanwhile: its own state wins
            slots.append(slot)
            usage = record_send(usage, slot, limits.tz)
    return slots


def _handle_late(models: Models, campaign: Campaign, enrollment: Enrollment, now: datetime) -> str | None:
    """Skip or hold a follow-up that is too late; "skipped", "held", or None when it is on time."""
    steps = campaign.steps
    index, due = int(enrollment.step_index), enrollment.due_at
    late_after = int(campaign.late_after_seconds)
    if index == 0 or due is None or epoch(now) - due <= late_after or campaign.late_policy == "send":
        return None  # a first email is never "late", and "send" means late ones go out paced too
    table = models.enrollment
    unchanged = (
        (table.step_index == enrollment.step_index)
        & (table.due_at == enrollment.due_at)
        & (table.state == EnrollmentState.ACTIVE.value)
    )
    days = (epoch(now) - due) // 86400
    if campaign.late_policy == "hold":
        actions: list[Any] = [
            table.state.set(EnrollmentState.PAUSED.value),
            table.state_reason.set(f"follow-up {index + 1} was {days} days late after the inbox reconnected"),
            table.due_shard.remove(),
            table.due_at.remove(),
        ]
        outcome = "held"
    else:
        # Skip every follow-up that is too late by now; the first one on time stays (then paced).
        while index < len(steps) and epoch(now) - due > late_after:
            index += 1
            if index < len(steps):
                due += int(steps[index].delay_seconds)
        if index < len(steps):
            actions = [table.step_index.set(index), table.due_at.set(due)]
        else:
            actions = [
                table.step_index.set(index),
                table.state.set(EnrollmentState.FINISHED.value),
                table.state_reason.set(f"follow-ups skipped: {days} days late after the inbox reconnected"),
                table.due_shard.remove(),
                table.due_at.remove(),
            ]
        outcome = "skipped"
    try:
        enrollment.update(actions=actions, condition=unchanged)
    except UpdateError:
        return None
    return outcome


def _pending_enrollments(models: Models, inbox_id: str) -> list[Enrollment]:
    """Active enrollments of the inbox with a step waiting (the by-inbox index is keys only)."""
    keys = [key.enrollment_id for key in models.enrollment.inbox_index.query(inbox_id)]
    found = models.enrollment.batch_get(keys, consistent_read=True)
    return [e for e in found if e.state == EnrollmentState.ACTIVE and e.due_at is not None]


def _log_reconnect(ctx: ReconnectContext, result: Reconnected, campaigns: Sequence[Campaign], now: datetime) -> None:
    inbox, link = result.inbox, result.link
    details = {
        "link_id": link.link_id,
        "created_by": link.created_by,
        "backlog_mode": result.backlog.mode.value,
        "released": result.backlog.released,
        "late_skipped": result.backlog.late_skipped,
        "late_held": result.backlog.late_held,
    }
    if result.caught_up is not None:
        details |= {"caught_up": result.caught_up.fetched, "catch_up_failure": result.caught_up.failure or ""}
    activity.record(
        ctx.models,
        now=now,
        kind="inbox.reconnected",
        message=f"{inbox.address} reconnected. {result.catch_up_summary()} {result.backlog.summary()}",
        inbox_id=inbox.inbox_id,
        details=details,
        dedup=f"{link.link_id}.reconnected",
    )
    if result.caught_up is not None:
        activity.record(
            ctx.models,
            now=now,
            kind="campaign.resumed" if not result.backlog.held else "campaign.held",
            message=f"{inbox.address} is connected again. {result.backlog.summary()}",
            campaign_ids=[c.campaign_id for c in campaigns],
            details=details,
            dedup=f"{link.link_id}.resumed",
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
    try:
        session.update(
            actions=[table.oauth_state.remove(), table.oauth_flow.remove()],
            condition=table.oauth_state == expected,
        )
    except UpdateError as error:
        raise RequestRejected("state already used") from error  # a replayed callback lost the race
    return ctx.cipher.decrypt(bytes(ciphertext), context=_flow_context(session))


def _check_csrf(session: WebSession, token: str) -> None:
    if not hmac.compare_digest(session.csrf_token.encode(), token.encode()):
        raise RequestRejected("csrf token does not match")


def _usable_link(models: Models, token_hash: str, now: datetime) -> ReconnectLink:
    try:
        link = models.link.get(token_hash, consistent_read=True)
    except DoesNotExist:
        raise links.LinkInvalid("unknown") from None
    if link.state == LinkState.REVOKED:
        raise links.LinkInvalid("revoked")
    if link.state == LinkState.USED:
        raise links.LinkUsed(link.link_id)
    if link.expires_at <= now:
        raise links.LinkExpired(link.link_id)
    return link


def _flow_context(session: WebSession) -> dict[str, str]:
    return {"session": session.session_hash}


def _json_bytes(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True).encode()


# ---------------------------------------------------------------------------------------------
# Notices


class NoticeContext(Protocol):
    """What sending a notice needs; ReconnectContext and auth_failures.IncidentContext both fit."""

    @property
    def models(self) -> Models: ...

    @property
    def mailer(self) -> Mailer: ...

    @property
    def once(self) -> Once: ...

    @property
    def workspace_name(self) -> str: ...

    @property
    def admin_emails(self) -> tuple[str, ...]: ...


def creator_addresses(created_by: str, admin_emails: Iterable[str]) -> list[str]:
    """Where to tell a link's creator: their address, or the admins when an IAM principal or the
    CLI made it (an ARN has no mailbox); nobody for links that a notice made for its reader."""
    if created_by.startswith("notice:"):
        return []
    if re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", created_by):
        return [created_by.lower()]
    return [a.lower() for a in admin_emails]


def _compose(
    template: str, *, to: Sequence[str], subject: str, variables: Mapping[str, Any], reply_to: Sequence[str] = ()
) -> Email:
    # The notices module's templates, layout and escaping; its composer isn't public (yet).
    return notices._compose(template, to=to, subject=subject, variables=variables, reply_to=reply_to)


def send_notices(ctx: ReconnectContext, result: Reconnected) -> None:
    """Email the link's creator and the owner, and publish ``inbox.reconnected``: once each.

    Separate from the reconnect itself, which is complete by then: a mail service failing here
    must not turn the owner's success into an error page (the caller logs and counts it).
    """
    inbox, link, now = result.inbox, result.link, result.at
    variables = {
        "workspace": ctx.workspace_name,
        "inbox_address": inbox.address,
        "inbox_name": inbox.display_name,
        "provider_name": notices.provider_name(inbox.provider),
        "reconnected_at": now.strftime(_DATE),
        "catch_up": result.catch_up_summary(),
        "backlog": result.backlog.summary(),
        "held": result.backlog.held,
    }
    creators = creator_addresses(link.created_by, ctx.admin_emails)
    for address in creators:
        email = _compose("reconnected", to=[address], subject=f"{inbox.address} is reconnected", variables=variables)
        ctx.once.run(f"reconnect:{link.link_id}:email:{address}", partial(ctx.mailer.send, email))
    owner = inbox.owner_email.strip().lower()
    if owner and owner not in creators:
        email = _compose(
            "reconnect_confirmed",
            to=[owner],
            subject=f"Thanks: {inbox.address} is connected again",
            variables=variables,
            reply_to=ctx.admin_emails,
        )
        ctx.once.run(f"reconnect:{link.link_id}:email:{owner}", partial(ctx.mailer.send, email))
    ctx.once.run(f"reconnect:{link.link_id}:sns", lambda: _publish_reconnected(ctx, result))


def _publish_reconnected(ctx: ReconnectContext, result: Reconnected) -> str:
    inbox, link, now = result.inbox, result.link, result.at
    ctx.events.publish(
        "inbox.reconnected",
        {
            "inbox_id": inbox.inbox_id,
            "address": inbox.address,
            "provider": inbox.provider,
            "reconnected_at": now.isoformat(),
            "link_id": link.link_id,
            "caught_up": result.caught_up.fetched if result.caught_up else 0,
            "catch_up_failed": result.catch_up_failed,
            "backlog_mode": result.backlog.mode.value,
            "released": result.backlog.released,
            "held": result.backlog.held,
        },
        dedup_key=f"{link.link_id}:reconnected",
    )
    return "published"


def notify_expired_links(ctx: NoticeContext, *, now: datetime) -> int:
    """Tell each creator of a link that expired unused, once; returns how many links were handled.

    Meant for the scheduled reminders function. Links are few (one per incident and reminder), so a
    filtered scan is cheaper than an index every link write would pay for.
    """
    table = ctx.models.link
    handled = 0
    not_notified = table.expiry_notified == False  # noqa: E712 - a DynamoDB condition, not a comparison
    expired = table.scan((table.state == LinkState.ACTIVE.value) & (table.expires_at <= now) & not_notified)
    for link in expired:
        try:
            link.update(actions=[table.expiry_notified.set(True)], condition=not_notified)
        except UpdateError:
            continue  # another run has it
        handled += 1
        try:
            inbox = ctx.models.inbox.get(link.inbox_id)
        except DoesNotExist:
            continue
        if inbox.status == InboxStatus.CONNECTED:
            continue  # reconnected another way: nothing to do
        for address in creator_addresses(link.created_by, ctx.admin_emails):
            email = _compose(
                "link_expired",
                to=[address],
                subject=f"The reconnect link for {inbox.address} expired unused",
                variables={
                    "workspace": ctx.workspace_name,
                    "inbox_address": inbox.address,
                    "provider_name": notices.provider_name(inbox.provider),
                    "created_at": link.created_at.strftime(_DATE),
                    "expired_at": link.expires_at.strftime(_DATE),
                    "status": inbox.status,
                },
            )
            ctx.once.run(f"link_expired:{link.link_id}:{address}", partial(ctx.mailer.send, email))
    return handled


# ---------------------------------------------------------------------------------------------
# Unsubscribe (RFC 8058 one-click): the token is the enrollment id our messages carry.


def unsubscribe(models: Models, enrollment_id: str, *, now: datetime) -> bool:
    """Stop the enrollment for good; False when there is none (the page says the same either way)."""
    if not _ENROLLMENT_ID.fullmatch(enrollment_id):
        return False
    table = models.enrollment
    try:
        enrollment = models.enrollment.get(enrollment_id, consistent_read=True)
    except DoesNotExist:
        return False
    try:
        enrollment.update(
            actions=[
                table.state.set(EnrollmentState.UNSUBSCRIBED.value),
                table.state_reason.set("unsubscribed from the link in an email"),
                table.due_shard.remove(),
                table.due_at.remove(),
            ],
            condition=table.state.is_in(EnrollmentState.ACTIVE.value, EnrollmentState.PAUSED.value),
        )
    except UpdateError:
        return True  # already stopped (replied, finished or unsubscribed): nothing more to send
    activity.record(
        models,
        now=now,
        kind="enrollment.unsubscribed",
        message=f"{enrollment.email} unsubscribed",
        campaign_ids=[enrollment.campaign_id],
        details={"enrollment_id": enrollment_id},
        dedup=f"{enrollment_id}.unsubscribed",
    )
    return True
