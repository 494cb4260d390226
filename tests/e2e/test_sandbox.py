"""The provider sandbox, driven by the real clients: google-auth, msal and requests over HTTPS."""

import base64
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import google.oauth2.credentials
import google.oauth2.id_token
import jwt
import msal
import pytest
import requests
from google.auth.exceptions import RefreshError
from google.auth.transport.requests import AuthorizedSession, Request

from local.sandbox import GMAIL_READONLY, GMAIL_SEND, Sandbox

GOOGLE_CLIENT_ID = "1234567890-sendwell.apps.googleusercontent.com"
GOOGLE_SECRET = "GOCSPX-sandbox-secret"
GOOGLE_REDIRECT = "http://127.0.0.1:3000/oauth/google/callback"
MS_CLIENT_ID = "6f1c2d7e-4b0a-4c5e-9d8f-0a1b2c3d4e5f"
MS_SECRET = "Zx98Q~sandbox.secret"
MS_REDIRECT = "http://localhost:3000/oauth/microsoft/callback"
ALICE = "alice@acme-outreach.com"
BOB = "bob@contoso.com"
GOOGLE_SCOPES = ("openid", "email", GMAIL_SEND, GMAIL_READONLY)
GRAPH_SCOPES = ["Mail.Send", "Mail.Read", "User.Read"]

# msal advises form_post; most flows here use the default query response on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:response_mode='form_post' is recommended:UserWarning")


# --------------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(scope="module")
def running() -> Iterator[Sandbox]:
    with Sandbox() as sandbox:
        yield sandbox


@pytest.fixture
def sandbox(running: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    # requests would let these override every session's verify= (see the sandbox's docstring).
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    running.reset()
    running.add_google_account(ALICE, name="Alice Archer")
    running.add_google_account("carol@gmail.com", name="Carol")
    running.add_microsoft_account(BOB, name="Bob Brown")
    running.add_client("google", GOOGLE_CLIENT_ID, GOOGLE_SECRET, [GOOGLE_REDIRECT])
    running.add_client("microsoft", MS_CLIENT_ID, MS_SECRET, [MS_REDIRECT])
    return running


@pytest.fixture
def http(sandbox: Sandbox) -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.verify = sandbox.ca_bundle_path
        yield session


class _Form(HTMLParser):
    """The consent page's form as a browser would submit it."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.action = ""
        self.fields: dict[str, list[str]] = {}
        self.checkboxes: list[str] = []
        self.radios: dict[str, bool] = {}
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.action = attributes["action"]
        elif tag == "input" and attributes.get("type") == "checkbox":
            self.checkboxes.append(attributes["value"])
        elif tag == "input" and attributes.get("type") == "radio":
            self.radios[attributes["value"]] = "checked" in attributes
        elif tag == "input":
            self.fields.setdefault(attributes["name"], []).append(attributes["value"])


def _consent(
    http: requests.Session,
    auth_url: str,
    *,
    account: str | None = None,
    drop_scopes: tuple[str, ...] = (),
    decision: str = "allow",
) -> requests.Response:
    """Open the authorization page and submit it as the person would; returns the provider's answer."""
    page = http.get(auth_url)
    assert page.status_code == 200, page.text
    form = _Form(page.text)
    selected = account or next(email for email, checked in form.radios.items() if checked)
    data = {
        **form.fields,
        "account": [selected],
        "scope": [s for s in form.checkboxes if s not in drop_scopes],
        "decision": [decision],
    }
    return http.post(urljoin(page.url, form.action), data=data, allow_redirects=False)


def _callback_params(response: requests.Response) -> dict[str, str]:
    assert response.status_code == 302, response.text
    return {k: v[0] for k, v in parse_qs(urlsplit(response.headers["Location"]).query).items()}


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _google_auth_url(sandbox: Sandbox, challenge: str, **extra: str) -> str:
    params = {
        "client_id": GOOGLE_CLIENT_ID,
        "redirect_uri": GOOGLE_REDIRECT,
        "response_type": "code",
        "scope": " ".join(GOOGLE_SCOPES),
        "state": "st-" + secrets.token_urlsafe(8),
        "access_type": "offline",
        "prompt": "consent",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "login_hint": ALICE,
        **extra,
    }
    return f"{sandbox.google_auth_url}?{urlencode(params)}"


def _google_tokens(
    sandbox: Sandbox, http: requests.Session, *, drop_scopes: tuple[str, ...] = (), **extra: str
) -> dict[str, Any]:
    verifier, challenge = _pkce()
    params = _callback_params(
        _consent(http, _google_auth_url(sandbox, challenge, **extra), drop_scopes=drop_scopes)
    )
    exchange = {
        "grant_type": "authorization_code",
        "code": params["code"],
        "redirect_uri": GOOGLE_REDIRECT,
        "client_id": GOOGLE_CLIENT_ID,
        "client_secret": GOOGLE_SECRET,
        "code_verifier": verifier,
    }
    response = http.post(sandbox.google_token_url, data=exchange)
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


def _msal_app(sandbox: Sandbox, tenant: str = "organizations") -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        MS_CLIENT_ID,
        client_credential=MS_SECRET,
        authority=sandbox.microsoft_authority(tenant),
        verify=sandbox.ca_bundle_path,
        instance_discovery=False,
    )


