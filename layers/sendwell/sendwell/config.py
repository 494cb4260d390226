"""Typed settings, read once at cold start from the function's environment.

Each function's settings are composed of the parts it needs (``DispatchSettings`` has the tables
and the send queue, nothing else), so a function reads only its own variables: dispatch needs no
KMS key and never reads the public-URL parameter. ``Settings`` is every part at once, for the
tools that see the whole deployment (the local stack, the CLI, tests and benchmarks).

Handlers call ``load(SomeSettings, os.environ)``; nothing below the handlers reads the
environment. Every missing or malformed variable is reported at once, so a bad deployment fails
on its first invocation with one clear message instead of deep inside a send.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, ClassVar, TypeVar

from sendwell.models import TableNames

GOOGLE_AUTH_URL = "https://accounts.google.com/o/oauth2/v2/auth"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL, not a secret
GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
GMAIL_API_URL = "https://gmail.googleapis.com"
GRAPH_API_URL = "https://graph.microsoft.com"
MICROSOFT_AUTHORITY = "https://login.microsoftonline.com/common"
# A refused call's second look waits this long; a loss that is not conclusive settles this long.
CONFIRM_WAIT_SECONDS = 2.0
SETTLE_SECONDS = 120.0


class ConfigError(Exception):
    """The function's environment is incomplete or malformed."""


class _Environment:
    """Reads variables, collecting every missing one so they are reported together."""

    def __init__(self, env: Mapping[str, str], read_parameter: Callable[[str], str] | None) -> None:
        self.env = env
        self.read_parameter = read_parameter
        self.missing: list[str] = []

    def need(self, name: str) -> str:
        value = self.env.get(name, "").strip()
        if not value:
            self.missing.append(name)
        return value

    def optional(self, name: str, default: str) -> str:
        return self.env.get(name, "").strip() or default

    def date(self, name: str) -> date | None:
        raw = self.env.get(name, "").strip()
        try:
            return date.fromisoformat(raw) if raw else None
        except ValueError:
            self.missing.append(f"{name} (a date, YYYY-MM-DD)")
            return None

    def number(self, name: str, default: float) -> float:
        raw = self.env.get(name, "").strip()
        try:
            return float(raw) if raw else default
        except ValueError:
            self.missing.append(f"{name} (a number)")
            return default


@dataclass(frozen=True, slots=True)
class ProviderEndpoints:
    """Where the provider clients talk to: the real services unless the local sandbox is set."""

    google_auth_url: str = GOOGLE_AUTH_URL
    google_token_url: str = GOOGLE_TOKEN_URL
    google_certs_url: str = GOOGLE_CERTS_URL
    gmail_api_url: str = GMAIL_API_URL
    graph_api_url: str = GRAPH_API_URL
    microsoft_authority: str = MICROSOFT_AUTHORITY
    # A CA bundle to trust (the local sandbox's); None means the system's trust store.
    ca_bundle: str | None = None


@dataclass(frozen=True, slots=True)
class OAuthClient:
    client_id: str  # empty when that provider is not configured
    secret_parameter: str  # SSM parameter name; the secret itself is fetched with caching


# ---------------------------------------------------------------------------------------------
# The parts. Each names its variables (``_VARIABLES``) or reads them (``_read``); ``load`` composes them.


@dataclass(frozen=True, kw_only=True)
class CoreSettings:
    """What every function has: where it runs and its tables."""

    stage: str
    region: str
    workspace_name: str
    tables: TableNames

    @staticmethod
    def _read(env: _Environment) -> dict[str, Any]:
        return {
            "stage": env.optional("SENDWELL_STAGE", "dev"),
            "region": env.env.get("AWS_REGION") or env.need("AWS_DEFAULT_REGION"),
            "workspace_name": env.optional("SENDWELL_WORKSPACE_NAME", "sendwell"),
            "tables": TableNames(
                inboxes=env.need("SENDWELL_INBOXES_TABLE"),
                campaigns=env.need("SENDWELL_CAMPAIGNS_TABLE"),
                enrollments=env.need("SENDWELL_ENROLLMENTS_TABLE"),
                links=env.need("SENDWELL_LINKS_TABLE"),
                sessions=env.need("SENDWELL_SESSIONS_TABLE"),
                activity=env.need("SENDWELL_ACTIVITY_TABLE"),
                suppressions=env.need("SENDWELL_SUPPRESSIONS_TABLE"),
                credentials=env.need("SENDWELL_CREDENTIALS_TABLE"),
            ),
        }


