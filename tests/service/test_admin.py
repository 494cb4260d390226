"""The admin API and the CLI over the same services: campaigns, prospect import, links."""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from local.stack import http_routes
from sendwell.services.links import token_hash
from tests.deployment import Deployment
from tests.template import TEMPLATE

Event = dict[str, Any]


@pytest.fixture
def admin(aws: Deployment, sample_event: Callable[[str], Event]) -> Callable[..., tuple[int, Any]]:
    base = sample_event("admin_create_inbox.json")

    def call(method: str, path: str, body: Any = None, *, raw: str | None = None) -> tuple[int, Any]:
        event = copy.deepcopy(base)
        route = next(r for r in http_routes(TEMPLATE) if r.method == method and r.pattern.match(path))
        event.update(routeKey=route.route_key, rawPath=path)
        event["requestContext"]["http"].update(method=method, path=path)
        event["requestContext"]["routeKey"] = route.route_key
        event["pathParameters"] = route.pattern.match(path).groupdict()  # type: ignore[union-attr]
        event["body"] = raw if raw is not None else (json.dumps(body) if body is not None else None)
        response = aws.invoke("AdminApiFunction", event)
        return response["statusCode"], json.loads(response["body"])

    return call


def _inbox(admin: Callable[..., tuple[int, Any]]) -> str:
    status, inbox = admin(
        "POST",
        "/admin/inboxes",
        {"provider": "gmail", "address": "sales@agency.example", "owner_email": "owner@agency.example"},
    )
    assert status == 201
    return str(inbox["inbox_id"])


CAMPAIGN = {
    "name": "Q4 outreach",
    "steps": [
        {"subject": "Hi {{ first_name }}", "text": "Hello {{ first_name }} at {{ company }}"},
        {"subject": "-", "text": "Following up, {{ first_name | default('there') }}", "delay_days": 3},
    ],
    "timezone": "America/New_York",
}


def test_campaign_and_all_or_nothing_prospect_import(admin: Callable[..., tuple[int, Any]], aws: Deployment) -> None:
    inbox_id = _inbox(admin)
    status, campaign = admin("POST", "/admin/campaigns", {**CAMPAIGN, "inbox_ids": [inbox_id]})
    assert status == 201, campaign
    path = f"/admin/campaigns/{campaign['campaign_id']}/prospects"
    bad = (
        "email,first_name,company\n"
        "ok@client.example,Ok,Client\n"
        "not-an-email,Bad,Client\n"
        "dup@client.example,Dup,Client\n"
        "DUP@client.example,Dup,Client\n"
        "nocompany@client.example,No,\n"
    )
    status, error = admin("POST", path, raw=bad)
    assert status == 422
    lines = {(row["line"], row["field"]) for row in error["rows"]}
    assert (3, "email") in lines and (5, "email") in lines and (6, "company") in lines
    assert list(aws.models.enrollment.scan()) == []  # nothing half-imported
    good = "email,first_name,company\nana@client.example,Ana,Client\nbo@client.example,Bo,Other\n"
    status, result = admin("POST", path, raw=good)
    assert (status, result["imported"]) == (201, 2)
    enrollments = {e.email: e for e in aws.models.enrollment.scan()}
    assert set(enrollments) == {"ana@client.example", "bo@client.example"}
    assert all(e.inbox_id == inbox_id and e.due_inbox is not None for e in enrollments.values())
    # Importing the same people again is refused, line by line.
    status, again = admin("POST", path, raw=good)
    assert status == 422 and {row["line"] for row in again["rows"]} == {2, 3}


def test_campaign_definition_errors_are_clear(admin: Callable[..., tuple[int, Any]]) -> None:
    inbox_id = _inbox(admin)
    status, error = admin("POST", "/admin/campaigns", {**CAMPAIGN, "inbox_ids": ["ibx_nope"], "timezone": "Nowhere"})
    assert status == 422 and "no inbox ibx_nope" in error["error"] and "time zone" in error["error"]
    broken = {**CAMPAIGN, "inbox_ids": [inbox_id], "steps": [{"subject": "{{ oops", "text": "x"}]}
    status, error = admin("POST", "/admin/campaigns", broken)
    assert status == 422 and "step 1 subject" in error["error"]
    status, error = admin("POST", "/admin/campaigns", {"name": "no steps"})
    assert status == 422