def _ms_tokens(sandbox: Sandbox, http: requests.Session, tenant: str = "organizations") -> dict[str, Any]:
    app = _msal_app(sandbox, tenant)
    flow = app.initiate_auth_code_flow(GRAPH_SCOPES, redirect_uri=MS_REDIRECT, login_hint=BOB)
    result: dict[str, Any] = app.acquire_token_by_auth_code_flow(
        flow, _callback_params(_consent(http, flow["auth_uri"]))
    )
    assert "access_token" in result, result
    return result


def _mime(sender: str, to: str, subject: str, message_id: str, *, in_reply_to: str | None = None) -> bytes:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, to, subject
    message["Date"] = "Mon, 02 Mar 2026 09:30:00 +0000"
    message["Message-ID"] = message_id
    if in_reply_to:
        message["In-Reply-To"] = message["References"] = in_reply_to
    message.set_content(f"Hi,\n\nQuick question about {subject.lower()}.\n\nThanks\n")
    return message.as_bytes()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --------------------------------------------------------------------------------------------------
# Transport


def test_serves_https_trusted_only_through_its_ca_bundle(sandbox: Sandbox, http: requests.Session) -> None:
    assert sandbox.base_url.startswith("https://127.0.0.1:")
    assert http.get(f"{sandbox.base_url}/google/oauth2/v3/certs").json()["keys"][0]["alg"] == "RS256"
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{sandbox.base_url}/google/oauth2/v3/certs", timeout=5)


# --------------------------------------------------------------------------------------------------
# Google OAuth


def test_google_code_flow_id_token_verifies_with_google_auth(
    sandbox: Sandbox, http: requests.Session
) -> None:
    tokens = _google_tokens(sandbox, http)

    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 3599
    assert tokens["access_token"].startswith("ya29.") and tokens["refresh_token"]
    assert set(tokens["scope"].split()) == {
        "openid",
        "https://www.googleapis.com/auth/userinfo.email",
        GMAIL_SEND,
        GMAIL_READONLY,
    }
    request = Request(session=http)
    for certs_url in (sandbox.google_certs_url, f"{sandbox.base_url}/google/oauth2/v1/certs"):  # JWKS, X.509
        claims = google.oauth2.id_token.verify_token(
            tokens["id_token"], request, audience=GOOGLE_CLIENT_ID, certs_url=certs_url
        )
        assert claims["iss"] == "https://accounts.google.com"
        assert claims["aud"] == GOOGLE_CLIENT_ID
        assert claims["email"] == ALICE and claims["email_verified"] is True
        assert claims["hd"] == "acme-outreach.com"
        assert claims["sub"] == sandbox.add_google_account(ALICE, name="Alice Archer").sub
    with pytest.raises(jwt.InvalidAudienceError):  # the JWKS path verifies through PyJWT
        google.oauth2.id_token.verify_token(
            tokens["id_token"], request, audience="someone-else", certs_url=sandbox.google_certs_url
        )


def test_google_auth_credentials_refresh_then_fail_after_password_change(
    sandbox: Sandbox, http: requests.Session
) -> None:
    tokens = _google_tokens(sandbox, http)
    credentials = google.oauth2.credentials.Credentials(
        None,
        refresh_token=tokens["refresh_token"],
        token_uri=sandbox.google_token_url,
        client_id=GOOGLE_CLIENT_ID,
        client_secret=GOOGLE_SECRET,
    )
    request = Request(session=http)

    credentials.refresh(request)
    assert credentials.valid and credentials.token != tokens["access_token"]
    gmail = AuthorizedSession(credentials, auth_request=request)
    gmail.verify = sandbox.ca_bundle_path
    assert gmail.get(f"{sandbox.gmail_api_url}/users/me/profile").json()["emailAddress"] == ALICE

    sandbox.revoke_google_grant(ALICE)

    # Google revokes the access tokens too: the API answers 401, the session refreshes, and that fails.
    with pytest.raises(RefreshError) as caught:
        gmail.get(f"{sandbox.gmail_api_url}/users/me/profile")
    assert caught.value.args[1] == {
        "error": "invalid_grant",
        "error_description": "Token has been expired or revoked.",
    }
    answer = http.get(f"{sandbox.gmail_api_url}/users/me/profile", headers=_bearer(str(credentials.token)))
    assert answer.status_code == 401
    assert answer.json()["error"]["status"] == "UNAUTHENTICATED"


def test_google_granular_consent_can_withhold_the_send_scope(
    sandbox: Sandbox, http: requests.Session
) -> None:
    tokens = _google_tokens(sandbox, http, drop_scopes=(GMAIL_SEND,))
    assert GMAIL_SEND not in tokens["scope"].split()

    raw = base64.urlsafe_b64encode(_mime(ALICE, "lead@example.org", "Intro", "<m1@sendwell>")).decode()
    denied = http.post(
        f"{sandbox.gmail_api_url}/users/me/messages/send",
        json={"raw": raw},
        headers=_bearer(tokens["access_token"]),
    )
    assert denied.status_code == 403
    error = denied.json()["error"]
    assert (error["code"], error["status"]) == (403, "PERMISSION_DENIED")
    assert error["errors"][0]["reason"] == "insufficientPermissions"
    readable = http.get(f"{sandbox.gmail_api_url}/users/me/messages", headers=_bearer(tokens["access_token"]))
    assert readable.status_code == 200


