"""What ops see: the one list of metric names, and logs that never carry a secret.

Metric names live here and nowhere else. The handlers emit them (Powertools EMF, namespace
``Sendwell``, the only dimension the ``service`` Powertools adds), template.yaml's alarms and its
dashboard watch them, and tests/unit/test_operations.py checks that the three agree. "By class" figures
are a fixed set of names, one per class, rather than a dimension: Powertools applies a dimension to
every metric flushed with it, and a fixed name is what an alarm and a dashboard line can point at.

Every handler calls :func:`install_redaction` on its Powertools logger at cold start, so tokens,
passwords, link tokens and authorization codes are masked in whatever reaches a log line: by the
name of the key they are logged under, and by their shape wherever they appear in text.
"""

from __future__ import annotations

import enum
import logging
import re
import traceback
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from sendwell.failures import FailureKind
from sendwell.inbound import InboundKind
from sendwell.ports.platform import Email, Mailer

NAMESPACE = "Sendwell"  # POWERTOOLS_METRICS_NAMESPACE in template.yaml
REDACTED = "[REDACTED]"


class Metric(enum.StrEnum):
    # dispatch: the scheduler every minute, the workers once per batch of inboxes
    STEPS_ENQUEUED = "StepsEnqueued"
    INBOXES_READY = "InboxesReady"  # inboxes whose turn to send had come, fanned out to the workers
    INBOXES_RESCHEDULED = "InboxesRescheduled"  # moved on to when they can next send (window, cap, due)
    DISPATCH_LAG = "DispatchLagSeconds"  # how long after its turn came the most belated inbox was decided
    # Due steps an inbox holds back when it is disconnected (they wait for the reconnect): counted
    # once, by the auth-failure handler that disconnects it.
    DISCONNECTED_BACKLOG = "DisconnectedBacklogSteps"
    FOLLOW_UPS_HELD = "FollowUpsHeldForReplies"  # due follow-ups of inboxes whose replies aren't current

    # send: one per queue message
    EMAILS_SENT = "EmailsSent"
    SENDS_RECONCILED = "SendsReconciled"  # found in Sent after a lost acknowledgement: not resent
    SENDS_SKIPPED = "SendsSkipped"  # the step was stale, or the inbox could not send
    SENDS_UNCONFIRMED = "SendsUnconfirmed"  # an earlier attempt may have delivered it: held for a person
    SENDS_DEFERRED = "SendsDeferred"  # back on the queue: the inbox's gap, lease or cap, or a transient fault
    SEND_AUTH_FAILURES = "SendAuthFailures"
    SEND_TRANSIENT_FAILURES = "SendTransientFailures"
    SEND_RECIPIENT_REJECTED_FAILURES = "SendRecipientRejectedFailures"
    SEND_BAD_MESSAGE_FAILURES = "SendBadMessageFailures"

    # poll worker: one per batch of inboxes
    INBOXES_POLLED = "InboxesPolled"
    POLL_FAILURES = "PollFailures"
    POLL_LAG = "PollLagSeconds"  # how long after its inboxes' poll slots a batch ran
    # what polling read, one metric per class (INBOUND_METRICS): only mail matched to one of our sends
    REPLIES = "RepliesReceived"
    HARD_BOUNCES = "HardBounces"  # the address is gone: suppressed
    SOFT_BOUNCES = "SoftBounces"  # the mailbox can't take mail for now: sent again later
    SENDER_BLOCKS = "SenderBlocks"  # refused because of the sending inbox: counts against it
    COMPLAINTS = "Complaints"  # reported as spam: suppressed
    AUTO_REPLIES = "AutoReplies"
    INBOXES_PAUSED_FOR_BLOCKS = "InboxesPausedForBlocks"

    # auth-failure reports, one metric per class (AUTH_FAILURE_METRICS)
    AUTH_FAILURES = "AuthFailures"
    AUTH_LOST_FAILURES = "AuthLostFailures"
    USER_ACTION_FAILURES = "UserActionFailures"
    APP_CONFIG_FAILURES = "AppConfigFailures"
    TRANSIENT_FAILURES = "TransientFailures"
    RATE_LIMITED_FAILURES = "RateLimitedFailures"
    RECIPIENT_REJECTED_FAILURES = "RecipientRejectedFailures"
    BAD_MESSAGE_FAILURES = "BadMessageFailures"
    APP_CONFIG_ERRORS = "AppConfigErrors"  # reports that raised the ops notice (alarmed)

    # the inbox lifecycle
    INBOXES_DISCONNECTED = "InboxesDisconnected"
    INBOXES_RECONNECTED = "InboxesReconnected"
    RECONNECTS_REQUEUED = "ReconnectsRequeued"  # unfinished after the grace: the task is queued again
    DEGRADED_NOTICES = "DegradedNotices"  # inboxes reported degraded (long transient failures)
    REMINDERS_SENT = "RemindersSent"

    # notices: counted by the mailer itself, whichever function sends them
    NOTICES_SENT = "NoticesSent"
    NOTICE_FAILURES = "NoticeFailures"

    # reconnect links
    LINKS_CREATED = "LinksCreated"
    LINKS_USED = "LinksUsed"
    LINKS_EXPIRED = "LinksExpired"

    # the public pages: each refusal the person sees, and unsubscribes
    UNSUBSCRIBED = "Unsubscribed"
    RECONNECT_LINK_EXPIRED = "ReconnectLinkExpired"
    RECONNECT_LINK_USED = "ReconnectLinkUsed"
    RECONNECT_LINK_INVALID = "ReconnectLinkInvalid"
    RECONNECT_SESSION_MISSING = "ReconnectSessionMissing"
    RECONNECT_REJECTED = "ReconnectRejected"
    RECONNECT_DECLINED = "ReconnectDeclined"
    RECONNECT_PROVIDER_ERROR = "ReconnectProviderError"
    RECONNECT_SCOPES_MISSING = "ReconnectScopesMissing"
    RECONNECT_MISMATCH = "ReconnectMismatch"
    RECONNECT_INBOX_CHANGED = "ReconnectInboxChanged"
    RECONNECT_LOGIN_FAILED = "ReconnectLoginFailed"
    RECONNECT_PASSWORD_REJECTED = "ReconnectPasswordRejected"  # noqa: S105 - a metric name, not a password