@dataclass(frozen=True, kw_only=True)
class IdempotencySettings:
    idempotency_table: str

    _VARIABLES: ClassVar[Mapping[str, str]] = {"idempotency_table": "SENDWELL_IDEMPOTENCY_TABLE"}


@dataclass(frozen=True, kw_only=True)
class SendQueueSettings:
    send_queue_url: str

    _VARIABLES: ClassVar[Mapping[str, str]] = {"send_queue_url": "SENDWELL_SEND_QUEUE_URL"}


@dataclass(frozen=True, kw_only=True)
class SendDeadLetterSettings:
    send_dead_letter_queue_url: str

    _VARIABLES: ClassVar[Mapping[str, str]] = {"send_dead_letter_queue_url": "SENDWELL_SEND_DEAD_LETTER_QUEUE_URL"}


@dataclass(frozen=True, kw_only=True)
class AuthFailureQueueSettings:
    auth_failure_queue_url: str

    _VARIABLES: ClassVar[Mapping[str, str]] = {"auth_failure_queue_url": "SENDWELL_AUTH_FAILURE_QUEUE_URL"}


@dataclass(frozen=True, kw_only=True)
class ReconnectQueueSettings:
    reconnect_queue_url: str

    _VARIABLES: ClassVar[Mapping[str, str]] = {"reconnect_queue_url": "SENDWELL_RECONNECT_QUEUE_URL"}


@dataclass(frozen=True, kw_only=True)
class EventsSettings:
    inbox_events_topic_arn: str

    _VARIABLES: ClassVar[Mapping[str, str]] = {"inbox_events_topic_arn": "SENDWELL_INBOX_EVENTS_TOPIC_ARN"}


@dataclass(frozen=True, kw_only=True)
class CredentialsSettings:
    credentials_key_id: str  # the KMS key inbox credentials are encrypted with

    _VARIABLES: ClassVar[Mapping[str, str]] = {"credentials_key_id": "SENDWELL_CREDENTIALS_KEY_ID"}


@dataclass(frozen=True, kw_only=True)
class PublicUrlSettings:
    """The public API's base URL: given directly (local runs, tests) or, when deployed, as the name
    of the SSM parameter the template writes the API's URL to."""

    public_base_url: str

    @staticmethod
    def _read(env: _Environment) -> dict[str, Any]:
        direct = env.env.get("SENDWELL_PUBLIC_BASE_URL", "").strip()
        parameter = env.env.get("SENDWELL_PUBLIC_BASE_URL_PARAMETER", "").strip()
        if direct:
            url = direct.rstrip("/")
        elif parameter and env.read_parameter is not None:
            url = str(env.read_parameter(parameter)).strip().rstrip("/")
        else:
            env.missing.append("SENDWELL_PUBLIC_BASE_URL (or SENDWELL_PUBLIC_BASE_URL_PARAMETER)")
            return {"public_base_url": ""}
        if not url.startswith(("https://", "http://127.0.0.1", "http://localhost")):
            raise ConfigError("SENDWELL_PUBLIC_BASE_URL must be https (plain http only for a local run)")
        return {"public_base_url": url}


@dataclass(frozen=True, kw_only=True)
class NoticeSettings:
    """Who notices go to and come from."""

    admin_emails: tuple[str, ...]
    sender_address: str
    # Local runs only: where notices are also written as .eml files for people to open.
    outbox_dir: str | None = None

    @staticmethod
    def _read(env: _Environment) -> dict[str, Any]:
        admins = env.env.get("SENDWELL_ADMIN_EMAILS", "").split(",")
        return {
            "admin_emails": tuple(a.strip() for a in admins if a.strip()),
            "sender_address": env.need("SENDWELL_SENDER_ADDRESS"),
            "outbox_dir": env.env.get("SENDWELL_LOCAL_OUTBOX_DIR") or None,
        }


