"""The sandbox's small HTTP framework: requests and responses, routes, and the threaded HTTPS server.

The standard library's ``http.server`` parses; the ``App`` (the ``Sandbox``'s router) turns each
``Request`` into a ``Response``; handlers are functions of a request and the match of their route.
"""

import contextlib
import json
import re
import socket
import ssl
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, cast
from urllib.parse import parse_qs, urlsplit

_MAX_BODY: Final = 25 * 1024 * 1024
_IO_TIMEOUT: Final = 30.0


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]  # names lower-cased
    body: bytes

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True)

    def bearer_token(self) -> str | None:
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        return token.strip() or None if scheme.lower() == "bearer" else None

    def correlation_id(self) -> str:
        return self.headers.get("client-request-id") or str(uuid.uuid4())


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # The timeout fault: answer nothing for this long, then hang up.
    hold_seconds: float | None = None


Handler = Callable[[Request, "re.Match[str]"], Response]
Route = tuple[str, "re.Pattern[str]", Handler]
App = Callable[[Request], Response]


def route(method: str, pattern: str, handler: Handler) -> Route:
    return method, re.compile(pattern), handler


def json_response(status: int, payload: object, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        status,
        json.dumps(payload).encode(),
        "application/json; charset=utf-8",
        {"Cache-Control": "no-store", **(headers or {})},
    )


def first(form: Mapping[str, list[str]], name: str) -> str:
    """A form field's first value, or "" when it is absent."""
    return (form.get(name) or [""])[0]


class Server(ThreadingHTTPServer):
    """Threaded HTTPS server; the TLS handshake runs in each connection's thread, not the accept loop."""

    daemon_threads = True
    block_on_close = False  # idle keep-alive connections must not hold up stop()

    def __init__(
        self,
        address: tuple[str, int],
        tls: ssl.SSLContext,
        app: App,
        stopping: threading.Event,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _RequestHandler)
        self.tls = tls
        self.app = app
        self.stopping = stopping
        self._connections: set[ssl.SSLSocket] = set()
        self._connections_lock = threading.Lock()

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            request.settimeout(_IO_TIMEOUT)
            # Headers and body go out in separate writes; without this, Nagle's algorithm and the
            # client's delayed ACK stall every response for ~40 ms.
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # a client that gave up or spoke plain HTTP
        with self._connections_lock:
            self._connections.add(connection)
        try:
            _RequestHandler(connection, client_address, self)
        finally:
            with self._connections_lock:
                self._connections.discard(connection)
            connection.close()

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sandbox"
    timeout = _IO_TIMEOUT

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        server = cast(Server, self.server)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.send_error(400, "Bad Content-Length")
            return
        if length > _MAX_BODY:
            self.send_error(413)
            return
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        request = Request(
            self.command,
            url.path,
            parse_qs(url.query, keep_blank_values=True),
            {name.lower(): value for name, value in self.headers.items()},
            body,
        )
        response = server.app(request)
        if response.hold_seconds is not None:
            server.stopping.wait(response.hold_seconds)
            self.close_connection = True
            return
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if response.content_type:
            self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests and the demo tell their own story."""
