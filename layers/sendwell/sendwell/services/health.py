"""The health check behind ``GET /health``: configuration loaded and the inbox table reachable."""

from __future__ import annotations

from sendwell.models import Models


def check(models: Models) -> dict[str, str]:
    status = models.inbox.describe_table()["TableStatus"]
    return {"status": "ok" if status == "ACTIVE" else "degraded", "inboxes_table": status.lower()}
