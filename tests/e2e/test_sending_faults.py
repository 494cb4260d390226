"""Provider faults at send time, through the real Gmail adapter and the sandbox: a 429 pauses the
inbox for exactly the time it names; 5xx, HTML 502 pages and timeouts retry and never disconnect."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sendwell.models import InboxStatus
from sendwell.services.sending import Outcome, RetryLater
from tests.deployment import Deployment
from tests.provider_sandbox import ProviderSandbox, SendWorld

ALICE = "alice.archer@gmail.com"


@pytest.fixture
def gmail(aws: Deployment, providers: ProviderSandbox) -> SendWorld:
    return SendWorld(aws, providers, provider="gmail", address=ALICE, credentials=providers.connect_google(ALICE))


def test_a_429_pauses_the_inbox_for_its_retry_after(
    gmail: SendWorld, aws: Deployment, providers: ProviderSandbox
) -> None:
    gmail.enroll("enr_429", "dana@client.example")
    providers.sandbox.inject_fault(ALICE, "send", "rate_limit_429", times=1, retry_after=120)
    assert gmail.send("enr_429", 0) is Outcome.INBOX_UNAVAILABLE
    inbox = gmail.inbox()
    assert inbox.status == InboxStatus.CONNECTED
    assert inbox.rate_limited_until is not None
    paused_for = (inbox.rate_limited_until - gmail.start).total_seconds()
    assert 110 <= paused_for <= 125  # the provider's Retry-After (120 s), give or take the request time
    assert aws.queue_messages("AuthFailureQueue") == []
    assert providers.sandbox.sent_messages(ALICE) == []
    # Before the pause ends the inbox can't send; after it, the step goes.
    assert gmail.send("enr_429", 0, later=timedelta(seconds=60)) is Outcome.INBOX_UNAVAILABLE
    assert gmail.send("enr_429", 0, later=timedelta(seconds=130)) is Outcome.SENT


@pytest.mark.parametrize("fault", ["server_error_500", "unavailable_503", "html_502", "timeout"])
def test_transient_faults_retry_and_never_report_auth(
    fault: str, gmail: SendWorld, aws: Deployment, providers: ProviderSandbox
) -> None:
    gmail.enroll("enr_t", "tia@client.example")
    providers.sandbox.inject_fault(ALICE, "send", fault, times=1, hold_seconds=6.0)
    with pytest.raises(RetryLater):
        gmail.send("enr_t", 0)
    assert aws.queue_messages("AuthFailureQueue") == []
    inbox = gmail.inbox()
    assert inbox.status == InboxStatus.CONNECTED and inbox.transient_since is not None
    # The retry is a redelivery: it looks in Sent first (a timeout may have hidden an accepted
    # send), finds nothing, and sends once.
    assert gmail.send("enr_t", 0, later=timedelta(minutes=2), redelivered=True) is Outcome.SENT
    assert len(providers.sandbox.sent_messages(ALICE)) == 1
    assert gmail.inbox().transient_since is None
