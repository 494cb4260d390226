"""Inbox credentials in an item of their own, sealed under a KMS data key (on moto's KMS).

What must hold: a sign-in of any size is stored (KMS Encrypt alone stops at 4,096 bytes); it opens
only for its own inbox and version; a warm container opens it once and then asks neither KMS nor
the table again; a refresh never writes over a newer sign-in, whatever faults it meets; and the
inbox row, which each send claim and poll writes, stays under one write unit with Outlook's tokens.
"""

from __future__ import annotations

import json
import secrets
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from bench.aws_meter import item_size, metered
from sendwell.adapters.aws import KmsCipher
from sendwell.adapters.credentials import CredentialStore, StaleCredentials
from sendwell.models import Inbox, InboxStatus
from sendwell.ports.platform import SealBroken
from sendwell.services import links, polling, reconnect
from sendwell.services.sending import Outcome, send_step
from sendwell.writes import WriteNotDone
from tests.deployment import Deployment, deployed
from tests.faults import aws_faults
from tests.service.test_fault_causes import NOW, World, reply


def token(length: int) -> str:
    """A token-shaped string of ``length`` characters (base64url, as JWTs and refresh tokens are)."""
    return secrets.token_urlsafe(length)[:length]


def outlook_tokens(*, access: int = 2300, refresh: int = 1450) -> dict[str, Any]:
    """What Microsoft hands out: a JWT access token of 1.5-2.5 KB and a refresh token near 1.5 KB.
    With the defaults the JSON is just under 4 KB, as much as KMS Encrypt could still take."""
    return {
        "access_token": "eyJ0eXAiOiJKV1QiLCJub25jZSI6" + token(access),
        "refresh_token": "0.AXkA" + token(refresh),
        "expires_at": 1_795_000_000,
        "scopes": [
            "https://graph.microsoft.com/Mail.Send",
            "https://graph.microsoft.com/Mail.ReadWrite",
            "offline_access",
        ],
    }


