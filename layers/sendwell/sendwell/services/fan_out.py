"""Hand ids out to workers in batches, through a work queue, as they are read.

Dispatch and polling both list what is due from an index every minute and split it over
concurrent workers. The batches are enqueued as the index is read, ten messages per request (SQS's
batch limit), so a long listing has started work long before it ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sendwell.batches import batched
from sendwell.ports.messages import QueuedMessage
from sendwell.ports.platform import MessageQueue

SQS_BATCH = 10  # messages per SendMessageBatch request


def fan_out(work: MessageQueue, ids: Iterable[str], *, batch_size: int, body: Callable[[list[str]], str]) -> int:
    """Put ``ids`` on ``work`` in messages of ``batch_size`` ids, each message's text ``body(ids)``.
    How many ids."""
    count = 0
    pending: list[QueuedMessage] = []
    for some in batched(ids, batch_size):
        pending.append(QueuedMessage(body=body(list(some))))
        count += len(some)
        if len(pending) == SQS_BATCH:
            work.send_batch(pending)
            pending = []
    if pending:
        work.send_batch(pending)
    return count
