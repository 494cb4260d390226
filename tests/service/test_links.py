"""Reconnect links, the service: create, verify, consume, revoke and list, on tables from template.yaml."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from moto import mock_aws

from local.cfn import table_definition
from sendwell.models import BacklogMode, LinkState, Models, TableNames, bind_models
from sendwell.services import links
from sendwell.services.links import IssuedLink, LinkExpired, LinkInvalid, LinkUsed
from tests.template import REGION, TEMPLATE

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
INBOX = "ibx_sales"
ADMIN = "arn:aws:iam::123456789012:user/dana.admin"
LINKS_TABLE = "test-LinksTable"


@pytest.fixture(scope="module")
def table() -> Iterator[Models]:
    """Only the links table, created once from its definition in template.yaml."""
    with pytest.MonkeyPatch.context() as env, mock_aws():
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.setenv(name, "testing")
        boto3.client("dynamodb", region_name=REGION).create_table(
            **table_definition(TEMPLATE["Resources"]["LinksTable"]["Properties"], LINKS_TABLE)
        )
        # Every other table is left out: the link service must not touch one.
        names = {name: "no-such-table" for name in TableNames.__dataclass_fields__}
        yield bind_models(TableNames(**{**names, "links": LINKS_TABLE}), region=REGION)


@pytest.fixture
def models(table: Models) -> Iterator[Models]:
    """The links table, emptied after each test."""
    yield table
    with table.link.batch_write() as batch:
        for link in table.link.scan():
            batch.delete(link)


def issue(
    models: Models,
    *,
    inbox_id: str = INBOX,
    at: datetime = NOW,
    lifetime: timedelta = links.DEFAULT_LIFETIME,
    backlog_mode: BacklogMode = BacklogMode.PACED,
    revoke_older: bool = False,
) -> IssuedLink:
    return links.create_link(
        models,
        inbox_id=inbox_id,
        created_by=ADMIN,
        now=at,
        lifetime=lifetime,
        backlog_mode=backlog_mode,
        revoke_older=revoke_older,
    )


def test_a_link_has_256_random_bits_and_only_their_hash_is_stored(models: Models) -> None:
    issued = issue(models)
    raw = base64.urlsafe_b64decode(issued.token + "=")
    assert len(raw) * 8 >= 256
    assert links.looks_like_token(issued.token)

    stored = boto3.client("dynamodb", region_name=REGION).scan(TableName=LINKS_TABLE)["Items"]
    assert len(stored) == 1
    assert stored[0]["token_hash"]["S"] == hashlib.sha256(issued.token.encode()).hexdigest()
    assert issued.token not in json.dumps(stored)  # the token itself is nowhere in the table

    link = links.verify(models, issued.token, now=NOW)
    assert link.inbox_id == INBOX and link.created_by == ADMIN and link.state == LinkState.ACTIVE
    assert link.expires_at == NOW + timedelta(days=7)  # the default lifetime
    assert link.expires_ttl > (NOW + timedelta(days=7)).timestamp()  # TTL drops it only after a grace period
    assert link.backlog_mode == BacklogMode.PACED


def test_two_links_never_share_a_token(models: Models) -> None:
    tokens = {issue(models).token for _ in range(20)}
    assert len(tokens) == 20


def test_lifetime_and_creator_are_checked(models: Models) -> None:
    with pytest.raises(ValueError, match="between"):
        issue(models, lifetime=timedelta(days=31))
    with pytest.raises(ValueError, match="between"):
        issue(models, lifetime=timedelta(minutes=1))
    with pytest.raises(ValueError, match="who created it"):
        links.create_link(models, inbox_id=INBOX, created_by="  ", now=NOW)
    assert links.list_links(models, INBOX) == []
    short = issue(models, lifetime=timedelta(hours=1), backlog_mode=BacklogMode.HOLD)
    assert short.link.expires_at == NOW + timedelta(hours=1) and short.link.backlog_mode == BacklogMode.HOLD


def _tampered(token: str) -> str:
    first = "A" if token[0] != "A" else "B"
    return first + token[1:]


MALFORMED: dict[str, Callable[[str], str]] = {
    "one character changed": _tampered,
    "truncated": lambda token: token[:-1],
    "extended": lambda token: token + "x",
    "non-ascii": lambda token: "é" + token[1:],
    "outside the alphabet": lambda token: token[:20] + "/" + token[21:],
    "empty": lambda token: "",
    "injection-shaped": lambda token: "' OR 1=1 --" + "a" * 32,
}


def test_tampered_and_malformed_tokens_are_invalid(models: Models) -> None:
    issued = issue(models)
    for name, tamper in MALFORMED.items():
        with pytest.raises(LinkInvalid):
            links.verify(models, tamper(issued.token), now=NOW)
            pytest.fail(f"{name} token was accepted")
    assert links.verify(models, issued.token, now=NOW).state == LinkState.ACTIVE  # the real one still works


def test_an_unknown_well_formed_token_is_invalid(models: Models) -> None:
    issue(models)
    with pytest.raises(LinkInvalid):
        links.verify(models, "q" * 43, now=NOW)


def test_an_expired_link_says_so_and_cannot_be_consumed(models: Models) -> None:
    issued = issue(models)
    later = NOW + timedelta(days=7)
    assert links.verify(models, issued.token, now=later - timedelta(seconds=1))
    with pytest.raises(LinkExpired):
        links.verify(models, issued.token, now=later)
    # A link verified just before expiry and consumed just after: the conditional write refuses it.
    link = links.verify(models, issued.token, now=later - timedelta(seconds=1))
    with pytest.raises(LinkExpired):
        links.consume(models, link, now=later + timedelta(seconds=1))
    assert models.link.get(link.token_hash).state == LinkState.ACTIVE


def test_a_link_is_used_once(models: Models) -> None:
    issued = issue(models)
    # Two people open the same link and both finish signing in: each holds the verified link.
    first = links.verify(models, issued.token, now=NOW)
    second = links.verify(models, issued.token, now=NOW)
    links.consume(models, first, now=NOW + timedelta(minutes=2))
    with pytest.raises(LinkUsed):
        links.consume(models, second, now=NOW + timedelta(minutes=3))
    with pytest.raises(LinkUsed):
        links.verify(models, issued.token, now=NOW + timedelta(minutes=4))
    stored = models.link.get(issued.link.token_hash)
    assert stored.state == LinkState.USED and stored.used_at == NOW + timedelta(minutes=2)


def test_a_revoked_link_is_invalid(models: Models) -> None:
    issued = issue(models)
    held = links.verify(models, issued.token, now=NOW)
    assert links.revoke(models, issued.link.link_id, inbox_id=INBOX) is True
    with pytest.raises(LinkInvalid):
        links.verify(models, issued.token, now=NOW)
    with pytest.raises(LinkInvalid):  # a page opened before the revoke can't finish with it
        links.consume(models, held, now=NOW)
    assert links.revoke(models, issued.link.link_id, inbox_id=INBOX) is False  # already revoked


def test_revoke_is_scoped_to_the_inbox_and_to_active_links(models: Models) -> None:
    issued = issue(models)
    assert links.revoke(models, issued.link.link_id, inbox_id="ibx_other") is False
    assert links.revoke(models, "lnk_0000000000000000", inbox_id=INBOX) is False
    links.consume(models, links.verify(models, issued.token, now=NOW), now=NOW)
    assert links.revoke(models, issued.link.link_id, inbox_id=INBOX) is False  # used links stay used
    assert models.link.get(issued.link.token_hash).state == LinkState.USED


def test_links_are_listed_per_inbox_newest_first(models: Models) -> None:
    oldest = issue(models, at=NOW)
    middle = issue(models, at=NOW + timedelta(hours=1))
    newest = issue(models, at=NOW + timedelta(hours=2))
    issue(models, inbox_id="ibx_other")
    listed = links.list_links(models, INBOX)
    assert [link.link_id for link in listed] == [newest.link.link_id, middle.link.link_id, oldest.link.link_id]

    links.revoke(models, middle.link.link_id, inbox_id=INBOX)
    active = links.active_links(models, INBOX, now=NOW + timedelta(hours=3))
    assert [link.link_id for link in active] == [newest.link.link_id, oldest.link.link_id]
    # Past the oldest link's expiry only the newest is active.
    after_oldest = links.active_links(models, INBOX, now=NOW + timedelta(days=7, minutes=30))
    assert [link.link_id for link in after_oldest] == [newest.link.link_id]


def test_a_new_link_can_replace_the_older_ones(models: Models) -> None:
    older = [issue(models, at=NOW + timedelta(minutes=i)) for i in range(3)]
    replacement = issue(models, at=NOW + timedelta(hours=1), revoke_older=True)
    for issued in older:
        with pytest.raises(LinkInvalid):
            links.verify(models, issued.token, now=NOW + timedelta(hours=1))
    assert links.verify(models, replacement.token, now=NOW + timedelta(hours=1)).state == LinkState.ACTIVE
    assert links.revoke_all(models, INBOX, now=NOW + timedelta(hours=1)) == 1
    assert links.active_links(models, INBOX, now=NOW + timedelta(hours=1)) == []
