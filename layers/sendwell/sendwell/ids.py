"""Keys derived from ids: our Message-ID for a step, and the due-index shard of an enrollment.

Derived rather than stored, so sending, polling, campaigns and the tests agree without a lookup:
a reply's In-Reply-To names its enrollment and step, and a retry finds the step in Sent.
"""

from __future__ import annotations

import hashlib

from sendwell.models import DUE_SHARDS


def shard_for(enrollment_id: str) -> str:
    return str(int(hashlib.blake2b(enrollment_id.encode(), digest_size=2).hexdigest(), 16) % DUE_SHARDS)


def step_message_id(enrollment_id: str, step_index: int, address: str) -> str:
    """Our Message-ID for a step: derived, so a retry can find it in Sent and References rebuild."""
    domain = address.rsplit("@", 1)[1]
    return f"<sw.{enrollment_id}.{step_index}@{domain}>"


def parse_step_message_id(message_id: str) -> tuple[str, int] | None:
    """The enrollment and step a Message-ID of ours names, or None if it is not ours."""
    local = message_id.strip().strip("<>").split("@", 1)[0]
    parts = local.split(".")
    if len(parts) != 3 or parts[0] != "sw" or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2])