class CountingKms:
    """The real (moto) KMS client, counting the calls made through it: what a container pays KMS."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def counted(**kwargs: Any) -> Any:
            self.calls[name] += 1
            return method(**kwargs)

        return counted


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    with deployed(monkeypatch) as aws:
        yield World(aws)


def container(aws: Deployment, kms: Any = None) -> CredentialStore:
    """A store as a new function container builds it: its caches empty."""
    return CredentialStore.with_kms(aws.models, kms or aws.client("kms"), aws.settings.credentials_key_id)


def row(world: World, inbox_id: str = "ibx_main") -> Inbox:
    return world.models.inbox.get(inbox_id, consistent_read=True)


def raw_row(world: World, inbox_id: str) -> dict[str, Any]:
    table = world.models.inbox.Meta.table_name
    item: dict[str, Any] = world.aws.client("dynamodb").get_item(
        TableName=table, Key={"inbox_id": {"S": inbox_id}}, ConsistentRead=True
    )["Item"]
    return item


# ---------------------------------------------------------------------------------------------
# Size, binding, caching


def test_a_6_kb_sign_in_round_trips_where_kms_encrypt_alone_refused_it(world: World) -> None:
    large = outlook_tokens(access=3600, refresh=2400)
    plaintext = json.dumps(large, sort_keys=True).encode()
    assert len(plaintext) > 6000
    with pytest.raises(ClientError):  # the old way: KMS takes at most 4,096 bytes
        KmsCipher(world.aws.client("kms"), world.aws.settings.credentials_key_id).encrypt(
            plaintext, context={"inbox_id": "ibx_main"}
        )

    version = container(world.aws).save(row(world), large)
    stored = row(world)
    assert stored.credentials_version == version and stored.credentials is None
    assert container(world.aws).load(stored) == large  # another container opens it


def test_a_sign_in_copied_to_another_inbox_or_given_another_version_does_not_open(world: World) -> None:
    other = world.add_inbox("ibx_other")
    item = world.models.credentials.get("ibx_main", consistent_read=True)
    copy = world.models.credentials(
        inbox_id=other.inbox_id,
        version=int(item.version),
        data_key=bytes(item.data_key),
        nonce=bytes(item.nonce),
        ciphertext=bytes(item.ciphertext),
    )
    copy.save()
    with pytest.raises(SealBroken):
        container(world.aws).load(row(world, other.inbox_id))

    # The same item under a newer version (and the row pointing at it) is refused too.
    item.update(actions=[world.models.credentials.version.set(int(item.version) + 1)])
    main = row(world)
    main.update(actions=[world.models.inbox.credentials_version.set(int(item.version))])
    with pytest.raises(SealBroken):
        container(world.aws).load(main)


def test_a_sealed_sign_in_that_does_not_open_fails_its_poll_alone(world: World) -> None:
    broken = world.add_inbox("ibx_broken", poll_shard="0", poll_slot=polling.slots_due(NOW)[0])
    item = world.models.credentials.get(broken.inbox_id, consistent_read=True)
    item.update(actions=[world.models.credentials.ciphertext.set(bytes(item.ciphertext)[:-1] + b"\0")])
    healthy = world.add_inbox("ibx_healthy", poll_shard="0", poll_slot=polling.slots_due(NOW)[0])
    results = {r.inbox_id: r for r in polling.poll_due_inboxes(world.poll_context(), now=NOW)}
    assert results[broken.inbox_id].failure is not None
    assert results[healthy.inbox_id].failure is None


def test_opening_again_in_the_same_container_asks_kms_and_the_table_nothing(world: World) -> None:
    second = world.add_inbox("ibx_second")  # sealed by the same writer: under the same data key
    kms = CountingKms(world.aws.client("kms"))
    store = container(world.aws, kms)

    assert store.load(row(world)) == {"password": "correct horse"}
    assert kms.calls == {"decrypt": 1}  # the data key, once
    main = row(world)
    with aws_faults() as faults, faults.counting():
        assert store.load(main) == {"password": "correct horse"}
    assert faults.calls == 0 and kms.calls == {"decrypt": 1}  # by (inbox, version): no read, no KMS

    assert store.load(row(world, second.inbox_id)) == {"password": "correct horse"}
    assert kms.calls == {"decrypt": 1}  # a second inbox under a key this container has

    # A refresh this container saves: one data key for it, and it opens its own item for free.
    version = store.save(main, {"password": "rotated"})
    assert kms.calls == {"decrypt": 1, "generate_data_key": 1}
    with aws_faults() as faults, faults.counting():
        assert store.load(main) == {"password": "rotated"} and main.credentials_version == version
    assert faults.calls == 0
    # ... and seals the next one with the same key (reused for a bounded time).
    store.save(main, {"password": "rotated again"})
    assert kms.calls == {"decrypt": 1, "generate_data_key": 1}


# ---------------------------------------------------------------------------------------------
# Writes that race and fail


def reconnect_context(world: World) -> reconnect.ReconnectContext:
    return reconnect.ReconnectContext(
        models=world.models,
        cipher=KmsCipher(world.aws.client("kms"), world.aws.settings.credentials_key_id),
        credentials=container(world.aws),
        authorizers={},
        login_check=_NoLoginCheck(),
        public_base_url="https://sendwell.example.test",
    )


class _NoLoginCheck:
    def check(self, inbox: Inbox, password: str) -> list[Any]:
        return []


def sign_in_again(world: World, ctx: reconnect.ReconnectContext, password: str) -> None:
    """The owner renews the inbox's sign-in while it stays connected (through a link)."""
    link = links.create_link(world.models, inbox_id="ibx_main", created_by="admin@agency.example", now=NOW).link
    reconnect._store_credentials(ctx, row(world), link, {"password": password}, None, NOW)


def test_a_refresh_that_finishes_after_a_reconnect_loses_and_adopts_the_new_sign_in(world: World) -> None:
    poller = container(world.aws)
    loaded = row(world)
    started_at = poller.current(loaded).version  # the poll loaded the old grant, then refreshes it
    sign_in_again(world, reconnect_context(world), "the new password")
    with pytest.raises(StaleCredentials):
        poller.save(loaded, {"password": "a refresh of the old grant"}, over=started_at)
    fresh, stored = poller.reload(loaded)
    assert dict(stored.values) == {"password": "the new password"}
    assert fresh.credentials_version == stored.version == started_at + 1


def test_a_refresh_that_lands_inside_a_reconnect_does_not_overwrite_it(world: World) -> None:
    """The refresh is saved between the reconnect's read of the item and its transaction: the
    transaction's condition on the item fails, and the reconnect goes again past the refresh."""
    poller = container(world.aws)
    raced = False

    class RacedStore(CredentialStore):
        def _transact(self, *args: Any) -> None:
            nonlocal raced
            if not raced:
                raced = True
                poller.save(row(world), {"password": "a refresh of the old grant"})
            super()._transact(*args)

    ctx = reconnect_context(world)
    ctx = reconnect.ReconnectContext(
        models=ctx.models,
        cipher=ctx.cipher,
        credentials=RacedStore.with_kms(world.models, world.aws.client("kms"), world.aws.settings.credentials_key_id),
        authorizers=ctx.authorizers,
        login_check=ctx.login_check,
        public_base_url=ctx.public_base_url,
    )
    sign_in_again(world, ctx, "the new password")
    assert raced
    stored = row(world)
    assert container(world.aws).load(stored) == {"password": "the new password"}
    item = world.models.credentials.get("ibx_main", consistent_read=True)
    assert int(item.version) == stored.credentials_version == 2  # seeded at 0, the refresh 1, the sign-in 2