def test_google_deny_and_error_pages(sandbox: Sandbox, http: requests.Session) -> None:
    _, challenge = _pkce()
    url = _google_auth_url(sandbox, challenge, state="deny-me")
    assert _callback_params(_consent(http, url, decision="deny")) == {
        "error": "access_denied",
        "state": "deny-me",
    }

    unknown = http.get(url.replace(GOOGLE_CLIENT_ID, "unknown-client"))
    assert unknown.status_code == 401 and "invalid_client" in unknown.text
    mismatch = http.get(_google_auth_url(sandbox, challenge, redirect_uri="https://evil.example/cb"))
    assert mismatch.status_code == 400 and "redirect_uri_mismatch" in mismatch.text
    assert "Location" not in mismatch.headers  # never redirect to an unregistered address

    sandbox.add_client("google", "<script>alert(1)</script>", GOOGLE_SECRET, [GOOGLE_REDIRECT])
    page = http.get(url.replace(GOOGLE_CLIENT_ID, "%3Cscript%3Ealert(1)%3C/script%3E"))
    assert "<script>alert(1)" not in page.text and "&lt;script&gt;alert(1)" in page.text
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert page.headers["Cache-Control"] == "no-store"


def test_google_token_endpoint_checks_like_google(sandbox: Sandbox, http: requests.Session) -> None:
    verifier, challenge = _pkce()
    code = _callback_params(_consent(http, _google_auth_url(sandbox, challenge)))["code"]
    exchange = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": GOOGLE_REDIRECT,
        "client_id": GOOGLE_CLIENT_ID,
        "client_secret": GOOGLE_SECRET,
        "code_verifier": verifier,
    }

    def post(**changes: str) -> requests.Response:
        return http.post(sandbox.google_token_url, data={**exchange, **changes})

    wrong_secret = post(client_secret="nope")
    assert (wrong_secret.status_code, wrong_secret.json()["error"]) == (401, "invalid_client")
    assert post(code_verifier=_pkce()[0]).json() == {
        "error": "invalid_grant",
        "error_description": "Invalid code verifier.",
    }
    assert post(redirect_uri="http://127.0.0.1:3000/other").json()["error"] == "redirect_uri_mismatch"
    assert post().status_code == 200
    reused = post()
    assert (reused.status_code, reused.json()["error"]) == (400, "invalid_grant")
    assert post(grant_type="password").json()["error"] == "unsupported_grant_type"


def test_google_revoke_endpoint_ends_the_grant(sandbox: Sandbox, http: requests.Session) -> None:
    tokens = _google_tokens(sandbox, http)
    assert (
        http.post(f"{sandbox.base_url}/google/revoke", data={"token": tokens["access_token"]}).status_code
        == 200
    )
    refreshed = _google_token_request(sandbox, http, tokens["refresh_token"])
    assert refreshed.json() == {
        "error": "invalid_grant",
        "error_description": "Token has been expired or revoked.",
    }
    again = http.post(f"{sandbox.base_url}/google/revoke", data={"token": tokens["refresh_token"]})
    assert (again.status_code, again.json()["error"]) == (400, "invalid_token")


def test_google_issues_a_refresh_token_again_only_with_prompt_consent(
    sandbox: Sandbox, http: requests.Session
) -> None:
    assert "refresh_token" in _google_tokens(sandbox, http, prompt="")
    assert "refresh_token" not in _google_tokens(sandbox, http, prompt="")
    assert "refresh_token" in _google_tokens(sandbox, http, prompt="consent")


# --------------------------------------------------------------------------------------------------
# Microsoft identity platform


@pytest.mark.parametrize("tenant", ["organizations", "common"])
def test_msal_auth_code_flow_and_rotating_refresh(
    sandbox: Sandbox, http: requests.Session, tenant: str
) -> None:
    account = sandbox.add_microsoft_account(BOB, name="Bob Brown")
    result = _ms_tokens(sandbox, http, tenant)

    claims = result["id_token_claims"]
    assert (claims["tid"], claims["oid"], claims["preferred_username"]) == (account.tid, account.oid, BOB)
    assert claims["iss"] == f"https://login.microsoftonline.com/{account.tid}/v2.0"
    assert claims["aud"] == MS_CLIENT_ID
    assert set(result["scope"].split()) >= set(GRAPH_SCOPES)
    keys = http.get(f"{sandbox.microsoft_authority(tenant)}/discovery/v2.0/keys").json()["keys"]
    signing_key = jwt.PyJWK(
        next(k for k in keys if k["kid"] == jwt.get_unverified_header(result["id_token"])["kid"])
    )
    jwt.decode(result["id_token"], signing_key.key, algorithms=["RS256"], audience=MS_CLIENT_ID)

    app = _msal_app(sandbox, tenant)
    first = app.acquire_token_by_refresh_token(result["refresh_token"], GRAPH_SCOPES)
    second = app.acquire_token_by_refresh_token(first["refresh_token"], ["Mail.Read"])
    assert "error" not in first and "error" not in second
    assert len({result["refresh_token"], first["refresh_token"], second["refresh_token"]}) == 3
    assert second["scope"].split()[0] == "Mail.Read" and "Mail.Send" not in second["scope"]

    sandbox.revoke_microsoft_grant(BOB)
    revoked = app.acquire_token_by_refresh_token(second["refresh_token"], GRAPH_SCOPES)
    assert revoked["error"] == "invalid_grant" and revoked["error_codes"] == [50173]