def test_links_are_created_listed_and_revoked_without_exposing_tokens(
    admin: Callable[..., tuple[int, Any]], aws: Deployment
) -> None:
    inbox_id = _inbox(admin)
    status, created = admin("POST", f"/admin/inboxes/{inbox_id}/links", {"expires_in_days": 2, "backlog_mode": "hold"})
    assert status == 201
    assert created["url"].startswith("https://sendwell.example.test/r/")
    token = created["url"].rsplit("/", 1)[1]
    stored = aws.models.link.get(token_hash(token))
    assert stored.backlog_mode == "hold" and stored.created_by.endswith("user/alice")
    status, listed = admin("GET", f"/admin/inboxes/{inbox_id}/links")
    assert status == 200 and token not in json.dumps(listed)
    assert [link["link_id"] for link in listed["links"]] == [created["link_id"]]
    status, _ = admin("DELETE", f"/admin/inboxes/{inbox_id}/links/{created['link_id']}")
    assert status == 200
    assert aws.models.link.get(token_hash(token)).state == "revoked"
    status, _ = admin("DELETE", f"/admin/inboxes/{inbox_id}/links/{created['link_id']}")
    assert status == 404
    status, error = admin("POST", f"/admin/inboxes/{inbox_id}/links", {"backlog_mode": "yolo"})
    assert status == 400 and "backlog_mode" in error["error"]


def test_the_cli_runs_the_same_services(aws: Deployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "functions" / "admin_api"))
    try:
        import admin_cli
    finally:
        sys.path.pop(0)
    run = admin_cli.run
    code = run(
        ["create-inbox", "--provider", "gmail", "--address", "cli@agency.example", "--owner", "owner@agency.example"],
        aws.models,
        aws.settings,
    )
    assert code == 0
    created = json.loads(capsys.readouterr().out)
    assert created["connect_url"].startswith("https://sendwell.example.test/r/")
    campaign_file = tmp_path / "campaign.json"
    campaign_file.write_text(json.dumps({**CAMPAIGN, "inbox_ids": [created["inbox_id"]]}))
    assert run(["create-campaign", str(campaign_file)], aws.models, aws.settings) == 0
    campaign_id = json.loads(capsys.readouterr().out)["campaign_id"]
    bad = tmp_path / "bad.csv"
    bad.write_text("email,first_name,company\nbroken,X,Y\n")
    assert run(["import", campaign_id, str(bad)], aws.models, aws.settings) == 2
    assert "line 2: email" in capsys.readouterr().err
    good = tmp_path / "good.csv"
    good.write_text("email,first_name,company\nz@client.example,Zed,Zco\n")
    assert run(["import", campaign_id, str(good)], aws.models, aws.settings) == 0
    capsys.readouterr()
    assert run(["pause", created["inbox_id"]], aws.models, aws.settings) == 0
    assert json.loads(capsys.readouterr().out)["paused"] is True
    assert aws.models.inbox.get(created["inbox_id"]).paused
    assert run(["status", "ibx_missing"], aws.models, aws.settings) == 2
    assert "no inbox ibx_missing" in capsys.readouterr().err


