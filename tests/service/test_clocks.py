"""Warnings before the clocks run out, through the real reminders function on moto.

The clock of the handler is the harness's; the settings are the template's parameters as a team
would set them (a consent screen in testing, a client secret's expiry date).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import pytest

from sendwell.adapters.credentials import CredentialStore
from sendwell.models import InboxStatus
from sendwell.services import clocks, links
from tests.deployment import deployed, emails_to, forget_sent_emails, sent_emails
from tests.faults import aws_faults
from tests.memory_providers import MemoryMailboxes
from tests.service.test_fault_harness import ADMIN, START, Harness

SECRET_EXPIRES = START.date() + timedelta(days=40)


@pytest.fixture
def world() -> Iterator[Harness]:
    variables = {
        "SENDWELL_GOOGLE_PUBLISHING_STATUS": "testing",
        "SENDWELL_MICROSOFT_CLIENT_SECRET_EXPIRES": SECRET_EXPIRES.isoformat(),
    }
    with (
        pytest.MonkeyPatch.context() as env,
        deployed(env, prefix="clocks", variables=variables) as aws,
        aws_faults() as faults,
    ):
        store = CredentialStore.with_kms(aws.models, aws.client("kms"), aws.settings.credentials_key_id)
        forget_sent_emails()
        yield Harness(aws=aws, faults=faults, mailboxes=MemoryMailboxes(store))


def run_reminders(world: Harness) -> dict[str, int]:
    result = world.invoke("RemindersFunction", {}, fail_at=None, kind="")
    assert result is not None, "the reminders function failed"
    return dict(result)


def test_the_client_secret_is_warned_about_30_7_and_1_days_ahead_once_each(world: Harness) -> None:
    for days_before in (45, 31, 30, 29, 8, 7, 2, 1, 0, -1):
        world.now = START.replace(hour=9) + timedelta(days=40 - days_before)
        run_reminders(world)
        run_reminders(world)  # every 15 minutes: nothing twice
    notices = emails_to(ADMIN)
    assert [m.subject for m in notices] == [
        f"The Microsoft 365 client secret expires in {n}, on {SECRET_EXPIRES:%d %B %Y}"
        for n in ("30 days", "7 days", "1 day")
    ]
    assert all("Certificates" in m.body and "Nothing has failed yet" in m.body for m in notices)


def test_a_google_grant_of_an_app_in_testing_is_renewed_before_day_seven(world: Harness) -> None:
    inbox = world.add_inbox(provider="gmail", owner_email="erin@client.example")
    granted = START - timedelta(days=5, hours=1)  # the grant ends in 23 hours
    inbox.update(actions=[world.aws.models.inbox.reconnected_at.set(granted)])
    world.add_inbox(provider="gmail")  # granted 30 days ago: past warning, its disconnect will say so
    run_reminders(world)
    run_reminders(world)
    to_owner = emails_to("erin@client.example")
    ends = "25 November 2026 at 09:00 UTC"  # 7 days after the grant
    assert [m.subject for m in to_owner] == [f"{inbox.address} stops working on {ends} unless it is renewed"]
    assert "Google ends each sign-in it gives such an app after 7 days" in to_owner[0].body
    (token,) = re.findall(r"/r/([A-Za-z0-9_-]{43})", to_owner[0].body)
    assert links.verify(world.aws.models, token, now=world.now).inbox_id == inbox.inbox_id  # a renewal link
    assert len([m for m in emails_to(ADMIN) if "stops working" in m.subject]) == 1
    assert emails_to(inbox.address) == []


def test_an_outlook_inbox_unused_for_80_days_and_an_idle_inbox_are_told(world: Harness) -> None:
    outlook = world.add_inbox(provider="outlook", owner_email="olivia@client.example")
    unused = START - timedelta(days=81)
    outlook.update(
        actions=[
            world.aws.models.inbox.last_polled_at.set(unused),
            world.aws.models.inbox.created_at.set(unused - timedelta(days=10)),
        ]
    )
    idle = world.add_inbox()
    idle.update(actions=[world.aws.models.inbox.last_polled_at.set(START - timedelta(days=4))])
    busy = world.add_inbox()
    busy.update(actions=[world.aws.models.inbox.last_polled_at.set(START - timedelta(minutes=5))])
    disconnected = world.add_inbox(status=InboxStatus.DISCONNECTED)
    disconnected.update(actions=[world.aws.models.inbox.last_polled_at.set(START - timedelta(days=9))])
    run_reminders(world)

    (to_olivia,) = emails_to("olivia@client.example")
    assert "has not been used since" in to_olivia.body and to_olivia.subject.startswith(outlook.address)
    idle_notices = [m for m in emails_to(ADMIN) if "idle" in m.subject]
    assert [m.subject for m in idle_notices] == [f"{idle.address} has been idle since 19 November 2026 at 10:00 UTC"]
    assert not [m for m in sent_emails() if busy.address in m.subject or disconnected.address in m.subject]


def test_what_counts_as_running_out() -> None:
    """The pure rule, at its edges."""

    class Stub:
        status = InboxStatus.CONNECTED.value
        provider = "gmail"
        inbox_id = "ibx_1"
        created_at = START - timedelta(days=30)
        reconnected_at = START - timedelta(days=5)
        last_polled_at = START - timedelta(minutes=1)
        last_sent_at = None

    testing = clocks.Clocks(google_testing=True)
    assert [w.kind for w in clocks.warnings_for(Stub(), testing, now=START)] == ["testing_grant"]  # type: ignore[arg-type]
    assert clocks.warnings_for(Stub(), clocks.Clocks(), now=START) == []  # type: ignore[arg-type]
    late = START + timedelta(days=2, seconds=1)  # the grant has ended: the disconnect says so
    assert clocks.warnings_for(Stub(), testing, now=late) == []  # type: ignore[arg-type]