@dataclass(frozen=True, kw_only=True)
class ProviderSettings:
    """Our OAuth clients at Google and Microsoft, and where the providers are."""

    google: OAuthClient
    microsoft: OAuthClient
    endpoints: ProviderEndpoints = field(default_factory=ProviderEndpoints)
    # How long a send or poll waits before it tries a refused call again with fresh credentials.
    confirm_wait_seconds: float = CONFIRM_WAIT_SECONDS

    @staticmethod
    def _read(env: _Environment) -> dict[str, Any]:
        def client(name: str, default_parameter: str) -> OAuthClient:
            return OAuthClient(
                client_id=env.optional(f"SENDWELL_{name}_CLIENT_ID", ""),
                secret_parameter=env.optional(f"SENDWELL_{name}_CLIENT_SECRET_PARAMETER", default_parameter),
            )

        return {
            "google": client("GOOGLE", "/sendwell/google-client-secret"),
            "microsoft": client("MICROSOFT", "/sendwell/microsoft-client-secret"),
            "endpoints": ProviderEndpoints(
                google_auth_url=env.optional("SENDWELL_GOOGLE_AUTH_URL", GOOGLE_AUTH_URL),
                google_token_url=env.optional("SENDWELL_GOOGLE_TOKEN_URL", GOOGLE_TOKEN_URL),
                google_certs_url=env.optional("SENDWELL_GOOGLE_CERTS_URL", GOOGLE_CERTS_URL),
                gmail_api_url=env.optional("SENDWELL_GMAIL_API_URL", GMAIL_API_URL).rstrip("/"),
                graph_api_url=env.optional("SENDWELL_GRAPH_API_URL", GRAPH_API_URL).rstrip("/"),
                microsoft_authority=env.optional("SENDWELL_MICROSOFT_AUTHORITY", MICROSOFT_AUTHORITY).rstrip("/"),
                ca_bundle=env.env.get("SENDWELL_CA_BUNDLE") or None,
            ),
            "confirm_wait_seconds": env.number("SENDWELL_CONFIRM_WAIT_SECONDS", CONFIRM_WAIT_SECONDS),
        }


# ---------------------------------------------------------------------------------------------
# Each function's settings: the parts it needs.


@dataclass(frozen=True, kw_only=True)
class DispatchWorkSettings:
    dispatch_queue_url: str

    _VARIABLES: ClassVar[Mapping[str, str]] = {"dispatch_queue_url": "SENDWELL_DISPATCH_QUEUE_URL"}


@dataclass(frozen=True, kw_only=True)
class DispatchSettings(CoreSettings, SendQueueSettings, DispatchWorkSettings):
    pass


@dataclass(frozen=True, kw_only=True)
class PollWorkSettings:
    poll_queue_url: str

    _VARIABLES: ClassVar[Mapping[str, str]] = {"poll_queue_url": "SENDWELL_POLL_QUEUE_URL"}


@dataclass(frozen=True, kw_only=True)
class PollScheduleSettings(CoreSettings, PollWorkSettings):
    pass


@dataclass(frozen=True, kw_only=True)
class SendSettings(
    CoreSettings,
    SendQueueSettings,
    SendDeadLetterSettings,
    AuthFailureQueueSettings,
    CredentialsSettings,
    PublicUrlSettings,
    ProviderSettings,
):
    pass


@dataclass(frozen=True, kw_only=True)
class PollSettings(
    CoreSettings,
    PollWorkSettings,  # a worker short of time hands the rest of its batch on
    AuthFailureQueueSettings,
    EventsSettings,
    IdempotencySettings,
    CredentialsSettings,
    ProviderSettings,
    NoticeSettings,  # an inbox paused for sender-side blocks: its admins are told
):
    pass


@dataclass(frozen=True, kw_only=True)
class BreakerLimits:
    """When many inboxes of one provider lose permission at once, hold them instead (services.breaker)."""

    breaker_min_inboxes: int = 5
    breaker_min_share: float = 0.2
    breaker_window_minutes: float = 30.0
    # How long a loss that is not conclusive waits for the provider's other inboxes (at most 900 s,
    # the longest SQS delays the report it queues again).
    breaker_settle_seconds: float = SETTLE_SECONDS

    @staticmethod
    def _read(env: _Environment) -> dict[str, Any]:
        return {
            "breaker_min_inboxes": int(env.number("SENDWELL_BREAKER_MIN_INBOXES", 5)),
            "breaker_min_share": env.number("SENDWELL_BREAKER_MIN_SHARE", 0.2),
            "breaker_window_minutes": env.number("SENDWELL_BREAKER_WINDOW_MINUTES", 30.0),
            "breaker_settle_seconds": min(env.number("SENDWELL_BREAKER_SETTLE_SECONDS", SETTLE_SECONDS), 900.0),
        }


