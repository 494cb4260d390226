"""The Microsoft Graph adapter against the provider sandbox, with the real msal and requests."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from local.sandbox import Surface
from sendwell.adapters.graph import GraphMailbox, MicrosoftTokens
from sendwell.failures import FailureKind, ProviderFailure
from sendwell.ids import step_message_id
from sendwell.mime import build_message, to_bytes
from sendwell.services.sending import Outcome
from tests.deployment import Deployment
from tests.provider_sandbox import (
    MICROSOFT_CLIENT_ID,
    MICROSOFT_CLIENT_SECRET,
    ProviderSandbox,
    SavedCredentials,
    SendWorld,
    mime,
    trusting_session,
)

BOB = "bob@contoso.com"  # the connected Outlook inbox
DANA = "dana@client.example"  # a prospect
DELTA = "/graph/v1.0/me/mailFolders/inbox/messages/delta"
TOKEN = "/microsoft/common/oauth2/v2.0/token"


def outreach(message_id: str, *, in_reply_to: str | None = None) -> Any:
    return build_message(
        from_addr=BOB,
        from_name="Bob Brown",
        to_addr=DANA,
        to_name="Dana",
        subject="Quick question",
        text="Hi Dana,\nare you the right person to talk to about outbound?\n",
        html="<p>Hi Dana,</p><p>are you the right person to talk to about outbound?</p>",
        message_id=message_id,
        in_reply_to=in_reply_to,
        references=[],
        unsubscribe_url="https://sendwell.example.test/u/enr_1",
        unsubscribe_mailto=None,
        date=datetime.now(UTC),
    )


def graph(providers: ProviderSandbox, credentials: dict[str, Any], saved: SavedCredentials, **kw: Any) -> GraphMailbox:
    endpoints = providers.endpoints
    session = trusting_session(providers.sandbox)
    tokens = MicrosoftTokens(
        credentials,
        client_id=MICROSOFT_CLIENT_ID,
        client_secret=MICROSOFT_CLIENT_SECRET,
        authority=endpoints.microsoft_authority,
        session=session,
        save=saved,
        **kw,
    )
    return GraphMailbox(tokens, api_url=endpoints.graph_api_url, session=session, **kw)


@pytest.fixture
def credentials(providers: ProviderSandbox) -> dict[str, Any]:
    return providers.connect_microsoft(BOB)


@pytest.fixture
def mailbox(providers: ProviderSandbox, credentials: dict[str, Any], saved: SavedCredentials) -> GraphMailbox:
    return graph(providers, credentials, saved)


# --------------------------------------------------------------------------------------------------
# Sending and finding our message in Sent Items


def test_send_posts_our_mime_and_find_sent_finds_it(providers: ProviderSandbox, mailbox: GraphMailbox) -> None:
    message = outreach("<sw.enr_1.0@contoso.com>")
    receipt = mailbox.send(message, thread_id=None)

    assert providers.sandbox.sent_messages(BOB) == [to_bytes(message)]  # our Message-ID survived
    assert receipt.provider_message_id and receipt.thread_id  # looked up in Sent Items
    assert mailbox.find_sent("<sw.enr_1.0@contoso.com>") == receipt
    assert mailbox.find_sent("sw.enr_1.0@contoso.com") == receipt  # stored ids have no brackets
    assert mailbox.find_sent("<sw.enr_1.1@contoso.com>") is None


def test_find_sent_quotes_the_message_id_for_odata(mailbox: GraphMailbox) -> None:
    receipt = mailbox.send(outreach("<o'brien.7@contoso.com>"), thread_id=None)
    assert receipt.provider_message_id is not None
    assert mailbox.find_sent("<o'brien.7@contoso.com>") == receipt


# --------------------------------------------------------------------------------------------------
# Polling


def test_polling_is_incremental_and_a_quiet_poll_costs_one_call(
    providers: ProviderSandbox, mailbox: GraphMailbox, saved: SavedCredentials
) -> None:
    sandbox = providers.sandbox
    before = sandbox.deliver_graph(BOB, mime("ops@vendor.example", BOB, "Invoice 1182"))
    sent = mailbox.send(outreach("<sw.enr_1.0@contoso.com>"), thread_id=None)

    first, cursor = mailbox.poll(None, since=datetime.now(UTC) - timedelta(hours=1))
    assert [m.provider_id for m in first] == [before]  # Sent Items is not the Inbox
    assert cursor.startswith(f"{sandbox.base_url}{DELTA}?")

    reply = sandbox.deliver_graph(BOB, mime(DANA, BOB, "RE: Quick question", in_reply_to="<sw.enr_1.0@contoso.com>"))
    unrelated = sandbox.deliver_graph(BOB, mime("news@letters.example", BOB, "Weekly digest"))

    second, cursor = mailbox.poll(cursor, since=datetime.now(UTC))
    assert [m.provider_id for m in second] == [reply, unrelated]
    assert second[0].thread_id == sent.thread_id  # the conversation of our message
    assert second[0].message["In-Reply-To"] == "<sw.enr_1.0@contoso.com>"

    calls, delta_calls = sandbox.request_count("/"), sandbox.request_count(DELTA)
    third, cursor = mailbox.poll(cursor, since=datetime.now(UTC))
    assert third == []
    assert sandbox.request_count("/") == calls + 1  # no token request, no message fetch
    assert sandbox.request_count(DELTA) == delta_calls + 1
    assert saved.calls == []


def test_a_lost_delta_state_resyncs_from_the_given_time(providers: ProviderSandbox, mailbox: GraphMailbox) -> None:
    sandbox = providers.sandbox
    _, cursor = mailbox.poll(None, since=datetime.now(UTC) - timedelta(hours=1))
    old = sandbox.deliver_graph(BOB, mime("ops@vendor.example", BOB, "Invoice 1183"))
    time.sleep(1.02 - time.time() % 1)  # Graph's times have whole seconds: move to the next one
    since = datetime.now(UTC)
    bounce = sandbox.deliver_graph(BOB, mime("postmaster@client.example", BOB, "Undeliverable: Quick question"))
    sandbox.expire_graph_delta(BOB)

    found, new_cursor = mailbox.poll(cursor, since=since)
    assert [m.provider_id for m in found] == [bounce] and old not in {m.provider_id for m in found}
    assert new_cursor != cursor

    later = sandbox.deliver_graph(BOB, mime(DANA, BOB, "Another thought"))
    again, _ = mailbox.poll(new_cursor, since=datetime.now(UTC))
    assert [m.provider_id for m in again] == [later]


def test_a_cursor_for_another_host_is_never_followed(providers: ProviderSandbox, mailbox: GraphMailbox) -> None:
    inbound = providers.sandbox.deliver_graph(BOB, mime(DANA, BOB, "Hello"))
    found, cursor = mailbox.poll(
        "https://graph.attacker.example/v1.0/me/mailFolders/inbox/messages/delta?$deltatoken=x",
        since=datetime.now(UTC) - timedelta(minutes=5),
    )
    assert [m.provider_id for m in found] == [inbound]  # a new round at our own endpoint instead
    assert cursor.startswith(providers.sandbox.base_url)


# --------------------------------------------------------------------------------------------------
# Tokens


def test_the_stored_token_is_used_until_five_minutes_before_expiry(
    providers: ProviderSandbox, credentials: dict[str, Any], saved: SavedCredentials
) -> None:
    sandbox = providers.sandbox
    refreshes = sandbox.request_count(TOKEN)
    graph(providers, credentials, saved).send(outreach("<sw.enr_1.0@contoso.com>"), thread_id=None)
    assert sandbox.request_count(TOKEN) == refreshes and saved.calls == []

    expiring = {**credentials, "expires_at": int(time.time()) + 200}
    graph(providers, expiring, saved).send(outreach("<sw.enr_2.0@contoso.com>"), thread_id=None)
    assert sandbox.request_count(TOKEN) == refreshes + 1
    [stored] = saved.calls
    assert stored["refresh_token"] != credentials["refresh_token"]  # rotated, and saved at once
    assert stored["access_token"] != credentials["access_token"]
    assert stored["expires_at"] >= int(time.time()) + 3500
    assert {"Mail.Send", "Mail.Read"} <= set(stored["scopes"])


def test_a_revoked_access_token_is_refreshed_once_and_the_call_retried(
    providers: ProviderSandbox, mailbox: GraphMailbox, saved: SavedCredentials
) -> None:
    providers.sandbox.inject_fault(BOB, "send", "unauthorized_401", times=1)
    receipt = mailbox.send(outreach("<sw.enr_1.0@contoso.com>"), thread_id=None)
    assert receipt.provider_message_id is not None
    assert len(providers.sandbox.sent_messages(BOB)) == 1 and len(saved.calls) == 1


# --------------------------------------------------------------------------------------------------
# Faults


@pytest.mark.parametrize(
    ("surface", "fault", "kind", "code"),
    [
        pytest.param("token", "invalid_grant", FailureKind.AUTH_LOST, "aadsts:50173", id="invalid-grant"),
        pytest.param("token", "aadsts:7000222", FailureKind.APP_CONFIG, "aadsts:7000222", id="secret-expired"),
        pytest.param("token", "aadsts:50076", FailureKind.USER_ACTION, "aadsts:50076", id="mfa-required"),
        pytest.param("token", "server_error_500", FailureKind.TRANSIENT, "msal:http_error", id="token-500"),
        pytest.param("token", "html_502", FailureKind.TRANSIENT, "msal:http_error", id="token-html-502"),
        pytest.param("token", "timeout", FailureKind.TRANSIENT, "msal:timeout", id="token-timeout"),
        pytest.param(
            "send", "unauthorized_401", FailureKind.AUTH_LOST, "graph:401 InvalidAuthenticationToken", id="401"
        ),
        pytest.param(
            "send", "insufficient_scopes_403", FailureKind.USER_ACTION, "graph:403 ErrorAccessDenied", id="403"
        ),
        pytest.param("send", "rate_limit_429", FailureKind.RATE_LIMITED, "graph:429 ApplicationThrottled", id="429"),
        pytest.param("send", "server_error_500", FailureKind.TRANSIENT, "graph:500", id="500"),
        pytest.param("send", "html_502", FailureKind.TRANSIENT, "graph:502", id="html-502"),
        pytest.param("send", "timeout", FailureKind.TRANSIENT, "graph:timeout", id="timeout"),
        pytest.param("read", "html_502", FailureKind.TRANSIENT, "graph:502", id="poll-html-502"),
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
    mailbox = graph(providers, credentials, saved, timeout=0.5)
    providers.sandbox.inject_fault(BOB, surface, fault, retry_after=30, hold_seconds=2.0)

    with pytest.raises(ProviderFailure) as caught:
        if surface == "read":
            mailbox.poll(None, since=datetime.now(UTC))
        else:
            mailbox.send(outreach("<sw.enr_1.0@contoso.com>"), thread_id=None)

    failure = caught.value.failure
    assert (failure.kind, failure.code) == (kind, code)
    assert failure.kind.disconnects == (kind in (FailureKind.AUTH_LOST, FailureKind.USER_ACTION))
    if kind is FailureKind.RATE_LIMITED:
        assert failure.retry_after == 30
    text = f"{caught.value} {failure.reason} {failure.fix}"
    assert credentials["refresh_token"] not in text and credentials["access_token"] not in text
    assert providers.sandbox.sent_messages(BOB) == []


# --------------------------------------------------------------------------------------------------
# Through the send service, with credentials stored encrypted in DynamoDB (moto)


@pytest.fixture
def world(aws: Deployment, providers: ProviderSandbox) -> SendWorld:
    return SendWorld(aws, providers, provider="outlook", address=BOB, credentials=providers.connect_microsoft(BOB))


def test_steps_go_out_through_graph_and_record_the_conversation(world: SendWorld, providers: ProviderSandbox) -> None:
    world.enroll("enr_o", DANA)
    assert world.send("enr_o", 0) is Outcome.SENT
    assert world.send("enr_o", 1, later=timedelta(days=3)) is Outcome.SENT

    first_id, second_id = (step_message_id("enr_o", step, BOB) for step in (0, 1))
    first, second = world.found_in_sent(first_id), world.found_in_sent(second_id)
    assert first is not None and second is not None
    assert second.thread_id == first.thread_id  # Outlook threaded the follow-up by its headers
    enrollment = world.models.enrollment.get("enr_o")
    assert enrollment.thread_key == f"{world.inbox_id}#{first.thread_id}"
    assert enrollment.provider_message_ids == [first.provider_message_id, second.provider_message_id]
    sent = providers.sandbox.sent_messages(BOB)
    assert len(sent) == 2 and f"In-Reply-To: {first_id}".encode() in sent[1]


def test_a_crash_after_graph_accepted_is_reconciled_from_sent_items(
    world: SendWorld, providers: ProviderSandbox
) -> None:
    world.enroll("enr_crash", DANA)
    world.send_then_crash("enr_crash", 0)
    assert len(providers.sandbox.sent_messages(BOB)) == 1

    assert world.send("enr_crash", 0, later=timedelta(minutes=6), redelivered=True) is Outcome.RECONCILED
    assert len(providers.sandbox.sent_messages(BOB)) == 1  # found by internetMessageId, not sent again
    assert world.models.enrollment.get("enr_crash").step_index == 1


def test_racing_refreshes_never_leave_an_older_refresh_token_stored(
    world: SendWorld, providers: ProviderSandbox
) -> None:
    world.store_credentials({**world.credentials, "expires_at": 0})  # both instances must refresh
    original = world.stored_credentials()["refresh_token"]
    version = world.inbox().credentials_version
    first = world.fresh_mailboxes().open(world.inbox())  # two function instances, loaded at the
    second = world.fresh_mailboxes().open(world.inbox())  # same credentials version

    first.poll(None, since=datetime.now(UTC))
    after_first = world.stored_credentials()
    assert after_first["refresh_token"] != original and world.inbox().credentials_version == version + 1

    # The slower refresh also got a new token from Microsoft, but its save is stale: it adopts
    # what the first one stored instead of writing over it.
    second.poll(None, since=datetime.now(UTC))
    assert world.stored_credentials() == after_first and world.inbox().credentials_version == version + 1

    # It now works from the stored chain: its next refresh starts from the newest token and saves.
    providers.sandbox.expire_access_tokens(BOB)
    refreshes = providers.sandbox.request_count(TOKEN)
    second.send(outreach(step_message_id("enr_race", 0, BOB)), thread_id=None)
    assert providers.sandbox.request_count(TOKEN) == refreshes + 1
    latest = world.stored_credentials()
    assert latest["refresh_token"] not in (original, after_first["refresh_token"])
    assert world.inbox().credentials_version == version + 2

    # And the first instance, now behind, adopts that chain rather than regress it.
    first.poll(None, since=datetime.now(UTC))
    assert world.stored_credentials()["refresh_token"] == latest["refresh_token"]
    assert world.inbox().credentials_version == version + 2
