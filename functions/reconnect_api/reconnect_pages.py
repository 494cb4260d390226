"""The reconnect API's pages: templates, security headers, the session cookie, and the refusals.

Pages are autoescaped jinja2 with one stylesheet inlined and allowed by its hash (no
'unsafe-inline'). Every response carries the same strict headers. Each error the reconnect flow
can raise has its page, status and metric here.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.shared.cookies import Cookie, SameSite
from markupsafe import Markup

from sendwell.config import ReconnectSettings
from sendwell.failures import Provider
from sendwell.models import Inbox, InboxStatus
from sendwell.observability import Metric
from sendwell.ports.signin import AuthorizationFailed, ConsentDeclined, LoginFailed, LoginPart, LoginStage, PartFailure
from sendwell.services import links, notices, owner_links, reconnect

if TYPE_CHECKING:
    import jinja2

MAX_FORM_BYTES = 16 * 1024
_NO_REASON = "The provider stopped accepting sendwell's access to this inbox"
BUTTON_LABELS = {Provider.GMAIL.value: "Continue with Google", Provider.OUTLOOK.value: "Sign in with Microsoft"}

_STYLE = Markup(resources.files("sendwell").joinpath("templates/pages/style.css").read_text(encoding="utf-8"))  # noqa: S704 - our own file
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()


@functools.cache
def _environment() -> jinja2.Environment:
    """Built at the first page, not at cold start: the health check and the redirects render none."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("sendwell", "templates/pages"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    template: str


# Everything that can go wrong, as the page the person sees...
REFUSALS: Mapping[type[Exception], Refusal] = {
    links.LinkExpired: Refusal(410, "expired"),
    links.LinkUsed: Refusal(410, "used"),
    # Unknown, malformed and revoked look the same: a link tells a stranger nothing.
    links.LinkInvalid: Refusal(404, "invalid"),
    reconnect.SessionMissing: Refusal(400, "session_missing"),
    reconnect.RequestRejected: Refusal(400, "rejected"),
    ConsentDeclined: Refusal(200, "declined"),
    AuthorizationFailed: Refusal(502, "provider_error"),
    reconnect.ScopesMissing: Refusal(403, "missing_scope"),
    reconnect.MailboxMismatch: Refusal(403, "mismatch"),
    reconnect.InboxChanged: Refusal(409, "changed"),
    LoginFailed: Refusal(422, "password_failed"),
    reconnect.PasswordRejected: Refusal(422, "password_failed"),
}
# ... and as ops count it.
REFUSAL_METRICS: Mapping[type[Exception], Metric] = {
    links.LinkExpired: Metric.RECONNECT_LINK_EXPIRED,
    links.LinkUsed: Metric.RECONNECT_LINK_USED,
    links.LinkInvalid: Metric.RECONNECT_LINK_INVALID,
    reconnect.SessionMissing: Metric.RECONNECT_SESSION_MISSING,
    reconnect.RequestRejected: Metric.RECONNECT_REJECTED,
    ConsentDeclined: Metric.RECONNECT_DECLINED,
    AuthorizationFailed: Metric.RECONNECT_PROVIDER_ERROR,
    reconnect.ScopesMissing: Metric.RECONNECT_SCOPES_MISSING,
    reconnect.MailboxMismatch: Metric.RECONNECT_MISMATCH,
    reconnect.InboxChanged: Metric.RECONNECT_INBOX_CHANGED,
    LoginFailed: Metric.RECONNECT_LOGIN_FAILED,
    reconnect.PasswordRejected: Metric.RECONNECT_PASSWORD_REJECTED,
}
# The refusals that show the password form again, with what went wrong.
PASSWORD_FORM_AGAIN = (LoginFailed, reconnect.PasswordRejected)


def refused_as(error: Exception) -> type[Exception]:
    """The refusal ``error`` is (the nearest of its classes in the tables)."""
    return next(cls for cls in type(error).__mro__ if cls in REFUSALS)


def count_refusal(metrics: Metrics, refusal: type[Exception]) -> str:
    """Count the refusal; returns its name for the log ("LinkExpired")."""
    metrics.add_metric(name=REFUSAL_METRICS[refusal], unit=MetricUnit.Count, value=1)
    return REFUSAL_METRICS[refusal].value.removeprefix("Reconnect")


def refusal_values(error: Exception) -> dict[str, Any]:
    """What a refusal page shows besides its fixed text."""
    if isinstance(error, AuthorizationFailed):
        return {"code": error.code}
    if isinstance(error, reconnect.ScopesMissing):
        return {"provider_name": notices.provider_name(error.provider), "purposes": error.purposes}
    if isinstance(error, reconnect.MailboxMismatch):
        return {"signed_in": error.signed_in, "expected": error.expected, "same_address": error.same_address}
    return {}


