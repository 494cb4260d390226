"""`make run`: all of sendwell on this machine, telling the story it exists for.

It starts the embedded AWS (moto), the real handlers behind a local HTTP API, a Google/Microsoft
sandbox, a real SMTP server (and a real Dovecot when installed) for a custom inbox; then

1. connects a Gmail, an Outlook and a custom inbox through the same reconnect-link flow owners use;
2. imports prospects into a campaign and lets the schedules send its first steps (each send shows);
3. revokes the Gmail grant ("the password was changed"): the next send or poll disconnects the
   inbox once, the notices land as .eml files in local-outbox/, the SNS event shows;
4. a prospect replies while the inbox is down; the reconnect link from the notice is printed, and
   opened (``--auto``, or by you in a browser), the catch-up poll stops that prospect's follow-up
   and the backlog resumes paced.

    python -m local.run [--speed 30] [--auto] [--api-port 3000] [--exit-after-story]
"""

from __future__ import annotations

import argparse
import email
import email.policy
import html
import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import boto3
import requests

from local.imapserver import DovecotServer, dovecot_binary
from local.mailserver import SmtpTestServer
from local.sandbox import Sandbox
from local.stack import LocalStack, describe
from sendwell.config import Settings
from sendwell.failures import Provider
from sendwell.models import Models, bind_models
from sendwell.services import activity, campaigns, inboxes, links

ROOT = Path(__file__).resolve().parent.parent
OUTBOX = ROOT / "local-outbox"
WORKSPACE = "Acme Outreach (demo)"
ADMIN = "admin@acme.example"
GOOGLE_CLIENT = ("sendwell-demo.apps.googleusercontent.com", "demo-google-secret")
MICROSOFT_CLIENT = ("5b0f8f3e-1d2c-4e5f-9a8b-7c6d5e4f3a2b", "demo-microsoft-secret")
GMAIL, OUTLOOK, CUSTOM = "alice@gmail.example", "olivia@contoso.example", "carl@mail.acme.example"
CUSTOM_PASSWORD = "a-demo-password-for-carl"
PROSPECTS = """email,first_name,company
dana@client.example,Dana,Client Co
erik@northwind.example,Erik,Northwind
fatima@fabrikam.example,Fatima,Fabrikam
gustav@tailspin.example,Gustav,Tailspin Toys
hana@wingtip.example,Hana,Wingtip
ivan@adatum.example,Ivan,Adatum
"""
_FORM = re.compile(r'<form method="post" action="([^"]+)"')
_HIDDEN = re.compile(r'<input type="hidden" name="(\w+)" value="([^"]*)"')
_SCOPE = re.compile(r'type="checkbox" name="scope" value="([^"]+)"')


def say(text: str) -> None:
    print(f"{datetime.now(UTC):%H:%M:%S}  {text}", flush=True)


