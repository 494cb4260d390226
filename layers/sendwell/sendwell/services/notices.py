"""Notices people receive, rendered from jinja2 templates: an HTML part (autoescaped) and a text part.

Each builder takes domain values and returns a ready :class:`~sendwell.ports.Email`; sending it,
once, is the caller's business. Everything shown comes from our own words (the classifier's
reason and fix) or from fields an admin entered, and every HTML value is escaped.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sendwell.models import Inbox
from sendwell.ports.platform import Email

if TYPE_CHECKING:
    import jinja2


@functools.cache
def _environment(*, html: bool) -> jinja2.Environment:
    """Built at the first notice, not at cold start (most invocations send none), and never changed:
    the loader and options are fixed; rendering is pure."""
    import jinja2

    fixed: dict[str, Any] = {
        "loader": jinja2.PackageLoader("sendwell", "templates/notices"),
        "undefined": jinja2.StrictUndefined,
        "trim_blocks": True,
        "lstrip_blocks": True,
    }
    if html:
        return jinja2.Environment(
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=True), **fixed
        )
    # The plain-text part: HTML escaping would corrupt it.
    return jinja2.Environment(autoescape=False, keep_trailing_newline=True, **fixed)  # noqa: S701


PROVIDER_NAMES = {"gmail": "Google", "outlook": "Microsoft 365", "custom": "your mail server"}
UNKNOWN_REASON = "The provider refused sendwell's access to this inbox"
DATE = "%d %B %Y at %H:%M UTC"


class Role(enum.StrEnum):
    ADMIN = "admin"
    OWNER = "owner"
    INBOX = "inbox"  # the disconnected mailbox itself: its owner often reads it elsewhere too


@dataclass(frozen=True, slots=True)
class Recipient:
    role: Role
    address: str


def recipients(admin_emails: Iterable[str], inbox: Inbox) -> list[Recipient]:
    """Admins, then the owner, then the inbox: one notice per distinct address (case-insensitive).

    An owner who is also an admin is addressed as an admin, so they get the admin's wording.
    """
    seen: set[str] = set()
    out: list[Recipient] = []
    candidates = [(Role.ADMIN, a) for a in admin_emails]
    candidates += [(Role.OWNER, inbox.owner_email), (Role.INBOX, inbox.address)]
    for role, address in candidates:
        key = address.strip().lower()
        if key and key not in seen:
            seen.add(key)
            out.append(Recipient(role, key))
    return out


def creator_addresses(created_by: str, admin_emails: Iterable[str]) -> list[str]:
    """Where to tell a link's creator: their address, or the admins when an IAM principal or the
    CLI made it (an ARN has no mailbox); nobody for links that a notice made for its reader."""
    if created_by.startswith("notice:"):
        return []
    if re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", created_by):
        return [created_by.lower()]
    return [a.lower() for a in admin_emails]


def count(n: int, singular: str, plural: str | None = None) -> str:
    """ "1 message", "3 messages", "2 replies": for summaries in notices and logs."""
    return f"{n} {singular if n == 1 else plural or singular + 's'}"


def provider_name(provider: str) -> str:
    return PROVIDER_NAMES.get(provider, provider)


def disconnected(
    *,
    workspace: str,
    inbox: Inbox,
    recipient: Recipient,
    admin_emails: Sequence[str],
    reconnect_url: str,
    link_expires: datetime,
    campaigns: Sequence[str],
    reminder: int = 0,
) -> Email:
    """The disconnect notice (``reminder`` 0) or its n-th reminder, for one recipient."""
    subject = (
        f"Reminder: {inbox.address} is still disconnected"
        if reminder
        else f"Action needed: {inbox.address} was disconnected"
    )
    is_admin = recipient.role is Role.ADMIN
    return compose(
        "disconnected",
        to=[recipient.address],
        subject=subject,
        # A non-admin who replies reaches the people who can help.
        reply_to=() if is_admin else tuple(admin_emails),
        variables={
            "workspace": workspace,
            "inbox_address": inbox.address,
            "inbox_name": inbox.display_name,
            "provider_name": provider_name(inbox.provider),
            "reason": _sentence(inbox.status_reason or UNKNOWN_REASON),
            "fix": _sentence(inbox.status_fix or ""),
            "is_admin": is_admin,
            "admin_contact": ", ".join(admin_emails),
            "reconnect_url": reconnect_url,
            "expires": link_expires.strftime(DATE),
            "campaigns": list(campaigns),
            "reminder": reminder,
            "failed_at": inbox.failed_at.strftime(DATE) if inbox.failed_at else "",
        },
    )


def owner_disconnected(
    *,
    workspace: str,
    owner: str,
    inboxes: Sequence[Inbox],
    admin_emails: Sequence[str],
    reconnect_url: str,
    link_expires: datetime,
    reminder: int = 0,
) -> Email:
    """One notice to an owner for all their disconnected inboxes, with one link for all of them."""
    what = f"{count(len(inboxes), 'inbox', 'inboxes')} of yours {'are' if len(inboxes) > 1 else 'is'} disconnected"
    subject = f"Reminder: {what}" if reminder else f"Action needed: {what}"
    return compose(
        "owner_disconnected",
        to=[owner],
        subject=subject,
        reply_to=tuple(admin_emails),
        variables={
            "workspace": workspace,
            "count": len(inboxes),
            "inboxes": [
                {
                    "address": inbox.address,
                    "provider_name": provider_name(inbox.provider),
                    "reason": _sentence(inbox.status_reason or UNKNOWN_REASON),
                }
                for inbox in inboxes
            ],
            "admin_contact": ", ".join(admin_emails),
            "reconnect_url": reconnect_url,
            "expires": link_expires.strftime(DATE),
            "reminder": reminder,
        },
    )


EXPIRING_WHY = {
    "testing_grant": (
        "{workspace}'s Google app is in testing, and Google ends each sign-in it gives such an app after 7 "
        "days. This inbox's sign-in ends on {deadline}."
    ),
    "microsoft_unused": (
        "Microsoft ends a sign-in that has not been used for 90 days, and this inbox's has not been used "
        "since {since}. It ends on {deadline}."
    ),
}


def expiring(
    *,
    workspace: str,
    inbox: Inbox,
    recipient: Recipient,
    admin_emails: Sequence[str],
    kind: str,
    deadline: datetime,
    renew_url: str,
    link_expires: datetime,
) -> Email:
    """Before a sign-in runs out: renew it now and nothing stops."""
    since = deadline - timedelta(days=90)
    why = EXPIRING_WHY[kind].format(workspace=workspace, deadline=deadline.strftime(DATE), since=since.strftime(DATE))
    return compose(
        "expiring",
        to=[recipient.address],
        subject=f"{inbox.address} stops working on {deadline.strftime(DATE)} unless it is renewed",
        reply_to=() if recipient.role is Role.ADMIN else tuple(admin_emails),
        variables={
            "workspace": workspace,
            "inbox_address": inbox.address,
            "provider_name": provider_name(inbox.provider),
            "why": why,
            "renew_url": renew_url,
            "expires": link_expires.strftime(DATE),
            "is_admin": recipient.role is Role.ADMIN,
        },
    )


def secret_expiring(
    *, workspace: str, provider: str, expires: date, days_left: int, warning: int, fix: str, to: Sequence[str]
) -> Email:
    """Ops, ahead of the app's client secret running out (30, 7 and 1 days)."""
    name = provider_name(provider)
    left = count(days_left, "day")
    return compose(
        "secret_expiring",
        to=to,
        subject=f"The {name} client secret expires in {left}, on {expires:%d %B %Y}",
        variables={
            "workspace": workspace,
            "provider_name": name,
            "expires": f"{expires:%d %B %Y}",
            "days_left": left,
            "warning": warning,
            "fix": _sentence(fix),
        },
    )


