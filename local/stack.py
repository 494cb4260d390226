"""The embedded local stack: the real handlers on an embedded AWS (moto's server on 127.0.0.1).

- every table, queue, topic and key is created from template.yaml (``local.cfn``);
- the HTTP API's routes are read from the template and served on 127.0.0.1: each request becomes an
  API Gateway v2 event for the real handler, and its response goes back to the client;
- each ``ScheduleV2`` event becomes a loop that invokes its handler at the template's rate
  (divided by ``speed`` for demos);
- each ``SQS`` event source becomes a poller that feeds its handler real batches and honours
  partial-batch failure responses (failed messages come back after ``retry_delay`` seconds).

Admin routes are IAM-authorised in AWS. Locally there is no SigV4: the server listens on loopback
only and presents callers to the handler as a fixed local admin principal.
"""

from __future__ import annotations

import base64
import importlib.util
import logging
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import boto3
from moto.server import ThreadedMotoServer

from local.cfn import ROOT, Stack, create_resources, function_environment, load_template, resources_of_type
from sendwell.config import CONFIRM_WAIT_SECONDS, SETTLE_SECONDS

REGION = "us-east-1"
ACCOUNT = "123456789012"
LOCAL_ADMIN_ARN = f"arn:aws:iam::{ACCOUNT}:user/local-admin"
_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|second|seconds)\)$")
_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600}

Handler = Callable[[dict[str, Any], Any], Any]


@dataclass(frozen=True)
class LambdaContext:
    """What a handler reads from its context object (Powertools reads these attributes)."""

    function_name: str
    memory_limit_in_mb: int = 512
    aws_request_id: str = ""
    invoked_function_arn: str = ""
    log_group_name: str = ""
    log_stream_name: str = "local"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 30_000


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # as in the template: /r/{token}
    pattern: re.Pattern[str]
    function: str  # logical id
    iam: bool

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"


def load_handler(function_logical_id: str, template: Mapping[str, Any]) -> Handler:
    """Import a function's handler module from its CodeUri by file path (names never collide)."""
    props = template["Resources"][function_logical_id]["Properties"]
    module_name, attribute = props["Handler"].rsplit(".", 1)
    code = (ROOT / props["CodeUri"]).resolve()
    path = code / f"{module_name}.py"
    # As in Lambda, the function's folder is on the path (a handler imports its sibling modules by
    # name), and each load is a fresh container: siblings loaded before are imported again.
    if str(code) not in sys.path:
        sys.path.insert(0, str(code))
    for name, loaded in list(sys.modules.items()):
        if Path(getattr(loaded, "__file__", None) or "/").resolve().parent == code:
            del sys.modules[name]
    # The wiring too, and the log level: a new container's logger takes them from its environment,
    # but Powertools configures a service's logger once per process.
    sys.modules.pop("sendwell.wiring", None)
    service = os.environ.get("POWERTOOLS_SERVICE_NAME", "service_undefined")
    logging.getLogger(service).setLevel(os.environ.get("POWERTOOLS_LOG_LEVEL", "INFO").upper())
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module: ModuleType = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    handler: Handler = getattr(module, attribute)
    return handler


def http_routes(template: Mapping[str, Any]) -> list[Route]:
    routes: list[Route] = []
    for logical_id, resource in resources_of_type(template, "AWS::Serverless::Function").items():
        for event in resource["Properties"].get("Events", {}).values():
            if event["Type"] != "HttpApi":
                continue
            props = event["Properties"]
            path = props["Path"]
            pattern = re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(path)) + "$")
            iam = props.get("Auth", {}).get("Authorizer") == "AWS_IAM"
            routes.append(Route(props["Method"].upper(), path, pattern, logical_id, iam))
    return routes


