"""How long the reconnect pages take on the server, warm and in process.

The real handler on in-process moto, the provider sandbox over HTTPS. ``GET /connect`` (the landing
page: session, link and inbox reads, one render) and ``GET /oauth/callback/google`` (state check,
code exchange, ID-token check, Gmail profile, the encrypted save, the catch-up poll, backlog
release, notices). Only the handler call is timed; the person's clicks at the provider are not.
The reconnect function's cold start, with every other function's: bench/bench_cold_start.py.

    python bench/bench_reconnect.py [--pages 200] [--callbacks 40]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
import uuid
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "layers" / "sendwell"), str(ROOT)]
BASE_URL = "https://sendwell.bench.example"
os.environ.update(
    AWS_ACCESS_KEY_ID="bench",
    AWS_SECRET_ACCESS_KEY="bench",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_REGION="us-east-1",
    POWERTOOLS_TRACE_DISABLED="true",
    POWERTOOLS_METRICS_DISABLED="true",
    POWERTOOLS_LOG_LEVEL="ERROR",
)
os.environ.pop("AWS_ENDPOINT_URL", None)

import boto3  # noqa: E402
import requests  # noqa: E402
from moto import mock_aws  # noqa: E402

from local.cfn import create_resources, function_environment, load_template  # noqa: E402
from local.sandbox import Sandbox  # noqa: E402
from local.stack import LambdaContext, http_event, http_routes, load_handler  # noqa: E402
from sendwell.adapters.credentials import CredentialStore  # noqa: E402
from sendwell.config import Settings  # noqa: E402
from sendwell.models import InboxStatus, Models, bind_models, new_step  # noqa: E402
from sendwell.services import links  # noqa: E402

CLIENT_ID = "1234567890-bench.apps.googleusercontent.com"
CLIENT_SECRET = "GOCSPX-bench-secret"
ADDRESS = "alice@acme-outreach.com"
INBOX = "ibx_bench"


class Browserless:
    """Requests as API Gateway v2 events for the real handler; cookies kept like a browser's."""

    def __init__(self, handler: Callable[[dict[str, Any], Any], Any], template: dict[str, Any]) -> None:
        self.handler = handler
        self.routes = [r for r in http_routes(template) if r.function == "ReconnectApiFunction"]
        self.cookies: dict[str, str] = {}

    def request(self, method: str, url: str, form: dict[str, str] | None = None) -> tuple[dict[str, Any], float]:
        split = urlsplit(url)
        route, params = next(
            (r, m.groupdict()) for r in self.routes if r.method == method and (m := r.pattern.match(split.path))
        )
        headers = {"host": urlsplit(BASE_URL).netloc}
        if self.cookies:
            headers["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = urlencode(form).encode() if form else b""
        if body:
            headers["content-type"] = "application/x-www-form-urlencoded"
        target = split.path + (f"?{split.query}" if split.query else "")
        event = http_event(route, method, target, headers, body, params, headers["host"])
        context = LambdaContext(function_name="ReconnectApiFunction", aws_request_id=uuid.uuid4().hex)
        started = time.perf_counter()
        result: dict[str, Any] = self.handler(event, context)
        elapsed = time.perf_counter() - started
        for cookie in result.get("cookies") or []:
            name, _, rest = cookie.partition("=")
            if "Max-Age=0" in cookie:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = rest.split(";", 1)[0]
        return result, elapsed


def consent(http: requests.Session, auth_url: str) -> str:
    """Allow everything on the sandbox's consent page as Alice; the callback URL the browser follows."""
    page = http.get(auth_url, timeout=10)
    action = re.search(r'<form method="post" action="([^"]+)"', page.text)
    request_id = re.search(r'name="request_id" value="([^"]+)"', page.text)
    if not (action and request_id):
        raise RuntimeError(f"no consent form: {page.status_code}")
    form = {
        "request_id": request_id[1],
        "account": ADDRESS,
        "scope": re.findall(r'name="scope" value="([^"]+)"', page.text),
        "decision": "allow",
    }
    answer = http.post(urljoin(page.url, action[1]), data=form, allow_redirects=False, timeout=10)
    location: str = answer.headers["Location"]
    return location


def disconnect(models: Models) -> None:
    """Put the inbox back the way a lost grant leaves it (not timed)."""
    inbox = models.inbox.get(INBOX)
    table = models.inbox
    inbox.update(
        actions=[
            table.status.set(InboxStatus.DISCONNECTED.value),
            table.status_reason.set("the password was changed or access was revoked"),
            table.failed_at.set(datetime.now(UTC) - timedelta(hours=6)),
        ]
    )


def percentiles(seconds: list[float]) -> tuple[float, float]:
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p99 * 1000


def server_times(pages: int, callbacks: int) -> dict[str, list[float]]:
    template = load_template()
    with Sandbox() as sandbox, mock_aws(), requests.Session() as http:
        http.trust_env = False
        http.verify = sandbox.ca_bundle_path
        session = boto3.Session(region_name="us-east-1")
        parameters = {"AdminEmails": "admin@agency.example", "SenderAddress": "notices@agency.example"}
        parameters |= {"SesIdentity": "agency.example", "WorkspaceName": "Acme Outreach"}
        stack = create_resources(template, session, prefix="bench", parameters=parameters)
        session.client("ses").verify_domain_identity(Domain="agency.example")
        env = function_environment(template, "ReconnectApiFunction", stack) | {
            "SENDWELL_PUBLIC_BASE_URL": BASE_URL,
            "SENDWELL_GOOGLE_CLIENT_ID": CLIENT_ID,
            "SENDWELL_GOOGLE_AUTH_URL": sandbox.google_auth_url,
            "SENDWELL_GOOGLE_TOKEN_URL": sandbox.google_token_url,
            "SENDWELL_GOOGLE_CERTS_URL": sandbox.google_certs_url,
            "SENDWELL_GMAIL_API_URL": sandbox.base_url,
            "SENDWELL_CA_BUNDLE": sandbox.ca_bundle_path,
        }
        os.environ.update(env, POWERTOOLS_LOG_LEVEL="ERROR")  # the handlers' INFO lines would drown the figures
        session.client("ssm").put_parameter(
            Name=env["SENDWELL_GOOGLE_CLIENT_SECRET_PARAMETER"], Value=CLIENT_SECRET, Type="SecureString"
        )
        sandbox.add_client("google", CLIENT_ID, CLIENT_SECRET, [f"{BASE_URL}/oauth/callback/google"])
        alice = sandbox.add_google_account(ADDRESS, name="Alice Archer")
        settings = Settings.from_env(os.environ)
        models = bind_models(settings.tables, region="us-east-1")
        store = CredentialStore.with_kms(models, session.client("kms"), settings.credentials_key_id)
        inbox = models.inbox(
            inbox_id=INBOX,
            provider="gmail",
            address=ADDRESS,
            owner_email="dana@client.example",
            created_at=datetime.now(UTC) - timedelta(days=30),
            identity_issuer="https://accounts.google.com",
            identity_subject=alice.sub,
        )
        inbox.save()
        store.seed(inbox, {"refresh_token": "1//0-old"})
        models.campaign(
            campaign_id="cmp_bench",
            name="Q4 outreach",
            created_at=datetime.now(UTC),
            inbox_ids=[INBOX],
            steps=[new_step(subject="Hi", text="Hello {{ first_name }}", html=None, delay_seconds=0, new_thread=False)],
        ).save()
        disconnect(models)
        handler = load_handler("ReconnectApiFunction", template)

        def opened() -> tuple[Browserless, str]:
            issued = links.create_link(models, inbox_id=INBOX, created_by="admin@agency.example", now=datetime.now(UTC))
            visitor = Browserless(handler, template)
            visitor.request("GET", f"{BASE_URL}/r/{issued.token}")
            page, _ = visitor.request("GET", f"{BASE_URL}/connect")
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', page["body"])
            if csrf is None:
                raise RuntimeError(f"no landing page: {page['statusCode']}")
            return visitor, csrf[1]

        visitor, _ = opened()
        visitor.request("GET", f"{BASE_URL}/connect")  # warm: first render compiles the templates
        landing = [visitor.request("GET", f"{BASE_URL}/connect")[1] for _ in range(pages)]

        callback_times: list[float] = []
        for n in range(callbacks + 1):
            visitor, csrf = opened()
            start, _ = visitor.request("POST", f"{BASE_URL}/connect/oauth", {"csrf_token": csrf})
            back = consent(http, start["headers"]["Location"])
            result, elapsed = visitor.request("GET", back)
            if result["statusCode"] != 200:
                raise RuntimeError(f"callback answered {result['statusCode']}")
            if n:  # the first one is the warm-up (msal-free here, but certificates and templates load)
                callback_times.append(elapsed)
            disconnect(models)
        return {"landing page (GET /connect)": landing, "OAuth callback (GET /oauth/callback/google)": callback_times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--callbacks", type=int, default=40)
    arguments = parser.parse_args()
    # The landing page records no metric of its own, and Powertools says so on every request.
    warnings.filterwarnings("ignore", message="No application metrics to publish")

    print("server time, warm, in process (moto for AWS, the sandbox over HTTPS for Google)")
    for name, seconds in server_times(arguments.pages, arguments.callbacks).items():
        p50, p99 = percentiles(seconds)
        print(f"  {name:<46} n={len(seconds):<4} p50 {p50:7.1f} ms   p99 {p99:7.1f} ms")


if __name__ == "__main__":
    main()
