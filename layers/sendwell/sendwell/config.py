"""Typed settings, read once at cold start from the function's environment.

Handlers call :meth:`Settings.from_env` with ``os.environ``; nothing below the handlers reads the
environment. Every missing or malformed variable is reported at once, so a bad deployment fails
on its first invocation with one clear message instead of deep inside a send.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sendwell.models import TableNames

GOOGLE_AUTH_URL = "https://accounts.google.com/o/oauth2/v2/auth"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL, not a secret
GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
GMAIL_API_URL = "https://gmail.googleapis.com"
GRAPH_API_URL = "https://graph.microsoft.com"


class ConfigError(Exception):
    """The function's environment is incomplete or malformed."""


@dataclass(frozen=True, slots=True)
class ProviderEndpoints:
    """Where the provider clients talk to: the real services unless the local sandbox is set."""

    google_auth_url: str = GOOGLE_AUTH_URL
    google_token_url: str = GOOGLE_TOKEN_URL
    google_certs_url: str = GOOGLE_CERTS_URL
    gmail_api_url: str = GMAIL_API_URL
    graph_api_url: str = GRAPH_API_URL
    microsoft_authority: str = "https://login.microsoftonline.com/common"
    # A CA bundle to trust (the local sandbox's); None means the system's trust store.
    ca_bundle: str | None = None


@dataclass(frozen=True, slots=True)
class OAuthClient:
    client_id: str  # empty when that provider is not configured
    secret_parameter: str  # SSM parameter name; the secret itself is fetched with caching


@dataclass(frozen=True, slots=True)
class Settings:
    stage: str
    region: str
    workspace_name: str
    tables: TableNames
    idempotency_table: str
    send_queue_url: str
    auth_failure_queue_url: str
    inbox_events_topic_arn: str
    credentials_key_id: str
    public_base_url: str
    admin_emails: tuple[str, ...]
    sender_address: str
    google: OAuthClient
    microsoft: OAuthClient
    endpoints: ProviderEndpoints = field(default_factory=ProviderEndpoints)
    # Local runs only: where notices are also written as .eml files for people to open.
    outbox_dir: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, read_parameter: Callable[[str], str] | None = None) -> Settings:
        """Settings from a function's environment; ``read_parameter`` reads SSM parameters named there.

        The public base URL is given directly (local runs, tests) or, when deployed, as the name of
        the SSM parameter the template writes the API's URL to.
        """
        missing: list[str] = []

        def need(name: str) -> str:
            value = env.get(name, "").strip()
            if not value:
                missing.append(name)
            return value

        def optional(name: str, default: str) -> str:
            return env.get(name, "").strip() or default

        settings = cls(
            stage=optional("SENDWELL_STAGE", "dev"),
            region=env.get("AWS_REGION") or need("AWS_DEFAULT_REGION"),
            workspace_name=optional("SENDWELL_WORKSPACE_NAME", "sendwell"),
            tables=TableNames(
                inboxes=need("SENDWELL_INBOXES_TABLE"),
                campaigns=need("SENDWELL_CAMPAIGNS_TABLE"),
                enrollments=need("SENDWELL_ENROLLMENTS_TABLE"),
                links=need("SENDWELL_LINKS_TABLE"),
                sessions=need("SENDWELL_SESSIONS_TABLE"),
                activity=need("SENDWELL_ACTIVITY_TABLE"),
            ),
            idempotency_table=need("SENDWELL_IDEMPOTENCY_TABLE"),
            send_queue_url=need("SENDWELL_SEND_QUEUE_URL"),
            auth_failure_queue_url=need("SENDWELL_AUTH_FAILURE_QUEUE_URL"),
            inbox_events_topic_arn=need("SENDWELL_INBOX_EVENTS_TOPIC_ARN"),
            credentials_key_id=need("SENDWELL_CREDENTIALS_KEY_ID"),
            public_base_url=_public_base_url(env, read_parameter, missing),
            admin_emails=tuple(a.strip() for a in env.get("SENDWELL_ADMIN_EMAILS", "").split(",") if a.strip()),
            sender_address=need("SENDWELL_SENDER_ADDRESS"),
            google=OAuthClient(
                client_id=optional("SENDWELL_GOOGLE_CLIENT_ID", ""),
                secret_parameter=optional("SENDWELL_GOOGLE_CLIENT_SECRET_PARAMETER", "/sendwell/google-client-secret"),
            ),
            microsoft=OAuthClient(
                client_id=optional("SENDWELL_MICROSOFT_CLIENT_ID", ""),
                secret_parameter=optional(
                    "SENDWELL_MICROSOFT_CLIENT_SECRET_PARAMETER", "/sendwell/microsoft-client-secret"
                ),
            ),
            endpoints=ProviderEndpoints(
                google_auth_url=optional("SENDWELL_GOOGLE_AUTH_URL", GOOGLE_AUTH_URL),
                google_token_url=optional("SENDWELL_GOOGLE_TOKEN_URL", GOOGLE_TOKEN_URL),
                google_certs_url=optional("SENDWELL_GOOGLE_CERTS_URL", GOOGLE_CERTS_URL),
                gmail_api_url=optional("SENDWELL_GMAIL_API_URL", GMAIL_API_URL).rstrip("/"),
                graph_api_url=optional("SENDWELL_GRAPH_API_URL", GRAPH_API_URL).rstrip("/"),
                microsoft_authority=optional(
                    "SENDWELL_MICROSOFT_AUTHORITY", "https://login.microsoftonline.com/common"
                ).rstrip("/"),
                ca_bundle=env.get("SENDWELL_CA_BUNDLE") or None,
            ),
            outbox_dir=env.get("SENDWELL_LOCAL_OUTBOX_DIR") or None,
        )
        if missing:
            raise ConfigError("missing environment variables: " + ", ".join(sorted(set(missing))))
        if not settings.public_base_url.startswith(("https://", "http://127.0.0.1", "http://localhost")):
            raise ConfigError("SENDWELL_PUBLIC_BASE_URL must be https (plain http only for a local run)")
        return settings


def _public_base_url(env: Mapping[str, str], read_parameter: Callable[[str], str] | None, missing: list[str]) -> str:
    direct = env.get("SENDWELL_PUBLIC_BASE_URL", "").strip()
    parameter = env.get("SENDWELL_PUBLIC_BASE_URL_PARAMETER", "").strip()
    if direct:
        return direct.rstrip("/")
    if parameter and read_parameter is not None:
        return str(read_parameter(parameter)).strip().rstrip("/")
    missing.append("SENDWELL_PUBLIC_BASE_URL (or SENDWELL_PUBLIC_BASE_URL_PARAMETER)")
    return ""
