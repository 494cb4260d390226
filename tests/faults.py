"""Fault injection at the AWS call boundary, for the fault harness.

Every boto3 and PynamoDB call goes through ``botocore.client.BaseClient._make_api_call``. While
armed, :class:`AwsFaults` counts the calls a handler makes and fails the k-th one with a chosen
fault, the way AWS and Lambda fail:

- ``throttle``: the service refuses the call (``ProvisionedThroughputExceededException`` for
  DynamoDB, ``ThrottlingException`` elsewhere); nothing happened.
- ``5xx``: an internal error (HTTP 500); nothing happened.
- ``lost_response``: the call *was applied*, then the connection broke before the answer came
  (a read timeout): the caller can't tell it from a failure.
- ``crash``: the function dies just before the call (an exception no handler catches, as a
  timeout or an out-of-memory kill would end it).

The injection sits above botocore's own retries: a fault here is what the code sees once those
retries are spent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from botocore.client import BaseClient
from botocore.exceptions import ClientError, ReadTimeoutError

FAULT_KINDS = ("throttle", "5xx", "lost_response", "crash")


class Crash(BaseException):
    """The function died at this point (a timeout, an out-of-memory kill)."""


class AwsFaults:
    def __init__(self) -> None:
        self.calls = 0
        self.operations: list[str] = []
        self._counting = False
        self._fail_at: int | None = None
        self._kind = ""
        self.injected: str | None = None  # the operation that was failed, once it was
        self._when: Callable[[str, str, dict[str, Any]], bool] | None = None
        self._times = 0

    @contextmanager
    def counting(self, *, fail_at: int | None = None, kind: str = "") -> Iterator[None]:
        """Count (and maybe fail) the AWS calls made inside the block: a handler's own calls."""
        self._counting, self._fail_at, self._kind = True, fail_at, kind
        try:
            yield
        finally:
            self._counting = False

    @contextmanager
    def failing(
        self, when: Callable[[str, str, dict[str, Any]], bool], *, kind: str = "throttle", times: int = 1_000
    ) -> Iterator[None]:
        """Fail the calls that ``when(service, operation, params)`` picks, up to ``times`` of them."""
        self._counting, self._when, self._kind, self._times = True, when, kind, times
        try:
            yield
        finally:
            self._counting, self._when = False, None

    def reset(self) -> None:
        self.calls, self.operations, self.injected = 0, [], None

    def call(self, original: Any, client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        if not self._counting:
            return original(client, operation, params)
        self.calls += 1
        service = client.meta.service_model.service_name
        self.operations.append(f"{service}.{operation}")
        persistent = self._when is not None and self._times > 0 and self._when(service, operation, params)
        if persistent:
            self._times -= 1
        if not persistent and (self.calls != self._fail_at or self.injected is not None):
            return original(client, operation, params)
        self.injected = f"{service}.{operation}"
        if self._kind == "crash":
            raise Crash(f"died before {service}.{operation}")
        if self._kind == "lost_response":
            original(client, operation, params)
            raise ReadTimeoutError(endpoint_url=f"https://{service}.us-east-1.amazonaws.com/")
        code, status = {
            "throttle": (
                "ProvisionedThroughputExceededException" if service == "dynamodb" else "ThrottlingException",
                400,
            ),
            "5xx": ("InternalServerError" if service == "dynamodb" else "InternalFailure", 500),
        }[self._kind]
        error = {"Error": {"Code": code, "Message": "injected"}, "ResponseMetadata": {"HTTPStatusCode": status}}
        raise ClientError(error, operation)  # type: ignore[arg-type]


@contextmanager
def aws_faults() -> Iterator[AwsFaults]:
    faults = AwsFaults()
    original = BaseClient._make_api_call

    def make_api_call(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        return faults.call(original, client, operation, params)

    BaseClient._make_api_call = make_api_call  # type: ignore[method-assign]
    try:
        yield faults
    finally:
        BaseClient._make_api_call = original  # type: ignore[method-assign]