AUTH_FAILURE_METRICS: Mapping[FailureKind, Metric] = MappingProxyType(
    {
        FailureKind.AUTH_LOST: Metric.AUTH_LOST_FAILURES,
        FailureKind.USER_ACTION: Metric.USER_ACTION_FAILURES,
        FailureKind.APP_CONFIG: Metric.APP_CONFIG_FAILURES,
        FailureKind.TRANSIENT: Metric.TRANSIENT_FAILURES,
        FailureKind.RATE_LIMITED: Metric.RATE_LIMITED_FAILURES,
        FailureKind.RECIPIENT_REJECTED: Metric.RECIPIENT_REJECTED_FAILURES,
        FailureKind.BAD_MESSAGE: Metric.BAD_MESSAGE_FAILURES,
    }
)


INBOUND_METRICS: Mapping[InboundKind, Metric] = MappingProxyType(
    {
        InboundKind.REPLY: Metric.REPLIES,
        InboundKind.BOUNCE: Metric.HARD_BOUNCES,
        InboundKind.SOFT_BOUNCE: Metric.SOFT_BOUNCES,
        InboundKind.SENDER_BLOCKED: Metric.SENDER_BLOCKS,
        InboundKind.COMPLAINT: Metric.COMPLAINTS,
        InboundKind.AUTO_REPLY: Metric.AUTO_REPLIES,
    }
)


class CountingMailer:
    """A mailer that counts every notice sent and every notice that could not be sent.

    Handlers wrap their SES mailer in it, so notices count the same in every function that sends them.
    """

    def __init__(self, mailer: Mailer, metrics: Metrics | None = None) -> None:
        self._mailer = mailer
        # Powertools shares one metric set between Metrics objects: the handler's flush publishes it.
        self._metrics = metrics or Metrics()

    def send(self, email: Email) -> str:
        try:
            message_id = self._mailer.send(email)
        except BaseException:
            # Counted here only: what went wrong is the caller's to handle (retry, log, fail the record).
            self._metrics.add_metric(name=Metric.NOTICE_FAILURES, unit=MetricUnit.Count, value=1)
            raise
        self._metrics.add_metric(name=Metric.NOTICES_SENT, unit=MetricUnit.Count, value=1)
        return message_id


# ---------------------------------------------------------------------------------------------
# Redaction

# Keys whose value is a secret whatever it looks like (passwords have no shape to recognise).
_SECRET_KEYS = frozenset(
    {
        "password",
        "token",
        "secret",
        "credentials",
        "authorization",
        "cookie",
        "set_cookie",
        "authorization_code",
        "auth_code",
        "code_verifier",
        "client_assertion",
        "plaintext",  # KMS: decrypted credentials
    }
)
_SECRET_KEY_SUFFIXES = ("_password", "_token", "_secret", "_cookie")