@dataclass(frozen=True, kw_only=True)
class IncidentSettings(
    CoreSettings, EventsSettings, IdempotencySettings, NoticeSettings, PublicUrlSettings, BreakerLimits
):
    """Incidents and their notices (the auth-failure handler, reminders, the reconnect worker)."""


@dataclass(frozen=True, kw_only=True)
class AuthFailureSettings(IncidentSettings, AuthFailureQueueSettings):
    """The auth-failure handler: it queues a settling report again on its own queue."""


@dataclass(frozen=True, kw_only=True)
class ClockSettings:
    """What runs out on a known date: the app's client secrets, Google grants of an app in testing."""

    google_publishing_status: str = "production"  # "testing": Google ends each grant after 7 days
    google_client_secret_expires: date | None = None
    microsoft_client_secret_expires: date | None = None
    idle_warning_days: float = 3.0

    @staticmethod
    def _read(env: _Environment) -> dict[str, Any]:
        status = env.optional("SENDWELL_GOOGLE_PUBLISHING_STATUS", "production").lower()
        if status not in ("production", "testing"):
            env.missing.append("SENDWELL_GOOGLE_PUBLISHING_STATUS (production or testing)")
        return {
            "google_publishing_status": status,
            "google_client_secret_expires": env.date("SENDWELL_GOOGLE_CLIENT_SECRET_EXPIRES"),
            "microsoft_client_secret_expires": env.date("SENDWELL_MICROSOFT_CLIENT_SECRET_EXPIRES"),
            "idle_warning_days": env.number("SENDWELL_IDLE_WARNING_DAYS", 3.0),
        }


@dataclass(frozen=True, kw_only=True)
class RemindersSettings(IncidentSettings, ReconnectQueueSettings, ClockSettings):
    """The reminders function: incidents' reminders, and reconnects left unfinished queued again."""


@dataclass(frozen=True, kw_only=True)
class ReconnectSettings(CoreSettings, CredentialsSettings, ProviderSettings, PublicUrlSettings, ReconnectQueueSettings):
    """The public reconnect API: the sign-in, and the task that has the worker finish a reconnect."""


@dataclass(frozen=True, kw_only=True)
class ReconnectWorkerSettings(PollSettings, IncidentSettings):
    """The reconnect worker: the catch-up poll, the backlog release, the notices of a reconnect."""


@dataclass(frozen=True, kw_only=True)
class AdminSettings(CoreSettings, PublicUrlSettings):
    pass


@dataclass(frozen=True, kw_only=True)
class Settings(
    ReconnectWorkerSettings,
    ReconnectSettings,
    RemindersSettings,
    SendQueueSettings,
    SendDeadLetterSettings,
    DispatchWorkSettings,
    PollWorkSettings,
):
    """Every part: the whole deployment, for the local stack, the CLI, tests and benchmarks."""

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, read_parameter: Callable[[str], str] | None = None) -> Settings:
        return load(cls, env, read_parameter=read_parameter)


S = TypeVar("S", bound=CoreSettings)


def load(cls: type[S], env: Mapping[str, str], *, read_parameter: Callable[[str], str] | None = None) -> S:
    """``cls``'s settings from a function's environment; ``read_parameter`` reads SSM parameters."""
    environment = _Environment(env, read_parameter)
    values: dict[str, Any] = {}
    for part in reversed(cls.__mro__):
        # A part names its required variables (``_VARIABLES``) or reads them itself (``_read``).
        values |= {name: environment.need(variable) for name, variable in part.__dict__.get("_VARIABLES", {}).items()}
        read = part.__dict__.get("_read")
        if isinstance(read, staticmethod):
            values |= read.__func__(environment)
    if environment.missing:
        raise ConfigError("missing environment variables: " + ", ".join(sorted(set(environment.missing))))
    return cls(**values)
