"""Every DynamoDB model of sendwell, in one place.

The models here are *unbound*: they know their keys, attributes and indexes but not their
table names. A handler calls :func:`bind_models` once at cold start with the names from its
settings and hands the bound classes to the services. That keeps ``os.environ`` out of this
package and lets tests bind the same models to tables created from ``template.yaml``.

Index design (each GSI write costs a write unit, so every index is sparse or KEYS_ONLY):
- ``Enrollment.due_index``: only enrollments with a step waiting to be sent carry ``due_inbox``
  (their inbox's id), so one query gives an inbox's waiting steps, oldest first.
- ``Inbox.send_index``: KEYS_ONLY; only inboxes that can send carry ``send_shard``, keyed by
  ``next_send_at``: dispatch reads the inboxes whose turn has come (``sendwell.services.schedule``),
  never the steps that wait behind them. A send does not move the key (the claim sets ``gap_until``).
- ``Enrollment.inbox_index``: KEYS_ONLY, keyed on attributes that never change, so it costs one
  index write per enrollment, ever.
- ``Inbox.poll_index``: KEYS_ONLY; only inboxes that are polled carry ``poll_shard``, keyed by a
  fixed ``poll_slot`` (a second of the poll cycle) that never moves, so a poll costs no index write.
- ``Inbox.attention_index``: only inboxes that need a reminder or a degraded notice carry it.
- ``Enrollment.thread_index``: provider thread id -> enrollment, for replies that name only the
  thread; KEYS_ONLY and written once, when the first message of a thread is sent.

There is no table of sent messages: our Message-IDs are derived from enrollment and step, so a
reply's In-Reply-To leads to its enrollment directly, and each send would otherwise cost writes.
- ``ReconnectLink.inbox_index``: links of an inbox, newest first.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, TypeVar

from pynamodb.attributes import (
    BinaryAttribute,
    BooleanAttribute,
    JSONAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, IncludeProjection, KeysOnlyProjection
from pynamodb.models import Model

M = TypeVar("M", bound=Model)

# How many partitions the sparse "send" and "poll" indexes of inboxes are spread over.
SEND_SHARDS = 8
POLL_SHARDS = 4


class InboxStatus(enum.StrEnum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    RECONNECTING = "reconnecting"
    PENDING = "pending"  # created by an admin, never signed in yet


class EnrollmentState(enum.StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    REPLIED = "replied"
    BOUNCED = "bounced"
    UNSUBSCRIBED = "unsubscribed"
    COMPLAINED = "complained"  # the recipient reported our email as spam (a feedback report)
    FINISHED = "finished"
    FAILED = "failed"
    # The last step's delivery can't be known (a custom inbox lost the connection after handing the
    # message over, or the function died in between): never resent by itself; an admin decides.
    UNCONFIRMED = "unconfirmed"
    SUPPRESSED = "suppressed"  # its address is on the suppression list: nothing more goes to it


class SuppressionReason(enum.StrEnum):
    BOUNCED = "bounced"  # the recipient is gone (a hard bounce, or soft bounces that ran out)
    UNSUBSCRIBED = "unsubscribed"
    COMPLAINED = "complained"  # reported as spam
    MANUAL = "manual"  # added by an admin


class CampaignState(enum.StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"


class LinkState(enum.StrEnum):
    ACTIVE = "active"
    USED = "used"
    REVOKED = "revoked"


class BacklogMode(enum.StrEnum):
    PACED = "paced"  # re-time pending steps within cap and window (the default)
    HOLD = "hold"  # stay paused until an admin resumes
    IMMEDIATE = "immediate"  # send as soon as dispatch allows


# ---------------------------------------------------------------------------------------------
# Index definitions


class PollIndex(GlobalSecondaryIndex["Inbox"]):
    class Meta:
        index_name = "poll-slots"
        projection = KeysOnlyProjection()

    poll_shard = UnicodeAttribute(hash_key=True)
    poll_slot = NumberAttribute(range_key=True)


class AttentionIndex(GlobalSecondaryIndex["Inbox"]):
    class Meta:
        index_name = "attention-due"
        projection = KeysOnlyProjection()

    attention_shard = UnicodeAttribute(hash_key=True)
    attention_at = NumberAttribute(range_key=True)


class SendIndex(GlobalSecondaryIndex["Inbox"]):
    class Meta:
        index_name = "send-due"
        projection = KeysOnlyProjection()

    send_shard = UnicodeAttribute(hash_key=True)
    next_send_at = NumberAttribute(range_key=True)


class DueIndex(GlobalSecondaryIndex["Enrollment"]):
    class Meta:
        index_name = "steps-due"
        projection = IncludeProjection(["campaign_id", "step_index"])

    due_inbox = UnicodeAttribute(hash_key=True)
    due_at = NumberAttribute(range_key=True)


class EnrollmentsByInboxIndex(GlobalSecondaryIndex["Enrollment"]):
    class Meta:
        index_name = "by-inbox"
        projection = KeysOnlyProjection()

    inbox_id = UnicodeAttribute(hash_key=True)
    enrollment_id = UnicodeAttribute(range_key=True)


class EnrollmentsByThreadIndex(GlobalSecondaryIndex["Enrollment"]):
    class Meta:
        index_name = "by-thread"
        projection = KeysOnlyProjection()

    thread_key = UnicodeAttribute(hash_key=True)


class LinksByInboxIndex(GlobalSecondaryIndex["ReconnectLink"]):
    class Meta:
        index_name = "by-inbox"
        projection = AllProjection()

    inbox_id = UnicodeAttribute(hash_key=True)
    created_at = UTCDateTimeAttribute(range_key=True)


# ---------------------------------------------------------------------------------------------
# Models


class SendingWindowAttribute(MapAttribute[str, Any]):
    days = UnicodeAttribute(default="0,1,2,3,4")  # Monday = 0
    start = UnicodeAttribute(default="09:00")
    end = UnicodeAttribute(default="17:00")
    tz = UnicodeAttribute(default="UTC")


def new_window(*, days: str, start: str, end: str, tz: str) -> SendingWindowAttribute:
    return SendingWindowAttribute(days=days, start=start, end=end, tz=tz)


class Inbox(Model):
    class Meta:
        table_name = "unbound"

    inbox_id = UnicodeAttribute(hash_key=True)
    provider = UnicodeAttribute()  # sendwell.failures.Provider
    address = UnicodeAttribute()
    display_name = UnicodeAttribute(default="")
    owner_email = UnicodeAttribute()
    created_at = UTCDateTimeAttribute()

    status = UnicodeAttribute(default=InboxStatus.PENDING.value)
    paused = BooleanAttribute(default=False)
    # Why sendwell paused it itself (None: an admin did); an admin's resume clears it.
    paused_reason = UnicodeAttribute(null=True)
    # A permission loss being weighed (counted against the provider's other inboxes before anyone is
    # told) or held by the mass-disconnect breaker: sends wait, polls go on, and one that succeeds
    # releases it. ``held_reason`` is "settling" or "breaker" (services.breaker).
    held_since = UTCDateTimeAttribute(null=True)
    held_reason = UnicodeAttribute(null=True)
    status_code = UnicodeAttribute(null=True)  # classifier code of the failure that disconnected it
    status_reason = UnicodeAttribute(null=True)
    status_fix = UnicodeAttribute(null=True)
    failed_at = UTCDateTimeAttribute(null=True)  # first failure of the current incident
    incident_id = UnicodeAttribute(null=True)  # one per disconnect; keys its notices (sent once each)
    reconnected_at = UTCDateTimeAttribute(null=True)
    # A reconnect the worker has still to finish (catch-up, backlog release, notices): the token
    # hash of the link used, set with the new credentials; the attention pass re-queues it if it
    # waits too long. ``reconnect_outcome`` is what its catch-up and release did, stored with the
    # move to connected, so notices sent on a retry say the same.
    reconnect_link = UnicodeAttribute(null=True)
    reconnect_outcome = JSONAttribute(null=True)

    # Who the mailbox is: Google iss+sub, Microsoft tid+oid; recorded at the first sign-in.
    identity_issuer = UnicodeAttribute(null=True)
    identity_subject = UnicodeAttribute(null=True)
    # The sign-in itself is a ``Credentials`` item of its own: a few KB of Outlook tokens here would
    # make every write of this row (each send claim, each poll) cost four or five write units.
    # ``credentials`` is where rows written before that kept them (KMS ciphertext, encryption
    # context = inbox id); the first read moves them (``sendwell.adapters.credentials``).
    credentials = BinaryAttribute(null=True, legacy_encoding=False)
    # The version of the sign-in, also on its ``Credentials`` item: a warm container caches the
    # decrypted sign-in by (inbox id, version), and an auth-failure report says which one failed.
    credentials_version = NumberAttribute(default=0)

    # Custom inboxes: where to connect. A reconnect may change the password, never these.
    smtp_host = UnicodeAttribute(null=True)
    smtp_port = NumberAttribute(null=True)
    smtp_security = UnicodeAttribute(null=True)  # starttls | tls | none
    imap_host = UnicodeAttribute(null=True)
    imap_port = NumberAttribute(null=True)
    imap_security = UnicodeAttribute(null=True)
    username = UnicodeAttribute(null=True)

    # Limits and pacing.
    daily_cap = NumberAttribute(default=50)
    min_gap_seconds = NumberAttribute(default=120)
    jitter_seconds = NumberAttribute(default=60)
    window = SendingWindowAttribute(default=SendingWindowAttribute)
    usage_day = UnicodeAttribute(null=True)  # inbox-local ISO date of sent_today
    sent_today = NumberAttribute(default=0)
    last_sent_at = UTCDateTimeAttribute(null=True)
    rate_limited_until = UTCDateTimeAttribute(null=True)
    # Sender-side blocks (spam, policy, authentication, reputation) reported on the inbox-local day
    # ``block_day``: past a rate of that day's sends, sendwell pauses the inbox and tells the admins.
    block_day = UnicodeAttribute(null=True)
    blocks_today = NumberAttribute(default=0)
    # The inbox's send claim: FIFO delivers one message per inbox at a time, and this conditional
    # claim makes a duplicate delivery lose instead of sending twice. It also enforces the gap/cap.
    send_claim = UnicodeAttribute(null=True)  # "<enrollment id>:<step>"
    send_lease_until = NumberAttribute(null=True)
    # Epoch seconds at which dispatch looks at the inbox next (sendwell.services.schedule); on the
    # send index while ``send_shard`` is set. The send claim leaves it alone: a send moves no key.
    next_send_at = NumberAttribute(null=True)
    # Epoch seconds before which the inbox sends nothing: the end of the gap after its last send.
    gap_until = NumberAttribute(null=True)
    send_shard = UnicodeAttribute(null=True)
    send_index = SendIndex()
    backlog_mode = UnicodeAttribute(default=BacklogMode.PACED.value)

    # Polling (sparse index: only inboxes that should be polled carry poll_shard). Each is polled
    # once a cycle at its own second of it, ``poll_slot`` (sendwell.services.polling).
    poll_shard = UnicodeAttribute(null=True)
    poll_slot = NumberAttribute(null=True)
    poll_cursor = UnicodeAttribute(null=True)
    # The last successful poll, written at least every POLL_HEARTBEAT (an idle poll writes nothing
    # in between); ``poll_failed_at`` is set by a failed poll until one succeeds.
    last_polled_at = UTCDateTimeAttribute(null=True)
    poll_failed_at = UTCDateTimeAttribute(null=True)
    poll_index = PollIndex()

    # Reminders and degraded notices (sparse index).
    attention_shard = UnicodeAttribute(null=True)
    attention_at = NumberAttribute(null=True)
    reminders_sent = NumberAttribute(default=0)
    transient_since = UTCDateTimeAttribute(null=True)
    degraded_notified = BooleanAttribute(default=False)
    attention_index = AttentionIndex()


class StepAttribute(MapAttribute[str, Any]):
    subject = UnicodeAttribute()
    text = UnicodeAttribute()
    html = UnicodeAttribute(null=True)
    delay_seconds = NumberAttribute(default=0)
    new_thread = BooleanAttribute(default=False)


def new_step(*, subject: str, text: str, html: str | None, delay_seconds: int, new_thread: bool) -> StepAttribute:
    return StepAttribute(subject=subject, text=text, html=html, delay_seconds=delay_seconds, new_thread=new_thread)


class Campaign(Model):
    class Meta:
        table_name = "unbound"

    campaign_id = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute()
    created_at = UTCDateTimeAttribute()
    state = UnicodeAttribute(default=CampaignState.ACTIVE.value)
    inbox_ids = ListAttribute(of=UnicodeAttribute)
    steps = ListAttribute[StepAttribute](of=StepAttribute)
    window = SendingWindowAttribute(default=SendingWindowAttribute)
    # Inboxes of this campaign that are disconnected right now: the campaign shows
    # "paused because the inbox is disconnected" while this set is not empty.
    disconnected_inbox_ids = UnicodeSetAttribute(null=True)
    stop_on_auto_reply = BooleanAttribute(default=False)
    # Follow-ups more than this late after a reconnect are skipped or held (late_policy).
    late_after_seconds = NumberAttribute(default=14 * 86400)
    late_policy = UnicodeAttribute(default="skip")  # skip | hold | send


class Enrollment(Model):
    class Meta:
        table_name = "unbound"

    enrollment_id = UnicodeAttribute(hash_key=True)
    campaign_id = UnicodeAttribute()
    inbox_id = UnicodeAttribute()
    email = UnicodeAttribute()
    fields = MapAttribute[str, Any](default=dict)  # first_name, company, custom fields
    created_at = UTCDateTimeAttribute()
    state = UnicodeAttribute(default=EnrollmentState.ACTIVE.value)
    state_reason = UnicodeAttribute(null=True)
    step_index = NumberAttribute(default=0)  # the next step to send
    # Sparse due index: the inbox id, present only while a step waits to be sent.
    due_inbox = UnicodeAttribute(null=True)
    due_at = NumberAttribute(null=True)
    # Threading of follow-ups. Our Message-IDs are derived from enrollment id and step (see
    # sendwell.ids.step_message_id), so References need no stored list.
    thread_id = UnicodeAttribute(null=True)  # provider thread id (Gmail threadId, Graph conversationId)
    thread_key = UnicodeAttribute(null=True)  # "<inbox id>#<thread id>" of the current thread (sparse index)
    provider_message_ids = ListAttribute(of=UnicodeAttribute, default=list)  # per step sent, where known
    last_sent_at = UTCDateTimeAttribute(null=True)
    # "<step>:<attempt id>" of a send attempt, written just before the provider is called and
    # removed when the attempt is known not to have sent: a later attempt of that step checks Sent
    # first. The id tells our own write, retried after a lost answer, from another attempt's.
    send_attempt = UnicodeAttribute(null=True)
    # Delivery attempt of the step at ``step_index`` (sendwell.ids.step_message_id): a soft bounce
    # or a sender-side block sends the step again, under a new Message-ID, a bounded number of times.
    step_attempt = NumberAttribute(default=0)
    sent_attempt = NumberAttribute(default=0)  # ... and of the last step sent: a report on an older one is stale
    soft_bounces = NumberAttribute(default=0)  # over the whole sequence: past a few, the address is gone
    sender_blocks = NumberAttribute(default=0)  # over the whole sequence: past a few, held for an admin
    # The bounces (their own Message-IDs) that sent a step back: a replayed poll, or a catch-up
    # reading the same mail again days later, never sends it back twice. A few at most.
    returned_by = ListAttribute(of=UnicodeAttribute, default=list)

    due_index = DueIndex()
    inbox_index = EnrollmentsByInboxIndex()
    thread_index = EnrollmentsByThreadIndex()


class ReconnectLink(Model):
    class Meta:
        table_name = "unbound"

    token_hash = UnicodeAttribute(hash_key=True)  # SHA-256 of the token; the token is never stored
    link_id = UnicodeAttribute()  # a public, non-secret id for admins (revoke, list)
    inbox_id = UnicodeAttribute()
    created_by = UnicodeAttribute()
    created_at = UTCDateTimeAttribute()
    expires_at = UTCDateTimeAttribute()
    expires_ttl = NumberAttribute()  # DynamoDB TTL: removed a while after expiry
    state = UnicodeAttribute(default=LinkState.ACTIVE.value)
    used_at = UTCDateTimeAttribute(null=True)
    used_by = UnicodeAttribute(null=True)  # the session (its hash) that used it: its retries go on
    backlog_mode = UnicodeAttribute(default=BacklogMode.PACED.value)
    expiry_notified = BooleanAttribute(default=False)
    inbox_index = LinksByInboxIndex()


class WebSession(Model):
    """Server-side state of one reconnect page visit (the browser holds only a random id)."""

    class Meta:
        table_name = "unbound"

    session_hash = UnicodeAttribute(hash_key=True)  # SHA-256 of the cookie value
    token_hash = UnicodeAttribute()  # the link this session came from
    inbox_id = UnicodeAttribute()
    created_at = UTCDateTimeAttribute()
    expires_ttl = NumberAttribute()
    csrf_token = UnicodeAttribute()
    oauth_state = UnicodeAttribute(null=True)  # one-time, cleared when the callback uses it
    oauth_flow = BinaryAttribute(null=True, legacy_encoding=False)  # KMS-encrypted PKCE verifier/flow
    finished_at = UTCDateTimeAttribute(null=True)  # the reconnect it started is done: show success again


class Activity(Model):
    """Activity log; ``log_key`` is ``inbox#<id>`` or ``campaign#<id>``, newest first by ``at_id``."""

    class Meta:
        table_name = "unbound"

    log_key = UnicodeAttribute(hash_key=True)
    at_id = UnicodeAttribute(range_key=True)  # ISO-8601 UTC time + "#" + a random suffix
    kind = UnicodeAttribute()  # inbox.disconnected, enrollment.replied, campaign.resumed, ...
    message = UnicodeAttribute()
    details = MapAttribute[str, Any](default=dict)