# Secrets recognisable by their shape, wherever they appear in a text.
_SECRET_SHAPES = (
    re.compile(r"\bya29\.[\w.-]+"),  # Google access token
    re.compile(r"\b1//[\w-]{10,}"),  # Google refresh token
    re.compile(r"\b4/[\w-]{10,}"),  # Google authorization code
    re.compile(r"\beyJ[\w-]*\.[\w-]+\.[\w-]*"),  # a JWT: ID tokens, Microsoft access tokens
    re.compile(r"\bEw[A-Za-z0-9+/=_-]{30,}"),  # Microsoft consumer access token
    re.compile(r"\b0\.A[\w.-]{20,}"),  # Microsoft refresh token
    re.compile(r"\bM\.[A-Z0-9]{1,4}_[\w.!*$-]{20,}"),  # Microsoft consumer refresh token
    re.compile(r"(?i)\bbearer\s+[^\s\"',;]+"),
    re.compile(r"\bGOCSPX-[\w-]+"),  # Google OAuth client secret
    re.compile(r"\b[\w.-]{3}\dQ~[\w.~-]{20,}"),  # Microsoft Entra client secret
)
# A secret after a known name: query strings and form bodies (code=...), cookies, printed dicts.
_ASSIGNED_SECRET = re.compile(
    r"(?i)(?P<name>\b(?:code|refresh_token|access_token|id_token|client_secret|password|token|code_verifier|"
    r"csrf_token|(?:__Host-)?sendwell-session)=)(?P<value>[^\s&\"',;]+)"
)
# ... and in a printed dict or JSON: "password": "...", a DynamoDB item's "csrf_token": {"S": "..."},
# a KMS request's 'Plaintext': b'...', an SSM SecureString's "Type": "SecureString", "Value": "...".
_QUOTED_SECRET = re.compile(
    r"(?i)(?P<name>[\"'](?:refresh_token|access_token|id_token|client_secret|password|token|code_verifier|"
    r"csrf_token|plaintext)[\"']\s*:\s*(?:\{\s*[\"']S[\"']\s*:\s*)?b?[\"']"
    r"|[\"']Type[\"']\s*:\s*[\"']SecureString[\"']\s*,\s*[\"']Value[\"']\s*:\s*[\"'])(?P<value>[^\"']+)"
)
# The link token in a reconnect URL: /r/<token>.
_LINK_PATH = re.compile(r"/r/[\w-]{16,}")

_STANDARD_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", (), None))) | {
    "message",
    "asctime",
}


def is_secret_key(key: str) -> bool:
    normal = key.strip().lower().replace("-", "_")
    return normal in _SECRET_KEYS or normal.endswith(_SECRET_KEY_SUFFIXES)


def redact_text(text: str) -> str:
    for shape in _SECRET_SHAPES:
        text = shape.sub(REDACTED, text)
    for named in (_ASSIGNED_SECRET, _QUOTED_SECRET):
        text = named.sub(lambda match: match["name"] + REDACTED, text)
    return _LINK_PATH.sub("/r/" + REDACTED, text)


def redact(value: Any) -> Any:
    """``value`` with every secret masked: under a secret key, or by its shape in any text."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {key: REDACTED if is_secret_key(str(key)) else redact(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(item) for item in value]
    return value


class RedactSecrets(logging.Filter):
    """Masks secrets in a record's message, arguments, extra keys, exception and stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg, record.args = redact_text(record.getMessage()), None
        else:  # Powertools logs dictionaries as structured messages
            record.msg = redact(record.msg)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_RECORD_FIELDS:
                setattr(record, key, REDACTED if is_secret_key(key) else redact(value))
        if record.exc_info and record.exc_info[1] is not None:
            text = redact_text("".join(traceback.format_exception(*record.exc_info)).rstrip())
            # Standard formatters print exc_text; Powertools prefers an "exception" key when there is
            # one. exc_info goes: formatters would read the message (and source lines) from it again.
            record.exc_text = text
            setattr(record, "exception", text)  # noqa: B010 - not a LogRecord field: an extra key
            setattr(record, "exception_name", type(record.exc_info[1]).__name__)  # noqa: B010
            record.exc_info = None
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


def install_redaction(logger: Logger) -> None:
    """Put :class:`RedactSecrets` on the Powertools logger's handlers and on the root handlers.

    The root handlers are the Lambda runtime's: third-party libraries (urllib3, msal, google-auth,
    botocore) log through them, and at DEBUG some print URLs and token responses.
    """
    for handler in [*logger.handlers, *logging.getLogger().handlers]:
        if not any(isinstance(existing, RedactSecrets) for existing in handler.filters):
            handler.addFilter(RedactSecrets())