def credentials_put(world: World) -> Any:
    table = world.models.credentials.Meta.table_name
    return lambda service, operation, params: operation == "PutItem" and params.get("TableName") == table


def row_update(world: World) -> Any:
    table = world.models.inbox.Meta.table_name
    return lambda service, operation, params: operation == "UpdateItem" and params.get("TableName") == table


@pytest.mark.parametrize("kind", ["throttle", "5xx", "lost_response"])
def test_a_save_whose_item_write_fails_once_is_retried_and_keeps_the_newer_credentials(world: World, kind: str) -> None:
    store = container(world.aws)
    with aws_faults() as faults, faults.failing(credentials_put(world), kind=kind, times=1):
        version = store.save(row(world), {"password": "refreshed"})
    assert faults.injected == "dynamodb.PutItem"
    # A lost answer finds its own write as a failed condition: it is recognised, not read as a rival.
    assert version == 1 and row(world).credentials_version == 1
    assert container(world.aws).load(row(world)) == {"password": "refreshed"}


def test_a_save_whose_row_write_keeps_failing_leaves_the_newer_credentials_in_force(world: World) -> None:
    """The item is written, then the row's version write is throttled every time (or the function
    dies there): the row is one behind, but what is read and raced is the item."""
    store = container(world.aws)
    with aws_faults() as faults, faults.failing(row_update(world)), pytest.raises(WriteNotDone):
        store.save(row(world), {"password": "refreshed"})
    behind = row(world)
    assert behind.credentials_version == 0
    stored = container(world.aws).current(behind)
    assert dict(stored.values) == {"password": "refreshed"} and stored.version == 1
    # A slower refresh from the old version loses; the next one from the item moves the row on.
    with pytest.raises(StaleCredentials):
        container(world.aws).save(behind, {"password": "older"}, over=0)
    assert container(world.aws).save(behind, {"password": "newest"}, over=stored.version) == 2
    assert row(world).credentials_version == 2
    assert container(world.aws).load(row(world)) == {"password": "newest"}


# ---------------------------------------------------------------------------------------------
# Rows from before, and the size of the row


def test_a_row_that_holds_its_credentials_from_before_is_read_and_moved_out(world: World) -> None:
    tokens = outlook_tokens()
    kms = KmsCipher(world.aws.client("kms"), world.aws.settings.credentials_key_id)
    legacy = world.add_inbox(
        "ibx_legacy", credentials=kms.encrypt(json.dumps(tokens).encode(), context={"inbox_id": "ibx_legacy"})
    )
    before = item_size(raw_row(world, legacy.inbox_id))
    assert before > 4096  # every write of this row cost five units

    assert container(world.aws).load(row(world, legacy.inbox_id)) == tokens
    moved = row(world, legacy.inbox_id)
    assert moved.credentials is None and moved.credentials_version == 0
    after = item_size(raw_row(world, legacy.inbox_id))
    assert after < 1024, (before, after)
    assert container(world.aws).load(moved) == tokens  # now from the item


def test_with_outlook_sized_tokens_a_send_claim_and_a_poll_write_one_unit_to_the_inbox_row(world: World) -> None:
    tokens = outlook_tokens()
    assert len(json.dumps(tokens)) > 3900
    world.store.seed(row(world), tokens)
    size = item_size(raw_row(world, "ibx_main"))
    assert size < 1024, size
    inboxes = world.models.inbox.Meta.table_name

    world.enroll("enr_1")
    with metered() as send:
        assert send_step(world.send_context(), world.request("enr_1"), now=NOW, redelivered=False) is Outcome.SENT
    assert send.writes_by_table[inboxes] >= 1  # the claim
    # One unit each for the row itself (what its indexes cost comes on top, the same at any size).
    assert send.write_units_by_table[inboxes] - send.index_units_by_table[inboxes] == send.writes_by_table[inboxes]

    world.enroll("enr_2", step=1, due=NOW + timedelta(days=3))
    world.box().incoming.append(reply(world.inbox, "enr_2", date=NOW))
    with metered() as poll:
        assert polling.poll_inbox(world.poll_context(), row(world), now=NOW).failure is None
    assert poll.writes_by_table[inboxes] >= 1  # the cursor
    assert poll.write_units_by_table[inboxes] - poll.index_units_by_table[inboxes] == poll.writes_by_table[inboxes]
    assert item_size(raw_row(world, "ibx_main")) < 1024


def test_a_new_inbox_with_no_sign_in_yet_opens_as_empty(world: World) -> None:
    pending = world.models.inbox(
        inbox_id="ibx_pending",
        provider="gmail",
        address="new@agency.example",
        owner_email="owner@client.example",
        created_at=NOW,
        status=InboxStatus.PENDING.value,
    )
    pending.save()
    assert container(world.aws).load(pending) == {}
