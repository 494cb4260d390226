"""The Gmail adapter against the provider sandbox, with the real google-auth and requests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from local.sandbox import Surface
from sendwell.adapters.gmail import GmailMailbox
from sendwell.adapters.mailboxes import ProviderMailboxes
from sendwell.failures import FailureKind, ProviderFailure
from sendwell.ids import step_message_id
from sendwell.mime import build_message, to_bytes
from sendwell.models import InboxStatus
from sendwell.services.sending import Outcome
from tests.deployment import Deployment
from tests.provider_sandbox import (
    GOOGLE_CLIENT_ID,
    GOOGLE_CLIENT_SECRET,
    ProviderSandbox,
    SavedCredentials,
    SendWorld,
    mime,
    trusting_session,
)

ALICE = "alice@acme-outreach.com"  # the connected Gmail inbox
DANA = "dana@client.example"  # a prospect
HISTORY = "/gmail/v1/users/me/history"


def outreach(message_id: str, *, in_reply_to: str | None = None, to: str = DANA) -> Any:
    return build_message(
        from_addr=ALICE,
        from_name="Alice Archer",
        to_addr=to,
        to_name="Dana",
        subject="Quick question",
        text="Hi Dana,\nare you the right person to talk to about outbound?\n",
        html=None,
        message_id=message_id,
        in_reply_to=in_reply_to,
        references=[],
        unsubscribe_url="https://sendwell.example.test/u/enr_1",
        unsubscribe_mailto=None,
        date=datetime.now(UTC),
    )


def gmail(providers: ProviderSandbox, credentials: dict[str, Any], saved: SavedCredentials, **kw: Any) -> GmailMailbox:
    endpoints = providers.endpoints
    session = trusting_session(providers.sandbox)
    return GmailMailbox(
        credentials,
        client_id=GOOGLE_CLIENT_ID,
        client_secret=GOOGLE_CLIENT_SECRET,
        token_url=endpoints.google_token_url,
        api_url=endpoints.gmail_api_url,
        session=session,
        save=saved,
        **kw,
    )


@pytest.fixture
def credentials(providers: ProviderSandbox) -> dict[str, Any]:
    return providers.connect_google(ALICE)


@pytest.fixture
def mailbox(providers: ProviderSandbox, credentials: dict[str, Any], saved: SavedCredentials) -> GmailMailbox:
    return gmail(providers, credentials, saved)


# --------------------------------------------------------------------------------------------------
# Sending and finding our message in Sent


def test_send_keeps_our_bytes_and_find_sent_finds_them(providers: ProviderSandbox, mailbox: GmailMailbox) -> None:
    message = outreach("<sw.enr_1.0@acme-outreach.com>")
    receipt = mailbox.send(message, thread_id=None)

    assert receipt.provider_message_id and receipt.thread_id
    assert providers.sandbox.sent_messages(ALICE) == [to_bytes(message)]
    assert mailbox.find_sent("<sw.enr_1.0@acme-outreach.com>") == receipt
    assert mailbox.find_sent("sw.enr_1.0@acme-outreach.com") == receipt  # stored ids have no brackets
    assert mailbox.find_sent("<sw.enr_1.1@acme-outreach.com>") is None


def test_a_follow_up_keeps_the_gmail_thread(mailbox: GmailMailbox) -> None:
    first = mailbox.send(outreach("<sw.enr_1.0@acme-outreach.com>"), thread_id=None)
    follow_up = outreach("<sw.enr_1.1@acme-outreach.com>", in_reply_to="<sw.enr_1.0@acme-outreach.com>")
    second = mailbox.send(follow_up, thread_id=first.thread_id)
    other = mailbox.send(outreach("<sw.enr_2.0@acme-outreach.com>", to="lee@client.example"), thread_id=None)

    assert second.thread_id == first.thread_id and second.provider_message_id != first.provider_message_id
    assert other.thread_id not in (None, first.thread_id)


# --------------------------------------------------------------------------------------------------
# Polling


def test_polling_is_incremental_and_a_quiet_poll_costs_one_call(
    providers: ProviderSandbox, mailbox: GmailMailbox, saved: SavedCredentials
) -> None:
    sandbox = providers.sandbox
    before = sandbox.deliver_gmail(ALICE, mime("ops@vendor.example", ALICE, "Invoice 1182"))
    sent = mailbox.send(outreach("<sw.enr_1.0@acme-outreach.com>"), thread_id=None)

    # No cursor yet: a resync since the given time; our own sent message is not "new mail".
    first, cursor = mailbox.poll(None, since=datetime.now(UTC) - timedelta(hours=1))
    assert [m.provider_id for m in first] == [before]
    assert first[0].message["Subject"] == "Invoice 1182" and cursor.isdigit()

    reply = sandbox.deliver_gmail(
        ALICE, mime(DANA, ALICE, "Re: Quick question", in_reply_to="<sw.enr_1.0@acme-outreach.com>")
    )
    unrelated = sandbox.deliver_gmail(ALICE, mime("news@letters.example", ALICE, "Weekly digest"))
    mailbox.send(outreach("<sw.enr_3.0@acme-outreach.com>", to="kim@client.example"), thread_id=None)

    second, cursor = mailbox.poll(cursor, since=datetime.now(UTC))
    assert [m.provider_id for m in second] == [reply, unrelated]
    assert second[0].thread_id == sent.thread_id  # Gmail threaded the reply with our message
    assert second[0].message["In-Reply-To"] == "<sw.enr_1.0@acme-outreach.com>"
    assert b"Thanks for reaching out" in second[0].raw

    calls, history_calls = sandbox.request_count("/"), sandbox.request_count(HISTORY)
    third, same_cursor = mailbox.poll(cursor, since=datetime.now(UTC))
    assert third == [] and same_cursor == cursor
    assert sandbox.request_count("/") == calls + 1  # no token request, no message fetch
    assert sandbox.request_count(HISTORY) == history_calls + 1
    assert saved.calls == []  # the stored access token served every call


def test_history_too_old_falls_back_to_a_bounded_resync(providers: ProviderSandbox, mailbox: GmailMailbox) -> None:
    sandbox = providers.sandbox
    _, cursor = mailbox.poll(None, since=datetime.now(UTC) - timedelta(hours=1))
    bounce = sandbox.deliver_gmail(ALICE, mime("mailer-daemon@googlemail.com", ALICE, "Delivery Status Notification"))
    sandbox.expire_gmail_history(ALICE)

    found, new_cursor = mailbox.poll(cursor, since=datetime.now(UTC) - timedelta(minutes=5))
    assert [m.provider_id for m in found] == [bounce]
    assert int(new_cursor) > int(cursor)
    assert sandbox.request_count("/gmail/v1/users/me/profile") == 2  # the fresh historyId

    later = sandbox.deliver_gmail(ALICE, mime(DANA, ALICE, "Another thought"))
    again, _ = mailbox.poll(new_cursor, since=datetime.now(UTC))
    assert [m.provider_id for m in again] == [later]


# --------------------------------------------------------------------------------------------------
# Tokens


def test_an_expired_access_token_is_refreshed_once_and_saved(
    providers: ProviderSandbox, credentials: dict[str, Any], saved: SavedCredentials
) -> None:
    expired = {**credentials, "access_token": "ya29.expired", "expires_at": int(datetime.now(UTC).timestamp()) - 60}
    mailbox = gmail(providers, expired, saved)
    mailbox.poll(None, since=datetime.now(UTC))
    mailbox.send(outreach("<sw.enr_1.0@acme-outreach.com>"), thread_id=None)

    assert providers.sandbox.request_count("/google/token") == 2  # the sign-in, then one refresh
    [stored] = saved.calls
    assert stored["access_token"].startswith("ya29.") and stored["access_token"] != "ya29.expired"
    assert stored["expires_at"] > datetime.now(UTC).timestamp() + 3000
    assert stored["refresh_token"] == credentials["refresh_token"]  # Google does not rotate it
    assert stored["scopes"] == credentials["scopes"]


# --------------------------------------------------------------------------------------------------
# Faults


@pytest.mark.parametrize(
    ("surface", "fault", "kind", "code"),
    [
        pytest.param("token", "invalid_grant", FailureKind.AUTH_LOST, "google:invalid_grant", id="invalid-grant"),
        pytest.param("send", "unauthorized_401", FailureKind.AUTH_LOST, "gmail:401 authError", id="401-after-refresh"),
        pytest.param(
            "send",
            "insufficient_scopes_403",
            FailureKind.USER_ACTION,
            "gmail:403 insufficientPermissions",
            id="insufficient-scopes",
        ),
        pytest.param("send", "rate_limit_429", FailureKind.RATE_LIMITED, "gmail:429 rateLimitExceeded", id="429"),
        pytest.param("send", "server_error_500", FailureKind.TRANSIENT, "gmail:500", id="500"),
        pytest.param("send", "html_502", FailureKind.TRANSIENT, "gmail:502", id="html-502"),
        pytest.param("send", "timeout", FailureKind.TRANSIENT, "gmail:timeout", id="timeout"),
        pytest.param("token", "timeout", FailureKind.TRANSIENT, "google:timeout", id="token-timeout"),
        pytest.param("read", "html_502", FailureKind.TRANSIENT, "gmail:502", id="poll-html-502"),
    ],
)
def test_faults_are_classified(
    providers: ProviderSandbox,
    credentials: dict[str, Any],
    saved: SavedCredentials,
    surface: Surface,
    fault: str,
    kind: FailureKind,
    code: str,
) -> None:
    if surface == "token":  # only a refresh reaches the token endpoint
        credentials = {**credentials, "expires_at": 0}
    mailbox = gmail(providers, credentials, saved, timeout=0.5)
    providers.sandbox.inject_fault(ALICE, surface, fault, retry_after=30, hold_seconds=2.0)

    with pytest.raises(ProviderFailure) as caught:
        if surface == "read":
            mailbox.poll(None, since=datetime.now(UTC))
        else:
            mailbox.send(outreach("<sw.enr_1.0@acme-outreach.com>"), thread_id=None)

    failure = caught.value.failure
    assert (failure.kind, failure.code) == (kind, code)
    assert failure.kind.disconnects == (kind in (FailureKind.AUTH_LOST, FailureKind.USER_ACTION))
    if kind is FailureKind.RATE_LIMITED:
        assert failure.retry_after is not None and 25 <= failure.retry_after <= 30
    text = f"{caught.value} {failure.reason} {failure.fix}"
    assert credentials["refresh_token"] not in text and credentials["access_token"] not in text
    assert providers.sandbox.sent_messages(ALICE) == []


# --------------------------------------------------------------------------------------------------
# Through the send service, with credentials stored encrypted in DynamoDB (moto)


@pytest.fixture
def world(aws: Deployment, providers: ProviderSandbox) -> SendWorld:
    return SendWorld(aws, providers, provider="gmail", address=ALICE, credentials=providers.connect_google(ALICE))


def test_steps_go_out_through_gmail_threaded_and_recorded(world: SendWorld, providers: ProviderSandbox) -> None:
    world.enroll("enr_g", DANA)
    assert world.send("enr_g", 0) is Outcome.SENT
    assert world.send("enr_g", 1, later=timedelta(days=3)) is Outcome.SENT

    first_id, second_id = (step_message_id("enr_g", step, ALICE) for step in (0, 1))
    first, second = world.found_in_sent(first_id), world.found_in_sent(second_id)
    assert first is not None and second is not None
    assert second.thread_id == first.thread_id  # the follow-up stayed in the Gmail thread
    enrollment = world.models.enrollment.get("enr_g")
    assert enrollment.thread_id == first.thread_id
    assert enrollment.thread_key == f"{world.inbox_id}#{first.thread_id}"
    assert enrollment.provider_message_ids == [first.provider_message_id, second.provider_message_id]
    sent = providers.sandbox.sent_messages(ALICE)
    assert len(sent) == 2 and b"Subject: Re: Quick question, Dana" in sent[1]
    assert f"In-Reply-To: {first_id}".encode() in sent[1]


def test_a_crash_after_gmail_accepted_is_reconciled_from_sent(world: SendWorld, providers: ProviderSandbox) -> None:
    world.enroll("enr_crash", DANA)
    world.send_then_crash("enr_crash", 0)
    assert len(providers.sandbox.sent_messages(ALICE)) == 1
    assert world.models.enrollment.get("enr_crash").step_index == 0  # nothing recorded

    # Once the lease has expired, the redelivery looks in Sent (rfc822msgid:) before sending anything.
    assert world.send("enr_crash", 0, later=timedelta(minutes=6), redelivered=True) is Outcome.RECONCILED
    assert len(providers.sandbox.sent_messages(ALICE)) == 1
    found = world.found_in_sent(step_message_id("enr_crash", 0, ALICE))
    assert found is not None
    enrollment = world.models.enrollment.get("enr_crash")
    assert enrollment.step_index == 1 and enrollment.thread_id == found.thread_id
    assert enrollment.provider_message_ids == [found.provider_message_id]


def test_a_refreshed_token_is_stored_and_reused_by_the_next_invocation(
    world: SendWorld, providers: ProviderSandbox
) -> None:
    world.store_credentials({**world.credentials, "access_token": "ya29.stale", "expires_at": 0})
    version = world.inbox().credentials_version

    world.fresh_mailboxes().open(world.inbox()).poll(None, since=datetime.now(UTC))
    stored = world.stored_credentials()
    assert world.inbox().credentials_version == version + 1
    assert stored["access_token"] not in ("ya29.stale", world.credentials["access_token"])
    assert stored["refresh_token"] == world.credentials["refresh_token"]

    refreshes = providers.sandbox.request_count("/google/token")
    world.fresh_mailboxes().open(world.inbox()).poll(None, since=datetime.now(UTC))  # a later cold start
    assert providers.sandbox.request_count("/google/token") == refreshes
    assert world.inbox().credentials_version == version + 1


def test_an_inbox_without_a_refresh_token_or_client_secret_fails_cleanly(world: SendWorld) -> None:
    world.store_credentials({})
    with pytest.raises(ProviderFailure) as lost:
        world.fresh_mailboxes().open(world.inbox())
    assert lost.value.failure.kind is FailureKind.AUTH_LOST

    world.store_credentials(world.credentials)
    unconfigured = ProviderMailboxes(world.settings, world.store)  # no secret source
    with pytest.raises(ProviderFailure) as config:
        unconfigured.open(world.inbox())
    assert config.value.failure.kind is FailureKind.APP_CONFIG
    assert world.inbox().status == InboxStatus.CONNECTED
