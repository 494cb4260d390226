"""Service tier: template.yaml deployed on moto, one deployment per test (``aws``)."""

from __future__ import annotations

from tests.deployment import atomic_dynamodb, aws, sample_event

__all__ = ["atomic_dynamodb", "aws", "sample_event"]  # fixtures: pytest finds them here
