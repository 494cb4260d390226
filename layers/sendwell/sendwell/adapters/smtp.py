"""Send through a custom inbox's SMTP server (or Microsoft 365 / Gmail SMTP with XOAUTH2).

One connection per call: a Lambda invocation sends a handful of messages at most, and a pooled
connection would outlive the credentials it was opened with.
"""

from __future__ import annotations

import contextlib
import smtplib
import ssl
from email.message import EmailMessage
from typing import Literal

from sendwell.adapters.tls import default_client_context
from sendwell.classify import classify_smtp_error
from sendwell.failures import ProviderFailure

Security = Literal["starttls", "tls", "none"]


class SmtpSender:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        security: Security,
        username: str,
        password: str | None = None,
        oauth_token: str | None = None,
        timeout: float = 30.0,
        local_hostname: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if (password is None) == (oauth_token is None):
            raise ValueError("give exactly one of password or oauth_token")
        self.host = host
        self.port = port
        self.security: Security = security
        self.username = username
        self._password = password
        self._oauth_token = oauth_token
        self._timeout = timeout
        self._local_hostname = local_hostname
        self._ssl_context = ssl_context or default_client_context()

    def __repr__(self) -> str:  # the default would show the password or token
        return f"SmtpSender({self.host!r}, {self.port}, security={self.security!r}, user={self.username!r})"

    def send(self, msg: EmailMessage) -> str:
        """Send one message; return its Message-ID. Raises ProviderFailure on any SMTP or network error."""
        message_id = msg["Message-ID"]
        if not message_id:
            raise ValueError("the message needs our own Message-ID to be reconciled later")
        handed_over = False

        def data(message: bytes | str) -> tuple[int, bytes]:
            # From DATA on, a lost connection or a timeout leaves the outcome unknown: the server
            # may have taken the message. A reply it sends (SMTPDataError) is a known refusal.
            nonlocal handed_over
            handed_over = True
            return smtplib.SMTP.data(smtp, message)

        try:
            smtp = self._connect()
            try:
                self._authenticate(smtp)
                smtp.data = data  # type: ignore[method-assign,assignment]
                smtp.send_message(msg)
            finally:
                _quit(smtp)
        except (smtplib.SMTPException, OSError) as exc:
            unknown = handed_over and not isinstance(exc, smtplib.SMTPResponseException)
            raise ProviderFailure(classify_smtp_error(exc, host=self.host), delivery_unknown=unknown) from exc
        return str(message_id)

    def verify_login(self) -> None:
        """Connect and authenticate, sending nothing; raises ProviderFailure like send()."""
        try:
            smtp = self._connect()
            try:
                self._authenticate(smtp)
            finally:
                _quit(smtp)
        except (smtplib.SMTPException, OSError) as exc:
            raise ProviderFailure(classify_smtp_error(exc, host=self.host)) from exc

    def _connect(self) -> smtplib.SMTP:
        where = (self.host, self.port)
        if self.security == "tls":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                *where, local_hostname=self._local_hostname, timeout=self._timeout, context=self._ssl_context
            )
        else:
            smtp = smtplib.SMTP(*where, local_hostname=self._local_hostname, timeout=self._timeout)
        # EHLO up front: smtplib's auth() does not send it, and reads the server's
        # "503 send EHLO first" as a successful login.
        with contextlib.ExitStack() as on_error:
            on_error.callback(smtp.close)
            smtp.ehlo_or_helo_if_needed()
            if self.security == "starttls":
                # Raises SMTPNotSupportedError when the server offers no STARTTLS: never fall back
                # to sending the password in clear.
                smtp.starttls(context=self._ssl_context)
                smtp.ehlo_or_helo_if_needed()
            on_error.pop_all()  # connected: the caller closes it from here on
        return smtp

    def _authenticate(self, smtp: smtplib.SMTP) -> None:
        if self._password is not None:
            # One mechanism, once. smtplib's login() goes on to the next mechanism after a 535, and
            # a server that hangs up after the first refusal turns the 535 into a lost connection.
            mechanism = _password_mechanism(smtp)
            smtp.user, smtp.password = self.username, self._password
            smtp.auth(mechanism, getattr(smtp, "auth_" + mechanism.lower().replace("-", "_")))
            return
        token = self._oauth_token

        def xoauth2(challenge: bytes | None = None) -> str:
            # The server's only challenge is a JSON error; an empty answer gets the final 5xx.
            return "" if challenge is not None else f"user={self.username}\x01auth=Bearer {token}\x01\x01"

        smtp.auth("XOAUTH2", xoauth2, initial_response_ok=True)


# PLAIN first: the one every server has and the one the provider's docs describe; CRAM-MD5 only
# where nothing else is offered (it needs the password stored in clear on the server).
_PASSWORD_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")


def _password_mechanism(smtp: smtplib.SMTP) -> str:
    if not smtp.has_extn("auth"):
        raise smtplib.SMTPNotSupportedError("SMTP AUTH extension not supported by server.")
    offered = smtp.esmtp_features["auth"].upper().split()
    for mechanism in _PASSWORD_MECHANISMS:
        if mechanism in offered:
            return mechanism
    raise smtplib.SMTPException("No suitable authentication method found.")


def _quit(smtp: smtplib.SMTP) -> None:
    """End the session politely; a failed QUIT must not turn an accepted message into an error."""
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()
