"""What a poll costs: provider API calls and AWS requests per idle poll and per new message.

Runs the real poll service against the provider sandbox (real google-auth / msal / requests over
HTTPS) on in-process moto, for a Gmail and an Outlook inbox. (IMAP: bench/bench_imap_poll.py.)

    python bench/bench_poll.py [--messages 50] [--idle-polls 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "layers" / "sendwell"), str(ROOT)]
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
# Outside a Lambda invocation there is no remaining time for the idempotency records to note.
warnings.filterwarnings("ignore", "Couldn't determine the remaining time left")

import boto3  # noqa: E402
import requests  # noqa: E402
from moto import mock_aws  # noqa: E402

from bench.aws_meter import metered  # noqa: E402
from bench.stack import deploy  # noqa: E402
from local.cfn import load_template  # noqa: E402
from local.sandbox import Sandbox  # noqa: E402
from sendwell.adapters.aws import SnsPublisher, SqsAuthFailureReporter, SqsQueue  # noqa: E402
from sendwell.adapters.credentials import CredentialStore  # noqa: E402
from sendwell.adapters.mailboxes import ProviderMailboxes  # noqa: E402
from sendwell.adapters.once import IdempotentRunner  # noqa: E402
from sendwell.config import Settings  # noqa: E402
from sendwell.ids import step_message_id  # noqa: E402
from sendwell.models import InboxStatus, bind_models  # noqa: E402
from sendwell.services.polling import PollContext, poll_inbox  # noqa: E402
from tests.provider_sandbox import ProviderSandbox, mime  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--idle-polls", type=int, default=20)
    args = parser.parse_args()
    template = load_template()
    with mock_aws(), Sandbox() as sandbox:
        session = boto3.Session(region_name="us-east-1")
        deploy(template, session)
        http = requests.Session()
        http.trust_env, http.verify = False, sandbox.ca_bundle_path
        providers = ProviderSandbox(sandbox, http)
        from tests.provider_sandbox import (
            GOOGLE_CLIENT_ID,
            GOOGLE_CLIENT_SECRET,
            MICROSOFT_CLIENT_ID,
            MICROSOFT_CLIENT_SECRET,
            REDIRECT_URI,
        )

        sandbox.add_client("google", GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET, [REDIRECT_URI])
        sandbox.add_client("microsoft", MICROSOFT_CLIENT_ID, MICROSOFT_CLIENT_SECRET, [REDIRECT_URI])
        settings = providers.settings(Settings.from_env(os.environ))
        models = bind_models(settings.tables, region="us-east-1")
        # As the poll function builds it: opened credentials and data keys cached per warm container.
        store = CredentialStore.with_kms(models, session.client("kms"), settings.credentials_key_id)
        context = PollContext(
            models=models,
            mailboxes=ProviderMailboxes(settings, store, secrets=providers.secrets),
            auth_failures=SqsAuthFailureReporter(SqsQueue(session.client("sqs"), settings.auth_failure_queue_url)),
            events=SnsPublisher(session.client("sns"), settings.inbox_events_topic_arn),
            once=IdempotentRunner(settings.idempotency_table, boto3_client=session.client("dynamodb")),
        )
        now = datetime.now(UTC)
        print(
            f"{'provider':<9}{'per idle poll: API calls':>26}{'AWS requests':>14}"
            f"{'per new message: API calls':>30}{'AWS requests':>14}"
        )
        for provider, address, connect, deliver, prefix in (
            ("gmail", "ana@gmail.bench", providers.connect_google, sandbox.deliver_gmail, "/gmail/"),
            ("outlook", "olga@contoso.bench", providers.connect_microsoft, sandbox.deliver_graph, "/graph/"),
        ):
            inbox_id = f"ibx_{provider}"
            inbox = models.inbox(
                inbox_id=inbox_id,
                provider=provider,
                address=address,
                owner_email=address,
                created_at=now - timedelta(days=1),
                status=InboxStatus.CONNECTED.value,
            )
            inbox.save()
            store.seed(inbox, connect(address))
            for index in range(args.messages):
                enrollment_id = f"enr_{provider}_{index}"
                models.enrollment(
                    enrollment_id=enrollment_id,
                    campaign_id="cmp",
                    inbox_id=inbox_id,
                    email=f"p{index}@client.example",
                    fields={},
                    created_at=now,
                    step_index=1,
                    due_inbox=inbox_id,
                    due_at=int((now + timedelta(days=2)).timestamp()),
                ).save()
            poll_inbox(context, models.inbox.get(inbox_id), now=now)  # the first poll sets the cursor
            calls_before = sandbox.request_count(prefix)
            with metered() as idle:
                for _ in range(args.idle_polls):
                    poll_inbox(context, models.inbox.get(inbox_id), now=now)
            idle_calls = (sandbox.request_count(prefix) - calls_before) / args.idle_polls
            idle_aws = sum(idle.requests.values()) / args.idle_polls
            for index in range(args.messages):
                ours = step_message_id(f"enr_{provider}_{index}", 0, address)
                deliver(address, mime(f"p{index}@client.example", address, "Re: hello", in_reply_to=ours))
            calls_before = sandbox.request_count(prefix)
            with metered() as busy:
                result = poll_inbox(context, models.inbox.get(inbox_id), now=now)
                while result.fetched:  # a poll takes at most one page; drain the rest
                    result = poll_inbox(context, models.inbox.get(inbox_id), now=now)
            replied = sum(1 for e in models.enrollment.scan() if e.inbox_id == inbox_id and e.state == "replied")
            assert replied == args.messages, f"{provider}: {replied} of {args.messages} replies found"
            per_message_calls = (sandbox.request_count(prefix) - calls_before) / args.messages
            per_message_aws = sum(busy.requests.values()) / args.messages
            print(
                f"{provider:<9}{idle_calls:>26.2f}{idle_aws:>14.2f}{per_message_calls:>30.2f}{per_message_aws:>14.2f}"
            )
            # The inbox row is written at each poll: with the sign-in in its own item, one unit.
            print(
                f"{'':<9}per idle poll: {float(idle.write_units) / args.idle_polls:.2f} DynamoDB write units, "
                f"{idle.count('kms.') / args.idle_polls:.2f} KMS requests"
            )
        print(
            "(an idle poll also reads the inbox row once; provider calls exclude token refreshes, which"
            " happen about once an hour)"
        )


if __name__ == "__main__":
    main()
