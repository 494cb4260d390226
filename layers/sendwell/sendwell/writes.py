"""Conditional writes, with "the condition failed" told apart from "the write did not happen".

A failed condition means someone else did it, by design: the caller gets ``False`` and acts on
that. Anything else - throttling, a 5xx, a network error - means the write may not have happened.
It is retried with bounded, jittered backoff; if it still fails, :class:`WriteNotDone` is raised
so the invocation fails and AWS retries it (SQS redelivers the message, the schedule runs again).
Nothing here ever turns such a fault into "someone else did it".

A write retried after a lost response may find its own earlier success as a failed condition;
every caller's condition is written so that this reads as "already done", which it is.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pynamodb.exceptions import PynamoDBException
from pynamodb.expressions.condition import Condition
from pynamodb.models import Model

CONDITION_FAILED = "ConditionalCheckFailedException"
ATTEMPTS = 4  # the first try and three retries, on top of botocore's own
BASE_DELAY_SECONDS = 0.05
MAX_DELAY_SECONDS = 1.0

M = TypeVar("M", bound=Model)


class WriteNotDone(Exception):
    """A write failed for a reason other than its condition, every time it was tried."""


def response_code(error: PynamoDBException) -> str | None:
    """DynamoDB's error code, or None when no answer came (a timeout, a broken connection).

    PynamoDB's own ``cause_response_code`` assumes every cause has a response mapping; a read
    timeout's cause (requests' exception) has ``response = None``.
    """
    response = getattr(error.cause, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return str(code) if code is not None else None


def condition_failed(error: PynamoDBException) -> bool:
    """True only for DynamoDB's answer that the condition did not hold (a transaction's too)."""
    code = response_code(error)
    if code == CONDITION_FAILED:
        return True
    reasons = getattr(error, "cancellation_reasons", None) or []
    return code == "TransactionCanceledException" and any(
        reason is not None and reason.code == "ConditionalCheckFailed" for reason in reasons
    )


def attempt(
    write: Callable[[], object], *, attempts: int = ATTEMPTS, sleep: Callable[[float], None] = time.sleep
) -> bool:
    """Run a conditional ``write``: True when it was written, False when its condition failed."""
    for number in range(1, attempts + 1):
        try:
            write()
        except PynamoDBException as error:
            if condition_failed(error):
                return False
            if number == attempts:
                raise WriteNotDone(
                    f"{type(error).__name__} after {attempts} attempts: {error.cause_response_code}"
                ) from error
            delay = min(MAX_DELAY_SECONDS, BASE_DELAY_SECONDS * 2 ** (number - 1))
            sleep(delay * random.uniform(0.5, 1.0))
        else:
            return True
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def update(item: Model, *, actions: Sequence[Any], condition: Condition | None) -> bool:
    """``item.update`` under ``condition``: True when written, False when the condition failed."""
    return attempt(lambda: item.update(actions=list(actions), condition=condition))


def save(item: Model, *, condition: Condition | None) -> bool:
    """``item.save`` under ``condition``: True when written, False when the condition failed."""
    return attempt(lambda: item.save(condition=condition))


def delete(item: Model, *, condition: Condition | None = None) -> bool:
    return attempt(lambda: item.delete(condition=condition))