class Suppression(Model):
    """An address nothing is sent to again, from any campaign or inbox; keyed by the lower-cased address."""

    class Meta:
        table_name = "unbound"

    email = UnicodeAttribute(hash_key=True)
    reason = UnicodeAttribute()  # SuppressionReason
    source = UnicodeAttribute()  # poll, unsubscribe, admin, cli
    created_at = UTCDateTimeAttribute()
    note = UnicodeAttribute(null=True)
    campaign_id = UnicodeAttribute(null=True)  # where it came from, when it came from a send
    enrollment_id = UnicodeAttribute(null=True)
    inbox_id = UnicodeAttribute(null=True)


class Credentials(Model):
    """An inbox's sign-in (tokens or password), sealed: the JSON encrypted with AES-256-GCM under a
    data key from KMS, bound to the inbox id and ``version`` (sendwell.adapters.credentials).

    Its ``version`` is never behind its inbox's ``credentials_version``: it is written first (or in
    one transaction with the inbox row), so the item is the truth and the row's number a cache key.
    """

    class Meta:
        table_name = "unbound"

    inbox_id = UnicodeAttribute(hash_key=True)
    version = NumberAttribute()
    data_key = BinaryAttribute(legacy_encoding=False)  # the AES key, encrypted by KMS
    nonce = BinaryAttribute(legacy_encoding=False)
    ciphertext = BinaryAttribute(legacy_encoding=False)