def test_suppression_list_through_the_api_import_and_dispatch(
    admin: Callable[..., tuple[int, Any]], aws: Deployment
) -> None:
    from datetime import UTC, datetime

    from sendwell.adapters.aws import SqsQueue
    from sendwell.models import InboxStatus
    from sendwell.services.dispatch import dispatch_due_steps

    inbox_id = _inbox(admin)
    first = admin("POST", "/admin/campaigns", {**CAMPAIGN, "inbox_ids": [inbox_id]})[1]["campaign_id"]
    second = admin("POST", "/admin/campaigns", {**CAMPAIGN, "name": "Q1", "inbox_ids": [inbox_id]})[1]["campaign_id"]
    rows = "email,first_name,company\nana@client.example,Ana,Client\nbo@client.example,Bo,Other\n"
    assert admin("POST", f"/admin/campaigns/{first}/prospects", raw=rows)[0] == 201
    # Suppressing an address stops it in every campaign it is in.
    status, added = admin("POST", "/admin/suppressions", {"email": " Ana@Client.EXAMPLE ", "note": "asked by phone"})
    assert status == 201, added
    assert (added["email"], added["reason"], added["enrollments_stopped"]) == ("ana@client.example", "manual", 1)
    ana = next(e for e in aws.models.enrollment.scan() if e.email == "ana@client.example")
    assert ana.state == "suppressed" and ana.due_inbox is None
    # Adding it again changes nothing: the first entry stands.
    status, again = admin("POST", "/admin/suppressions", {"email": "ana@client.example", "note": "other"})
    assert status == 200 and again["note"] == "asked by phone"
    # A bad address is a clear 400, and nothing is stored.
    before = list(aws.models.suppression.scan())
    for body in ({"email": "not-an-address"}, {"email": 7}, {"email": "x@y.example", "color": "red"}):
        status, error = admin("POST", "/admin/suppressions", body)
        assert status == 400 and error["error"], body
    assert [e.email for e in aws.models.suppression.scan()] == [e.email for e in before]
    # The next import skips the suppressed row and says so.
    status, imported = admin("POST", f"/admin/campaigns/{second}/prospects", raw=rows)
    assert status == 201 and (imported["imported"], imported["suppressed"]) == (1, 1)
    assert {e.email for e in aws.models.enrollment.scan() if e.campaign_id == second} == {"bo@client.example"}
    # Dispatch never queues a suppressed address.
    aws.models.inbox(inbox_id).update(actions=[aws.models.inbox.status.set(InboxStatus.CONNECTED.value)])
    queue = SqsQueue(aws.client("sqs"), aws.settings.send_queue_url)
    report = dispatch_due_steps(aws.models, queue, now=datetime(2030, 1, 7, 15, 0, tzinfo=UTC))  # Monday, 10:00 NY
    queued = {json.loads(m["Body"])["enrollment_id"] for m in aws.queue_messages("SendQueue")}
    assert queued and ana.enrollment_id not in queued, report  # the inbox sends one step a tick: not hers
    # Listing, filtering, looking up and removing.
    status, listed = admin("GET", "/admin/suppressions")
    assert status == 200 and [e["email"] for e in listed["entries"]] == ["ana@client.example"]
    assert admin("GET", "/admin/suppressions/ana%40client.example")[0] == 200
    assert admin("DELETE", "/admin/suppressions/ana%40client.example")[0] == 200
    assert admin("DELETE", "/admin/suppressions/ana%40client.example")[0] == 404
    assert admin("GET", "/admin/suppressions/ana%40client.example")[0] == 404


def test_the_cli_lists_adds_and_removes_suppressions(aws: Deployment, capsys: pytest.CaptureFixture[str]) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "functions" / "admin_api"))
    try:
        import admin_cli
    finally:
        sys.path.pop(0)
    run = admin_cli.run
    assert run(["suppress", "Dana@Client.example", "--note", "asked by phone"], aws.models, aws.settings) == 0
    added = json.loads(capsys.readouterr().out)
    assert (added["email"], added["added"], added["reason"]) == ("dana@client.example", True, "manual")
    assert run(["suppressions"], aws.models, aws.settings) == 0
    assert [e["email"] for e in json.loads(capsys.readouterr().out)] == ["dana@client.example"]
    assert run(["suppressions", "--reason", "manual"], aws.models, aws.settings) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1
    assert run(["suppress", "not-an-address"], aws.models, aws.settings) == 2
    assert "not an email address" in capsys.readouterr().err
    assert run(["unsuppress", "dana@client.example"], aws.models, aws.settings) == 0
    assert "removed dana@client.example" in capsys.readouterr().out
    assert run(["unsuppress", "dana@client.example"], aws.models, aws.settings) == 1
    assert list(aws.models.suppression.scan()) == []