def http_event(
    route: Route,
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes,
    params: Mapping[str, str],
    host: str,
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event, as the real service builds it."""
    split = urlsplit(target)
    lowered = {name.lower(): value for name, value in headers.items()}
    cookies = [c.strip() for c in lowered.pop("cookie", "").split(";") if c.strip()]
    query = dict(parse_qsl(split.query, keep_blank_values=True))
    text_body: str | None = None
    is_base64 = False
    if body:
        try:
            text_body = body.decode("utf-8")
        except UnicodeDecodeError:
            text_body, is_base64 = base64.b64encode(body).decode(), True
    now = datetime.now(UTC)
    context: dict[str, Any] = {
        "accountId": ACCOUNT,
        "apiId": "local",
        "domainName": host,
        "domainPrefix": host.split(".")[0],
        "http": {
            "method": method,
            "path": split.path,
            "protocol": "HTTP/1.1",
            "sourceIp": "127.0.0.1",
            "userAgent": lowered.get("user-agent", ""),
        },
        "requestId": uuid.uuid4().hex,
        "routeKey": route.route_key,
        "stage": "$default",
        "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
        "timeEpoch": int(now.timestamp() * 1000),
    }
    if route.iam:
        context["authorizer"] = {
            "iam": {
                "accessKey": "LOCALADMIN",
                "accountId": ACCOUNT,
                "callerId": "local-admin",
                "principalOrgId": None,
                "userArn": LOCAL_ADMIN_ARN,
                "userId": "local-admin",
            }
        }
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route.route_key,
        "rawPath": split.path,
        "rawQueryString": split.query,
        "headers": lowered,
        "requestContext": context,
        "isBase64Encoded": is_base64,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = query
    if params:
        event["pathParameters"] = dict(params)
    if text_body is not None:
        event["body"] = text_body
    return event


class LocalStack:
    def __init__(
        self,
        *,
        api_port: int = 3000,
        moto_port: int = 0,
        speed: float = 1.0,
        retry_delay: float = 5.0,
        parameters: Mapping[str, str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        log: Callable[[str], None] = print,
        run_schedules: bool = True,
    ) -> None:
        self.api_port = api_port
        self.moto_port = moto_port
        self.speed = speed
        self.retry_delay = retry_delay
        self.parameters = {
            "AdminEmails": "admin@example.test",
            "SenderAddress": "notices@example.test",
            "SesIdentity": "example.test",
            **(parameters or {}),
        }
        self.extra_env = dict(extra_env or {})
        self.log = log
        self.run_schedules = run_schedules
        self.template = load_template()
        self.stack: Stack | None = None
        self.handlers: dict[str, Handler] = {}
        self._moto: ThreadedMotoServer | None = None
        self._http: ThreadingHTTPServer | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._saved_env: dict[str, str | None] = {}

    # ------------------------------------------------------------------ lifecycle
    @property
    def api_url(self) -> str:
        assert self._http is not None
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    @property
    def aws_endpoint(self) -> str:
        assert self._moto is not None
        host, port = self._moto.get_host_and_port()
        return f"http://{host}:{port}"

    def start(self) -> LocalStack:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=self.moto_port, verbose=False)
        self._moto.start()
        # The HTTP server first: its port is part of the functions' public base URL.
        self._http = ThreadingHTTPServer(("127.0.0.1", self.api_port), self._request_handler())
        self._set_env(
            {
                "AWS_ENDPOINT_URL": self.aws_endpoint,
                "AWS_ACCESS_KEY_ID": "local",
                "AWS_SECRET_ACCESS_KEY": "local",
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
            }
        )
        session = boto3.Session(region_name=REGION)
        self.stack = create_resources(self.template, session, prefix="sendwell-local", parameters=self.parameters)
        session.client("ses").verify_domain_identity(Domain=self.parameters["SesIdentity"])
        functions = resources_of_type(self.template, "AWS::Serverless::Function")
        env: dict[str, str] = {}
        for logical_id in functions:
            env.update(function_environment(self.template, logical_id, self.stack))
        env["SENDWELL_PUBLIC_BASE_URL"] = self.api_url
        env["POWERTOOLS_LOG_LEVEL"] = os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING")
        env["POWERTOOLS_METRICS_DISABLED"] = os.environ.get("POWERTOOLS_METRICS_DISABLED", "true")
        # Waits that are real time when deployed run faster here, as the schedules do.
        env["SENDWELL_BREAKER_SETTLE_SECONDS"] = f"{SETTLE_SECONDS / self.speed:g}"
        env["SENDWELL_CONFIRM_WAIT_SECONDS"] = f"{CONFIRM_WAIT_SECONDS / self.speed:g}"
        env.update(self.extra_env)
        self._set_env(env)
        self.handlers = {logical_id: load_handler(logical_id, self.template) for logical_id in functions}
        self._spawn(self._http.serve_forever, "http-api")
        self._start_event_sources(functions, session)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        for thread in self._threads:
            thread.join(timeout=10)
        if self._moto is not None:
            self._moto.stop()
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _set_env(self, values: Mapping[str, str]) -> None:
        for name, value in values.items():
            self._saved_env.setdefault(name, os.environ.get(name))
            os.environ[name] = value

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # ------------------------------------------------------------------ invoking
    def invoke(self, function_logical_id: str, event: dict[str, Any]) -> Any:
        context = LambdaContext(
            function_name=function_logical_id,
            aws_request_id=uuid.uuid4().hex,
            invoked_function_arn=f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function_logical_id}",
        )
        return self.handlers[function_logical_id](event, context)

    def _start_event_sources(self, functions: Mapping[str, Any], session: boto3.Session) -> None:
        assert self.stack is not None
        for logical_id, resource in functions.items():
            for event_name, event in resource["Properties"].get("Events", {}).items():
                props = event["Properties"]
                if event["Type"] == "ScheduleV2" and self.run_schedules:
                    interval = self.schedule_seconds(props["ScheduleExpression"]) / self.speed
                    self._spawn(self._schedule_loop(logical_id, event_name, interval), f"schedule-{logical_id}")
                elif event["Type"] == "SQS":
                    queue_id = props["Queue"]["Fn::GetAtt"][0]
                    self._spawn(
                        self._sqs_loop(logical_id, queue_id, int(props.get("BatchSize", 10)), session),
                        f"sqs-{logical_id}",
                    )

    @staticmethod
    def schedule_seconds(expression: str) -> float:
        match = _RATE.match(expression)
        if not match:
            raise ValueError(f"unsupported schedule expression {expression!r}")
        amount, unit = int(match.group(1)), match.group(2).rstrip("s")
        return float(amount * _UNIT_SECONDS[unit])

    def schedule_event(self, logical_id: str, event_name: str) -> dict[str, Any]:
        now = datetime.now(UTC)
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.scheduler",
            "account": ACCOUNT,
            "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": REGION,
            "resources": [f"arn:aws:scheduler:{REGION}:{ACCOUNT}:schedule/default/{logical_id}{event_name}"],
            "detail": {},
        }

    def _schedule_loop(self, logical_id: str, event_name: str, interval: float) -> Callable[[], None]:
        def loop() -> None:
            while not self._stop.is_set():
                self._guarded(logical_id, lambda: self.invoke(logical_id, self.schedule_event(logical_id, event_name)))
                self._stop.wait(interval)

        return loop

    def _guarded(self, logical_id: str, call: Callable[[], Any]) -> Any:
        # A failing invocation is reported and the loop goes on, as Lambda would retry it.
        try:
            return call()
        except Exception as error:  # noqa: BLE001 - the stack must outlive any handler bug
            self.log(f"[{logical_id}] invocation failed: {type(error).__name__}: {error}")
            return None

    def _sqs_loop(self, logical_id: str, queue_id: str, batch_size: int, session: boto3.Session) -> Callable[[], None]:
        assert self.stack is not None
        url = self.stack.refs[queue_id]
        arn = self.stack.attributes[(queue_id, "Arn")]
        sqs = session.client("sqs")

        def loop() -> None:
            while not self._stop.is_set():
                received = sqs.receive_message(
                    QueueUrl=url,
                    MaxNumberOfMessages=batch_size,
                    WaitTimeSeconds=1,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                ).get("Messages", [])
                if received:
                    self._deliver(logical_id, sqs, url, arn, received)

        return loop

    def _deliver(self, logical_id: str, sqs: Any, url: str, arn: str, received: list[dict[str, Any]]) -> None:
        records = [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": message.get("Attributes", {}),
                "messageAttributes": message.get("MessageAttributes", {}),
                "md5OfBody": message["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": REGION,
            }
            for message in received
        ]
        result = self._guarded(logical_id, lambda: self.invoke(logical_id, {"Records": records}))
        if result is None:
            failed = {record["messageId"] for record in records}
        else:
            failed = {item["itemIdentifier"] for item in result.get("batchItemFailures", [])}
        for message in received:
            if message["MessageId"] in failed:
                sqs.change_message_visibility(
                    QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=int(self.retry_delay)
                )
            else:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    # ------------------------------------------------------------------ HTTP API
    def _request_handler(self) -> type[BaseHTTPRequestHandler]:
        stack = self
        routes = http_routes(self.template)

        class ApiRequestHandler(BaseHTTPRequestHandler):
            server_version = "sendwell-local"

            def log_message(self, format: str, *args: Any) -> None:
                return  # the handlers log; request lines would repeat tokens from URLs

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = urlsplit(self.path).path
                for route in routes:
                    match = route.pattern.match(path)
                    if match and route.method == self.command:
                        event = http_event(
                            route,
                            self.command,
                            self.path,
                            dict(self.headers.items()),
                            body,
                            match.groupdict(),
                            self.headers.get("Host", "127.0.0.1"),
                        )
                        response = stack._guarded(route.function, partial(stack.invoke, route.function, event))
                        self._reply(response or {"statusCode": 500, "body": '{"message":"Internal Server Error"}'})
                        return
                self._reply(
                    {
                        "statusCode": 404,
                        "body": '{"message":"Not Found"}',
                        "headers": {"content-type": "application/json"},
                    }
                )

            def _reply(self, response: Mapping[str, Any]) -> None:
                body = response.get("body") or ""
                payload = base64.b64decode(body) if response.get("isBase64Encoded") else body.encode("utf-8")
                self.send_response(int(response.get("statusCode", 200)))
                for name, value in (response.get("headers") or {}).items():
                    self.send_header(name, str(value))
                for name, values in (response.get("multiValueHeaders") or {}).items():
                    for value in values:
                        self.send_header(name, str(value))
                for cookie in response.get("cookies") or []:
                    self.send_header("Set-Cookie", cookie)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = do_PUT = _handle

        return ApiRequestHandler


def describe(stack: LocalStack) -> str:
    assert stack.stack is not None
    lines = [
        f"  HTTP API        {stack.api_url}   (try {stack.api_url}/health)",
        f"  embedded AWS    {stack.aws_endpoint}   (moto; AWS_ENDPOINT_URL for the aws CLI)",
    ]
    for logical_id, ref in sorted(stack.stack.refs.items()):
        if logical_id != "HttpApi":
            lines.append(f"  {logical_id:<28}{ref}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - `make run` uses local.run
    with LocalStack() as running:
        print(describe(running))
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
