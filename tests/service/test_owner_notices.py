"""An owner with several inboxes down gets one email with one link for them all (moto, real handlers)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from sendwell.adapters.credentials import CredentialStore
from sendwell.models import InboxStatus
from sendwell.services import links
from tests.deployment import deployed, emails_to, forget_sent_emails
from tests.faults import aws_faults
from tests.memory_providers import MemoryMailboxes
from tests.service.test_breaker import deliver, record, refused_password
from tests.service.test_fault_harness import ADMIN, Harness

OWNER = "Erin@Client.example"  # stored as typed; matched in any case


@pytest.fixture
def world() -> Iterator[Harness]:
    with pytest.MonkeyPatch.context() as env, deployed(env, prefix="owners") as aws, aws_faults() as faults:
        store = CredentialStore.with_kms(aws.models, aws.client("kms"), aws.settings.credentials_key_id)
        forget_sent_emails()
        yield Harness(aws=aws, faults=faults, mailboxes=MemoryMailboxes(store))


def test_an_owner_with_three_inboxes_down_gets_one_email_with_one_link(world: Harness) -> None:
    inboxes = [world.add_inbox(owner_email=OWNER if n else OWNER.lower()) for n in range(3)]
    alone = world.add_inbox(owner_email="frank@client.example")
    for inbox in [*inboxes, alone]:
        assert deliver(world, [record(world, inbox, refused_password())]) == set()
        assert world.aws.models.inbox.get(inbox.inbox_id).status == InboxStatus.DISCONNECTED

    to_owner = emails_to(OWNER.lower())
    # The first inbox down was the owner's only one then: its own notice. From the second on, one
    # notice for all of them, whose link's page lists them as they are.
    assert [m.subject for m in to_owner] == [
        f"Action needed: {inboxes[0].address} was disconnected",
        "Action needed: 2 inboxes of yours are disconnected",
    ]
    (owner_url,) = re.findall(r"https?://\S+/r/([A-Za-z0-9_-]{43})", to_owner[1].body)
    link = links.verify(world.aws.models, owner_url, now=world.now)
    assert links.owner_of(link) == OWNER.lower()
    assert inboxes[0].address in to_owner[1].body and inboxes[1].address in to_owner[1].body
    # Admins and each inbox's own address still hear of each incident; the lone owner of one inbox
    # gets that inbox's own notice.
    assert len(emails_to(ADMIN)) == 4
    assert all(len(emails_to(inbox.address)) == 1 for inbox in inboxes)
    assert [m.subject for m in emails_to("frank@client.example")] == [
        f"Action needed: {alone.address} was disconnected"
    ]