def idle(*, workspace: str, inbox: Inbox, since: datetime, to: Sequence[str]) -> Email:
    """Connected, but it has neither sent nor been read successfully for days."""
    return compose(
        "idle",
        to=to,
        subject=f"{inbox.address} has been idle since {since.strftime(DATE)}",
        variables={
            "workspace": workspace,
            "inbox_address": inbox.address,
            "provider_name": provider_name(inbox.provider),
            "since": since.strftime(DATE),
        },
    )


def app_config(*, workspace: str, provider: str, code: str, reason: str, fix: str, to: Sequence[str]) -> Email:
    """The ops notice: our OAuth app is misconfigured; no inbox was disconnected."""
    name = provider_name(provider)
    return compose(
        "app_config",
        to=to,
        subject=f"Action needed: the {name} app configuration is failing",
        variables={
            "workspace": workspace,
            "provider_name": name,
            "reason": _sentence(reason),
            "fix": _sentence(fix),
            "code": code,
        },
    )


def degraded(*, workspace: str, inbox: Inbox, since: datetime, to: Sequence[str]) -> Email:
    """Every attempt has failed with temporary errors for a long time; the inbox stays connected."""
    return compose(
        "degraded",
        to=to,
        subject=f"{inbox.address} is having trouble reaching {provider_name(inbox.provider)}",
        variables={
            "workspace": workspace,
            "inbox_address": inbox.address,
            "inbox_name": inbox.display_name,
            "provider_name": provider_name(inbox.provider),
            "since": since.strftime(DATE),
        },
    )


def blocked(
    *, workspace: str, inbox: Inbox, blocks: int, sent: int, last_reason: str, paused_at: datetime, to: Sequence[str]
) -> Email:
    """sendwell paused the inbox: receiving servers refuse its mail as coming from a blocked sender."""
    return compose(
        "blocked",
        to=to,
        subject=f"Sending paused: {inbox.address} is being refused as a sender",
        variables={
            "workspace": workspace,
            "inbox_address": inbox.address,
            "inbox_name": inbox.display_name,
            "provider_name": provider_name(inbox.provider),
            "blocks": blocks,
            "sent": sent,
            "last_reason": last_reason,
            "paused_at": paused_at.strftime(DATE),
        },
    )


def compose(
    template: str,
    *,
    to: Sequence[str],
    subject: str,
    variables: Mapping[str, Any],
    reply_to: Sequence[str] = (),
) -> Email:
    subject = " ".join(subject.split())  # one line: a header never carries a CR or LF
    values = {**variables, "subject": subject}
    return Email(
        to=tuple(to),
        subject=subject,
        text=_environment(html=False).get_template(f"{template}.txt").render(values),
        html=_environment(html=True).get_template(f"{template}.html").render(values),
        reply_to=tuple(reply_to),
    )


def _sentence(text: str) -> str:
    """Classifier texts are sentences already; stored ones may not be. Templates add no stop."""
    text = text.strip()
    return text if not text or text.endswith((".", "!", "?")) else text + "."
