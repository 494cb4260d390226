"""``itertools.batched`` for Python 3.11, which the local stack and the tests still support."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TypeVar

T = TypeVar("T")


def batched(items: Iterable[T], size: int) -> Iterator[tuple[T, ...]]:
    """Tuples of ``size`` items in order, the last one shorter; lazily, so a paginated read is
    handed on a batch at a time."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    iterator = iter(items)
    while batch := tuple(islice(iterator, size)):
        yield batch