def test_msal_form_post_and_cancel(sandbox: Sandbox, http: requests.Session) -> None:
    app = _msal_app(sandbox)
    flow = app.initiate_auth_code_flow(GRAPH_SCOPES, redirect_uri=MS_REDIRECT, response_mode="form_post")
    answer = _consent(http, flow["auth_uri"])
    assert answer.status_code == 200  # a self-submitting form to the redirect URI
    form = _Form(answer.text)
    assert form.action == MS_REDIRECT
    result = app.acquire_token_by_auth_code_flow(flow, {k: v[0] for k, v in form.fields.items()})
    assert result["id_token_claims"]["preferred_username"] == BOB

    flow = app.initiate_auth_code_flow(GRAPH_SCOPES, redirect_uri=MS_REDIRECT)
    cancelled = _callback_params(_consent(http, flow["auth_uri"], decision="deny"))
    assert cancelled["error"] == "access_denied"
    assert cancelled["error_description"].startswith("AADSTS65004")
    assert cancelled["state"] == flow["state"]


def test_microsoft_token_errors_have_microsofts_shape(sandbox: Sandbox, http: requests.Session) -> None:
    result = _ms_tokens(sandbox, http)
    token_url = f"{sandbox.microsoft_authority('organizations')}/oauth2/v2.0/token"
    refresh = {
        "grant_type": "refresh_token",
        "refresh_token": result["refresh_token"],
        "client_id": MS_CLIENT_ID,
        "client_secret": "wrong",
        "scope": "Mail.Send offline_access",
    }
    answer = http.post(token_url, data=refresh, headers={"client-request-id": "5d1f9a2e-corr"})
    assert answer.status_code == 401
    body = answer.json()
    assert body["error"] == "invalid_client" and body["error_codes"] == [7000215]
    assert body["error_description"].startswith("AADSTS7000215: ")
    assert body["correlation_id"] == "5d1f9a2e-corr" and body["trace_id"] and body["timestamp"]

    unknown_app = http.post(token_url, data={**refresh, "client_id": "not-registered"}).json()
    assert (unknown_app["error"], unknown_app["error_codes"]) == ("unauthorized_client", [700016])
    not_consented = http.post(
        token_url, data={**refresh, "client_secret": MS_SECRET, "scope": "Calendars.Read"}
    )
    assert not_consented.json()["suberror"] == "consent_required"


# --------------------------------------------------------------------------------------------------
# Gmail API


def test_gmail_send_search_and_read_back(sandbox: Sandbox, http: requests.Session) -> None:
    auth = _bearer(_google_tokens(sandbox, http)["access_token"])
    api = f"{sandbox.gmail_api_url}/users/me"
    before = int(time.time())
    first_raw = _mime(ALICE, "lead@example.org", "Intro", "<step1.enr42@sendwell.local>")
    first = http.post(
        f"{api}/messages/send", json={"raw": base64.urlsafe_b64encode(first_raw).decode()}, headers=auth
    )
    assert first.status_code == 200
    assert first.json()["labelIds"] == ["SENT"] and first.json()["threadId"] == first.json()["id"]
    follow_up_raw = _mime(
        ALICE,
        "lead@example.org",
        "Re: Intro",
        "<step2.enr42@sendwell.local>",
        in_reply_to="<step1.enr42@sendwell.local>",
    )
    follow_up = http.post(
        f"{api}/messages/send",
        json={
            "raw": base64.urlsafe_b64encode(follow_up_raw).decode().rstrip("="),
            "threadId": first.json()["threadId"],
        },
        headers=auth,
    ).json()
    assert follow_up["threadId"] == first.json()["threadId"]
    assert sandbox.sent_messages(ALICE) == [first_raw, follow_up_raw]

    found = http.get(
        f"{api}/messages", params={"q": "rfc822msgid:<step2.enr42@sendwell.local>"}, headers=auth
    )
    assert found.json() == {
        "messages": [{"id": follow_up["id"], "threadId": follow_up["threadId"]}],
        "resultSizeEstimate": 1,
    }
    assert http.get(f"{api}/messages", params={"q": "rfc822msgid:<nope@x>"}, headers=auth).json() == {
        "resultSizeEstimate": 0
    }
    recent = http.get(
        f"{api}/messages", params={"q": f"after:{before}", "maxResults": "1"}, headers=auth
    ).json()
    assert recent["messages"][0]["id"] == follow_up["id"] and recent["resultSizeEstimate"] == 2
    older = http.get(
        f"{api}/messages",
        params={"q": f"after:{before}", "maxResults": "1", "pageToken": recent["nextPageToken"]},
        headers=auth,
    ).json()
    assert older["messages"][0]["id"] == first.json()["id"] and "nextPageToken" not in older

    raw = http.get(f"{api}/messages/{follow_up['id']}", params={"format": "raw"}, headers=auth).json()
    assert base64.urlsafe_b64decode(raw["raw"]) == follow_up_raw
    metadata = http.get(
        f"{api}/messages/{follow_up['id']}",
        params={"format": "metadata", "metadataHeaders": ["Message-ID", "In-Reply-To"]},
        headers=auth,
    ).json()
    assert {h["name"]: h["value"] for h in metadata["payload"]["headers"]} == {
        "Message-ID": "<step2.enr42@sendwell.local>",
        "In-Reply-To": "<step1.enr42@sendwell.local>",
    }
    full = http.get(f"{api}/messages/{first.json()['id']}", headers=auth).json()
    assert full["payload"]["mimeType"] == "text/plain"
    assert b"Quick question about intro" in base64.urlsafe_b64decode(full["payload"]["body"]["data"] + "==")
    assert full["snippet"].startswith("Hi, Quick question")
    missing = http.get(f"{api}/messages/0123456789abcdef", headers=auth)
    assert missing.status_code == 404 and missing.json()["error"]["status"] == "NOT_FOUND"