ALL_MODELS: tuple[type[Model], ...] = (
    Inbox,
    Campaign,
    Enrollment,
    ReconnectLink,
    WebSession,
    Activity,
    Suppression,
    Credentials,
)


@dataclass(frozen=True, slots=True)
class TableNames:
    inboxes: str
    campaigns: str
    enrollments: str
    links: str
    sessions: str
    activity: str
    suppressions: str
    credentials: str


@dataclass(frozen=True, slots=True)
class Models:
    """The model classes bound to one deployment's tables."""

    inbox: type[Inbox]
    campaign: type[Campaign]
    enrollment: type[Enrollment]
    link: type[ReconnectLink]
    session: type[WebSession]
    activity: type[Activity]
    suppression: type[Suppression]
    credentials: type[Credentials]


def _bound(model: type[M], table_name: str, region: str, host: str | None) -> type[M]:
    meta = type("Meta", (), {"table_name": table_name, "region": region, "host": host})
    bound: type[M] = type(model.__name__, (model,), {"Meta": meta, "__module__": model.__module__})
    return bound


def bind_models(names: TableNames, *, region: str, host: str | None = None) -> Models:
    """Subclass every model with its deployed table name (called once per cold start)."""
    return Models(
        inbox=_bound(Inbox, names.inboxes, region, host),
        campaign=_bound(Campaign, names.campaigns, region, host),
        enrollment=_bound(Enrollment, names.enrollments, region, host),
        link=_bound(ReconnectLink, names.links, region, host),
        session=_bound(WebSession, names.sessions, region, host),
        activity=_bound(Activity, names.activity, region, host),
        suppression=_bound(Suppression, names.suppressions, region, host),
        credentials=_bound(Credentials, names.credentials, region, host),
    )