class Pages:
    """Rendering, headers and the session cookie for one deployment's public URL."""

    def __init__(self, settings: ReconnectSettings) -> None:
        self._workspace = settings.workspace_name
        self.public_base_url = settings.public_base_url
        self.base_path = urlsplit(settings.public_base_url).path.rstrip("/")
        endpoints = settings.endpoints
        sign_in_origins = " ".join(
            sorted(
                {
                    f"{u.scheme}://{u.netloc}"
                    for u in map(urlsplit, (endpoints.google_auth_url, endpoints.microsoft_authority))
                }
            )
        )
        self.headers: Mapping[str, str] = {
            "Content-Security-Policy": (
                f"default-src 'self'; style-src 'sha256-{_STYLE_HASH}'; img-src 'self'; object-src 'none'; "
                f"base-uri 'none'; form-action 'self' {sign_in_origins}; frame-ancestors 'none'"
            ),
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Strict-Transport-Security": "max-age=31536000",
        }
        # The __Host- prefix makes the browser refuse the cookie unless it is Secure, host-only and
        # for /. Only a local run on http://127.0.0.1 goes without it.
        self._secure_cookie = settings.public_base_url.startswith("https://")
        self.cookie_name = "__Host-sendwell-session" if self._secure_cookie else "sendwell-session"
        # An owner link's session, apart: an inbox's sign-in started from it must not replace it.
        self.owner_cookie_name = "__Host-sendwell-owner" if self._secure_cookie else "sendwell-owner"

    def page(self, status: int, template: str, *, cookies: list[Cookie] | None = None, **values: Any) -> Response[str]:
        page = _environment().get_template(f"{template}.html")
        body = page.render(workspace=self._workspace, style=_STYLE, base=self.base_path, **values)
        return Response(
            status_code=status,
            content_type="text/html; charset=utf-8",
            body=body,
            headers=dict(self.headers),
            cookies=cookies,
        )

    def reconnected_again(self, inbox_address: str) -> Response[str]:
        """The success page for a second submit or a reload of a finished reconnect."""
        again = ("This inbox was reconnected a moment ago; there is nothing more to do.",)
        cleared = [self.cleared_cookie()]
        return self.page(200, "success", cookies=cleared, inbox_address=inbox_address, next_steps=again)

    def json(self, status: int, body: Mapping[str, Any]) -> Response[str]:
        return Response(
            status_code=status,
            content_type=content_types.APPLICATION_JSON,
            body=json.dumps(body),
            headers=dict(self.headers),
        )

    def redirect(self, location: str, *, cookies: list[Cookie] | None = None) -> Response[str]:
        return Response(status_code=303, headers={**self.headers, "Location": location}, body="", cookies=cookies)

    def session_cookie(self, value: str, *, max_age: int, owner: bool = False) -> Cookie:
        return Cookie(
            self.owner_cookie_name if owner else self.cookie_name,
            value,
            path="/",
            secure=self._secure_cookie,
            http_only=True,
            max_age=max_age,
            same_site=SameSite.LAX_MODE,
        )

    def cleared_cookie(self) -> Cookie:
        return Cookie(self.cookie_name, "", path="/", secure=self._secure_cookie, http_only=True, max_age=0)

    def read_session(self, cookies: Iterable[str], *, owner: bool = False) -> str | None:
        wanted = self.owner_cookie_name if owner else self.cookie_name
        for raw in cookies:
            name, _, value = raw.partition("=")
            if name.strip() == wanted:
                return value.strip()
        return None


def landing(visit: reconnect.Visit, **extra: Any) -> dict[str, Any]:
    inbox = visit.inbox
    return {
        "first_time": inbox.status == InboxStatus.PENDING,
        "renewal": inbox.status == InboxStatus.CONNECTED,
        "inbox_address": inbox.address,
        "inbox_name": inbox.display_name,
        "provider": inbox.provider,
        "provider_name": notices.provider_name(inbox.provider),
        "reason": _sentence(inbox.status_reason or _NO_REASON),
        "fix": _sentence(inbox.status_fix or ""),
        "action_label": BUTTON_LABELS.get(inbox.provider, "Continue"),
        "csrf_token": visit.session.csrf_token,
        "username": inbox.username or inbox.address,
        "smtp_host": inbox.smtp_host or "",
        "imap_host": inbox.imap_host or "",
        **extra,
    }


def owner_page(visit: owner_links.OwnerVisit) -> dict[str, Any]:
    def card(inbox: Inbox) -> dict[str, str]:
        return {
            "inbox_id": inbox.inbox_id,
            "address": inbox.address,
            "name": inbox.display_name,
            "provider_name": notices.provider_name(inbox.provider),
            "reason": _sentence(
                inbox.status_reason or "The provider stopped accepting sendwell's access to this inbox"
            ),
            "fix": _sentence(inbox.status_fix or ""),
        }

    return {
        "waiting": [card(inbox) for inbox in visit.waiting],
        "done": [card(inbox) for inbox in visit.done],
        "csrf_token": visit.session.csrf_token,
        "expires": visit.link.expires_at.strftime("%d %B %Y, %H:%M UTC"),
    }


def password_form_again(visit: reconnect.Visit, error: Exception) -> dict[str, Any]:
    """The landing page's values, with why the password was not taken."""
    if not isinstance(error, LoginFailed):
        return landing(visit, failures=[], message=str(error), any_connection=False)
    inbox = visit.inbox
    hosts = {
        LoginPart.SMTP: f"{inbox.smtp_host}:{inbox.smtp_port}",
        LoginPart.IMAP: f"{inbox.imap_host}:{inbox.imap_port}",
    }
    failures = [
        {"part": f.part.value, "stage": f.stage.value, "host": hosts[f.part], "reason": _why(f)} for f in error.failures
    ]
    connection = any(f.stage is LoginStage.CONNECTION for f in error.failures)
    return landing(visit, failures=failures, message="", any_connection=connection)


def parse_form(body: str) -> dict[str, str]:
    """The url-encoded form body: the first value of each field, nothing oversized."""
    if len(body) > MAX_FORM_BYTES:
        raise reconnect.RequestRejected("form too large")
    try:
        fields = parse_qsl(body, keep_blank_values=True, max_num_fields=20)
    except ValueError as error:  # more fields than any of our forms has
        raise reconnect.RequestRejected("malformed form") from error
    return dict(reversed(fields))


def _why(failure: PartFailure) -> str:
    if failure.stage is LoginStage.AUTHENTICATION:
        return "The server refused this password."  # the classifier's words assume a disconnect
    return _sentence(failure.reason)


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."
