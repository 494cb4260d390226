"""Dispatch schedules inboxes, not steps: backlogs cost no re-timing, blocked inboxes starve no one,
the lag counts what no tick reached, and every way back onto the send index keeps the gap.

Before: every tick re-timed each waiting step an inbox's gap blocked (77.5 write units per email
with 50 due per inbox), and nine disconnected inboxes' due steps filled the window so that 200
connected inboxes sent nothing while the lag metric said 0.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from pynamodb.exceptions import PynamoDBException

from sendwell.adapters.aws import SqsQueue
from sendwell.clock import epoch
from sendwell.models import InboxStatus
from sendwell.ports.messages import SendRequest
from sendwell.services import bounces, campaigns, inboxes, polling, schedule
from sendwell.services.dispatch import dispatch_due_steps, dispatch_inboxes, fan_out
from sendwell.services.sending import Outcome, send_step
from sendwell.writes import WriteNotDone
from tests.deployment import deployed
from tests.faults import aws_faults
from tests.service.test_fault_causes import NOW, World


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    with deployed(monkeypatch) as aws:
        yield World(aws)


def send_queue(world: World) -> SqsQueue:
    return SqsQueue(world.aws.client("sqs"), world.aws.settings.send_queue_url)


def drain_sends(world: World) -> list[SendRequest]:
    return [SendRequest.from_json(m["Body"]) for m in world.aws.drain(world.aws.settings.send_queue_url)]


class Writes:
    """The DynamoDB writes made inside ``counting()``, by table."""

    def __init__(self, world: World) -> None:
        self.names = {
            world.models.enrollment.Meta.table_name: "enrollments",
            world.models.inbox.Meta.table_name: "inboxes",
        }
        self.by_table: Counter[str] = Counter()

    def record(self, service: str, operation: str, params: dict[str, Any]) -> bool:
        if service == "dynamodb" and operation in ("PutItem", "UpdateItem", "DeleteItem"):
            self.by_table[self.names.get(params.get("TableName", ""), "other")] += 1
        elif service == "dynamodb" and operation == "BatchWriteItem":
            for table, requests in params["RequestItems"].items():
                self.by_table[self.names.get(table, "other")] += len(requests)
        return False  # count only, never fail


def test_a_backlog_goes_out_one_per_gap_without_rewriting_its_waiting_steps(world: World) -> None:
    for number in range(30):
        world.enroll(f"enr_{number:02d}", due=NOW - timedelta(minutes=30 - number))
    due_before = {e.enrollment_id: e.due_at for e in world.models.enrollment.scan()}
    writes = Writes(world)
    sent: list[str] = []
    with aws_faults() as faults:
        for tick in range(40):  # the inbox's gap is 60 s; ticks come a little more than a gap apart
            now = NOW + timedelta(seconds=70 * tick)
            with faults.failing(writes.record, times=10**9):
                dispatch_due_steps(world.models, send_queue(world), now=now)
            for request in drain_sends(world):
                outcome = send_step(world.send_context(), request, now=now, redelivered=False)
                assert outcome is Outcome.SENT
                sent.append(request.enrollment_id)
    assert sorted(sent) == sorted(due_before) and len(set(sent)) == len(sent)  # each once, none lost
    assert sent == sorted(sent)  # oldest first
    # Dispatch never wrote a step; it wrote the inbox only when nothing was left to send (one park).
    assert writes.by_table["enrollments"] == 0
    assert writes.by_table["inboxes"] <= 2


def test_disconnected_and_paused_inboxes_leave_the_send_index_and_starve_no_one(world: World) -> None:
    for number in range(3):
        down = world.add_inbox(f"ibx_down{number}")
        for step in range(40):
            world.enroll(f"enr_down{number}_{step:02d}", inbox=down, due=NOW - timedelta(hours=2, minutes=step))
        down.update(actions=[world.models.inbox.status.set(InboxStatus.DISCONNECTED.value)])
    paused = world.add_inbox("ibx_paused")
    world.enroll("enr_paused", inbox=paused, due=NOW - timedelta(hours=3))
    inboxes.set_paused(world.models, "ibx_paused", paused=True, now=NOW, actor="admin")
    healthy = [world.add_inbox(f"ibx_ok{number}") for number in range(8)]
    for inbox in healthy:
        world.enroll(f"enr_{inbox.inbox_id}", inbox=inbox, due=NOW - timedelta(minutes=1))
    waiting = {e.enrollment_id: e.due_at for e in world.models.enrollment.scan() if "down" in e.enrollment_id}

    first = dispatch_due_steps(world.models, send_queue(world), now=NOW)
    assert first.enqueued == len(healthy)  # every connected inbox's step went, whatever waited elsewhere
    requests = drain_sends(world)
    assert {r.inbox_id for r in requests} == {i.inbox_id for i in healthy}
    for request in requests:
        assert send_step(world.send_context(), request, now=NOW, redelivered=False) is Outcome.SENT
    # Off the index: the next tick reads none of them, and their steps are as they were.
    later = NOW + timedelta(minutes=5)
    assert set(schedule.ready_inbox_ids(world.models, now=later)) <= {i.inbox_id for i in healthy}
    assert {e.enrollment_id: e.due_at for e in world.models.enrollment.scan() if "down" in e.enrollment_id} == waiting

    # A resume wakes the paused inbox: its step goes at the next tick.
    inboxes.set_paused(world.models, "ibx_paused", paused=False, now=later, actor="admin")
    dispatch_due_steps(world.models, send_queue(world), now=later)
    assert [r.enrollment_id for r in drain_sends(world)] == ["enr_paused"]


def test_the_lag_counts_how_long_each_turn_waited_and_a_send_moves_no_index_key(world: World) -> None:
    inboxes = [world.add_inbox(f"ibx_lag{number}") for number in range(3)]
    for number, inbox in enumerate(inboxes):
        world.enroll(f"enr_lag{number}", inbox=inbox, due=NOW - timedelta(minutes=10 + number))
    # A worker that runs short of time decides the first chunk; the others wait for the next tick.
    ids = [i.inbox_id for i in inboxes]
    first = dispatch_inboxes(world.models, send_queue(world), ids, now=NOW, time_left=lambda: 1, chunk=1)
    assert (first.enqueued, first.unfinished, first.lag_seconds) == (1, 2, 10 * 60)
    later = NOW + timedelta(minutes=1)
    second = dispatch_due_steps(world.models, send_queue(world), now=later)
    # The first inbox again too (its step is not claimed yet): the send queue keeps one message of it.
    assert second.enqueued == 3 and second.lag_seconds == 13 * 60  # the oldest turn, left a minute more
    keys = {i.inbox_id: i.next_send_at for i in world.models.inbox.batch_get(ids)}
    requests = drain_sends(world)
    assert sorted(r.enrollment_id for r in requests) == ["enr_lag0", "enr_lag1", "enr_lag2"]
    for request in requests:
        assert send_step(world.send_context(), request, now=later, redelivered=False) is Outcome.SENT
    # The claims set each gap's end outside the index: no key moved.
    assert {i.inbox_id: i.next_send_at for i in world.models.inbox.batch_get(ids)} == keys
    # Inside their gaps (60 s): passed over without a write, and not late.
    writes = Writes(world)
    with aws_faults() as faults, faults.failing(writes.record, times=10**9):
        inside = dispatch_due_steps(world.models, send_queue(world), now=later + timedelta(seconds=30))
    assert (inside.in_gap, inside.enqueued, inside.lag_seconds) == (3, 0, 0) and sum(writes.by_table.values()) == 0


def test_the_scheduler_fans_out_batches_and_a_worker_short_of_time_leaves_the_rest_ready(world: World) -> None:
    ready = [world.add_inbox(f"ibx_fan{number}") for number in range(5)]
    for inbox in ready:
        world.enroll(f"enr_{inbox.inbox_id}", inbox=inbox, due=NOW - timedelta(minutes=1))
    work = SqsQueue(world.aws.client("sqs"), world.aws.settings.dispatch_queue_url)
    assert fan_out(world.models, work, now=NOW, batch_size=2) == 5
    bodies = [m["Body"] for m in world.aws.drain(world.aws.settings.dispatch_queue_url)]
    assert len(bodies) == 3 and sorted(",".join(bodies).split(",")) == sorted(i.inbox_id for i in ready)

    ids = [i.inbox_id for i in ready]
    report = dispatch_inboxes(world.models, send_queue(world), ids, now=NOW, time_left=lambda: 1, chunk=2)
    assert report.enqueued == 2 and report.unfinished == 3  # the first chunk always, then out of time
    assert len(drain_sends(world)) == 2


def test_a_wake_never_undercuts_the_gap_after_a_send(world: World) -> None:
    table = world.models.inbox
    sent_at = NOW - timedelta(seconds=10)
    world.inbox.update(
        actions=[table.last_sent_at.set(sent_at), table.gap_until.set(epoch(sent_at) + 60), table.send_shard.remove()]
    )
    assert schedule.wake(world.models, world.inbox.inbox_id, at=NOW)
    stored = table.get(world.inbox.inbox_id)
    assert stored.send_shard is not None and stored.next_send_at == epoch(sent_at) + 60  # min gap 60 s, jitter 0
    # An earlier wake than what is scheduled brings it forward, never past the gap.
    world.inbox.update(actions=[table.next_send_at.set(epoch(NOW) + 3600)])
    schedule.wake(world.models, world.inbox.inbox_id, at=NOW)
    assert table.get(world.inbox.inbox_id).next_send_at == epoch(sent_at) + 60


def test_an_inbox_with_nothing_due_is_looked_at_when_its_next_step_falls_due(world: World) -> None:
    world.enroll("enr_later", due=NOW + timedelta(hours=5))  # an import wakes the inbox at the step's due time
    assert world.models.inbox.get(world.inbox.inbox_id).next_send_at == epoch(NOW + timedelta(hours=5))
    assert list(schedule.ready_inbox_ids(world.models, now=NOW + timedelta(hours=4))) == []
    at = NOW + timedelta(hours=5)
    dispatch_due_steps(world.models, send_queue(world), now=at)
    (request,) = drain_sends(world)
    assert request.enrollment_id == "enr_later"
    assert send_step(world.send_context(), request, now=at, redelivered=False) is Outcome.SENT
    # After the gap nothing is due: the inbox is moved on to its follow-up, three days out, once.
    report = dispatch_due_steps(world.models, send_queue(world), now=at + timedelta(minutes=2))
    assert report.enqueued == 0 and report.rescheduled == 1
    assert world.models.inbox.get(world.inbox.inbox_id).next_send_at == epoch(at + timedelta(days=3))


def test_a_window_that_is_shut_moves_the_inbox_to_its_opening_once(world: World) -> None:
    campaign = world.models.campaign.get("cmp_ibx_main")
    campaign.window.days, campaign.window.start, campaign.window.end = "0,1,2,3,4", "09:00", "17:00"
    campaign.save()
    saturday = datetime(2026, 11, 28, 12, 0, tzinfo=NOW.tzinfo)
    for number in range(20):
        world.enroll(f"enr_wk{number:02d}", due=saturday - timedelta(minutes=number))
    writes = Writes(world)
    with aws_faults() as faults, faults.failing(writes.record, times=10**9):
        for minute in range(30):
            dispatch_due_steps(world.models, send_queue(world), now=saturday + timedelta(minutes=minute))
    assert writes.by_table["enrollments"] == 0 and writes.by_table["inboxes"] == 1
    monday_nine = datetime(2026, 11, 30, 9, 0, tzinfo=NOW.tzinfo)
    assert world.models.inbox.get(world.inbox.inbox_id).next_send_at == epoch(monday_nine)


def on_table(name: str, *operations: str) -> Callable[[str, str, dict[str, Any]], bool]:
    """Picks the DynamoDB calls on table ``name`` (those of ``operations`` only, if given)."""

    def picks(service: str, operation: str, params: dict[str, Any]) -> bool:
        tables = [params.get("TableName", ""), *params.get("RequestItems", {})]
        wanted = not operations or operation in operations
        return service == "dynamodb" and wanted and any(name in table for table in tables)

    return picks


def test_an_import_cut_short_after_its_wake_still_has_dispatch_look_at_the_inbox(world: World) -> None:
    """Before: the wake came after the steps were stored; an import that failed in between (and
    whose retry found the prospects enrolled) left its steps to wait for the inbox's next look,
    a day later."""
    assert world.models.inbox.get(world.inbox.inbox_id).send_shard is None  # nothing due yet
    with (
        aws_faults() as faults,
        faults.failing(on_table("EnrollmentsTable", "BatchWriteItem")),
        pytest.raises((PynamoDBException, WriteNotDone)),
    ):
        campaigns.import_prospects(world.models, "cmp_ibx_main", "email\nana@prospect.example\n", now=NOW, actor="a")
    assert list(schedule.ready_inbox_ids(world.models, now=NOW)) == [world.inbox.inbox_id]


def test_a_soft_bounce_whose_wake_failed_is_woken_by_its_replay(world: World) -> None:
    """Before: the step was stored first and the inbox woken after; a fault on the wake left a
    replayed bounce finding itself counted (``ALREADY``), and the step waited for a lost wake."""
    world.enroll("enr_soft", step=1, due=NOW + timedelta(days=3))
    world.models.inbox.get(world.inbox.inbox_id).update(actions=[world.models.inbox.send_shard.remove()])
    enrollment = world.models.enrollment.get("enr_soft")
    bounce = bounces.Bounce(key="<b1@mx.example>", step=None, status="4.2.2", diagnostic="mailbox full", at=NOW)
    with (
        aws_faults() as faults,
        faults.failing(on_table("InboxesTable")),
        pytest.raises((PynamoDBException, WriteNotDone)),
    ):
        bounces.send_back(world.models, enrollment, bounce, blocked=False)
    assert world.models.enrollment.get("enr_soft").returned_by == []  # nothing stored: the replay decides
    replay = bounces.send_back(world.models, world.models.enrollment.get("enr_soft"), bounce, blocked=False)
    assert replay is bounces.Returned.RESENT_LATER
    retry_at = NOW + bounces.SOFT_RETRY_AFTER[0]
    assert world.models.enrollment.get("enr_soft").due_at == epoch(retry_at)
    assert list(schedule.ready_inbox_ids(world.models, now=retry_at)) == [world.inbox.inbox_id]


def test_a_connected_inbox_off_the_poll_index_is_put_back_on_it_by_its_next_dispatch_look(world: World) -> None:
    """A row from before poll slots (``poll_shard`` and the old ``next_poll_at``, no ``poll_slot``)
    is on no poll index: its replies would never be read. Dispatch, which looks at every connected
    inbox at least every IDLE_RECHECK, places it once."""
    table = world.models.inbox
    world.inbox.update(actions=[table.poll_shard.set("1"), table.poll_slot.remove()])
    world.enroll("enr_placed", due=NOW - timedelta(minutes=1))
    dispatch_due_steps(world.models, send_queue(world), now=NOW)
    placed = table.get(world.inbox.inbox_id)
    assert placed.poll_shard is not None and placed.poll_slot is not None and 0 <= placed.poll_slot < 300
    cycle_start = epoch(NOW) - epoch(NOW) % 300
    tick = datetime.fromtimestamp(cycle_start + int(placed.poll_slot) // 60 * 60 + 60, NOW.tzinfo)
    assert world.inbox.inbox_id in set(polling.scheduled_inbox_ids(world.models, now=tick))  # polled in its minute
    # Once: the next look writes nothing for it.
    writes = Writes(world)
    with aws_faults() as faults, faults.failing(writes.record, times=10**9):
        dispatch_due_steps(world.models, send_queue(world), now=NOW + timedelta(seconds=5))
    assert writes.by_table["inboxes"] == 0 and table.get(world.inbox.inbox_id).poll_slot == placed.poll_slot
