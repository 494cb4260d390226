"""Signing an inbox in again: OAuth (Google, Microsoft) and the custom-inbox login check.

The reconnect service drives these; ``sendwell.adapters.oauth`` implements them. The errors here
are the ones an adapter raises; each becomes its own page in the reconnect handler.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sendwell.models import Inbox


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    url: str  # where the browser goes to sign in and consent
    state: str  # one-time, bound to the session
    flow: bytes  # everything the callback needs (PKCE verifier, nonce): kept server-side, encrypted


@dataclass(frozen=True, slots=True)
class MailboxGrant:
    """What a finished sign-in proved: who the mailbox is, what it allows, and how to use it."""

    issuer: str  # Google: the ID token's iss; Microsoft: the tenant id (tid)
    subject: str  # Google: sub; Microsoft: the object id (oid)
    address: str  # the mailbox's own address (Gmail profile, Graph /me)
    scopes: frozenset[str]
    credentials: dict[str, Any] = field(repr=False)  # stored encrypted; never logged


class Authorizer(Protocol):
    @property
    def required_scopes(self) -> Mapping[str, str]:
        """Each scope the inbox needs, with what it is for in plain words ("send email")."""

    def authorization_request(self, *, login_hint: str, redirect_uri: str) -> AuthorizationRequest: ...

    def redeem(self, flow: bytes, response: Mapping[str, str], *, redirect_uri: str) -> MailboxGrant:
        """Exchange the provider's answer; raises ConsentDeclined or AuthorizationFailed."""


class LoginPart(enum.StrEnum):
    SMTP = "SMTP"
    IMAP = "IMAP"


class LoginStage(enum.StrEnum):
    AUTHENTICATION = "authentication"  # the server answered and refused the password
    CONNECTION = "connection"  # the server could not be reached or spoke no usable TLS


@dataclass(frozen=True, slots=True)
class PartFailure:
    part: LoginPart
    stage: LoginStage
    reason: str  # the classifier's words, never the server's


class LoginCheck(Protocol):
    def check(self, inbox: Inbox, password: str) -> list[PartFailure]:
        """Log in live to the inbox's SMTP and IMAP servers; the parts that failed (none: both work)."""


class ReconnectError(Exception):
    """Base of everything the person at the browser can be told."""


class ConsentDeclined(ReconnectError):
    """The person said no on the provider's page. The link stays usable."""


class AuthorizationFailed(ReconnectError):
    """The provider refused the sign-in or could not be reached. The link stays usable."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code  # a short provider code for support ("invalid_grant"), never provider text


class LoginFailed(ReconnectError):
    def __init__(self, failures: Sequence[PartFailure]) -> None:
        super().__init__("; ".join(f"{f.part} {f.stage}" for f in failures))
        self.failures = tuple(failures)