def test_gmail_requires_a_bearer_token(sandbox: Sandbox, http: requests.Session) -> None:
    answer = http.get(f"{sandbox.gmail_api_url}/users/me/profile")
    assert answer.status_code == 401
    assert answer.json()["error"]["errors"][0]["reason"] == "authError"
    assert 'error="invalid_token"' in answer.headers["WWW-Authenticate"]


def test_gmail_history_pages_replies_and_expires(sandbox: Sandbox, http: requests.Session) -> None:
    auth = _bearer(_google_tokens(sandbox, http)["access_token"])
    api = f"{sandbox.gmail_api_url}/users/me"
    sent = http.post(
        f"{api}/messages/send",
        json={
            "raw": base64.urlsafe_b64encode(
                _mime(ALICE, "lead@example.org", "Intro", "<s1@sendwell>")
            ).decode()
        },
        headers=auth,
    ).json()
    start = http.get(f"{api}/profile", headers=auth).json()["historyId"]
    reply_id = sandbox.deliver_gmail(
        ALICE, _mime("lead@example.org", ALICE, "Re: Intro", "<r1@example.org>", in_reply_to="<s1@sendwell>")
    )
    other_id = sandbox.deliver_gmail(ALICE, _mime("news@example.net", ALICE, "Digest", "<n1@example.net>"))

    page = http.get(
        f"{api}/history",
        params={"startHistoryId": start, "historyTypes": "messageAdded", "maxResults": 1},
        headers=auth,
    ).json()
    added = page["history"][0]["messagesAdded"][0]["message"]
    assert added == {"id": reply_id, "threadId": sent["threadId"], "labelIds": ["UNREAD", "INBOX"]}
    rest = http.get(
        f"{api}/history", params={"startHistoryId": start, "pageToken": page["nextPageToken"]}, headers=auth
    ).json()
    assert [r["messages"][0]["id"] for r in rest["history"]] == [other_id]
    assert int(rest["historyId"]) == int(start) + 2 == int(page["historyId"])

    sandbox.expire_gmail_history(ALICE)
    gone = http.get(f"{api}/history", params={"startHistoryId": start}, headers=auth)
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == 404
    assert gone.json()["error"]["message"] == "Requested entity was not found."
    assert gone.json()["error"]["status"] == "NOT_FOUND"
    fresh = http.get(f"{api}/profile", headers=auth).json()["historyId"]  # a full sync restarts from here
    assert http.get(f"{api}/history", params={"startHistoryId": fresh}, headers=auth).json() == {
        "historyId": fresh
    }


def test_gmail_history_retention_horizon(sandbox: Sandbox) -> None:
    with Sandbox(gmail_history_retention=0.0) as short_memory, requests.Session() as http:
        http.verify = short_memory.ca_bundle_path
        short_memory.add_google_account(ALICE)
        short_memory.add_client("google", GOOGLE_CLIENT_ID, GOOGLE_SECRET, [GOOGLE_REDIRECT])
        auth = _bearer(_google_tokens(short_memory, http)["access_token"])
        api = f"{short_memory.gmail_api_url}/users/me"
        start = http.get(f"{api}/profile", headers=auth).json()["historyId"]
        short_memory.deliver_gmail(ALICE, _mime("lead@example.org", ALICE, "Hello", "<h1@example.org>"))
        assert http.get(f"{api}/history", params={"startHistoryId": start}, headers=auth).status_code == 404


# --------------------------------------------------------------------------------------------------
# Microsoft Graph


def test_graph_send_mime_then_find_it_by_message_id(sandbox: Sandbox, http: requests.Session) -> None:
    account = sandbox.add_microsoft_account(BOB, name="Bob Brown")
    auth = _bearer(_ms_tokens(sandbox, http)["access_token"])
    graph = sandbox.graph_api_url
    me = http.get(f"{graph}/me", headers=auth).json()
    assert (me["mail"], me["userPrincipalName"], me["id"]) == (BOB, BOB, account.oid)

    raw = _mime(BOB, "lead@example.org", "Intro", "<step1.enr7@sendwell.local>")
    sent = http.post(
        f"{graph}/me/sendMail", data=base64.b64encode(raw), headers={**auth, "Content-Type": "text/plain"}
    )
    assert sent.status_code == 202 and sent.content == b""
    assert sandbox.sent_messages(BOB) == [raw]

    found = http.get(
        f"{graph}/me/mailFolders/sentitems/messages",
        params={
            "$filter": "internetMessageId eq '<step1.enr7@sendwell.local>'",
            "$select": "internetMessageId,conversationId,subject,from,internetMessageHeaders",
        },
        headers=auth,
    ).json()["value"]
    assert len(found) == 1
    message = found[0]
    assert message["internetMessageId"] == "<step1.enr7@sendwell.local>" and message["conversationId"]
    assert message["from"] == {"emailAddress": {"name": BOB, "address": BOB}}
    assert {"name": "Subject", "value": "Intro"} in message["internetMessageHeaders"]
    assert set(message) == {
        "id",
        "internetMessageId",
        "conversationId",
        "subject",
        "from",
        "internetMessageHeaders",
    }
    assert http.get(f"{graph}/me/messages/{message['id']}/$value", headers=auth).content == raw

    reply = _mime(
        "lead@example.org", BOB, "Re: Intro", "<r7@example.org>", in_reply_to="<step1.enr7@sendwell.local>"
    )
    reply_id = sandbox.deliver_graph(BOB, reply)
    fetched = http.get(f"{graph}/me/messages/{reply_id}", headers=auth).json()
    assert fetched["conversationId"] == message["conversationId"]
    assert "internetMessageHeaders" not in fetched  # only when $select names it

    not_mime = http.post(f"{graph}/me/sendMail", data=b"%%%", headers={**auth, "Content-Type": "text/plain"})
    assert not_mime.json()["error"]["code"] == "ErrorMimeContentInvalidBase64String"


