"""Turn whatever a provider returned or raised into a :class:`~sendwell.failures.Failure`.

Every provider has a table of ``code -> _Rule(kind, reason, fix)``; the functions below only pull
the provider's code out of its error and look it up. Three rules hold for every table:

* The protocol's own meaning comes first: a NO to IMAP LOGIN/AUTHENTICATE and a 5xx to SMTP AUTH
  refuse the credentials, a 5xx to MAIL FROM refuses the sender, a 5xx to RCPT TO the recipient.
  Then the provider's code (in the body before the HTTP status), and, where the provider documents
  one code with two meanings, the words that tell them apart (``rules.Meaning``).
* Only those refusals and codes listed as ``AUTH_LOST`` or ``USER_ACTION`` disconnect an inbox, and
  only after a second look (``sendwell.adapters.confirming``) unless ``Failure.conclusive``.
  Anything else not recognised - an unknown code, an HTML error page, a network fault - is
  ``TRANSIENT``. Every rule is listed in docs/classifier.md.
* Reasons and fixes are our own words for the inbox owner (or, for ``APP_CONFIG``, for the
  operator). Provider text is never copied into them: it can carry tokens, addresses and
  sign-in URLs. A provider's code is kept in ``Failure.code`` only if it is a short identifier.
* Classification reads codes, never exception types or message wording, except where the
  library offers nothing else (network exceptions, google-auth's own reauth message).

The functions are pure: no I/O, and ``now`` can be passed where a date is turned into a delay.
"""

from sendwell.classify.google import (
    classify_gmail_exception,
    classify_gmail_response,
    classify_google_refresh_error,
    classify_google_transport_error,
)
from sendwell.classify.mail import classify_imap_error, classify_smtp_error
from sendwell.classify.microsoft import (
    classify_graph_exception,
    classify_graph_response,
    classify_msal_exception,
    classify_msal_result,
)
from sendwell.classify.rules import parse_retry_after, retry_after_from_headers

__all__ = [
    "classify_gmail_exception",
    "classify_gmail_response",
    "classify_google_refresh_error",
    "classify_google_transport_error",
    "classify_graph_exception",
    "classify_graph_response",
    "classify_imap_error",
    "classify_msal_exception",
    "classify_msal_result",
    "classify_smtp_error",
    "parse_retry_after",
    "retry_after_from_headers",
]
