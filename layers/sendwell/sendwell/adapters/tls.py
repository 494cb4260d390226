"""The TLS client context SMTP and IMAP connections use when none is given.

Building one reads the system's CA store (tens of milliseconds); a send or a poll opens a new
connection every time, so the context is built once per process and shared (it is thread-safe).
"""

from __future__ import annotations

import functools
import ssl


@functools.cache
def default_client_context() -> ssl.SSLContext:
    return ssl.create_default_context()