@dataclass
class Demo:
    stack: LocalStack
    sandbox: Sandbox
    smtp: SmtpTestServer
    imap: DovecotServer | None
    settings: Settings
    models: Models
    browser: requests.Session
    inbox_ids: dict[str, str] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    # ------------------------------------------------------------------ the flow people click through
    def open_link(self, url: str, *, account: str | None = None, password: str | None = None) -> str:
        """Follow a reconnect link as its owner would (the same HTTP requests a browser makes).

        Returns the text of the page it ends on.
        """
        page = self.browser.get(url, timeout=30)  # /r/<token> -> cookie -> 303 to /connect
        action, fields = _form(page.text)
        if password is not None:
            done = self.browser.post(urljoin(page.url, action), data={**fields, "password": password}, timeout=60)
            return _text(done.text)
        answer = self.browser.post(urljoin(page.url, action), data=fields, allow_redirects=False, timeout=30)
        consent = self.browser.get(answer.headers["Location"], timeout=30)  # the provider's sign-in page
        consent_action, consent_fields = _form(consent.text)
        form = {**consent_fields, "account": account, "decision": "allow", "scope": _SCOPE.findall(consent.text)}
        back = self.browser.post(urljoin(consent.url, consent_action), data=form, allow_redirects=False, timeout=30)
        done = self.browser.get(back.headers["Location"], timeout=60)  # our OAuth callback
        return _text(done.text)

    def connect_inboxes(self) -> None:
        now = datetime.now(UTC)
        specs: list[tuple[Provider, str, str, dict[str, Any]]] = [
            (Provider.GMAIL, GMAIL, "Alice (Gmail)", {}),
            (Provider.OUTLOOK, OUTLOOK, "Olivia (Microsoft 365)", {}),
            (
                Provider.CUSTOM,
                CUSTOM,
                "Carl (own mail server)",
                {
                    "smtp_host": self.smtp.host,
                    "smtp_port": self.smtp.port,
                    "smtp_security": "none",
                    "imap_host": self.imap.host if self.imap else "127.0.0.1",
                    "imap_port": self.imap.port if self.imap else 9,
                    "imap_security": "none",
                },
            ),
        ]
        for provider, address, name, extra in specs:
            inbox = inboxes.create_inbox(
                self.models,
                inboxes.NewInbox(
                    provider=provider,
                    address=address,
                    owner_email=address,
                    display_name=name,
                    daily_cap=40,
                    min_gap_seconds=20,
                    **extra,
                ),
                now=now,
                created_by=ADMIN,
            )
            inbox.update(actions=[self.models.inbox.jitter_seconds.set(5)])
            self.inbox_ids[address] = inbox.inbox_id
            issued = links.create_link(self.models, inbox_id=inbox.inbox_id, created_by=ADMIN, now=now)
            url = f"{self.settings.public_base_url}/r/{issued.token}"
            result = self.open_link(url, account=address, password=CUSTOM_PASSWORD if extra else None)
            say(f"signed in {address:<28} {provider.value:<8} -> {result[:70]}")
        # The reconnect worker finishes each one (its first poll, then connected), off the request.
        self.wait_for(
            "the reconnect worker has connected every inbox",
            lambda: all(self.models.inbox.get(i).status == "connected" for i in self.inbox_ids.values()),
        )

    def seed_campaign(self) -> str:
        spec = campaigns.CampaignSpec(
            name="Q4 outreach",
            inbox_ids=list(self.inbox_ids.values()),
            steps=[
                campaigns.StepSpec(
                    subject="Quick question, {{ first_name }}",
                    text="Hi {{ first_name }},\n\nis {{ company }} the right place to talk outbound?\n",
                ),
                campaigns.StepSpec(subject="-", text="Bumping this, {{ first_name }}.\n", delay_days=1 / 1440),
                campaigns.StepSpec(subject="-", text="Last note from me.\n", delay_days=2 / 1440),
            ],
            days=(0, 1, 2, 3, 4, 5, 6),
            start="00:00",
            end="23:59",
            timezone="UTC",
        )
        now = datetime.now(UTC)
        campaign = campaigns.create_campaign(self.models, spec, now=now, actor=ADMIN)
        result = campaigns.import_prospects(self.models, campaign.campaign_id, PROSPECTS, now=now, actor=ADMIN)
        say(f"campaign {campaign.campaign_id}: {result.imported} prospects, 3 steps, over 3 inboxes")
        return campaign.campaign_id

    # ------------------------------------------------------------------ watching
    def watch(self, campaign_id: str) -> None:
        """Print every send, inbox event and campaign log entry as it happens."""
        seen_sent: dict[str, int] = {}
        seen_log: set[str] = set()
        sns_queue = self._subscribe_to_events()
        sqs = boto3.client("sqs")
        while not self.stop.wait(0.5):
            for address, count in (
                (GMAIL, self.sandbox.sent_messages(GMAIL)),
                (OUTLOOK, self.sandbox.sent_messages(OUTLOOK)),
                (CUSTOM, [m.data for m in self.smtp.received]),
            ):
                for raw in count[seen_sent.get(address, 0) :]:
                    parsed = email.message_from_bytes(raw, policy=email.policy.default)
                    say(f"SENT  {address} -> {parsed['To']}: {parsed['Subject']}")
                seen_sent[address] = len(count)
            for message in sqs.receive_message(QueueUrl=sns_queue, MaxNumberOfMessages=10).get("Messages", []):
                body = json.loads(message["Body"])
                say(f"SNS   {body.get('type')}: {json.dumps({k: body[k] for k in sorted(body) if k != 'type'})}")
                sqs.delete_message(QueueUrl=sns_queue, ReceiptHandle=message["ReceiptHandle"])
            for entry in reversed(activity.recent(self.models, activity.campaign_key(campaign_id), limit=20)):
                key = f"{entry.at}{entry.kind}{entry.message}"
                if key not in seen_log:
                    seen_log.add(key)
                    say(f"LOG   {entry.kind}: {entry.message}")

    def _subscribe_to_events(self) -> str:
        sqs, sns = boto3.client("sqs"), boto3.client("sns")
        url: str = sqs.create_queue(QueueName="demo-inbox-events")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(
            TopicArn=self.settings.inbox_events_topic_arn,
            Protocol="sqs",
            Endpoint=arn,
            Attributes={"RawMessageDelivery": "true"},
        )
        return url

    def wait_for(self, what: str, condition: Callable[[], bool], timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the demo waited {timeout:.0f} s for {what}")
            if self.stop.wait(0.5):
                raise KeyboardInterrupt
        say(f"...{what}")

    # ------------------------------------------------------------------ the story
    def story(self, *, auto: bool) -> None:
        gmail_inbox = self.inbox_ids[GMAIL]
        self.wait_for(
            "every inbox has sent",
            lambda: bool(
                self.sandbox.sent_messages(GMAIL) and self.sandbox.sent_messages(OUTLOOK) and self.smtp.received
            ),
        )
        earlier = set(_notices())  # the confirmations of the first connections
        say("STORY Alice changes her Google password: the grant sendwell holds is revoked")
        self.sandbox.revoke_google_grant(GMAIL)
        self.sandbox.expire_access_tokens(GMAIL)
        # One notice to the admin and one to the owner (here the inbox address itself).
        self.wait_for(
            "the Gmail inbox is disconnected and its notices are out",
            lambda: self.models.inbox.get(gmail_inbox).status == "disconnected" and len(set(_notices()) - earlier) >= 2,
        )
        inbox = self.models.inbox.get(gmail_inbox)
        say(f"STORY status={inbox.status} reason={inbox.status_reason!r}")
        notices = sorted(set(_notices()) - earlier)
        for path in notices:
            say(f"NOTICE {path.relative_to(ROOT)}")
        prospect = next(e for e in self.models.enrollment.scan() if e.inbox_id == gmail_inbox and e.step_index >= 1)
        our_id = f"<sw.{prospect.enrollment_id}.0@{GMAIL.split('@')[1]}>"
        reply = (
            f"From: {prospect.email}\r\nTo: {GMAIL}\r\nSubject: Re: Quick question\r\n"
            f"Date: {email.utils.format_datetime(datetime.now(UTC))}\r\nMessage-ID: <r1@client.example>\r\n"
            f"In-Reply-To: {our_id}\r\nReferences: {our_id}\r\n\r\nYes, let's talk next week.\r\n"
        )
        self.sandbox.deliver_gmail(GMAIL, reply.encode(), thread_id=prospect.thread_id)
        say(f"STORY {prospect.email} replies while the inbox is down")
        link = _link_in(next(path for path in notices if path.name.endswith(f"-{GMAIL}.eml")))
        say(f"STORY the reconnect link from the notice: {link}")
        if not auto:
            say(
                "STORY open it in a browser to reconnect (the sandbox's sign-in page uses a throwaway "
                "certificate: accept it), or run `make run ARGS=--auto`"
            )
            self.wait_for(
                "the Gmail inbox is connected again",
                lambda: self.models.inbox.get(gmail_inbox).status == "connected",
                timeout=3600,
            )
        else:
            self.sandbox.clear_faults(GMAIL)
            say(f"STORY reconnecting headless: {self.open_link(link, account=GMAIL)[:100]}")
            self.wait_for(
                "the reconnect worker has caught up and connected the Gmail inbox",
                lambda: self.models.inbox.get(gmail_inbox).status == "connected",
            )
        replied = self.models.enrollment.get(prospect.enrollment_id)
        say(f"STORY after the catch-up poll {prospect.email} is {replied.state}: no follow-up will go")
        pending = [e for e in self.models.enrollment.scan() if e.inbox_id == gmail_inbox and e.due_at]
        say(f"STORY {len(pending)} waiting emails go out paced: one per gap, within the inbox's cap and window")


def _form(page: str) -> tuple[str, dict[str, str]]:
    action = _FORM.search(page)
    if action is None:
        raise RuntimeError(f"expected a form on the page, got: {_text(page)[:200]}")
    return html.unescape(action.group(1)), {name: html.unescape(value) for name, value in _HIDDEN.findall(page)}


def _text(page: str) -> str:
    heading = re.search(r"<h1[^>]*>(.*?)</h1>", page, re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", heading.group(1) if heading else page)).strip()


def _notices() -> list[Path]:
    return sorted(OUTBOX.glob("*.eml"))


def _link_in(path: Path) -> str:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    body = message.get_body(("plain",))
    text = body.get_content() if body is not None else ""
    found = re.search(r"https?://\S+/r/[A-Za-z0-9_-]+", text)
    if found is None:
        raise RuntimeError(f"no reconnect link in {path.name}")
    return found.group(0)


def sandbox_environment(sandbox: Sandbox) -> dict[str, str]:
    return {
        "SENDWELL_GOOGLE_CLIENT_ID": GOOGLE_CLIENT[0],
        "SENDWELL_MICROSOFT_CLIENT_ID": MICROSOFT_CLIENT[0],
        "SENDWELL_GOOGLE_AUTH_URL": sandbox.google_auth_url,
        "SENDWELL_GOOGLE_TOKEN_URL": sandbox.google_token_url,
        "SENDWELL_GOOGLE_CERTS_URL": sandbox.google_certs_url,
        "SENDWELL_GMAIL_API_URL": sandbox.base_url,  # sendwell adds /gmail/v1, as on googleapis.com
        "SENDWELL_GRAPH_API_URL": f"{sandbox.base_url}/graph",  # sendwell adds /v1.0
        "SENDWELL_MICROSOFT_AUTHORITY": sandbox.microsoft_authority(),
        "SENDWELL_CA_BUNDLE": sandbox.ca_bundle_path,
        "SENDWELL_LOCAL_OUTBOX_DIR": str(OUTBOX),
    }


@contextmanager
def running(args: argparse.Namespace) -> Iterator[Demo]:
    for old in _notices():
        old.unlink()
    with ExitStack() as stack:
        sandbox = stack.enter_context(Sandbox())
        smtp = stack.enter_context(SmtpTestServer(users={CUSTOM: CUSTOM_PASSWORD}))
        imap = stack.enter_context(DovecotServer()) if dovecot_binary() else None
        if imap is not None:
            imap.add_user(CUSTOM, CUSTOM_PASSWORD)
        local = stack.enter_context(
            LocalStack(
                api_port=args.api_port,
                speed=args.speed,
                extra_env=sandbox_environment(sandbox),
                parameters={
                    "AdminEmails": ADMIN,
                    "SenderAddress": "notices@acme.example",
                    "SesIdentity": "acme.example",
                    "WorkspaceName": WORKSPACE,
                },
            )
        )
        settings = Settings.from_env(os.environ)
        ssm = boto3.client("ssm")
        ssm.put_parameter(Name=settings.google.secret_parameter, Value=GOOGLE_CLIENT[1], Type="SecureString")
        ssm.put_parameter(Name=settings.microsoft.secret_parameter, Value=MICROSOFT_CLIENT[1], Type="SecureString")
        sandbox.add_client("google", GOOGLE_CLIENT[0], GOOGLE_CLIENT[1], [f"{local.api_url}/oauth/callback/google"])
        sandbox.add_client(
            "microsoft", MICROSOFT_CLIENT[0], MICROSOFT_CLIENT[1], [f"{local.api_url}/oauth/callback/microsoft"]
        )
        sandbox.add_google_account(GMAIL, name="Alice Archer")
        sandbox.add_microsoft_account(OUTLOOK, name="Olivia Ortiz")
        browser = requests.Session()
        browser.trust_env = False  # trust the sandbox's throwaway CA whatever the environment says
        browser.verify = sandbox.ca_bundle_path
        print("sendwell is running locally:")
        print(describe(local))
        print(f"  provider sandbox  {sandbox.base_url}   (Google and Microsoft sign-in, Gmail and Graph)")
        print(
            f"  SMTP inbox        {smtp.host}:{smtp.port}"
            + (
                f"   IMAP {imap.host}:{imap.port}"
                if imap
                else "   (no Dovecot installed: custom-inbox replies are not polled)"
            )
        )
        print(f"  notices (.eml)    {OUTBOX}")
        print(f"  schedules run {args.speed:g}x faster than deployed; Ctrl-C stops everything\n", flush=True)
        yield Demo(local, sandbox, smtp, imap, settings, bind_models(settings.tables, region=settings.region), browser)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--speed", type=float, default=30.0, help="run the schedules this many times faster")
    parser.add_argument("--api-port", type=int, default=int(os.environ.get("SENDWELL_API_PORT", "3000")))
    parser.add_argument("--auto", action="store_true", help="reconnect through the link headless")
    parser.add_argument("--no-story", action="store_true", help="only start the stack and seed the demo")
    parser.add_argument("--exit-after-story", action="store_true", help="stop once the story is told")
    args = parser.parse_args(argv)
    with running(args) as demo:
        signal.signal(signal.SIGTERM, lambda *_: demo.stop.set())
        demo.connect_inboxes()
        campaign_id = demo.seed_campaign()
        watcher = threading.Thread(target=demo.watch, args=(campaign_id,), daemon=True)
        watcher.start()
        try:
            if not args.no_story:
                demo.story(auto=args.auto)
                say("STORY told. sendwell keeps running; Ctrl-C stops it.")
            if not args.exit_after_story:
                while not demo.stop.wait(1):
                    pass
        except KeyboardInterrupt:
            pass
        finally:
            demo.stop.set()
            watcher.join(timeout=5)
            say("stopping...")
    say("stopped cleanly")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
