"""How long the reconnect pages take on the server, and what the reconnect function costs at cold start.

1. Server time, warm and in process: the real handler on in-process moto, the provider sandbox over
   HTTPS. ``GET /connect`` (the landing page: session, link and inbox reads, one render) and
   ``GET /oauth/callback/google`` (state check, code exchange, ID-token check, Gmail profile, the
   encrypted save, the catch-up poll, backlog release, notices). Only the handler call is timed;
   the person's clicks at the provider are not.
2. Cold start: the time to import the reconnect function's module in a fresh interpreter, against a
   bare handler that imports only boto3 (and makes one client), measured alternately in the same run.
   The ratio is the figure to read; absolute times depend on the machine.

    python bench/bench_reconnect.py [--pages 200] [--callbacks 40] [--imports 7]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
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
BARE_HANDLER = """\
import boto3

CLIENT = boto3.client("dynamodb", region_name="us-east-1")


def handler(event, context):
    return {"statusCode": 200, "body": "ok"}
"""


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


def import_seconds(module_dir: Path, module: str, env: dict[str, str]) -> float:
    """Import ``module`` in a fresh interpreter; the import alone is timed, inside that process."""
    code = textwrap.dedent(
        f"""
        import sys, time
        sys.path[:0] = [{str(module_dir)!r}, {str(ROOT / "layers" / "sendwell")!r}]
        started = time.perf_counter()
        import {module}
        print(time.perf_counter() - started)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"importing {module} failed:\n{done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def cold_starts(repeats: int) -> dict[str, list[float]]:
    template = load_template()
    resources = template["Resources"]
    names = {logical_id: f"bench-{logical_id}" for logical_id in resources}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SENDWELL_")},
        "SENDWELL_PUBLIC_BASE_URL": BASE_URL,
        "SENDWELL_SENDER_ADDRESS": "notices@agency.example",
        "SENDWELL_INBOXES_TABLE": names["InboxesTable"],
        "SENDWELL_CAMPAIGNS_TABLE": names["CampaignsTable"],
        "SENDWELL_ENROLLMENTS_TABLE": names["EnrollmentsTable"],
        "SENDWELL_LINKS_TABLE": names["LinksTable"],
        "SENDWELL_SESSIONS_TABLE": names["SessionsTable"],
        "SENDWELL_ACTIVITY_TABLE": names["ActivityTable"],
        "SENDWELL_SUPPRESSIONS_TABLE": names["SuppressionsTable"],
        "SENDWELL_IDEMPOTENCY_TABLE": names["IdempotencyTable"],
        "SENDWELL_SEND_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/send.fifo",
        "SENDWELL_AUTH_FAILURE_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/auth",
        "SENDWELL_RECONNECT_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/reconnect",
        "SENDWELL_INBOX_EVENTS_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:inbox-events",
        "SENDWELL_CREDENTIALS_KEY_ID": "alias/bench",
        "SENDWELL_GOOGLE_CLIENT_ID": CLIENT_ID,
        "SENDWELL_MICROSOFT_CLIENT_ID": "7d1f3b20-55c4-4f0e-8a3b-2c9e6d4f1a77",
    }
    reconnect_dir = ROOT / "functions" / "reconnect_api"
    times: dict[str, list[float]] = {"bare handler (boto3 only)": [], "reconnect function": []}
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "bare_app.py").write_text(BARE_HANDLER)
        for _ in range(repeats):  # alternate, so drift in the machine's speed hits both alike
            times["bare handler (boto3 only)"].append(import_seconds(Path(folder), "bare_app", env))
            times["reconnect function"].append(import_seconds(reconnect_dir, "reconnect_api_app", env))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--callbacks", type=int, default=40)
    parser.add_argument("--imports", type=int, default=7)
    arguments = parser.parse_args()
    # The landing page records no metric of its own, and Powertools says so on every request.
    warnings.filterwarnings("ignore", message="No application metrics to publish")

    print("server time, warm, in process (moto for AWS, the sandbox over HTTPS for Google)")
    for name, seconds in server_times(arguments.pages, arguments.callbacks).items():
        p50, p99 = percentiles(seconds)
        print(f"  {name:<46} n={len(seconds):<4} p50 {p50:7.1f} ms   p99 {p99:7.1f} ms")

    print("cold start: module import in a fresh interpreter (median)")
    imports = cold_starts(arguments.imports)
    bare = statistics.median(imports["bare handler (boto3 only)"])
    for name, seconds in imports.items():
        median = statistics.median(seconds)
        print(f"  {name:<46} {median * 1000:7.1f} ms   {median / bare:4.1f}x the bare handler")


if __name__ == "__main__":
    main()
