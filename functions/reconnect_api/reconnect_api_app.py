"""Public reconnect API: health, reconnect link pages, OAuth start and callback, unsubscribe.

Routes parse the request, call one function of ``sendwell.services.reconnect`` and render a page.
What can go wrong becomes a page in the exception handlers at the bottom, and nowhere else. Every
response carries the same strict headers; a link token is never logged and never appears in a
later URL (``/r/<token>`` answers with a cookie and a redirect to ``/connect``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import boto3
import jinja2
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.shared.cookies import Cookie, SameSite
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyPersistenceLayerError,
)
from aws_lambda_powertools.utilities.parameters import get_parameter
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError
from markupsafe import Markup

from sendwell.adapters.aws import KmsCipher, SesMailer, SnsPublisher, SqsAuthFailureReporter, SqsQueue
from sendwell.adapters.mailboxes import ParameterStoreSecrets, ProviderMailboxes
from sendwell.adapters.oauth import GoogleAuthorizer, LiveLoginCheck, MicrosoftAuthorizer, http_session
from sendwell.adapters.once import IdempotentRunner
from sendwell.clock import utcnow
from sendwell.config import Settings
from sendwell.failures import Provider
from sendwell.models import InboxStatus, bind_models
from sendwell.observability import CountingMailer, Metric, install_redaction
from sendwell.services import health, links, notices, reconnect
from sendwell.services.polling import PollContext

SETTINGS = Settings.from_env(os.environ, read_parameter=get_parameter)
MODELS = bind_models(SETTINGS.tables, region=SETTINGS.region)
KMS = KmsCipher(boto3.client("kms", region_name=SETTINGS.region), SETTINGS.credentials_key_id)
EVENTS = SnsPublisher(boto3.client("sns", region_name=SETTINGS.region), SETTINGS.inbox_events_topic_arn)
ONCE = IdempotentRunner(SETTINGS.idempotency_table)
HTTP = http_session(SETTINGS.endpoints)
SECRETS = ParameterStoreSecrets()  # OAuth client secrets: SSM SecureString, cached by Powertools


def _authorizers() -> dict[str, reconnect.Authorizer]:
    """Sign-in for each provider whose OAuth client is configured (an empty client id disables it)."""
    found: dict[str, reconnect.Authorizer] = {}
    if SETTINGS.google.client_id:
        found[Provider.GMAIL.value] = GoogleAuthorizer(SETTINGS.google, SECRETS, SETTINGS.endpoints, HTTP)
    if SETTINGS.microsoft.client_id:
        found[Provider.OUTLOOK.value] = MicrosoftAuthorizer(SETTINGS.microsoft, SECRETS, SETTINGS.endpoints, HTTP)
    return found


CONTEXT = reconnect.ReconnectContext(
    models=MODELS,
    cipher=KMS,
    poll=PollContext(
        models=MODELS,
        mailboxes=ProviderMailboxes.from_settings(SETTINGS, MODELS, KMS, SECRETS),
        auth_failures=SqsAuthFailureReporter(
            SqsQueue(boto3.client("sqs", region_name=SETTINGS.region), SETTINGS.auth_failure_queue_url)
        ),
        events=EVENTS,
        once=ONCE,
    ),
    mailer=CountingMailer(
        SesMailer(
            boto3.client("ses", region_name=SETTINGS.region), SETTINGS.sender_address, copy_to=SETTINGS.outbox_dir
        )
    ),
    events=EVENTS,
    once=ONCE,
    authorizers=_authorizers(),
    login_check=LiveLoginCheck(),
    workspace_name=SETTINGS.workspace_name,
    admin_emails=SETTINGS.admin_emails,
    public_base_url=SETTINGS.public_base_url,
)

# Pages: autoescaped jinja2, one stylesheet inlined and allowed by its hash (no 'unsafe-inline').
PAGES = jinja2.Environment(
    loader=jinja2.PackageLoader("sendwell", "templates/pages"),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=True),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_STYLE = Markup(PAGES.loader.get_source(PAGES, "style.css")[0] if PAGES.loader else "")  # noqa: S704 - our own file
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
_SIGN_IN_ORIGINS = " ".join(
    sorted(
        {
            f"{url.scheme}://{url.netloc}"
            for url in map(urlsplit, (SETTINGS.endpoints.google_auth_url, SETTINGS.endpoints.microsoft_authority))
        }
    )
)
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        f"default-src 'self'; style-src 'sha256-{_STYLE_HASH}'; img-src 'self'; object-src 'none'; "
        f"base-uri 'none'; form-action 'self' {_SIGN_IN_ORIGINS}; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Strict-Transport-Security": "max-age=31536000",
}
# The __Host- prefix makes the browser refuse the cookie unless it is Secure, host-only and for /.
# Only a local run on http://127.0.0.1 goes without it.
SECURE_COOKIE = SETTINGS.public_base_url.startswith("https://")
COOKIE_NAME = "__Host-sendwell-session" if SECURE_COOKIE else "sendwell-session"
BASE_PATH = urlsplit(SETTINGS.public_base_url).path.rstrip("/")
MAX_FORM_BYTES = 16 * 1024
# What a notice can fail with (SES, SNS, the idempotency table); anything else is a bug.
NOTICE_FAILURES = (BotoCoreError, ClientError, IdempotencyAlreadyInProgressError, IdempotencyPersistenceLayerError)
BUTTON_LABELS = {Provider.GMAIL.value: "Continue with Google", Provider.OUTLOOK.value: "Sign in with Microsoft"}

logger = Logger()
install_redaction(logger)
tracer = Tracer()
metrics = Metrics()
app = APIGatewayHttpResolver()


@app.get("/health")
def get_health() -> Response[str]:
    result = health.check(MODELS)
    return Response(
        status_code=200 if result["status"] == "ok" else 503,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps(result),
        headers=dict(SECURITY_HEADERS),
    )


@app.get("/r/<token>")
def open_link(token: str) -> Response[str]:
    opened, link = reconnect.open_link(CONTEXT, token, now=utcnow())
    logger.info("reconnect link opened", extra={"link_id": link.link_id, "inbox_id": link.inbox_id})
    cookie = Cookie(
        COOKIE_NAME,
        opened.cookie,
        path="/",
        secure=SECURE_COOKIE,
        http_only=True,
        max_age=opened.max_age,
        same_site=SameSite.LAX_MODE,
    )
    return _redirect(f"{SETTINGS.public_base_url}/connect", cookies=[cookie])


@app.get("/connect")
def connect() -> Response[str]:
    visit = reconnect.load_visit(CONTEXT, _session_cookie(), now=utcnow())
    return _page(200, "landing", **_landing(visit))


@app.post("/connect/oauth")
def start_oauth() -> Response[str]:
    url = reconnect.start_authorization(CONTEXT, _session_cookie(), _form().get("csrf_token", ""), now=utcnow())
    return _redirect(url)


@app.get("/oauth/callback/<provider>")
def oauth_callback(provider: str) -> Response[str]:
    answer = dict(app.current_event.query_string_parameters or {})
    result = reconnect.finish_authorization(CONTEXT, _session_cookie(), provider, answer, now=utcnow())
    return _reconnected(result)


@app.post("/connect/password")
def submit_password() -> Response[str]:
    form = _form()
    result = reconnect.submit_password(
        CONTEXT, _session_cookie(), form.get("csrf_token", ""), form.get("password", ""), now=utcnow()
    )
    return _reconnected(result)


@app.get("/u/<token>")
def unsubscribe_page(token: str) -> Response[str]:
    # A GET never unsubscribes: mail scanners open links; the button posts (RFC 8058 one-click).
    return _page(200, "unsubscribe", action=f"{BASE_PATH}/u/{quote(token, safe='')}")


@app.post("/u/<token>")
def unsubscribe(token: str) -> Response[str]:
    if reconnect.unsubscribe(MODELS, token, now=utcnow()):
        metrics.add_metric(name="Unsubscribed", unit=MetricUnit.Count, value=1)
    return _page(200, "unsubscribed")


# ---------------------------------------------------------------------------------------------
# Rendering


def _page(status: int, template: str, *, cookies: list[Cookie] | None = None, **values: Any) -> Response[str]:
    body = PAGES.get_template(f"{template}.html").render(
        workspace=SETTINGS.workspace_name,
        style=_STYLE,
        base=BASE_PATH,
        **values,
    )
    return Response(
        status_code=status,
        content_type="text/html; charset=utf-8",
        body=body,
        headers=dict(SECURITY_HEADERS),
        cookies=cookies,
    )


def _redirect(location: str, *, cookies: list[Cookie] | None = None) -> Response[str]:
    return Response(status_code=303, headers={**SECURITY_HEADERS, "Location": location}, body="", cookies=cookies)


def _landing(visit: reconnect.Visit, **extra: Any) -> dict[str, Any]:
    inbox = visit.inbox
    return {
        "first_time": inbox.status == InboxStatus.PENDING,
        "renewal": inbox.status == InboxStatus.CONNECTED,
        "inbox_address": inbox.address,
        "inbox_name": inbox.display_name,
        "provider": inbox.provider,
        "provider_name": notices.provider_name(inbox.provider),
        "reason": _sentence(inbox.status_reason or "The provider stopped accepting sendwell's access to this inbox"),
        "fix": _sentence(inbox.status_fix or ""),
        "action_label": BUTTON_LABELS.get(inbox.provider, "Continue"),
        "csrf_token": visit.session.csrf_token,
        "username": inbox.username or inbox.address,
        "smtp_host": inbox.smtp_host or "",
        "imap_host": inbox.imap_host or "",
        **extra,
    }


def _reconnected(result: reconnect.Reconnected) -> Response[str]:
    inbox = result.inbox
    metrics.add_metric(name=Metric.INBOXES_RECONNECTED, unit=MetricUnit.Count, value=1)
    metrics.add_metric(name=Metric.LINKS_USED, unit=MetricUnit.Count, value=1)
    try:
        reconnect.send_notices(CONTEXT, result)
    except NOTICE_FAILURES:
        # The inbox is reconnected; only telling people about it failed. Ops see the metric.
        logger.exception("reconnect notices failed", extra={"inbox_id": inbox.inbox_id})
    logger.info(
        "inbox reconnected",
        extra={
            "inbox_id": inbox.inbox_id,
            "caught_up": result.caught_up.fetched if result.caught_up else None,
            "catch_up_failure": result.caught_up.failure if result.caught_up else None,
            "backlog_mode": result.backlog.mode.value,
            "released": result.backlog.released,
        },
    )
    expired = Cookie(COOKIE_NAME, "", path="/", secure=SECURE_COOKIE, http_only=True, max_age=0)
    return _page(
        200,
        "success",
        cookies=[expired],
        inbox_address=inbox.address,
        catch_up=result.catch_up_summary(),
        backlog=result.backlog.summary(),
    )


def _session_cookie() -> str | None:
    for raw in app.current_event.cookies or []:
        name, _, value = raw.partition("=")
        if name.strip() == COOKIE_NAME:
            return value.strip()
    return None


def _form() -> dict[str, str]:
    """The url-encoded form body: the first value of each field, nothing oversized."""
    body = app.current_event.decoded_body or ""
    if len(body) > MAX_FORM_BYTES:
        raise reconnect.RequestRejected("form too large")
    try:
        fields = parse_qsl(body, keep_blank_values=True, max_num_fields=20)
    except ValueError as error:  # more fields than any of our forms has
        raise reconnect.RequestRejected("malformed form") from error
    return dict(reversed(fields))


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


# ---------------------------------------------------------------------------------------------
# Everything that can go wrong, as the page the person sees


def _refused(status: int, template: str, outcome: str, **values: Any) -> Response[str]:
    metrics.add_metric(name=Metric(f"Reconnect{outcome}"), unit=MetricUnit.Count, value=1)
    logger.info("reconnect page refused", extra={"outcome": outcome, "status": status})
    return _page(status, template, **values)


@app.exception_handler(links.LinkExpired)
def link_expired(error: links.LinkExpired) -> Response[str]:
    return _refused(410, "expired", "LinkExpired")


@app.exception_handler(links.LinkUsed)
def link_used(error: links.LinkUsed) -> Response[str]:
    return _refused(410, "used", "LinkUsed")


@app.exception_handler(links.LinkInvalid)
def link_invalid(error: links.LinkInvalid) -> Response[str]:
    # Unknown, malformed and revoked look the same: a link tells a stranger nothing.
    return _refused(404, "invalid", "LinkInvalid")


@app.exception_handler(reconnect.SessionMissing)
def session_missing(error: reconnect.SessionMissing) -> Response[str]:
    return _refused(400, "session_missing", "SessionMissing")


@app.exception_handler(reconnect.RequestRejected)
def request_rejected(error: reconnect.RequestRejected) -> Response[str]:
    return _refused(400, "rejected", "Rejected")


@app.exception_handler(reconnect.ConsentDeclined)
def consent_declined(error: reconnect.ConsentDeclined) -> Response[str]:
    return _refused(200, "declined", "Declined")


@app.exception_handler(reconnect.AuthorizationFailed)
def authorization_failed(error: reconnect.AuthorizationFailed) -> Response[str]:
    return _refused(502, "provider_error", "ProviderError", code=error.code)


@app.exception_handler(reconnect.ScopesMissing)
def scopes_missing(error: reconnect.ScopesMissing) -> Response[str]:
    name = notices.provider_name(error.provider)
    return _refused(403, "missing_scope", "ScopesMissing", provider_name=name, purposes=error.purposes)


@app.exception_handler(reconnect.MailboxMismatch)
def mailbox_mismatch(error: reconnect.MailboxMismatch) -> Response[str]:
    return _refused(
        403,
        "mismatch",
        "Mismatch",
        signed_in=error.signed_in,
        expected=error.expected,
        same_address=error.same_address,
    )


@app.exception_handler(reconnect.InboxChanged)
def inbox_changed(error: reconnect.InboxChanged) -> Response[str]:
    return _refused(409, "changed", "InboxChanged")


@app.exception_handler(reconnect.LoginFailed)
def login_failed(error: reconnect.LoginFailed) -> Response[str]:
    visit = reconnect.load_visit(CONTEXT, _session_cookie(), now=utcnow())
    hosts = {
        reconnect.LoginPart.SMTP: f"{visit.inbox.smtp_host}:{visit.inbox.smtp_port}",
        reconnect.LoginPart.IMAP: f"{visit.inbox.imap_host}:{visit.inbox.imap_port}",
    }
    failures = [
        {"part": f.part.value, "stage": f.stage.value, "host": hosts[f.part], "reason": _why(f)} for f in error.failures
    ]
    connection = any(f.stage is reconnect.LoginStage.CONNECTION for f in error.failures)
    values = _landing(visit, failures=failures, message="", any_connection=connection)
    return _refused(422, "password_failed", "LoginFailed", **values)


def _why(failure: reconnect.PartFailure) -> str:
    if failure.stage is reconnect.LoginStage.AUTHENTICATION:
        return "The server refused this password."  # the classifier's words assume a disconnect
    return _sentence(failure.reason)


@app.exception_handler(reconnect.PasswordRejected)
def password_rejected(error: reconnect.PasswordRejected) -> Response[str]:
    visit = reconnect.load_visit(CONTEXT, _session_cookie(), now=utcnow())
    values = _landing(visit, failures=[], message=str(error), any_connection=False)
    return _refused(422, "password_failed", "PasswordRejected", **values)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    ONCE.register_lambda_context(context)
    return app.resolve(event, context)
