"""What the Gmail and Graph mail APIs share: checking the caller's bearer token, after taking any
fault armed for the account, before a handler touches a mailbox."""

import time
from abc import ABC, abstractmethod
from typing import ClassVar, Literal

from local.sandbox.faults import fault_response
from local.sandbox.http import Request, Response, Route
from local.sandbox.state import Provider, State, Surface, Token

# Why a call is turned away before it reaches a mailbox; each API words each one its own way.
Refusal = Literal["no_token", "unknown_token", "expired_token", "insufficient_scope"]


class MailApi(ABC):
    provider: ClassVar[Provider]

    def __init__(self, state: State) -> None:
        self._state = state

    @abstractmethod
    def routes(self) -> list[Route]: ...

    @abstractmethod
    def _refuse(self, refusal: Refusal, request: Request, required: frozenset[str]) -> Response:
        """The API's error body for a call without a usable token for it."""

    def _bearer(self, request: Request, surface: Surface, required: frozenset[str]) -> Token | Response:
        """The caller's access token, if it is this provider's, live, and has one of ``required``."""
        bearer = request.bearer_token()
        token = self._state.access_tokens.get(bearer or "")
        if token is None or token.provider != self.provider:
            return self._refuse("unknown_token" if bearer else "no_token", request, required)
        # The fault comes before the expiry check: an outage answers whatever the token's state.
        fault = self._state.take_fault(token.email, surface)
        if fault is not None:
            return fault_response(fault, self.provider, surface, request)
        if not token.usable(time.time()):
            return self._refuse("expired_token", request, required)
        if not token.scopes & required:
            return self._refuse("insufficient_scope", request, required)
        return token
