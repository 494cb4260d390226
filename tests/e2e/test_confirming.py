"""A permission loss is believed only after a second look with fresh credentials: google-auth and msal
talking HTTP to the provider sandbox, the credentials read again from the table (moto)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sendwell.adapters.confirming import MAX_WAIT_SECONDS, ConfirmingMailboxes
from sendwell.failures import FailureKind, ProviderFailure
from tests.deployment import Deployment
from tests.provider_sandbox import ProviderSandbox, SendWorld

ALICE = "alice@acme-outreach.com"  # a Gmail inbox
BOB = "bob@contoso.com"  # an Outlook inbox
SINCE = datetime.now(UTC) - timedelta(days=1)


def gmail_world(aws: Deployment, providers: ProviderSandbox) -> SendWorld:
    world = SendWorld(aws, providers, provider="gmail", address=ALICE, credentials=providers.connect_google(ALICE))
    # The stored access token has run out, so the next call refreshes it.
    world.store_credentials({**world.stored_credentials(), "expires_at": 0})
    return world


def confirming(world: SendWorld, sleeps: list[float], wait: float = 2.0) -> ConfirmingMailboxes:
    return ConfirmingMailboxes(world.fresh_mailboxes(), world.models, wait_seconds=wait, sleep=sleeps.append)


def test_a_refresh_refused_once_then_granted_is_no_loss(aws: Deployment, providers: ProviderSandbox) -> None:
    """Real refreshes fail once with invalid_grant and succeed on retry: nothing is reported."""
    world, sleeps = gmail_world(aws, providers), []
    providers.sandbox.inject_fault(ALICE, "token", "invalid_grant", times=1)
    _messages, cursor = confirming(world, sleeps).open(world.inbox()).poll(None, since=SINCE)
    assert cursor and sleeps == [2.0]


def test_a_revoked_grant_is_raised_after_one_second_look(aws: Deployment, providers: ProviderSandbox) -> None:
    world, sleeps = gmail_world(aws, providers), []
    providers.sandbox.revoke_google_grant(ALICE)
    with pytest.raises(ProviderFailure) as caught:
        confirming(world, sleeps).open(world.inbox()).poll(None, since=SINCE)
    assert caught.value.failure.code == "google:invalid_grant" and caught.value.failure.kind is FailureKind.AUTH_LOST
    assert sleeps == [2.0]


def test_a_token_refused_by_the_api_is_tried_again_with_a_new_one(aws: Deployment, providers: ProviderSandbox) -> None:
    """A 403 for missing scopes on a cached token; the second look refreshes first, and works."""
    world = SendWorld(aws, providers, provider="gmail", address=ALICE, credentials=providers.connect_google(ALICE))
    sleeps: list[float] = []
    providers.sandbox.inject_fault(ALICE, "read", "insufficient_scopes_403", times=1)
    stored_token = world.stored_credentials()["access_token"]
    confirming(world, sleeps).open(world.inbox()).poll(None, since=SINCE)
    assert sleeps == [2.0]
    assert world.stored_credentials()["access_token"] != stored_token  # the second look used a new one


def test_a_conclusive_loss_is_raised_at_once(aws: Deployment, providers: ProviderSandbox) -> None:
    """AADSTS50173 (the password was changed) can mean nothing else: no wait, no second attempt."""
    world = SendWorld(aws, providers, provider="outlook", address=BOB, credentials=providers.connect_microsoft(BOB))
    world.store_credentials({**world.stored_credentials(), "expires_at": 0})
    sleeps: list[float] = []
    providers.sandbox.inject_fault(BOB, "token", "aadsts:50173")
    with pytest.raises(ProviderFailure) as caught:
        confirming(world, sleeps).open(world.inbox()).poll(None, since=SINCE)
    assert caught.value.failure.code == "aadsts:50173" and caught.value.failure.conclusive
    assert sleeps == []


def test_transient_faults_are_not_second_looked_here(aws: Deployment, providers: ProviderSandbox) -> None:
    """A 503 is retried by the queue, not by this wrapper: it is raised as it came."""
    world, sleeps = gmail_world(aws, providers), []
    providers.sandbox.inject_fault(ALICE, "read", "unavailable_503")
    with pytest.raises(ProviderFailure) as caught:
        confirming(world, sleeps).open(world.inbox()).poll(None, since=SINCE)
    assert caught.value.failure.kind is FailureKind.TRANSIENT and sleeps == []


def test_the_wait_is_bounded(aws: Deployment, providers: ProviderSandbox) -> None:
    world, sleeps = gmail_world(aws, providers), []
    providers.sandbox.revoke_google_grant(ALICE)
    with pytest.raises(ProviderFailure):
        confirming(world, sleeps, wait=3600).open(world.inbox()).poll(None, since=SINCE)
    assert sleeps == [MAX_WAIT_SECONDS]