def test_graph_inbox_delta_pages_and_sync_state_loss(sandbox: Sandbox, http: requests.Session) -> None:
    auth = _bearer(_ms_tokens(sandbox, http)["access_token"])
    delta = f"{sandbox.graph_api_url}/me/mailFolders/inbox/messages/delta"
    delivered = [
        sandbox.deliver_graph(BOB, _mime(f"lead{i}@example.org", BOB, f"Question {i}", f"<q{i}@example.org>"))
        for i in range(3)
    ]
    first = http.get(
        delta,
        params={"$select": "internetMessageId,subject"},
        headers={**auth, "Prefer": "odata.maxpagesize=2"},
    ).json()
    assert [m["id"] for m in first["value"]] == delivered[:2] and "@odata.deltaLink" not in first
    second = http.get(first["@odata.nextLink"], headers=auth).json()
    assert [m["id"] for m in second["value"]] == delivered[2:]
    assert set(second["value"][0]) == {"id", "internetMessageId", "subject"}
    assert "$deltatoken=" in second["@odata.deltaLink"]

    newer = sandbox.deliver_graph(BOB, _mime("lead9@example.org", BOB, "Later", "<q9@example.org>"))
    round_two = http.get(second["@odata.deltaLink"], headers=auth).json()
    assert [m["id"] for m in round_two["value"]] == [newer]
    assert http.get(round_two["@odata.deltaLink"], headers=auth).json()["value"] == []

    sandbox.expire_graph_delta(BOB)
    gone = http.get(round_two["@odata.deltaLink"], headers=auth)
    assert gone.status_code == 410
    assert gone.json()["error"]["code"] == "syncStateNotFound"


# --------------------------------------------------------------------------------------------------
# Faults


def _google_token_request(sandbox: Sandbox, http: requests.Session, refresh_token: str) -> requests.Response:
    data = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": GOOGLE_CLIENT_ID,
        "client_secret": GOOGLE_SECRET,
    }
    return http.post(sandbox.google_token_url, data=data)


def _ms_token_request(sandbox: Sandbox, http: requests.Session, refresh_token: str) -> requests.Response:
    data = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": MS_CLIENT_ID,
        "client_secret": MS_SECRET,
        "scope": "Mail.Send offline_access openid",
    }
    return http.post(f"{sandbox.microsoft_authority('organizations')}/oauth2/v2.0/token", data=data)


GOOGLE_TOKEN_FAULTS = [
    (
        "invalid_grant",
        400,
        {"error": "invalid_grant", "error_description": "Token has been expired or revoked."},
    ),
    ("invalid_rapt", 400, {"error": "invalid_grant", "error_subtype": "invalid_rapt"}),
    ("invalid_client", 401, {"error": "invalid_client"}),
    ("domain_policy_403", 400, {"error": "admin_policy_enforced"}),
    ("rate_limit_429", 429, {"error": "rate_limit_exceeded"}),
    ("server_error_500", 500, {"error": "internal_failure"}),
    ("unavailable_503", 503, {"error": "temporarily_unavailable"}),
]


@pytest.mark.parametrize(("fault", "status", "expected"), GOOGLE_TOKEN_FAULTS)
def test_google_token_faults(
    sandbox: Sandbox, http: requests.Session, fault: str, status: int, expected: dict[str, str]
) -> None:
    refresh_token = _google_tokens(sandbox, http)["refresh_token"]
    sandbox.inject_fault(ALICE, "token", fault, times=1, retry_after=7)
    failed = _google_token_request(sandbox, http, refresh_token)
    assert failed.status_code == status
    assert expected.items() <= failed.json().items()
    assert (failed.headers.get("Retry-After") == "7") == (fault == "rate_limit_429")
    assert _google_token_request(sandbox, http, refresh_token).status_code == 200  # times=1: used up


MICROSOFT_TOKEN_FAULTS = [
    ("aadsts:70008", 400, {"error": "invalid_grant", "error_codes": [70008]}),
    ("aadsts:700082", 400, {"error": "invalid_grant", "error_codes": [700082]}),
    ("aadsts:50076", 400, {"error": "invalid_grant", "suberror": "basic_action", "error_codes": [50076]}),
    ("aadsts:53003", 400, {"error": "interaction_required", "suberror": "message_only"}),
    ("aadsts:7000222", 401, {"error": "invalid_client", "error_codes": [7000222]}),
    ("aadsts:700016", 400, {"error": "unauthorized_client", "error_codes": [700016]}),
    ("aadsts:123456", 400, {"error": "invalid_grant", "error_codes": [123456]}),
    ("invalid_grant", 400, {"error": "invalid_grant", "error_codes": [50173]}),
    ("invalid_client", 401, {"error": "invalid_client", "error_codes": [7000215]}),
    ("rate_limit_429", 429, {"error": "temporarily_unavailable"}),
    ("server_error_500", 500, {"error": "server_error"}),
    ("unavailable_503", 503, {"error": "temporarily_unavailable"}),
]


