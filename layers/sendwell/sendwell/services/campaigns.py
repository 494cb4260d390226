"""Campaigns and enrollments: define a sequence, import prospects into it (all or nothing)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

from pynamodb.exceptions import DoesNotExist

from sendwell.clock import epoch
from sendwell.mime import has_control_chars
from sendwell.models import Campaign, Enrollment, EnrollmentState, Models, new_step, new_window
from sendwell.pacing import SendingWindow
from sendwell.prospects import Prospect, ProspectImportError, RowError, parse_prospects_csv
from sendwell.render import RenderError, required_variables
from sendwell.services import activity, enrollment_states, schedule, suppression

MAX_STEPS = 20
ALWAYS_AVAILABLE = {"email"}  # variables every enrollment has, whatever the CSV


class CampaignError(Exception):
    """A campaign definition or an import was refused; nothing was stored."""


class CampaignNotFound(CampaignError):
    pass


@dataclass(frozen=True, slots=True)
class StepSpec:
    subject: str
    text: str
    html: str | None = None
    delay_days: float = 0
    new_thread: bool = False


@dataclass(frozen=True, slots=True)
class CampaignSpec:
    name: str
    inbox_ids: Sequence[str]
    steps: Sequence[StepSpec]
    days: Sequence[int] = (0, 1, 2, 3, 4)
    start: str = "09:00"
    end: str = "17:00"
    timezone: str = "UTC"
    stop_on_auto_reply: bool = False
    late_after_days: float = 14
    late_policy: str = "skip"

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> CampaignSpec:
        try:
            steps = [StepSpec(**step) for step in body["steps"]]
            fields = {k: v for k, v in body.items() if k != "steps"}
            return cls(steps=steps, **fields)
        except (KeyError, TypeError) as error:
            raise CampaignError(f"a campaign needs name, inbox_ids and steps ({error})") from error


def create_campaign(models: Models, spec: CampaignSpec, *, now: datetime, actor: str) -> Campaign:
    problems = _validate(models, spec)
    if problems:
        raise CampaignError("; ".join(problems))
    window = new_window(
        days=",".join(str(d) for d in sorted(set(spec.days))), start=spec.start, end=spec.end, tz=spec.timezone
    )
    campaign = models.campaign(
        campaign_id="cmp_" + secrets.token_hex(8),
        name=spec.name,
        created_at=now,
        inbox_ids=list(spec.inbox_ids),
        steps=[
            new_step(
                subject=s.subject,
                text=s.text,
                html=s.html,
                delay_seconds=int(s.delay_days * 86400),
                new_thread=s.new_thread,
            )
            for s in spec.steps
        ],
        window=window,
        stop_on_auto_reply=spec.stop_on_auto_reply,
        late_after_seconds=int(spec.late_after_days * 86400),
        late_policy=spec.late_policy,
    )
    campaign.save(condition=models.campaign.campaign_id.does_not_exist())
    activity.record(
        models,
        now=now,
        kind="campaign.created",
        message=f"Campaign {spec.name!r} created by {actor} with {len(spec.steps)} steps",
        campaign_ids=[campaign.campaign_id],
    )
    return campaign


def _validate(models: Models, spec: CampaignSpec) -> list[str]:
    problems: list[str] = []
    if not spec.name.strip() or len(spec.name) > 200 or has_control_chars(spec.name):
        problems.append("name must be one line of 1 to 200 characters")
    if not 1 <= len(spec.steps) <= MAX_STEPS:
        problems.append(f"a campaign has 1 to {MAX_STEPS} steps")
    if not spec.inbox_ids:
        problems.append("a campaign sends from at least one inbox")
    for inbox_id in spec.inbox_ids:
        try:
            models.inbox.get(inbox_id)
        except DoesNotExist:
            problems.append(f"no inbox {inbox_id}")
    for number, step in enumerate(spec.steps, start=1):
        for part, source in (("subject", step.subject), ("text", step.text), ("html", step.html)):
            if source is None:
                continue
            try:
                required_variables(source)
            except RenderError as error:
                problems.append(f"step {number} {part}: {error}")
        if step.delay_days < 0:
            problems.append(f"step {number}: delay_days can't be negative")
    try:
        SendingWindow(
            days=frozenset(spec.days),
            start=time.fromisoformat(spec.start),
            end=time.fromisoformat(spec.end),
            tz=spec.timezone,
        )
    except ValueError as error:
        problems.append(f"sending window: {error}")
    if spec.late_policy not in ("skip", "hold", "send"):
        problems.append("late_policy must be skip, hold or send")
    return problems


def get_campaign(models: Models, campaign_id: str) -> Campaign:
    try:
        return models.campaign.get(campaign_id)
    except DoesNotExist as error:
        raise CampaignNotFound(f"no campaign {campaign_id}") from error


def enrollment_id_for(campaign_id: str, email: str) -> str:
    """One enrollment per prospect per campaign: the id is derived, so a duplicate can't slip in."""
    return "enr_" + hashlib.sha256(f"{campaign_id}:{email.lower()}".encode()).hexdigest()[:24]


