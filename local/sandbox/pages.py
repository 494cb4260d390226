"""The HTML the identity providers show a person: the consent page, error pages, and the redirect or
form_post that carries the authorization response back to the client.

Every page is self-contained and locked down by its headers: it loads nothing from outside, and its
one style and one script are allowed by their hashes alone.
"""

import base64
import hashlib
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final
from urllib.parse import urlencode, urlsplit, urlunsplit

from local.sandbox.http import Response
from local.sandbox.scopes import SCOPE_LABELS
from local.sandbox.state import PendingAuthorization

_STYLE: Final = (
    "body{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem;color:#202124}"
    "fieldset{border:1px solid #dadce0;border-radius:8px;margin:1rem 0;padding:.5rem 1rem}"
    "label{display:block;padding:.25rem 0}code{font-size:.8em;color:#5f6368}"
    "button{font:inherit;padding:.5rem 1.25rem;margin-right:.5rem}"
)
# Submits the form_post answer; the only script any page may run (allowed by its hash).
_FORM_POST_SCRIPT: Final = "document.forms[0].submit()"


def _csp_hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


# The pages load nothing from outside; style and script are allowed by their hashes alone.
_PAGE_HEADERS: Final = MappingProxyType(
    {
        "Content-Security-Policy": f"default-src 'none'; style-src {_csp_hash(_STYLE)}; "
        f"script-src {_csp_hash(_FORM_POST_SCRIPT)}; base-uri 'none'; frame-ancestors 'none'",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
    }
)


def _html(status: int, page: str) -> Response:
    return Response(status, page.encode(), "text/html; charset=utf-8", dict(_PAGE_HEADERS))


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )


def redirect(uri: str, params: Mapping[str, str | None]) -> Response:
    """302 to ``uri`` with ``params`` (those not None) added to its query string."""
    parts = urlsplit(uri)
    extra = urlencode({k: v for k, v in params.items() if v is not None})
    query = f"{parts.query}&{extra}" if parts.query else extra
    location = urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
    return Response(302, headers={"Location": location, **_PAGE_HEADERS})


def answer_client(pending: PendingAuthorization, params: Mapping[str, str | None]) -> Response:
    """Send the authorization response back the way the client asked: query string or form_post."""
    if pending.response_mode != "form_post":
        return redirect(pending.redirect_uri, params)
    fields = "".join(
        f'<input type="hidden" name="{html.escape(name)}" value="{html.escape(value)}">'
        for name, value in params.items()
        if value is not None
    )
    body = (
        f'<form method="post" action="{html.escape(pending.redirect_uri)}">{fields}'
        f'<noscript><button type="submit">Continue</button></noscript></form>'
        f"<script>{_FORM_POST_SCRIPT}</script>"
    )
    return _html(200, _page("Working...", body))


def error_page(status: int, heading: str, detail: str) -> Response:
    body = f"<h1>{html.escape(heading)}</h1><p>{html.escape(detail)}</p>"
    return _html(status, _page(heading, body))


@dataclass(frozen=True, slots=True)
class ConsentWording:
    """How a provider's consent page words itself."""

    title: str
    heading: str
    allow: str
    deny: str


@dataclass(frozen=True, slots=True)
class ConsentView:
    wording: ConsentWording
    client_id: str
    action: str
    request_id: str
    accounts: Sequence[tuple[str, str]]  # (email, label)
    selected: str | None
    scopes: Sequence[str]


def consent_page(view: ConsentView) -> Response:
    esc, wording = html.escape, view.wording
    accounts = (
        "".join(
            f'<label><input type="radio" name="account" value="{esc(email)}" required'
            f"{' checked' if email == view.selected else ''}> {esc(label)}</label>"
            for email, label in view.accounts
        )
        or "<p>No account in this sandbox can sign in here.</p>"
    )
    scopes = "".join(
        f'<label><input type="checkbox" name="scope" value="{esc(scope)}" checked> '
        f"{esc(SCOPE_LABELS.get(scope, scope))} <code>{esc(scope)}</code></label>"
        for scope in view.scopes
    )
    disabled = "" if view.accounts else " disabled"
    body = (
        f"<h1>{esc(wording.heading)}</h1>"
        f"<p>The application <strong>{esc(view.client_id)}</strong> wants to access your account.</p>"
        f'<form method="post" action="{esc(view.action)}">'
        f'<input type="hidden" name="request_id" value="{esc(view.request_id)}">'
        f"<fieldset><legend>Choose an account</legend>{accounts}</fieldset>"
        f"<fieldset><legend>Allow access to</legend>{scopes}</fieldset>"
        f'<button type="submit" name="decision" value="allow"{disabled}>{esc(wording.allow)}</button>'
        f'<button type="submit" name="decision" value="deny">{esc(wording.deny)}</button>'
        "</form>"
    )
    return _html(200, _page(wording.title, body))
