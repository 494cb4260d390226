"""A local stand-in for Google (OAuth + Gmail API) and Microsoft (identity platform + Graph).

Real client code (google-auth, msal, requests) talks to it over HTTPS on the loopback interface and
gets the request and response shapes of the real services, including their error bodies, so tests,
benchmarks and the local demo run the same code paths as production.

Only HTTPS is served: msal refuses any authority that is not ``https://`` (``msal.authority.
canonicalize``), and one scheme keeps every client configured alike. A throwaway CA is made at start;
pass ``verify=sandbox.ca_bundle_path`` to requests sessions and to msal applications (a browser
context uses ``ignore_https_errors``). Beware: requests lets ``REQUESTS_CA_BUNDLE`` or
``CURL_CA_BUNDLE`` in the environment override a session's ``verify``; unset them, or point them at
the sandbox's bundle, in a process that talks to the sandbox.

Microsoft clients must be built with ``instance_discovery=False``: for a host msal does not know it
would otherwise ask login.microsoftonline.com to validate the authority. msal drops the port when it
rebuilds an authority for ``acquire_token_silent``; use ``acquire_token_by_refresh_token`` with a
stored refresh token (as sendwell does).

Run ``python -m local.sandbox`` to serve it on its own; the ``/_sandbox/<method>`` control API lets
another process add accounts, inject faults and deliver mail.

The package, one module per concern: ``control`` (the ``Sandbox`` and its control API), ``http``
(requests, responses, routes, the HTTPS server), ``ca`` (TLS and token-signing keys), ``state`` (every
record the sandbox keeps), ``identity`` (the OAuth flow both providers share) with ``google`` and
``microsoft`` (what each does its own way), ``api`` (what both mail APIs share) with ``gmail`` and
``graph``, ``faults`` (fault injection), ``errors`` (each provider's error bodies), ``pages`` (consent
and error pages), ``scopes``, ``mime`` and ``util``.
"""

from local.sandbox.control import Sandbox, main
from local.sandbox.faults import FaultKind
from local.sandbox.google import GOOGLE_ISSUER
from local.sandbox.scopes import (
    GMAIL_COMPOSE,
    GMAIL_FULL,
    GMAIL_METADATA,
    GMAIL_MODIFY,
    GMAIL_READONLY,
    GMAIL_SEND,
    GOOGLE_EMAIL,
    GOOGLE_PROFILE,
)
from local.sandbox.state import GoogleAccount, MicrosoftAccount, Provider, Surface

__all__ = [
    "GMAIL_COMPOSE",
    "GMAIL_FULL",
    "GMAIL_METADATA",
    "GMAIL_MODIFY",
    "GMAIL_READONLY",
    "GMAIL_SEND",
    "GOOGLE_EMAIL",
    "GOOGLE_ISSUER",
    "GOOGLE_PROFILE",
    "FaultKind",
    "GoogleAccount",
    "MicrosoftAccount",
    "Provider",
    "Sandbox",
    "Surface",
    "main",
]
