"""At-most-once side effects (notices, events) on Powertools idempotency, keyed by the caller."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)

# Notices of one incident must never repeat; a week is far longer than any retry.
RECORD_LIFETIME_SECONDS = 7 * 24 * 3600


class IdempotentRunner:
    """``run(key, action)`` runs ``action`` once per key; a failed run leaves no record, so it retries.

    Two concurrent runs of the same key: the second raises ``IdempotencyAlreadyInProgressError``,
    its queue message fails and comes back later, when the first has finished.
    """

    def __init__(self, table_name: str, *, boto3_client: Any | None = None) -> None:
        self._store = DynamoDBPersistenceLayer(table_name=table_name, boto3_client=boto3_client)
        self._config = IdempotencyConfig(
            event_key_jmespath="key",
            raise_on_no_idempotency_key=True,
            expires_after_seconds=RECORD_LIFETIME_SECONDS,
        )

    def register_lambda_context(self, context: Any) -> None:
        """Lets an in-progress record expire with the invocation if the function times out."""
        self._config.register_lambda_context(context)

    def run(self, key: str, action: Callable[[], str]) -> str:
        @idempotent_function(  # type: ignore[untyped-decorator]
            data_keyword_argument="request", persistence_store=self._store, config=self._config
        )
        def once(request: dict[str, str]) -> dict[str, str]:
            return {"result": action()}

        result: dict[str, str] = once(request={"key": key})
        return result["result"]