@pytest.mark.parametrize(("fault", "status", "expected"), MICROSOFT_TOKEN_FAULTS)
def test_microsoft_token_faults(
    sandbox: Sandbox, http: requests.Session, fault: str, status: int, expected: dict[str, Any]
) -> None:
    refresh_token = _ms_tokens(sandbox, http)["refresh_token"]
    sandbox.inject_fault(BOB, "token", fault, times=1)
    failed = _ms_token_request(sandbox, http, refresh_token)
    assert failed.status_code == status
    body = failed.json()
    assert expected.items() <= body.items()
    assert body["error_description"].startswith(f"AADSTS{body['error_codes'][0]}: ")
    assert {"timestamp", "trace_id", "correlation_id"} <= body.keys()
    if fault == "aadsts:50076":
        assert json.loads(body["claims"])["access_token"]["capolids"]["essential"] is True
    assert _ms_token_request(sandbox, http, refresh_token).status_code == 200


API_FAULTS = [
    ("unauthorized_401", 401, "authError", "InvalidAuthenticationToken"),
    ("insufficient_scopes_403", 403, "insufficientPermissions", "ErrorAccessDenied"),
    ("domain_policy_403", 403, "domainPolicy", "ErrorAccessDenied"),
    ("rate_limit_429", 429, "rateLimitExceeded", "ApplicationThrottled"),
    ("server_error_500", 500, "backendError", "ErrorInternalServerError"),
    ("unavailable_503", 503, "backendError", "serviceNotAvailable"),
]


@pytest.mark.parametrize("surface", ["send", "read"])
@pytest.mark.parametrize(("fault", "status", "gmail_reason", "graph_code"), API_FAULTS)
def test_api_faults_per_surface(
    sandbox: Sandbox,
    http: requests.Session,
    surface: str,
    fault: str,
    status: int,
    gmail_reason: str,
    graph_code: str,
) -> None:
    google_auth = _bearer(_google_tokens(sandbox, http)["access_token"])
    graph_auth = _bearer(_ms_tokens(sandbox, http)["access_token"])
    sandbox.inject_fault(ALICE, surface, fault, times=1, retry_after=3)  # type: ignore[arg-type]
    sandbox.inject_fault(BOB, surface, fault, times=1, retry_after=3)  # type: ignore[arg-type]

    def gmail() -> requests.Response:
        if surface == "send":
            raw = base64.urlsafe_b64encode(_mime(ALICE, "lead@example.org", "Intro", "<f@sendwell>")).decode()
            return http.post(
                f"{sandbox.gmail_api_url}/users/me/messages/send", json={"raw": raw}, headers=google_auth
            )
        return http.get(f"{sandbox.gmail_api_url}/users/me/messages", headers=google_auth)

    def graph() -> requests.Response:
        if surface == "send":
            raw = base64.b64encode(_mime(BOB, "lead@example.org", "Intro", "<g@sendwell>"))
            return http.post(
                f"{sandbox.graph_api_url}/me/sendMail",
                data=raw,
                headers={**graph_auth, "Content-Type": "text/plain"},
            )
        return http.get(f"{sandbox.graph_api_url}/me/mailFolders/inbox/messages/delta", headers=graph_auth)

    failed_gmail, failed_graph = gmail(), graph()
    assert (failed_gmail.status_code, failed_graph.status_code) == (status, status)
    assert failed_gmail.json()["error"]["errors"][0]["reason"] == gmail_reason
    assert failed_gmail.json()["error"]["code"] == status
    assert failed_graph.json()["error"]["code"] == graph_code
    assert failed_graph.json()["error"]["innerError"]["request-id"]
    if fault == "rate_limit_429":
        assert failed_gmail.headers["Retry-After"] == failed_graph.headers["Retry-After"] == "3"
    assert gmail().ok and graph().ok


def test_html_502_timeout_and_fault_ordering(sandbox: Sandbox, http: requests.Session) -> None:
    auth = _bearer(_google_tokens(sandbox, http)["access_token"])
    profile = f"{sandbox.gmail_api_url}/users/me/profile"
    sandbox.inject_fault(ALICE, "read", "html_502", times=1)
    sandbox.inject_fault(ALICE, "read", "timeout", times=1, hold_seconds=1.0)
    sandbox.inject_fault(ALICE, "read", "server_error_500", times=2)

    bad_gateway = http.get(profile, headers=auth)
    assert bad_gateway.status_code == 502
    assert bad_gateway.headers["Content-Type"].startswith("text/html") and "502" in bad_gateway.text
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        http.get(profile, headers=auth, timeout=0.3)
    assert time.monotonic() - started < 1.0
    assert [http.get(profile, headers=auth).status_code for _ in range(3)] == [500, 500, 200]

    sandbox.inject_fault(ALICE, "read", "unavailable_503")  # until cleared
    assert [http.get(profile, headers=auth).status_code for _ in range(2)] == [503, 503]
    sandbox.clear_faults(ALICE)
    assert http.get(profile, headers=auth).status_code == 200


