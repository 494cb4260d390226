"""What every provider's table is made of: rules, the kinds, Retry-After, network faults, HTTP errors."""

from __future__ import annotations

import json
import re
import smtplib
import socket
import ssl
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import MappingProxyType
from typing import Any, Final, TypeVar

import requests

from sendwell.clock import utcnow
from sendwell.failures import Failure, FailureKind

AUTH_LOST: Final = FailureKind.AUTH_LOST
USER_ACTION: Final = FailureKind.USER_ACTION
APP_CONFIG: Final = FailureKind.APP_CONFIG
TRANSIENT: Final = FailureKind.TRANSIENT
RATE_LIMITED: Final = FailureKind.RATE_LIMITED
RECIPIENT_REJECTED: Final = FailureKind.RECIPIENT_REJECTED
BAD_MESSAGE: Final = FailureKind.BAD_MESSAGE


@dataclass(frozen=True, slots=True)
class Rule:
    kind: FailureKind
    reason: str
    fix: str = ""
    conclusive: bool = False  # see Failure.conclusive; only for kinds that disconnect

    def failure(self, code: str, retry_after: float | None = None) -> Failure:
        # A wait only means something for kinds that resume by themselves.
        waits = self.kind in (TRANSIENT, RATE_LIMITED)
        conclusive = self.conclusive and self.kind.disconnects
        return Failure(self.kind, code, self.reason, self.fix, retry_after if waits else None, conclusive)


@dataclass(frozen=True, slots=True)
class Meaning:
    """One of several meanings a provider gives the same code, told apart by its words.

    Codes are what we classify by; words are read only where the provider documents one code with
    two meanings (Google's 534 5.7.9, Graph's ErrorQuotaExceeded), and only to pick among rules
    that are all right for the code.
    """

    words: re.Pattern[str]
    name: str  # appended to Failure.code: "smtp:534 5.7.9 web-login"
    rule: Rule


def refine(rule: Rule, code: str, text: str, meanings: Sequence[Meaning]) -> tuple[Rule, str]:
    for meaning in meanings:
        if meaning.words.search(text):
            return meaning.rule, f"{code} {meaning.name}"
    return rule, code


_K = TypeVar("_K")


def table(rules: Mapping[_K, Rule]) -> Mapping[_K, Rule]:
    """Tables are module constants, so they are made read-only."""
    return MappingProxyType(dict(rules))


# Provider codes are identifiers ("invalid_grant", "ErrorAccessDenied"); anything else - a long
# string, something with dots or slashes - could be a token, so it never reaches Failure.code.
SAFE_CODE: Final = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,47}")


def safe_code(value: object) -> str | None:
    return value if isinstance(value, str) and SAFE_CODE.fullmatch(value) else None


def as_text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


# --- Retry-After ---------------------------------------------------------------------------------


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP-date (RFC 9110)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000" parses as naive; HTTP-dates are always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or utcnow())).total_seconds())


def retry_after_from_headers(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """``Retry-After`` from headers of any case (a plain dict is not case-insensitive)."""
    for name, value in headers.items():
        if name.lower() == "retry-after":
            return parse_retry_after(value, now=now)
    return None


# --- Network faults, shared by every provider ------------------------------------------------------

# Looked up along the exception's MRO, so the most specific entry wins (ConnectionRefusedError
# before ConnectionError, SMTPServerDisconnected before SMTPException before OSError).
NETWORK: Final[Mapping[type[BaseException], tuple[str, Rule]]] = MappingProxyType(
    {
        socket.gaierror: ("dns", Rule(TRANSIENT, "The server's name could not be looked up (DNS).")),
        TimeoutError: ("timeout", Rule(TRANSIENT, "The server did not answer in time.")),
        ConnectionRefusedError: ("connection_refused", Rule(TRANSIENT, "The server refused connections.")),
        ssl.SSLError: ("tls", Rule(TRANSIENT, "A secure (TLS) connection to the server failed.")),
        ConnectionError: ("connection_lost", Rule(TRANSIENT, "The connection to the server was lost.")),
        smtplib.SMTPServerDisconnected: (
            "disconnected",
            Rule(TRANSIENT, "The mail server closed the connection unexpectedly."),
        ),
        smtplib.SMTPException: ("protocol_error", Rule(TRANSIENT, "The mail server answered unexpectedly.")),
        requests.exceptions.Timeout: ("timeout", Rule(TRANSIENT, "The server did not answer in time.")),
        requests.exceptions.ConnectionError: (
            "connection_failed",
            Rule(TRANSIENT, "The server could not be reached."),
        ),
        OSError: ("network", Rule(TRANSIENT, "A network error occurred while talking to the server.")),
    }
)


def by_type(prefix: str, exc: BaseException, *tables: Mapping[type[BaseException], tuple[str, Rule]]) -> Failure | None:
    for cls in type(exc).__mro__:
        for table in tables:
            if cls in table:
                name, rule = table[cls]
                return rule.failure(f"{prefix}:{name}")
    return None


def network_failure(prefix: str, exc: BaseException, unknown: Rule) -> Failure:
    # smtplib turns a socket error while reading a reply (a timeout, a reset) into
    # SMTPServerDisconnected; the socket error it was raised from says more.
    underlying = exc.__cause__ or exc.__context__
    if isinstance(exc, smtplib.SMTPServerDisconnected) and isinstance(underlying, OSError):
        exc = underlying
    return by_type(prefix, exc, NETWORK) or unknown.failure(f"{prefix}:unknown")


# --- HTTP APIs (Gmail, Microsoft Graph) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpTable:
    prefix: str
    by_code: Mapping[str, Rule]
    by_status: Mapping[int, Rule]  # when no code in the body is known
    unavailable: Rule  # 5xx, or a body that is not the API's JSON error (a proxy's HTML page)
    unknown: Rule
    meanings: Mapping[str, Sequence[Meaning]] = field(default_factory=dict)  # by code, read from the message


def json_error(body: bytes | str | Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ``error`` object of a JSON error body, or None when the body is not one."""
    if isinstance(body, Mapping):
        payload: object = body
    else:
        try:
            payload = json.loads(body)
        except ValueError:  # includes JSONDecodeError and UnicodeDecodeError
            return None
    error = payload.get("error") if isinstance(payload, Mapping) else None
    return error if isinstance(error, Mapping) else None


def mappings_in(value: object) -> Iterable[Mapping[str, Any]]:
    return (item for item in value if isinstance(item, Mapping)) if isinstance(value, list) else ()


def classify_http(
    table: HttpTable,
    status: int,
    error: Mapping[str, Any] | None,
    codes: Sequence[str | None],
    retry_after: float | None,
) -> Failure:
    prefix = f"{table.prefix}:{status}"
    known = [code for code in codes if code is not None]
    # A code the API documents says more than the status class: Exchange answers a blocked sender
    # with a 5xx whose body is ErrorMessageSubmissionBlocked.
    for code in known:
        if code in table.by_code:
            message = error.get("message") if error is not None else None
            text = message if isinstance(message, str) else ""
            rule, name = refine(table.by_code[code], f"{prefix} {code}", text, table.meanings.get(code, ()))
            return rule.failure(name, retry_after)
    # An error page carries no code, so only its status can be trusted, and only for throttling.
    if status >= 500 or (error is None and status != 429):
        return table.unavailable.failure(prefix, retry_after)
    code = f"{prefix} {known[0]}" if known else prefix
    return table.by_status.get(status, table.unknown).failure(code, retry_after)
