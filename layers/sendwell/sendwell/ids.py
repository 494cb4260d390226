"""Keys derived from ids: our Message-ID for a step, and the step a Message-ID names.

Derived rather than stored, so sending, polling, campaigns and the tests agree without a lookup:
a reply's In-Reply-To names its enrollment and step, and a retry finds the step in Sent.
"""

from __future__ import annotations

from dataclasses import dataclass


def step_message_id(enrollment_id: str, step_index: int, address: str, attempt: int = 0) -> str:
    """Our Message-ID for a step: derived, so a retry can find it in Sent and References rebuild.

    ``attempt`` counts deliveries of the step that a soft bounce or a sender-side block sent back:
    each goes out under its own Message-ID, so the check against Sent never takes the returned
    copy for the new one. The first delivery (0) keeps the plain form.
    """
    domain = address.rsplit("@", 1)[1]
    suffix = f".{attempt}" if attempt else ""
    return f"<sw.{enrollment_id}.{step_index}{suffix}@{domain}>"


@dataclass(frozen=True, slots=True)
class StepRef:
    enrollment_id: str
    step_index: int
    attempt: int = 0


def parse_step_ref(message_id: str) -> StepRef | None:
    """The enrollment, step and delivery attempt a Message-ID of ours names, or None."""
    local = message_id.strip().strip("<>").split("@", 1)[0]
    parts = local.split(".")
    if len(parts) not in (3, 4) or parts[0] != "sw" or not all(p.isdigit() for p in parts[2:]):
        return None
    return StepRef(parts[1], int(parts[2]), int(parts[3]) if len(parts) == 4 else 0)


def parse_step_message_id(message_id: str) -> tuple[str, int] | None:
    """The enrollment and step a Message-ID of ours names, or None if it is not ours."""
    ref = parse_step_ref(message_id)
    return (ref.enrollment_id, ref.step_index) if ref else None