def test_google_auth_reports_an_injected_reauth_requirement(sandbox: Sandbox, http: requests.Session) -> None:
    tokens = _google_tokens(sandbox, http)
    credentials = google.oauth2.credentials.Credentials(
        None,
        refresh_token=tokens["refresh_token"],
        token_uri=sandbox.google_token_url,
        client_id=GOOGLE_CLIENT_ID,
        client_secret=GOOGLE_SECRET,
    )
    sandbox.inject_fault(ALICE, "token", "invalid_rapt", times=1)
    with pytest.raises(RefreshError, match="Reauthentication is needed"):
        credentials.refresh(Request(session=http))


def test_inject_fault_rejects_what_the_provider_cannot_answer(sandbox: Sandbox) -> None:
    with pytest.raises(ValueError, match="does not apply"):
        sandbox.inject_fault(ALICE, "token", "unauthorized_401")
    with pytest.raises(ValueError, match="does not apply"):
        sandbox.inject_fault(BOB, "send", "aadsts:70008")
    with pytest.raises(ValueError, match="Microsoft"):
        sandbox.inject_fault(ALICE, "token", "aadsts:70008")
    with pytest.raises(ValueError, match="Google"):
        sandbox.inject_fault(BOB, "token", "invalid_rapt")
    with pytest.raises(KeyError):
        sandbox.inject_fault("nobody@example.com", "read", "server_error_500")


# --------------------------------------------------------------------------------------------------
# Control API and inspection


def test_runs_as_its_own_process_driven_by_the_control_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    server = subprocess.Popen(
        [sys.executable, "-m", "local.sandbox", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    try:
        assert server.stdout is not None
        address = json.loads(server.stdout.readline())
        with requests.Session() as http:
            http.verify = address["ca_bundle_path"]
            added = http.post(f"{address['base_url']}/_sandbox/add_microsoft_account", json={"email": BOB})
            assert added.json()["result"]["email"] == BOB
            discovery = http.get(
                f"{address['base_url']}/microsoft/contoso.com/v2.0/.well-known/openid-configuration"
            )
            assert (
                discovery.json()["issuer"]
                == f"https://login.microsoftonline.com/{added.json()['result']['tid']}/v2.0"
            )
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=10) == 0
    assert not Path(address["ca_bundle_path"]).exists()  # its throwaway CA went with it


def test_control_api_drives_the_sandbox_from_another_process(
    sandbox: Sandbox, http: requests.Session
) -> None:
    def control(action: str, **arguments: Any) -> requests.Response:
        return http.post(f"{sandbox.base_url}/_sandbox/{action}", json=arguments)

    added = control("add_google_account", email="dana@gmail.com", name="Dana").json()["result"]
    assert added["email"] == "dana@gmail.com" and added["sub"].isdigit()
    raw = _mime("lead@example.org", "dana@gmail.com", "Hello", "<c1@example.org>")
    message_id = control("deliver_gmail", email="dana@gmail.com", raw_base64=base64.b64encode(raw).decode())
    assert len(message_id.json()["result"]) == 16
    assert (
        control("inject_fault", email="dana@gmail.com", surface="read", fault="timeout", times=1).status_code
        == 200
    )
    assert control("sent_messages", email="dana@gmail.com").json() == {"result": []}
    assert control("request_count", path_prefix="/_sandbox/").json()["result"] == 5

    assert (
        control("inject_fault", email="dana@gmail.com", surface="bogus", fault="timeout").status_code == 400
    )
    assert control("add_google_account", mail="typo").status_code == 400
    assert control("drop_tables").status_code == 404
    assert control("reset").status_code == 200
    assert sandbox.request_count() == 0


BOUNCE = (
    b"From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\r\n"
    b"To: alice@acme-outreach.com\r\n"
    b"Subject: Delivery Status Notification (Failure)\r\n"
    b"Message-ID: <dsn1@mx.google.com>\r\n"
    b"Date: Mon, 02 Mar 2026 09:31:00 +0000\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n'
    b"\r\n"
    b"--b1\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n"
    b"Address not found: your message wasn't delivered to gone@example.org.\r\n"
    b"--b1\r\nContent-Type: message/delivery-status\r\n\r\n"
    b"Reporting-MTA: dns; googlemail.com\r\n\r\n"
    b"Final-Recipient: rfc822; gone@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    b"--b1\r\nContent-Type: text/rfc822-headers\r\n\r\n"
    b"Message-ID: <step1.enr42@sendwell.local>\r\nSubject: Intro\r\n"
    b"--b1--\r\n"
)


def test_bounce_parts_and_request_counts(sandbox: Sandbox, http: requests.Session) -> None:
    auth = _bearer(_google_tokens(sandbox, http)["access_token"])
    before = sandbox.request_count("/gmail/")
    message_id = sandbox.deliver_gmail(ALICE, BOUNCE)

    full = http.get(f"{sandbox.gmail_api_url}/users/me/messages/{message_id}", headers=auth).json()

    assert full["payload"]["mimeType"] == "multipart/report"
    parts = full["payload"]["parts"]
    assert [(p["partId"], p["mimeType"]) for p in parts] == [
        ("0", "text/plain"),
        ("1", "message/delivery-status"),
        ("2", "text/rfc822-headers"),
    ]
    status = base64.urlsafe_b64decode(parts[1]["body"]["data"] + "==")
    assert b"Final-Recipient: rfc822; gone@example.org" in status and b"Status: 5.1.1" in status
    assert full["snippet"].startswith("Address not found")
    assert sandbox.request_count("/gmail/") == before + 1
