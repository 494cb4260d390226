"""Warnings before the clocks run out: what will break on a known date is said before it breaks.

* The app's own client secrets expire on a date the operator sets (``SENDWELL_*_CLIENT_SECRET_EXPIRES``):
  the admins are told 30, 7 and 1 days ahead, once each.
* A Google consent screen in Testing ends each grant 7 days after it was given: the inbox's owner and
  the admins are told two days ahead, with a link that renews the sign-in.
* Microsoft ends a refresh token after 90 days unused: an Outlook inbox unused for 80 days is
  renewed-or-lost, so its owner and the admins are told, with a link.
* An inbox that has neither sent nor polled successfully for days is stuck somewhere: the admins are told.

The reminders function calls ``watch`` every run; the inbox scan happens once a day. Every notice
goes through ``Once``, keyed by what it is about, so no notice repeats.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import partial

from sendwell.failures import Provider
from sendwell.models import Inbox, InboxStatus
from sendwell.services import links, notices
from sendwell.services.auth_failures import IncidentContext, mail_with_link

SECRET_WARNINGS = (30, 7, 1)  # days ahead
TESTING_GRANT_LIFETIME = timedelta(days=7)
TESTING_WARNING = timedelta(days=2)
MICROSOFT_UNUSED_LIMIT = timedelta(days=90)
MICROSOFT_UNUSED_WARNING = timedelta(days=80)


@dataclass(frozen=True, slots=True)
class Clocks:
    secret_expiry: Mapping[str, date] = field(default_factory=dict)  # by provider value
    google_testing: bool = False
    idle_after: timedelta = timedelta(days=3)


@dataclass(frozen=True, slots=True)
class Warning:
    inbox: Inbox
    kind: str  # testing_grant | microsoft_unused | idle
    deadline: datetime | None  # when it breaks; None for an idle inbox
    key: str  # what the notice is about, once


def watch(ctx: IncidentContext, clocks: Clocks, *, now: datetime) -> dict[str, int]:
    sent = {"secret_expiry": 0, "testing_grant": 0, "microsoft_unused": 0, "idle": 0}
    for provider, expiry in clocks.secret_expiry.items():
        sent["secret_expiry"] += _warn_secret(ctx, provider, expiry, now)
    # The scan of every inbox happens once a day; the notices it finds are once each anyway.
    ctx.once.run(f"clocks:scan:{now:%Y-%m-%d}", lambda: _scan(ctx, clocks, now, sent))
    return sent


def warnings_for(inbox: Inbox, clocks: Clocks, *, now: datetime) -> list[Warning]:
    """What is about to run out for one connected inbox (pure: for the scan and for tests)."""
    if inbox.status != InboxStatus.CONNECTED:
        return []
    found: list[Warning] = []
    granted = inbox.reconnected_at or inbox.created_at
    if clocks.google_testing and inbox.provider == Provider.GMAIL.value:
        ends = granted + TESTING_GRANT_LIFETIME
        if ends - TESTING_WARNING <= now < ends:
            found.append(Warning(inbox, "testing_grant", ends, f"testing:{inbox.inbox_id}:{granted:%Y%m%dT%H%M%S}"))
    used = max(t for t in (inbox.last_polled_at, inbox.last_sent_at, granted) if t is not None)
    if inbox.provider == Provider.OUTLOOK.value and now - used >= MICROSOFT_UNUSED_WARNING:
        ends = used + MICROSOFT_UNUSED_LIMIT
        found.append(Warning(inbox, "microsoft_unused", ends, f"unused:{inbox.inbox_id}:{used:%Y%m%d}"))
    elif now - used >= clocks.idle_after:
        found.append(Warning(inbox, "idle", None, f"idle:{inbox.inbox_id}:{used:%Y%m%d}"))
    return found


def _warn_secret(ctx: IncidentContext, provider: str, expiry: date, now: datetime) -> int:
    days_left = (expiry - now.date()).days
    due = [days for days in SECRET_WARNINGS if days_left <= days]
    if not due or days_left < 0 or not ctx.admin_emails:
        return 0
    ahead = min(due)  # deployed 5 days before: the 7-day warning, not the 30-day one too
    email = notices.secret_expiring(
        workspace=ctx.workspace_name,
        provider=provider,
        expires=expiry,
        days_left=days_left,
        warning=SECRET_WARNINGS.index(ahead) + 1,
        fix=_SECRET_FIX[provider] + ", then set the expiry date parameter to the new secret's",
        to=ctx.admin_emails,
    )
    key = f"clocks:secret:{provider}:{expiry.isoformat()}:{ahead}"
    return 1 if ctx.once.run(key, lambda: ctx.mailer.send(email)) else 0


_SECRET_FIX: Mapping[str, str] = {
    Provider.OUTLOOK.value: (
        "Operator: add a new client secret (Microsoft Entra admin center > App registrations > the app > "
        "Certificates & secrets), store its Value in the Microsoft client-secret parameter, and delete the "
        "old one once sendwell uses the new"
    ),
    Provider.GMAIL.value: (
        "Operator: add a new secret to the OAuth client (Google Cloud console > APIs & Services > Credentials "
        "> the client > Add secret), store it in the Google client-secret parameter, then disable the old one"
    ),
}


def _scan(ctx: IncidentContext, clocks: Clocks, now: datetime, sent: dict[str, int]) -> str:
    table = ctx.models.inbox
    for inbox in table.scan(filter_condition=table.status == InboxStatus.CONNECTED.value):
        for warning in warnings_for(inbox, clocks, now=now):
            if warning.kind == "idle":
                ctx.once.run(f"clocks:{warning.key}", partial(_send_idle, ctx, warning))
            else:
                # The owner and the admins decide; the inbox's own address needs no copy of this.
                for recipient in notices.recipients(ctx.admin_emails, inbox):
                    if recipient.role is not notices.Role.INBOX:
                        key = f"clocks:{warning.key}:{recipient.address}"
                        ctx.once.run(key, partial(_send_expiring, ctx, warning, recipient, now))
            sent[warning.kind] += 1
    return "scanned"


def _send_idle(ctx: IncidentContext, warning: Warning) -> str:
    if not ctx.admin_emails:
        return "no admins"
    inbox = warning.inbox
    return ctx.mailer.send(
        notices.idle(workspace=ctx.workspace_name, inbox=inbox, since=_last_use(inbox), to=ctx.admin_emails)
    )


def _send_expiring(ctx: IncidentContext, warning: Warning, recipient: notices.Recipient, now: datetime) -> str:
    assert warning.deadline is not None
    inbox, deadline = warning.inbox, warning.deadline
    issued = links.create_link(ctx.models, inbox_id=inbox.inbox_id, created_by=f"notice:{recipient.role}", now=now)
    return mail_with_link(
        ctx,
        issued,
        lambda url: notices.expiring(
            workspace=ctx.workspace_name,
            inbox=inbox,
            recipient=recipient,
            admin_emails=ctx.admin_emails,
            kind=warning.kind,
            deadline=deadline,
            renew_url=url,
            link_expires=issued.link.expires_at,
        ),
    )


def _last_use(inbox: Inbox) -> datetime:
    return max(t for t in (inbox.last_polled_at, inbox.last_sent_at, inbox.reconnected_at, inbox.created_at) if t)