def campaign_variables(campaign: Campaign) -> set[str]:
    needed: set[str] = set()
    for step in campaign.steps:
        for source in (step.subject, step.text, step.html):
            if source:
                needed |= required_variables(source)
    return needed - ALWAYS_AVAILABLE


@dataclass(frozen=True, slots=True)
class ImportResult:
    imported: int
    campaign_id: str
    suppressed: int = 0  # rows skipped: their address is on the suppression list


def import_prospects(models: Models, campaign_id: str, data: bytes | str, *, now: datetime, actor: str) -> ImportResult:
    """Parse, check and enroll every prospect, or none: each bad row is reported with its line."""
    campaign = get_campaign(models, campaign_id)
    prospects = parse_prospects_csv(data, required_fields=campaign_variables(campaign))
    ids = [enrollment_id_for(campaign_id, p.email) for p in prospects]
    existing = {item.enrollment_id for item in models.enrollment.batch_get(ids, attributes_to_get=["enrollment_id"])}
    if existing:
        raise ProspectImportError(
            [
                RowError(line=line, field="email", message=f"{p.email} is already in this campaign")
                for line, (p, enrollment_id) in enumerate(zip(prospects, ids, strict=True), start=2)
                if enrollment_id in existing
            ]
        )
    # Suppressed addresses (bounced, unsubscribed, complained, added by hand) are skipped, not errors:
    # a list bought or exported elsewhere carries them, and the rest of it is good.
    blocked = suppression.suppressed_among(models, [p.email for p in prospects])
    kept = [(p, i) for p, i in zip(prospects, ids, strict=True) if p.email.lower() not in blocked]
    skipped = len(prospects) - len(kept)
    prospects, ids = [p for p, _ in kept], [i for _, i in kept]
    enrollments = [
        _enrollment(models, campaign, prospect, enrollment_id, index, now)
        for index, (prospect, enrollment_id) in enumerate(zip(prospects, ids, strict=True))
    ]
    first_due = now + timedelta(seconds=int(campaign.steps[0].delay_seconds))
    inbox_ids = list(dict.fromkeys(e.inbox_id for e in enrollments))
    # Each inbox is woken before its steps are stored and again after: a crash in between (the
    # import then fails, and its retry finds the prospects enrolled) still has dispatch look at
    # it, and a tick that looked before the steps were there is followed by a wake that finds it
    # moved on. The second wake costs a read: the first one's time still stands.
    for inbox_id in inbox_ids:
        schedule.wake(models, inbox_id, at=first_due)
    with models.enrollment.batch_write() as batch:
        for enrollment in enrollments:
            batch.save(enrollment)
    for inbox_id in inbox_ids:  # one write per inbox at most, however many prospects it got
        schedule.wake(models, inbox_id, at=first_due)
    activity.record(
        models,
        now=now,
        kind="campaign.prospects_imported",
        message=f"{len(prospects)} prospects imported by {actor}"
        + (f"; {skipped} skipped, on the suppression list" if skipped else ""),
        campaign_ids=[campaign_id],
    )
    return ImportResult(imported=len(prospects), campaign_id=campaign_id, suppressed=skipped)


def _enrollment(
    models: Models, campaign: Campaign, prospect: Prospect, enrollment_id: str, index: int, now: datetime
) -> Enrollment:
    # A prospect stays on the inbox it starts with; the pool is shared round-robin.
    inbox_id = campaign.inbox_ids[index % len(campaign.inbox_ids)]
    first = campaign.steps[0]
    return models.enrollment(
        enrollment_id=enrollment_id,
        campaign_id=campaign.campaign_id,
        inbox_id=inbox_id,
        email=prospect.email,
        fields=prospect.template_variables(),
        created_at=now,
        state=EnrollmentState.ACTIVE.value,
        step_index=0,
        due_inbox=inbox_id,
        due_at=epoch(now) + int(first.delay_seconds),
    )


def stop_address(models: Models, email: str, *, now: datetime, reason: str) -> int:
    """Stop every enrollment of ``email``, in every campaign, as SUPPRESSED: the address was just
    suppressed, and none of its due steps may be dispatched. How many this call stopped.

    Enrollment ids are derived from campaign and address, so this is one scan of the (few)
    campaigns and one BatchGet; the send function checks the list too, for an import that races
    with it.
    """
    ids = [enrollment_id_for(c.campaign_id, email) for c in models.campaign.scan(attributes_to_get=["campaign_id"])]
    stopped = 0
    for enrollment in models.enrollment.batch_get(ids):
        if enrollment.state not in {s.value for s in enrollment_states.STOPPABLE}:
            continue
        if enrollment_states.stop(models, enrollment, EnrollmentState.SUPPRESSED, reason):
            stopped += 1
            activity.record(
                models,
                now=now,
                kind="enrollment.suppressed",
                message=f"{enrollment.email}: {reason}",
                campaign_ids=[enrollment.campaign_id],
                details={"enrollment_id": enrollment.enrollment_id},
                dedup=f"{enrollment.enrollment_id}.suppressed",
            )
    return stopped
