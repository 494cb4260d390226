"""At-most-once side effects (notices, events) on Powertools idempotency, keyed by the caller."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from functools import cached_property
from typing import Any, TypeVar

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
from botocore.exceptions import BotoCoreError, ClientError

from sendwell.ports.platform import DeliveryUnknown

# Notices of one incident must never repeat; a week is far longer than any retry.
RECORD_LIFETIME_SECONDS = 7 * 24 * 3600
ATTEMPTS = 4
# The answers DynamoDB gives when it did not do the write: throttling and its own errors.
_NOT_DONE = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
    }
)
T = TypeVar("T")


class _RetryingPersistence(DynamoDBPersistenceLayer):
    """Powertools' DynamoDB persistence, each write retried on throttling, 5xx and network faults.

    A failed completion write would otherwise leave the record in progress, and the action (a
    notice) would run again once that expired. A failed condition (the record exists) is
    Powertools' own answer and is never retried here.
    """

    def _put_record(self, data_record: DataRecord) -> None:
        _retried(lambda: super(_RetryingPersistence, self)._put_record(data_record))

    def _update_record(self, data_record: DataRecord) -> None:
        _retried(lambda: super(_RetryingPersistence, self)._update_record(data_record))

    def _delete_record(self, data_record: DataRecord) -> None:
        _retried(lambda: super(_RetryingPersistence, self)._delete_record(data_record))


def _retried(write: Callable[[], T]) -> T:
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return write()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in _NOT_DONE or attempt == ATTEMPTS:
                raise
        except BotoCoreError:
            if attempt == ATTEMPTS:
                raise
        time.sleep(min(1.0, 0.05 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0))
    raise AssertionError("unreachable")  # pragma: no cover


class IdempotentRunner:
    """``run(key, action)`` runs ``action`` once per key; a failed run leaves no record, so it retries.

    An action whose outcome can't be known (``DeliveryUnknown``: a notice whose answer was lost)
    counts as done: at most once, rather than twice.

    Two concurrent runs of the same key: the second raises ``IdempotencyAlreadyInProgressError``,
    its queue message fails and comes back later, when the first has finished.
    """

    def __init__(self, table_name: str, *, boto3_client: Any | None = None) -> None:
        self._table_name, self._client = table_name, boto3_client
        self._config = IdempotencyConfig(
            event_key_jmespath="key",
            raise_on_no_idempotency_key=True,
            expires_after_seconds=RECORD_LIFETIME_SECONDS,
        )

    @cached_property
    def _store(self) -> _RetryingPersistence:
        # Made at the first run, not with the runner: Powertools' layer sets up its DynamoDB client
        # when it is made, and most invocations run nothing once.
        return _RetryingPersistence(table_name=self._table_name, boto3_client=self._client)

    def register_lambda_context(self, context: Any) -> None:
        """Lets an in-progress record expire with the invocation if the function times out."""
        self._config.register_lambda_context(context)

    def run(self, key: str, action: Callable[[], str]) -> str:
        @idempotent_function(  # type: ignore[untyped-decorator]
            data_keyword_argument="request", persistence_store=self._store, config=self._config
        )
        def once(request: dict[str, str]) -> dict[str, str]:
            try:
                return {"result": action()}
            except DeliveryUnknown:
                # Done as far as we can know: running it again could do it twice.
                return {"result": "delivery unknown"}

        result: dict[str, str] = once(request={"key": key})
        return result["result"]
