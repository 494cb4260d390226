"""The ``Sandbox``: the four services on one HTTPS server, the methods tests drive it with, and the
``/_sandbox/<method>`` control API that lets another process drive it the same way."""

import argparse
import base64
import binascii
import contextlib
import hashlib
import json
import re
import shutil
import signal
import ssl
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar, get_args

from local.sandbox.ca import SigningKey, write_tls_files
from local.sandbox.errors import gmail_not_found, graph_error
from local.sandbox.faults import FaultKind, arm
from local.sandbox.gmail import GmailApi
from local.sandbox.google import GoogleIdentity
from local.sandbox.graph import GraphApi, new_mailbox
from local.sandbox.http import Request, Response, Route, Server, json_response, route
from local.sandbox.microsoft import MicrosoftIdentity
from local.sandbox.state import Client, GmailMailbox, GoogleAccount, MicrosoftAccount, Provider, State, Surface
from local.sandbox.util import account_key

_Mailbox = TypeVar("_Mailbox")


class Sandbox:
    """Google and Microsoft, locally: OAuth pages and token endpoints, Gmail and Graph mail APIs.

    ``Sandbox(...).start()`` serves on a free port (or use it as a context manager); every account,
    client, mailbox and fault lives in memory, guarded by one lock, until ``reset()`` or ``stop()``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        gmail_history_retention: float = 7 * 24 * 3600.0,
    ) -> None:
        self._host = host
        self._port = port
        self._state = State(gmail_history_retention=gmail_history_retention)
        google_key = SigningKey.generate("accounts.google.com")
        microsoft_key = SigningKey.generate("login.microsoftonline.com")
        self._google = GoogleIdentity(self._state, google_key)
        self._microsoft = MicrosoftIdentity(self._state, microsoft_key)
        self._gmail = GmailApi(self._state)
        self._graph = GraphApi(self._state)
        self._routes: list[Route] = [
            *self._google.routes(),
            *self._microsoft.routes(),
            *self._gmail.routes(),
            *self._graph.routes(),
            route("POST", r"/_sandbox/(?P<action>[a-z_]+)", self._control),
        ]
        self._stopping = threading.Event()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._directory: Path | None = None
        self._ca_path: Path | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("the sandbox is already running")
        self._directory = Path(tempfile.mkdtemp(prefix="sandbox-tls-"))
        self._ca_path, chain, key = write_tls_files(self._directory, self._host)
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(chain, key)
        self._stopping.clear()
        self._server = Server((self._host, self._port), tls, self._handle, self._stopping)
        port = self._server.server_address[1]
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._state.base_url = f"https://{host}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="sandbox", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()  # releases connections held by the timeout fault
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
        self._server = self._thread = self._directory = self._ca_path = None
        self._state.base_url = ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if not self._state.base_url:
            raise RuntimeError("start the sandbox first")
        return self._state.base_url

    @property
    def ca_bundle_path(self) -> str:
        if self._ca_path is None:
            raise RuntimeError("start the sandbox first")
        return str(self._ca_path)

    @property
    def google_auth_url(self) -> str:
        return f"{self.base_url}/google/o/oauth2/v2/auth"

    @property
    def google_token_url(self) -> str:
        return f"{self.base_url}/google/token"

    @property
    def google_certs_url(self) -> str:
        """JWKS, as Google's oauth2/v3/certs; ``/google/oauth2/v1/certs`` serves the X.509 form."""
        return f"{self.base_url}/google/oauth2/v3/certs"

    @property
    def gmail_api_url(self) -> str:
        return f"{self.base_url}/gmail/v1"

    def microsoft_authority(self, tenant: str = "common") -> str:
        return f"{self.base_url}/microsoft/{tenant}"

    @property
    def graph_api_url(self) -> str:
        return f"{self.base_url}/graph/v1.0"

    # -- accounts and clients ----------------------------------------------------------------------

    def add_google_account(self, email: str, *, sub: str | None = None, name: str = "") -> GoogleAccount:
        key = account_key(email)
        # A stable default subject: the same address keeps its identity across reset() and restarts.
        default_sub = "1" + str(int(hashlib.sha256(key.encode()).hexdigest(), 16))[:20]
        account = GoogleAccount(email.strip(), sub or default_sub, name)
        with self._state.lock:
            self._state.google_accounts[key] = account
            self._state.gmail.setdefault(key, GmailMailbox(key))
        return account

    def add_microsoft_account(
        self, email: str, *, tid: str | None = None, oid: str | None = None, name: str = ""
    ) -> MicrosoftAccount:
        key = account_key(email)
        domain = key.rpartition("@")[2]
        account = MicrosoftAccount(
            email.strip(),
            tid or str(uuid.uuid5(uuid.NAMESPACE_DNS, domain)),  # one tenant per domain by default
            oid or str(uuid.uuid5(uuid.NAMESPACE_URL, f"mailto:{key}")),
            name,
        )
        with self._state.lock:
            self._state.microsoft_accounts[key] = account
            self._state.graph.setdefault(key, new_mailbox(key))
        return account

    def add_client(
        self, provider: Provider, client_id: str, client_secret: str, redirect_uris: Iterable[str]
    ) -> None:
        if provider not in get_args(Provider):
            raise ValueError(f"provider must be one of {get_args(Provider)}")
        with self._state.lock:
            self._state.clients[(provider, client_id)] = Client(
                provider, client_id, client_secret, frozenset(redirect_uris)
            )

    # -- provider-side events ----------------------------------------------------------------------

    def revoke_google_grant(self, email: str) -> None:
        """The password was changed: refresh and access tokens with Gmail scopes stop working."""
        with self._state.lock:
            self._state.revoke("google", account_key(email), access_tokens=True)

    def revoke_microsoft_grant(self, email: str) -> None:
        """The password was reset: refresh tokens fail with AADSTS50173; access tokens (JWTs) keep
        working until they expire, as Graph's do; call ``expire_access_tokens`` to end them too."""
        with self._state.lock:
            self._state.revoke("microsoft", account_key(email), access_tokens=False)

    def expire_access_tokens(self, email: str) -> None:
        with self._state.lock:
            for token in self._state.access_tokens.values():
                if token.email == account_key(email):
                    token.expires_at = 0.0

    def deliver_gmail(self, email: str, raw_bytes: bytes, thread_id: str | None = None) -> str:
        """Incoming mail: lands in INBOX (threaded with the message it replies to) and bumps historyId."""
        with self._state.lock:
            self._require(self._state.gmail, email)
            return self._gmail.deliver(account_key(email), raw_bytes, thread_id, ("UNREAD", "INBOX")).id

    def deliver_graph(self, email: str, raw_bytes: bytes, conversation_id: str | None = None) -> str:
        with self._state.lock:
            self._require(self._state.graph, email)
            return self._graph.deliver(account_key(email), raw_bytes, "inbox", conversation_id).id

    def expire_gmail_history(self, email: str) -> None:
        """Every startHistoryId older than the mailbox's current historyId now answers 404."""
        with self._state.lock:
            mailbox = self._require(self._state.gmail, email)
            mailbox.history_floor = mailbox.history_id
            mailbox.history.clear()

    def expire_graph_delta(self, email: str) -> None:
        """Every delta or skip token of this mailbox now answers 410 syncStateNotFound."""
        with self._state.lock:
            self._require(self._state.graph, email).delta_generation += 1

    # -- faults --------------------------------------------------------------------------------------

    def inject_fault(
        self,
        email: str,
        surface: Surface,
        fault: FaultKind | str,
        *,
        times: int | None = None,
        retry_after: int = 30,
        hold_seconds: float = 30.0,
    ) -> None:
        """Make the next ``times`` requests (all, if None) of this account on this surface fail.

        ``fault`` is one of ``FaultKind`` or ``aadsts:<number>`` (Microsoft token endpoint only).
        ``retry_after`` feeds the Retry-After header of 429/503; ``hold_seconds`` is how long the
        ``timeout`` fault keeps the connection silent. Faults armed for the same account and surface
        apply in the order they were injected.
        """
        arm(self._state, email, surface, fault, times=times, retry_after=retry_after, hold_seconds=hold_seconds)

    def clear_faults(self, email: str) -> None:
        with self._state.lock:
            for fault_key in [k for k in self._state.faults if k[0] == account_key(email)]:
                del self._state.faults[fault_key]

    # -- inspection ----------------------------------------------------------------------------------

    def sent_messages(self, email: str) -> list[bytes]:
        """The raw MIME of every message this account sent (Gmail's, then Graph's), as the provider
        stored it: byte for byte what the client sent, with a Message-ID and Date stamped if missing."""
        key = account_key(email)
        with self._state.lock:
            gmail, graph = self._state.gmail.get(key), self._state.graph.get(key)
            return [*(gmail.sent if gmail else []), *(graph.sent if graph else [])]

    def request_count(self, path_prefix: str = "/") -> int:
        with self._state.lock:
            return sum(n for path, n in self._state.requests.items() if path.startswith(path_prefix))

    def reset(self) -> None:
        """Forget every account, client, token, mailbox, fault and counter (keys and port stay)."""
        with self._state.lock:
            self._state.clear()

    # -- internals ---------------------------------------------------------------------------------

    @staticmethod
    def _require(mailboxes: Mapping[str, _Mailbox], email: str) -> _Mailbox:
        mailbox = mailboxes.get(account_key(email))
        if mailbox is None:
            raise KeyError(f"no mailbox for {email}")
        return mailbox

    def _handle(self, request: Request) -> Response:
        with self._state.lock:
            self._state.requests[request.path] += 1
            for method, pattern, handler in self._routes:
                match = pattern.fullmatch(request.path)
                if match is not None and method == request.method:
                    return handler(request, match)
        if request.path.startswith("/graph/"):
            return graph_error(
                400, "BadRequest", f"Resource not found for the segment '{request.path}'.", request
            )
        if request.path.startswith("/gmail/"):
            return gmail_not_found()
        return json_response(404, {"error": "not_found", "path": request.path})

    def _control(self, request: Request, match: re.Match[str]) -> Response:
        """``POST /_sandbox/<method>`` with the method's keyword arguments as a JSON object."""
        try:
            arguments = json.loads(request.body or b"{}")
        except ValueError:
            return json_response(400, {"error": "the body must be a JSON object"})
        if not isinstance(arguments, dict):
            return json_response(400, {"error": "the body must be a JSON object"})
        action = self._control_actions().get(match["action"])
        if action is None:
            return json_response(404, {"error": f"no control action {match['action']!r}"})
        try:
            return json_response(200, {"result": action(arguments)})
        except (KeyError, TypeError, ValueError, binascii.Error) as error:
            return json_response(400, {"error": f"{type(error).__name__}: {error}"})

    def _control_actions(self) -> dict[str, Callable[[dict[str, Any]], object]]:
        def raw(arguments: dict[str, Any]) -> bytes:
            return base64.b64decode(arguments.pop("raw_base64"), validate=True)

        return {
            "add_google_account": lambda a: asdict(self.add_google_account(**a)),
            "add_microsoft_account": lambda a: asdict(self.add_microsoft_account(**a)),
            "add_client": lambda a: self.add_client(**a),
            "revoke_google_grant": lambda a: self.revoke_google_grant(**a),
            "revoke_microsoft_grant": lambda a: self.revoke_microsoft_grant(**a),
            "expire_access_tokens": lambda a: self.expire_access_tokens(**a),
            "deliver_gmail": lambda a: self.deliver_gmail(raw_bytes=raw(a), **a),
            "deliver_graph": lambda a: self.deliver_graph(raw_bytes=raw(a), **a),
            "expire_gmail_history": lambda a: self.expire_gmail_history(**a),
            "expire_graph_delta": lambda a: self.expire_graph_delta(**a),
            "inject_fault": lambda a: self.inject_fault(**a),
            "clear_faults": lambda a: self.clear_faults(**a),
            "sent_messages": lambda a: [base64.b64encode(m).decode() for m in self.sent_messages(**a)],
            "request_count": lambda a: self.request_count(**a),
            "reset": lambda a: self.reset(**a),
        }


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the sandbox until interrupted; print its address and CA bundle as one JSON line."""
    from local import sandbox as package  # late: the package imports this module; its docstring says what this is

    parser = argparse.ArgumentParser(
        prog="python -m local.sandbox", description=package.__doc__.splitlines()[0] if package.__doc__ else None
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    arguments = parser.parse_args(argv)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with Sandbox(arguments.host, arguments.port) as sandbox:
        print(
            json.dumps({"base_url": sandbox.base_url, "ca_bundle_path": sandbox.ca_bundle_path}), flush=True
        )
        with contextlib.suppress(KeyboardInterrupt):
            done.wait()
    return 0
