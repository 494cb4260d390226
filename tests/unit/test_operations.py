"""What ops see, checked against template.yaml itself and against a whole scenario run through the
real handlers.

- Alarms, log groups and the dashboard are read from the template (``Fn::ForEach`` expanded as the
  AWS::LanguageExtensions transform does): every function has its error and throttle alarms, every
  queue with a dead-letter queue a depth alarm, and every alarm tells the encrypted ops topic both
  when it fires and when it recovers. A function or queue added without them fails here.
- One scenario runs the story through the handlers on moto, a real SMTP server, a real Dovecot and
  the provider sandbox: two inboxes connect through admin links (a password, Google sign-in), send,
  then lose access (a password change; an app misconfiguration, then a revoked grant), are
  disconnected with notices, a reminder can't be sent, and one inbox reconnects through the link in
  its notice. Every EMF document and every log line printed meanwhile is kept, and checked: each
  metric an alarm watches was emitted, each emitted metric is on the dashboard, and no line holds
  any secret the scenario used.
- The transformed template deploys into moto's CloudFormation, as far as moto supports its types.
"""

from __future__ import annotations

import ast
import base64
import binascii
import contextlib
import copy
import io
import json
import logging
import re
import sys
import uuid
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, quote_plus, urlencode, urljoin, urlsplit

import boto3
import pytest
import requests
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.parameters.constants import DEFAULT_PROVIDERS
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from local.cfn import ROOT, create_resources, expand_language_extensions, function_environment, resources_of_type
from local.imapserver import DovecotServer
from local.mailserver import SmtpTestServer
from local.sandbox import Sandbox
from local.stack import Handler, LambdaContext, http_event, http_routes, load_handler
from sendwell.adapters.aws import KmsCipher, SesMailer
from sendwell.adapters.credentials import CredentialStore
from sendwell.clock import epoch
from sendwell.config import Settings
from sendwell.ids import shard_for
from sendwell.models import InboxStatus, Models, bind_models, new_step, new_window
from sendwell.observability import NAMESPACE, REDACTED, CountingMailer, Metric, install_redaction
from sendwell.ports.platform import Email
from sendwell.services.sending import Outcome
from tests.conftest import PARAMETERS, PUBLIC_BASE_URL, REGION, TEMPLATE

EVENTS = ROOT / "events"
OPS_TOPIC = {"Ref": "OpsAlarmTopic"}


# ============================================================================ the template


@dataclass(frozen=True)
class Watched:
    """The one metric an alarm watches."""

    namespace: str
    metric: str
    dimensions: Mapping[str, Any]


def alarms(template: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return resources_of_type(template, "AWS::CloudWatch::Alarm")


def watched(alarm: Mapping[str, Any]) -> Watched:
    props = alarm["Properties"]
    if "Metrics" in props:
        (query,) = [q for q in props["Metrics"] if q.get("ReturnData", True)]
        metric = query["MetricStat"]["Metric"]
        props = {"Namespace": metric["Namespace"], "MetricName": metric["MetricName"], **metric}
    dimensions = {d["Name"]: d["Value"] for d in props.get("Dimensions", [])}
    return Watched(props["Namespace"], props["MetricName"], dimensions)


def referenced(value: Any) -> str:
    """The logical id a template value points at: Ref, GetAtt, or a Sub of one ``${Id}``/``${Id.Attr}``."""
    if isinstance(value, dict):
        if "Ref" in value:
            return str(value["Ref"])
        if "Fn::GetAtt" in value:
            return str(value["Fn::GetAtt"][0])
        sub = value.get("Fn::Sub")
        if isinstance(sub, str) and (match := re.fullmatch(r"\$\{(\w+)(?:\.\w+)?\}", sub)):
            return match[1]
    return repr(value)


def missing_function_alarms(template: Mapping[str, Any]) -> list[str]:
    have = {
        (w.metric, referenced(w.dimensions.get("FunctionName")))
        for w in map(watched, alarms(template).values())
        if w.namespace == "AWS/Lambda"
    }
    return [
        f"{function} {metric}"
        for function in resources_of_type(template, "AWS::Serverless::Function")
        for metric in ("Errors", "Throttles")
        if (metric, function) not in have
    ]


def dead_letter_queues(template: Mapping[str, Any]) -> set[str]:
    return {
        queue["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        for queue in resources_of_type(template, "AWS::SQS::Queue").values()
        if "RedrivePolicy" in queue.get("Properties", {})
    }


def missing_dead_letter_alarms(template: Mapping[str, Any]) -> list[str]:
    watched_depths = {
        referenced(w.dimensions.get("QueueName"))
        for alarm in alarms(template).values()
        if (w := watched(alarm)).metric == "ApproximateNumberOfMessagesVisible"
        and alarm["Properties"]["ComparisonOperator"] == "GreaterThanThreshold"
        and float(alarm["Properties"]["Threshold"]) == 0
    }
    return sorted(dead_letter_queues(template) - watched_depths)


def test_every_function_has_error_and_throttle_alarms_and_every_dead_letter_queue_a_depth_alarm() -> None:
    assert len(resources_of_type(TEMPLATE, "AWS::Serverless::Function")) >= 7
    assert missing_function_alarms(TEMPLATE) == []
    assert missing_dead_letter_alarms(TEMPLATE) == []
    for function in resources_of_type(TEMPLATE, "AWS::Serverless::Function"):
        (group,) = [
            g
            for g in resources_of_type(TEMPLATE, "AWS::Logs::LogGroup").values()
            if g["Properties"]["LogGroupName"] == {"Fn::Sub": f"/aws/lambda/${{{function}}}"}
        ]
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_a_function_or_queue_added_without_alarms_is_noticed() -> None:
    """Guard the guard: the checks above read the template, so a new resource must show up in them."""
    grown = copy.deepcopy(TEMPLATE)
    grown["Resources"]["ExportFunction"] = copy.deepcopy(grown["Resources"]["DispatchFunction"])
    grown["Resources"]["ExportQueue"] = {
        "Type": "AWS::SQS::Queue",
        "Properties": {"RedrivePolicy": {"deadLetterTargetArn": {"Fn::GetAtt": ["ExportDlq", "Arn"]}}},
    }
    assert missing_function_alarms(grown) == ["ExportFunction Errors", "ExportFunction Throttles"]
    assert missing_dead_letter_alarms(grown) == ["ExportDlq"]


def runbook_sections() -> set[str]:
    """The GitHub anchors of docs/runbook.md's level-two headings: "## Dispatch lag" is #dispatch-lag."""
    text = ROOT.joinpath("docs/runbook.md").read_text(encoding="utf-8")
    return {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^## (.+)$", text, re.M)}


def test_every_alarm_tells_the_encrypted_ops_topic_when_it_fires_and_when_it_recovers() -> None:
    resources = TEMPLATE["Resources"]
    assert len(alarms(TEMPLATE)) >= 20
    for logical_id, alarm in alarms(TEMPLATE).items():
        props = alarm["Properties"]
        assert props["AlarmActions"] == [OPS_TOPIC] and props["OKActions"] == [OPS_TOPIC], logical_id
        anchor = re.search(r"\(runbook - ([a-z0-9-]+)\)", props["AlarmDescription"])
        assert anchor and anchor[1] in runbook_sections(), logical_id
    topic = resources["OpsAlarmTopic"]["Properties"]
    key = resources[topic["KmsMasterKeyId"]["Ref"]]
    assert key["Type"] == "AWS::KMS::Key" and key["Properties"]["EnableKeyRotation"] is True
    (cloudwatch,) = [s for s in key["Properties"]["KeyPolicy"]["Statement"] if "Service" in s["Principal"]]
    assert cloudwatch["Principal"]["Service"] == "cloudwatch.amazonaws.com"
    assert set(cloudwatch["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    subscription = resources["OpsAlarmEmailSubscription"]
    assert subscription["Condition"] == "HasOpsAlarmEmail"
    assert subscription["Properties"] == {
        "TopicArn": OPS_TOPIC,
        "Protocol": "email",
        "Endpoint": {"Ref": "OpsAlarmEmail"},
    }
    assert TEMPLATE["Conditions"]["HasOpsAlarmEmail"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "OpsAlarmEmail"}, ""]}]}


def test_the_alarms_watch_the_queue_age_the_lags_disconnects_app_config_notices_and_the_api() -> None:
    found = {(w.namespace, w.metric): w for w in map(watched, alarms(TEMPLATE).values())}
    assert referenced(found["AWS/SQS", "ApproximateAgeOfOldestMessage"].dimensions["QueueName"]) == "SendQueue"
    for metric in ("5xx", "Latency"):
        assert found["AWS/ApiGateway", metric].dimensions == {"ApiId": {"Ref": "HttpApi"}}
    for metric in (
        Metric.DISPATCH_LAG,
        Metric.POLL_LAG,
        Metric.INBOXES_DISCONNECTED,
        Metric.APP_CONFIG_ERRORS,
        Metric.NOTICE_FAILURES,
    ):
        # Powertools adds the service as the one dimension of every metric (checked on real EMF below).
        assert found[NAMESPACE, metric].dimensions == {"service": "sendwell"}
    own = {w.metric for w in found.values() if w.namespace == NAMESPACE}
    assert own <= {m.value for m in Metric}, own - {m.value for m in Metric}


def dashboard() -> dict[str, Any]:
    body = TEMPLATE["Resources"]["OpsDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    # Each ${Id} or ${Id.Attr} becomes the bare name: what it stands for is all the checks need.
    loaded: dict[str, Any] = json.loads(re.sub(r"\$\{([^}]+)\}", lambda m: m[1], body))
    return loaded


def dashboard_metrics() -> set[tuple[str, str, str]]:
    """(namespace, metric, first dimension value) of every line on the dashboard."""
    lines = set()
    for widget in dashboard()["widgets"]:
        for line in widget["properties"].get("metrics", []):
            namespace, metric, _dimension, value = line[:4]
            lines.add((namespace, metric, value))
    return lines


def test_the_dashboard_shows_every_alarm_function_and_queue() -> None:
    (alarm_widget,) = [w for w in dashboard()["widgets"] if w["type"] == "alarm"]
    assert sorted(alarm_widget["properties"]["alarms"]) == sorted(f"{a}.Arn" for a in alarms(TEMPLATE))
    lines = dashboard_metrics()
    for function in resources_of_type(TEMPLATE, "AWS::Serverless::Function"):
        assert {("AWS/Lambda", "Errors", function), ("AWS/Lambda", "Throttles", function)} <= lines
    assert dead_letter_queues(TEMPLATE) == {"SendDeadLetterQueue", "AuthFailureDeadLetterQueue"}
    for queue in dead_letter_queues(TEMPLATE):
        assert ("AWS/SQS", "ApproximateNumberOfMessagesVisible", f"{queue}.QueueName") in lines
    assert {("AWS/ApiGateway", "5xx", "HttpApi"), ("AWS/ApiGateway", "Latency", "HttpApi")} <= lines
    # Every metric sendwell has a name for is on it (the scenario below checks what is really emitted).
    assert {m.value for m in Metric} <= {metric for namespace, metric, _ in lines if namespace == NAMESPACE}


def test_language_extensions_expand_as_cloudformation_does() -> None:
    template: dict[str, Any] = {
        "Mappings": {"Limits": {"Fast": {"Seconds": "60"}, "Slow": {"Seconds": "900"}}},
        "Resources": {
            "Fn::ForEach::Outer": [
                "Kind",
                ["Fast", "Slow"],
                {
                    "${Kind}Queue": {"Type": "AWS::SQS::Queue", "Properties": {"Tag": {"Ref": "Kind"}}},
                    "Fn::ForEach::Inner": [
                        "Metric",
                        ["Age", "Depth"],
                        {
                            "${Kind}${Metric}Alarm": {
                                "Type": "AWS::CloudWatch::Alarm",
                                "Properties": {
                                    "Queue": {"Fn::Sub": "${${Kind}Queue.QueueName}"},
                                    "Period": {"Fn::FindInMap": ["Limits", {"Ref": "Kind"}, "Seconds"]},
                                    "Label": "&{Metric} of ${Kind}",
                                },
                            }
                        },
                    ],
                },
            ]
        },
    }
    resources = expand_language_extensions(template)["Resources"]
    assert sorted(resources) == [
        "FastAgeAlarm",
        "FastDepthAlarm",
        "FastQueue",
        "SlowAgeAlarm",
        "SlowDepthAlarm",
        "SlowQueue",
    ]
    assert resources["SlowQueue"]["Properties"] == {"Tag": "Slow"}
    assert resources["SlowDepthAlarm"]["Properties"] == {
        "Queue": {"Fn::Sub": "${SlowQueue.QueueName}"},
        "Period": "900",
        "Label": "Depth of Slow",
    }
    clash: dict[str, Any] = {
        "Resources": {"FastQueue": {}, "Fn::ForEach::Outer": template["Resources"]["Fn::ForEach::Outer"]}
    }
    with pytest.raises(ValueError, match="FastQueue is defined twice"):
        expand_language_extensions(clash)


# ============================================================================ the code


def handler_modules() -> dict[str, Path]:
    functions = resources_of_type(TEMPLATE, "AWS::Serverless::Function")
    return {
        logical_id: ROOT / props["CodeUri"] / f"{props['Handler'].rsplit('.', 1)[0]}.py"
        for logical_id, props in ((i, f["Properties"]) for i, f in functions.items())
    }


def _metric_name_problem(node: ast.expr, metric_mappings: set[str]) -> str | None:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "Metric":
        return None if node.attr in Metric.__members__ else f"Metric.{node.attr} does not exist"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Metric":
        return None  # Metric("...") fails at once for a name that is not a Metric
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return None if node.value in {m.value for m in Metric} else f"{node.value!r} is not a Metric"
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in metric_mappings:
        return None
    return f"{ast.unparse(node)} is not a name from sendwell.observability.Metric"


def test_every_metric_is_named_from_the_observability_module() -> None:
    """No dynamic names (f-strings, names built from enums): alarms and the dashboard can't follow those."""
    sources = [*ROOT.joinpath("functions").rglob("*.py"), *ROOT.joinpath("layers/sendwell/sendwell").rglob("*.py")]
    problems, calls = [], 0
    for path in sources:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        # Mappings typed to Metric values (mypy checks their values), and those observability exports.
        metric_mappings = {"AUTH_FAILURE_METRICS"} | {
            node.target.id
            for node in tree.body
            if isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and ast.unparse(node.annotation).endswith(", Metric]")
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_metric":
                name = next((k.value for k in node.keywords if k.arg == "name"), node.args[0] if node.args else None)
                assert name is not None, f"{path}:{node.lineno}"
                calls += 1
                if problem := _metric_name_problem(name, metric_mappings):
                    problems.append(f"{path.relative_to(ROOT)}:{node.lineno}: {problem}")
    assert calls >= 15
    assert not problems, "\n".join(problems)


def test_every_function_installs_the_log_redaction_at_cold_start() -> None:
    # The redaction is installed once, in the wiring module every handler takes its logger from.
    wiring = ROOT / "layers/sendwell/sendwell/wiring.py"
    tree = ast.parse(wiring.read_text(encoding="utf-8"))
    calls = [ast.unparse(node.value) for node in tree.body if isinstance(node, ast.Expr)]
    assert "install_redaction(logger)" in calls
    missing = []
    for logical_id, path in handler_modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imports = [node for node in tree.body if isinstance(node, ast.ImportFrom) and node.module == "sendwell.wiring"]
        if not any(alias.name == "logger" for node in imports for alias in node.names):
            missing.append(f"{logical_id} ({path.relative_to(ROOT)}) does not log through sendwell.wiring's logger")
    assert not missing, "\n".join(missing)


def test_the_redaction_filter_masks_secrets_by_key_by_shape_and_in_exceptions() -> None:
    stream = io.StringIO()
    logger = Logger(service="sendwell-redaction-test", stream=stream)
    install_redaction(logger)
    google_token = "ya29.a0AfB_byC9rX-secret-access"
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMDk4NzY1NDMyMSJ9.c2lnbmF0dXJl"
    link = "Q2xpZW50TGlua1Rva2VuRm9yQW5hLWFuZC1ub2JvZHktZWxzZQ"
    logger.info(
        "callback GET /oauth/callback/google?code=4/0AeanS0b-secret-code&state=s1 from /r/%s",
        link,
        extra={"inbox_id": "ibx_1", "smtp_password": "hunter2!", "grant": {"refresh_token": "1//0g-secret"}},
    )
    try:
        raise RuntimeError(f"refresh refused for Bearer {google_token} (id token {jwt})")
    except RuntimeError:
        logger.exception("refresh failed", extra={"campaign_id": "cmp_1"})
    logs = [json.loads(line) for line in stream.getvalue().splitlines()]
    text = stream.getvalue()
    for secret in (google_token, jwt, link, "4/0AeanS0b-secret-code", "hunter2!", "1//0g-secret"):
        assert secret not in text
    assert logs[0]["inbox_id"] == "ibx_1" and logs[0]["smtp_password"] == REDACTED
    assert logs[0]["grant"] == {"refresh_token": REDACTED}
    assert logs[0]["message"] == f"callback GET /oauth/callback/google?code={REDACTED}&state=s1 from /r/{REDACTED}"
    assert logs[1]["campaign_id"] == "cmp_1" and logs[1]["exception_name"] == "RuntimeError"
    assert "refresh refused for" in logs[1]["exception"] and REDACTED in logs[1]["exception"]


def test_the_counting_mailer_counts_each_notice_sent_and_each_one_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "POWERTOOLS_SERVICE_NAME": "sendwell",
        "POWERTOOLS_METRICS_NAMESPACE": NAMESPACE,
        "POWERTOOLS_METRICS_DISABLED": "false",
    }.items():
        monkeypatch.setenv(name, value)
    notice = Email(
        to=(OWNER,),
        subject="Action needed: ana@outreach-agency.example was disconnected",
        text="Reconnect it here.",
        html="<p>Reconnect it here.</p>",
    )
    with mock_aws():
        ses = boto3.client("ses", region_name=REGION)
        ses.verify_domain_identity(Domain="agency.example")
        metrics = Metrics()
        metrics.clear_metrics()
        mailer = CountingMailer(SesMailer(ses, "notices@agency.example"), metrics)
        assert mailer.send(notice)
        ses.delete_identity(Identity="agency.example")  # SES now refuses the sender
        with pytest.raises(ClientError, match="MessageRejected"):
            mailer.send(notice)
        metrics.flush_metrics()
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert emitted(documents) == {Metric.NOTICES_SENT: 1, Metric.NOTICE_FAILURES: 1}


# ============================================================================ the scenario

GOOGLE_CLIENT_ID = "4242-ops.apps.googleusercontent.com"
GOOGLE_CLIENT_SECRET = "GOCSPX-ops-scenario-client-secret"
ADMIN = PARAMETERS["AdminEmails"]
ANA = "ana.ops@outreach-agency.example"  # a custom SMTP/IMAP inbox
ALICE = "alice.ops@acme-outreach.com"  # a Gmail inbox
OWNER = "dana.ops@client.example"
PASSWORD = "Tr0ub4dor&3 ops"
TYPO = "Tr0ub4dor&3 opz"
NEW_PASSWORD = "correct horse battery staple 42"
LINK_URL = re.compile(re.escape(PUBLIC_BASE_URL) + r"/r/([A-Za-z0-9_-]{43})")
STARTED = datetime.now(UTC)


@dataclass
class Page:
    status: int
    headers: dict[str, str]
    body: str

    def field(self, name: str) -> str:
        found = re.search(rf'name="{re.escape(name)}" value="([^"]*)"', self.body)
        assert found, f"no {name} field"
        return found[1]


@dataclass
class Capture:
    """Everything the functions print (Powertools JSON logs and EMF), and every record the root
    logger's handlers see (third-party libraries log there), as the Lambda runtime would keep them."""

    stdout: io.StringIO = field(default_factory=io.StringIO)
    root: list[str] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)

    def lines(self) -> list[str]:
        return [*self.stdout.getvalue().splitlines(), *self.root]

    def emf(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.getvalue().splitlines() if line.startswith('{"_aws"')]

    def logs(self) -> list[dict[str, Any]]:
        documents = (json.loads(line) for line in self.stdout.getvalue().splitlines() if line.startswith("{"))
        return [d for d in documents if "_aws" not in d]


class _RootCapture(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.lines = lines
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        # The fake providers' own servers (aiosmtpd logs as "mail.log") are not sendwell's lines.
        if not record.name.startswith("mail.log"):
            self.lines.append(self.format(record))


@dataclass
class World:
    models: Models
    session: boto3.Session
    env: dict[str, str]
    capture: Capture
    sandbox: Sandbox
    smtp: SmtpTestServer
    dovecot: DovecotServer
    http: requests.Session  # the person's browser to the provider's pages
    handlers: dict[str, Handler] = field(default_factory=dict)

    def invoke(self, function: str, event: dict[str, Any]) -> Any:
        with contextlib.redirect_stdout(self.capture.stdout):
            if function not in self.handlers:
                self.handlers[function] = load_handler(function, TEMPLATE)
                # A logger configured by an earlier test keeps its old stream: point it here too.
                for handler in logging.getLogger("sendwell").handlers:
                    if isinstance(handler, logging.StreamHandler):
                        handler.setStream(self.capture.stdout)
            context = LambdaContext(function_name=function, aws_request_id=str(uuid.uuid4()))
            return self.handlers[function](event, context)

    def tick(self, function: str, sample: str) -> Any:
        return self.invoke(function, json.loads((EVENTS / sample).read_text()))

    def deliver(self, queue: str, function: str) -> list[str]:
        """Hand everything on ``queue`` to ``function`` as one SQS batch; the ids of failed records."""
        sqs = self.session.client("sqs")
        url = self.env[
            {"SendQueue": "SENDWELL_SEND_QUEUE_URL", "AuthFailureQueue": "SENDWELL_AUTH_FAILURE_QUEUE_URL"}[queue]
        ]
        received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"]).get("Messages", [])
        assert received, f"nothing on {queue}"
        records = [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m["Attributes"],
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:{url.rsplit('/', 1)[1]}",
                "awsRegion": REGION,
            }
            for m in received
        ]
        failed = [item["itemIdentifier"] for item in self.invoke(function, {"Records": records})["batchItemFailures"]]
        for message in received:
            if message["MessageId"] not in failed:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return failed

    def inbox_status(self, inbox_id: str) -> str:
        return str(self.models.inbox.get(inbox_id, consistent_read=True).status)

    def overdue(self, inbox_id: str, *, poll: timedelta | None = None, attention: timedelta | None = None) -> None:
        """Time passes: the inbox's next poll (or its reminder) is now this long overdue."""
        table, now = self.models.inbox, epoch(datetime.now(UTC))
        actions: list[Any] = []
        if poll is not None:
            actions += [table.poll_shard.set("0"), table.next_poll_at.set(now - int(poll.total_seconds()))]
        if attention is not None:
            actions.append(table.attention_at.set(now - int(attention.total_seconds())))
        self.models.inbox.get(inbox_id).update(actions=actions)

    def notices(self, to: str) -> list[str]:
        return [
            m.body
            for m in ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages
            if to in m.destinations["ToAddresses"]
        ]


@dataclass
class Browser:
    """One person's browser, minus the browser: cookies kept, each request an API Gateway event."""

    world: World
    cookies: dict[str, str] = field(default_factory=dict)

    def get(self, url: str) -> Page:
        return self._send("GET", url, b"", None)

    def post(self, url: str, form: Mapping[str, str]) -> Page:
        return self._send("POST", url, urlencode(form).encode(), "application/x-www-form-urlencoded")

    def post_json(self, url: str, body: Mapping[str, Any]) -> dict[str, Any]:
        page = self._send("POST", url, json.dumps(body).encode(), "application/json")
        assert page.status == 201, page.body
        loaded: dict[str, Any] = json.loads(page.body)
        return loaded

    def _send(self, method: str, url: str, body: bytes, content_type: str | None) -> Page:
        assert url.startswith(PUBLIC_BASE_URL), url
        split = urlsplit(url)
        route, params = next(
            (r, m.groupdict())
            for r in http_routes(TEMPLATE)
            if r.method == method and (m := r.pattern.match(split.path))
        )
        host = urlsplit(PUBLIC_BASE_URL).netloc
        headers = {"host": host, "user-agent": "Mozilla/5.0 (ops test)"}
        if self.cookies:
            headers["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if content_type:
            headers["content-type"] = content_type
        target = split.path + (f"?{split.query}" if split.query else "")
        result = self.world.invoke(route.function, http_event(route, method, target, headers, body, params, host))
        for cookie in result.get("cookies") or []:
            name, _, rest = cookie.partition("=")
            value = rest.split(";", 1)[0]
            if value:
                self.cookies[name] = value
                self.world.capture.secrets.add(value)
        headers = {k.lower(): v for k, v in (result.get("headers") or {}).items()}
        page = Page(result["statusCode"], headers, result.get("body") or "")
        if 'name="csrf_token"' in page.body:
            self.world.capture.secrets.add(page.field("csrf_token"))
        return page

    def open_link(self, url: str) -> Page:
        self.world.capture.secrets.add(url.rsplit("/", 1)[1])
        assert self.get(url).status == 303
        landing = self.get(f"{PUBLIC_BASE_URL}/connect")
        assert landing.status == 200, landing.body
        return landing

    def sign_in_with_google(self, landing: Page, account: str) -> Page:
        start = self.post(f"{PUBLIC_BASE_URL}/connect/oauth", {"csrf_token": landing.field("csrf_token")})
        assert start.status == 303, start.body
        consent = self.world.http.get(start.headers["location"], timeout=10)
        action = re.search(r'<form method="post" action="([^"]+)"', consent.text)
        request_id = re.search(r'name="request_id" value="([^"]+)"', consent.text)
        assert action and request_id, consent.text
        answer = self.world.http.post(
            urljoin(consent.url, action[1]),
            data={
                "request_id": request_id[1],
                "account": account,
                "scope": re.findall(r'name="scope" value="([^"]+)"', consent.text),
                "decision": "allow",
            },
            allow_redirects=False,
            timeout=10,
        )
        callback = answer.headers["Location"]
        self.world.capture.secrets.add(parse_qs(urlsplit(callback).query)["code"][0])
        return self.get(callback)


def seed_campaign(models: Models, inbox_id: str, prospects: list[str]) -> None:
    """A two-step campaign, open all week, whose prospects' first step fell due five minutes ago."""
    models.campaign(
        campaign_id=f"cmp_{inbox_id}",
        name="Q4 outreach",
        created_at=STARTED,
        inbox_ids=[inbox_id],
        steps=[
            new_step(
                subject="Quick question, {{ first_name }}",
                text="Hi {{ first_name }}",
                html=None,
                delay_seconds=0,
                new_thread=False,
            ),
            new_step(subject="re", text="Bumping this.", html=None, delay_seconds=3 * 86400, new_thread=False),
        ],
        window=new_window(days="0,1,2,3,4,5,6", start="00:00", end="23:59", tz="UTC"),
    ).save()
    for number, email in enumerate(prospects):
        enrollment_id = f"enr_{inbox_id}_{number}"
        models.enrollment(
            enrollment_id=enrollment_id,
            campaign_id=f"cmp_{inbox_id}",
            inbox_id=inbox_id,
            email=email,
            fields={"first_name": email.split(".")[0].title()},
            created_at=STARTED,
            due_shard=shard_for(enrollment_id),
            due_at=epoch(datetime.now(UTC) - timedelta(minutes=5)) + number,
        ).save()


def run_story(world: World) -> None:
    admin = Browser(world)
    capture = world.capture
    inbox = f"{PUBLIC_BASE_URL}/admin/inboxes"
    common = {"owner_email": OWNER, "timezone": "UTC", "min_gap_seconds": 60}
    ana = admin.post_json(
        inbox,
        {
            "provider": "custom",
            "address": ANA,
            "display_name": "Ana from Outreach",
            "smtp_host": world.smtp.host,
            "smtp_port": world.smtp.port,
            "smtp_security": "none",
            "imap_host": world.dovecot.host,
            "imap_port": world.dovecot.port,
            "imap_security": "none",
            **common,
        },
    )["inbox_id"]
    alice = admin.post_json(inbox, {"provider": "gmail", "address": ALICE, "display_name": "Alice", **common})[
        "inbox_id"
    ]
    ana_link = admin.post_json(f"{inbox}/{ana}/links", {"expires_in_days": 3})["url"]
    alice_link = admin.post_json(f"{inbox}/{alice}/links", {"expires_in_days": 3})["url"]

    # Ana mistypes her password once, then connects; Alice signs in with Google.
    browser = Browser(world)
    landing = browser.open_link(ana_link)
    assert (
        browser.post(
            f"{PUBLIC_BASE_URL}/connect/password", {"csrf_token": landing.field("csrf_token"), "password": TYPO}
        ).status
        == 422
    )
    done = browser.post(
        f"{PUBLIC_BASE_URL}/connect/password", {"csrf_token": landing.field("csrf_token"), "password": PASSWORD}
    )
    assert done.status == 200, done.body
    browser = Browser(world)
    assert browser.sign_in_with_google(browser.open_link(alice_link), ALICE).status == 200
    store = CredentialStore(
        world.models, KmsCipher(world.session.client("kms"), world.env["SENDWELL_CREDENTIALS_KEY_ID"])
    )
    grant = store.load(world.models.inbox.get(alice))
    capture.secrets |= {grant["access_token"], grant["refresh_token"]}
    assert {world.inbox_status(ana), world.inbox_status(alice)} == {InboxStatus.CONNECTED}

    # Each inbox sends its first due step: through the SMTP server and through the Gmail API.
    seed_campaign(world.models, ana, ["jorg.prospect@client-one.example", "kim.prospect@client-two.example"])
    seed_campaign(world.models, alice, ["lee.prospect@client-three.example", "max.prospect@client-four.example"])
    assert world.tick("DispatchFunction", "dispatch.json")["enqueued"] == 2
    assert world.deliver("SendQueue", "SendFunction") == []
    assert len(world.smtp.received) == 1 and len(world.sandbox.sent_messages(ALICE)) == 1

    # Ana changes her mailbox password; Alice's access token expires while Google refuses the app's
    # client once. The next (overdue) poll finds both.
    world.smtp.users[ANA] = NEW_PASSWORD
    world.dovecot.add_user(ANA, NEW_PASSWORD)
    world.sandbox.expire_access_tokens(ALICE)
    world.sandbox.inject_fault(ALICE, "token", "invalid_client", times=1)
    world.overdue(ana, poll=timedelta(minutes=12))
    world.overdue(alice, poll=timedelta(minutes=9))
    assert world.tick("PollFunction", "poll.json")["failed"] == 2
    assert world.deliver("AuthFailureQueue", "AuthFailureFunction") == []
    assert (world.inbox_status(ana), world.inbox_status(alice)) == (InboxStatus.DISCONNECTED, InboxStatus.CONNECTED)

    # Then Google revokes Alice's grant: a real disconnect.
    world.sandbox.revoke_google_grant(ALICE)
    world.overdue(alice, poll=timedelta(minutes=6))
    assert world.tick("PollFunction", "poll.json")["failed"] == 1
    assert world.deliver("AuthFailureQueue", "AuthFailureFunction") == []
    assert world.inbox_status(alice) == InboxStatus.DISCONNECTED

    # Dispatch holds the second prospect of each inbox: nothing is sent, nothing is lost.
    assert world.tick("DispatchFunction", "dispatch.json")["enqueued"] == 0

    # A day later SES refuses the reminder (the sending identity was removed, then restored).
    ses = world.session.client("ses")
    ses.delete_identity(Identity=PARAMETERS["SesIdentity"])
    world.overdue(ana, attention=timedelta(minutes=1))
    assert world.tick("RemindersFunction", "reminders.json").get("failed") == 1
    ses.verify_domain_identity(Domain=PARAMETERS["SesIdentity"])

    # Ana reconnects through the link in her disconnect notice, with the new password.
    notice_tokens = {token for body in world.notices(OWNER) + world.notices(ADMIN) for token in LINK_URL.findall(body)}
    capture.secrets |= notice_tokens
    notice = next(body for body in world.notices(OWNER) if ANA in body and LINK_URL.search(body))
    browser = Browser(world)
    landing = browser.open_link(f"{PUBLIC_BASE_URL}/r/{LINK_URL.findall(notice)[0]}")
    done = browser.post(
        f"{PUBLIC_BASE_URL}/connect/password", {"csrf_token": landing.field("csrf_token"), "password": NEW_PASSWORD}
    )
    assert done.status == 200, done.body
    assert world.inbox_status(ana) == InboxStatus.CONNECTED
    capture.secrets |= {PASSWORD, TYPO, NEW_PASSWORD, GOOGLE_CLIENT_SECRET, ana_link.rsplit("/", 1)[1]}


@pytest.fixture(scope="module")
def story(sandbox: Sandbox, dovecot: DovecotServer) -> Iterator[Capture]:
    capture = Capture()
    sendwell_logger = logging.getLogger("sendwell")
    saved_streams = [(h, h.stream) for h in sendwell_logger.handlers if isinstance(h, logging.StreamHandler)]
    saved_levels = (logging.root.level, sendwell_logger.level)
    root_capture = _RootCapture(capture.root)
    with (
        pytest.MonkeyPatch.context() as env,
        mock_aws(),
        SmtpTestServer(users={ANA: PASSWORD}, security="plain") as smtp,
        requests.Session() as http,
    ):
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SECURITY_TOKEN": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_DISABLED": "false",
        }.items():
            env.setenv(name, value)
        env.delenv("AWS_ENDPOINT_URL", raising=False)
        session = boto3.Session(region_name=REGION)
        stack = create_resources(TEMPLATE, session, prefix="ops", parameters=PARAMETERS)
        session.client("ses").verify_domain_identity(Domain=PARAMETERS["SesIdentity"])
        variables: dict[str, str] = {}
        for function in resources_of_type(TEMPLATE, "AWS::Serverless::Function"):
            variables |= function_environment(TEMPLATE, function, stack)
        variables |= {
            "SENDWELL_PUBLIC_BASE_URL": PUBLIC_BASE_URL,
            "SENDWELL_GOOGLE_CLIENT_ID": GOOGLE_CLIENT_ID,
            "SENDWELL_GOOGLE_AUTH_URL": sandbox.google_auth_url,
            "SENDWELL_GOOGLE_TOKEN_URL": sandbox.google_token_url,
            "SENDWELL_GOOGLE_CERTS_URL": sandbox.google_certs_url,
            "SENDWELL_GMAIL_API_URL": sandbox.base_url,
            "SENDWELL_CA_BUNDLE": sandbox.ca_bundle_path,
            # As strict as it gets: every debug line of the functions and of the libraries they use.
            "POWERTOOLS_LOG_LEVEL": "DEBUG",
        }
        for name, value in variables.items():
            env.setenv(name, value)
        session.client("ssm").put_parameter(
            Name=variables["SENDWELL_GOOGLE_CLIENT_SECRET_PARAMETER"], Value=GOOGLE_CLIENT_SECRET, Type="SecureString"
        )
        sandbox.reset()
        sandbox.add_google_account(ALICE, name="Alice Archer")
        sandbox.add_client(
            "google", GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET, [f"{PUBLIC_BASE_URL}/oauth/callback/google"]
        )
        dovecot.add_user(ANA, PASSWORD)
        http.trust_env, http.verify = False, sandbox.ca_bundle_path
        ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages.clear()
        DEFAULT_PROVIDERS.clear()  # Powertools' SSM cache outlives a test
        Metrics().clear_metrics()  # and so does its metric set
        settings = Settings.from_env({**variables, "AWS_DEFAULT_REGION": REGION})
        world = World(
            models=bind_models(settings.tables, region=REGION),
            session=session,
            env=variables,
            capture=capture,
            sandbox=sandbox,
            smtp=smtp,
            dovecot=dovecot,
            http=http,
        )
        # The Lambda runtime's root handler is in place before a function's module is imported.
        logging.root.addHandler(root_capture)
        logging.root.setLevel(logging.DEBUG)
        try:
            run_story(world)
            yield capture
        finally:
            logging.root.removeHandler(root_capture)
            logging.root.setLevel(saved_levels[0])
            sendwell_logger.setLevel(saved_levels[1])
            for handler, stream in saved_streams:
                handler.setStream(stream)
            DEFAULT_PROVIDERS.clear()
            Metrics().clear_metrics()


def emitted(documents: list[dict[str, Any]]) -> dict[str, float]:
    """Each metric's total over CloudWatch EMF documents."""
    totals: dict[str, float] = {}
    for document in documents:
        for definition in document["_aws"]["CloudWatchMetrics"]:
            for metric in definition["Metrics"]:
                values = document[metric["Name"]]
                totals[metric["Name"]] = totals.get(metric["Name"], 0) + sum(
                    values if isinstance(values, list) else [values]
                )
    return totals


@pytest.mark.dovecot
def test_every_alarmed_metric_is_emitted_and_every_emitted_metric_is_on_the_dashboard(story: Capture) -> None:
    totals = emitted(story.emf())
    alarmed = {w.metric for w in map(watched, alarms(TEMPLATE).values()) if w.namespace == NAMESPACE}
    assert alarmed == {
        "DispatchLagSeconds",
        "PollLagSeconds",
        "InboxesDisconnected",
        "AppConfigErrors",
        "NoticeFailures",
    }
    assert alarmed <= set(totals), alarmed - set(totals)
    on_dashboard = {metric for namespace, metric, _ in dashboard_metrics() if namespace == NAMESPACE}
    assert set(totals) <= on_dashboard, set(totals) - on_dashboard
    # The story's own figures: what ops would read off the dashboard afterwards.
    assert totals["EmailsSent"] == 2 and totals["LinksCreated"] == 2
    assert totals["InboxesDisconnected"] == 2 and totals["AppConfigErrors"] == 1
    assert totals.get("AuthLostFailures", 0) + totals.get("UserActionFailures", 0) == 2
    assert totals["AppConfigFailures"] == 1
    assert totals["DisconnectedBacklogSteps"] == 2 and totals["NoticeFailures"] >= 1
    assert totals["InboxesReconnected"] >= 3 and totals["ReconnectLoginFailed"] == 1
    assert totals["DispatchLagSeconds"] >= 300 and totals["PollLagSeconds"] >= 12 * 60


@pytest.mark.dovecot
def test_metrics_carry_the_namespace_and_the_one_dimension_the_alarms_expect(story: Capture) -> None:
    documents = story.emf()
    assert len(documents) >= 10
    for document in documents:
        for definition in document["_aws"]["CloudWatchMetrics"]:
            assert definition["Namespace"] == NAMESPACE and definition["Dimensions"] == [["service"]]
        assert document["service"] == "sendwell"
    assert set(sys.modules["send_app"].OUTCOME_METRICS) == set(Outcome)  # every outcome of a send is counted


_BASE64 = re.compile(r"[A-Za-z0-9+/]{24,}={0,2}")


def _with_base64_decoded(line: str) -> str:
    """The line, plus whatever text it carries in base64 (KMS plaintexts travel that way)."""
    decoded = []
    for blob in _BASE64.findall(line):
        with contextlib.suppress(binascii.Error, ValueError):
            decoded.append(base64.b64decode(blob + "=" * (-len(blob) % 4)).decode("utf-8", "ignore"))
    return " ".join([line, *decoded])


def _around(line: str, found: str) -> str:
    """Where a secret was found, with the secret itself cut short: a failure shows the leak, not the secret."""
    start = line.index(found)
    return line[max(0, start - 120) : start] + found[:6] + "…"


def _variants(secret: str) -> set[str]:
    """A secret as it could appear in a line: raw, URL-encoded, or escaped inside JSON."""
    return {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]}


@pytest.mark.dovecot
def test_no_log_line_holds_a_secret_the_scenario_used(story: Capture) -> None:
    lines = [_with_base64_decoded(line) for line in story.lines()]
    # The net was cast wide: the functions' own JSON logs and the libraries' debug lines.
    assert len(story.logs()) >= 20 and any(line.startswith("DEBUG botocore") for line in story.root)
    assert any(line.startswith("DEBUG urllib3") for line in story.root)
    assert len(story.secrets) >= 15  # passwords, link tokens, cookies, CSRF tokens, code, tokens, client secret
    leaks = [
        (secret[:6] + "…", _around(line, variant))
        for secret in story.secrets
        for variant in _variants(secret)
        for line in lines
        if len(secret) >= 6 and variant in line
    ]
    assert not leaks, "\n".join(f"{secret}: {line}" for secret, line in leaks)


@pytest.mark.dovecot
def test_logs_are_structured_with_the_ids_ops_search_by(story: Capture) -> None:
    logs = story.logs()
    (sent, *_) = [log for log in logs if log["message"] == "send finished" and log.get("outcome") == "sent"]
    for key in ("inbox_id", "campaign_id", "enrollment_id", "message_id", "function_name", "function_request_id"):
        assert sent.get(key), key
    assert re.fullmatch(r"<sw\.enr_ibx_\w+\.0@[\w.-]+>", sent["message_id"])
    handled = [log for log in logs if log["message"] == "auth failure handled"]
    assert len(handled) == 3 and all(log["inbox_id"].startswith("ibx_") for log in handled)
    (dispatched, *_) = [log for log in logs if log["message"] == "dispatched"]
    assert dispatched["lag_seconds"] >= 300


# ============================================================================ deployment


def _package(template: dict[str, Any], s3: Any, bucket: str) -> None:
    """What ``sam package`` does: zip each CodeUri and ContentUri, upload it, point the template at it."""
    for resource in template["Resources"].values():
        props = resource.get("Properties", {})
        key = {"AWS::Serverless::Function": "CodeUri", "AWS::Serverless::LayerVersion": "ContentUri"}.get(
            resource["Type"]
        )
        if key is None:
            continue
        folder = ROOT / props[key]
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as zipped:
            for path in sorted(folder.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    zipped.write(path, path.relative_to(folder))
        name = f"{props[key].strip('/').replace('/', '-')}.zip"
        s3.put_object(Bucket=bucket, Key=name, Body=archive.getvalue())
        props[key] = f"s3://{bucket}/{name}"


def _without(template: dict[str, Any], dropped: set[str]) -> dict[str, Any]:
    """The template minus ``dropped`` resources, references to them replaced by a placeholder."""

    def stub(value: Any) -> Any:
        if isinstance(value, list):
            return [stub(item) for item in value]
        if not isinstance(value, dict):
            return value
        if referenced(value) in dropped and len(value) == 1 and ("Ref" in value or "Fn::GetAtt" in value):
            return f"not-in-moto-{referenced(value)}"
        if isinstance(value.get("Fn::Sub"), str):
            return {
                "Fn::Sub": re.sub(
                    r"\$\{(\w+)(\.\w+)?\}",
                    lambda m: f"not-in-moto-{m[1]}" if m[1] in dropped else m[0],
                    value["Fn::Sub"],
                )
            }
        return {key: stub(item) for key, item in value.items()}

    kept = {k: stub(r) for k, r in template["Resources"].items() if k not in dropped}
    return {**template, "Resources": kept, "Outputs": stub(template["Outputs"])}


def _translate(template: dict[str, Any], parameters: Mapping[str, str]) -> dict[str, Any]:
    """The SAM transform, offline as `sam validate` runs it (policy templates ship with it)."""
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    sam = {**template, "Transform": "AWS::Serverless-2016-10-31"}  # LanguageExtensions: done by load_template
    translated: dict[str, Any] = Translator(managed_policy_map=None, sam_parser=Parser(), plugins=[]).translate(
        sam_template=sam, parameter_values=dict(parameters), get_managed_policy_map=dict
    )
    return translated


def _dependencies(resource: Mapping[str, Any], names: set[str]) -> set[str]:
    """The resources ``resource`` needs first: Ref, Fn::GetAtt, ${...} in Fn::Sub, DependsOn."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            if "Ref" in value and value["Ref"] in names:
                found.add(value["Ref"])
            if "Fn::GetAtt" in value:
                target = value["Fn::GetAtt"]
                found.add((target if isinstance(target, str) else target[0]).split(".")[0])
            sub = value.get("Fn::Sub")
            text = sub if isinstance(sub, str) else sub[0] if isinstance(sub, list) else ""
            found.update(m for m in re.findall(r"\$\{([A-Za-z0-9]+)[.}]", text) if m in names)
            for item in value.values():
                walk(item)

    walk(resource.get("Properties", {}))
    depends = resource.get("DependsOn", [])
    found.update([depends] if isinstance(depends, str) else depends)
    return found & names


def dependency_cycle(template: Mapping[str, Any]) -> list[str]:
    """A cycle CloudFormation would refuse (as the list of resources around it), or []."""
    names = set(template["Resources"])
    graph = {name: _dependencies(resource, names) for name, resource in template["Resources"].items()}
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(name: str) -> list[str]:
        state[name] = "open"
        path.append(name)
        for needed in sorted(graph[name]):
            if state.get(needed) == "open":
                return [*path[path.index(needed) :], needed]
            if needed not in state and (cycle := visit(needed)):
                return cycle
        state[name] = "done"
        path.pop()
        return []

    for name in sorted(graph):
        if name not in state and (cycle := visit(name)):
            return cycle
    return []


def test_the_transformed_template_has_no_dependency_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    packaged = copy.deepcopy(TEMPLATE)
    for resource in packaged["Resources"].values():  # as `sam package` leaves them: code in S3
        for key in ("CodeUri", "ContentUri"):
            if key in resource.get("Properties", {}):
                resource["Properties"][key] = "s3://sendwell-artifacts/code.zip"
    translated = _translate(packaged, PARAMETERS)
    assert dependency_cycle(translated) == []
    # The check sees a cycle when there is one: a function reading the API's URL from its
    # environment while the API's routes point at the function.
    looped = copy.deepcopy(translated)
    api = next(k for k, r in looped["Resources"].items() if r["Type"] == "AWS::ApiGatewayV2::Api")
    function = looped["Resources"]["AdminApiFunction"]
    function["Properties"]["Environment"]["Variables"]["API"] = {"Ref": api}
    assert "AdminApiFunction" in dependency_cycle(looped)


def test_the_transformed_template_deploys_into_moto(monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.cloudformation.parsing import get_model_map

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    parameters = {**PARAMETERS, "OpsAlarmEmail": "oncall@agency.example", "Stage": "prod"}
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        s3 = session.client("s3")
        s3.create_bucket(Bucket="sendwell-artifacts")
        sam = copy.deepcopy(TEMPLATE)
        _package(sam, s3, "sendwell-artifacts")
        translated = _translate(sam, parameters)
        types = {r["Type"] for r in translated["Resources"].values()}
        unsupported = {t for t in types if t not in get_model_map()}
        # What moto's CloudFormation can't create; the alarms are checked from the template above.
        assert unsupported == {
            "AWS::ApiGatewayV2::Api",
            "AWS::ApiGatewayV2::Stage",
            "AWS::Scheduler::Schedule",
            "AWS::CloudWatch::Alarm",
            "AWS::SNS::Subscription",
        }
        dropped = {k for k, r in translated["Resources"].items() if r["Type"] in unsupported}
        deployable = _without(translated, dropped)
        for logical_id, resource in deployable["Resources"].items():
            if resource["Type"] == "AWS::SQS::Queue" and resource["Properties"].get("FifoQueue"):
                # CloudFormation adds .fifo to the name it generates for a FIFO queue; moto doesn't.
                resource["Properties"]["QueueName"] = f"sendwell-{logical_id}.fifo"
        cfn = session.client("cloudformation")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Tried to parse AWS::", UserWarning)
            cfn.create_stack(
                StackName="sendwell-prod",
                TemplateBody=json.dumps(deployable),
                Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
                Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
            )
        stack = cfn.describe_stacks(StackName="sendwell-prod")["Stacks"][0]
        assert stack["StackStatus"] == "CREATE_COMPLETE"
        created = {
            r["LogicalResourceId"]: r
            for r in cfn.list_stack_resources(StackName="sendwell-prod")["StackResourceSummaries"]
        }
        assert set(created) == set(deployable["Resources"])
        assert {r["ResourceStatus"] for r in created.values()} == {"CREATE_COMPLETE"}
        # moto gives Lambda permissions and layer versions no physical id; everything else has one.
        nameless = {r["ResourceType"] for r in created.values() if not r["PhysicalResourceId"]}
        assert nameless <= {"AWS::Lambda::Permission", "AWS::Lambda::LayerVersion"}
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
        assert set(outputs) == set(TEMPLATE["Outputs"])
        assert outputs["IsProduction"] == "true"

        topic = session.client("sns").get_topic_attributes(TopicArn=outputs["OpsAlarmTopicArn"])["Attributes"]
        assert topic["KmsMasterKeyId"] == created["OpsAlarmKey"]["PhysicalResourceId"]
        name = outputs["OpsDashboardUrl"].rsplit("name=", 1)[1]
        body = json.loads(session.client("cloudwatch").get_dashboard(DashboardName=name)["DashboardBody"])
        assert len(body["widgets"][0]["properties"]["alarms"]) == len(alarms(TEMPLATE))
        lambda_client = session.client("lambda")
        for function in resources_of_type(TEMPLATE, "AWS::Serverless::Function"):
            config = lambda_client.get_function_configuration(FunctionName=created[function]["PhysicalResourceId"])
            assert config["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"] == NAMESPACE
            assert config["Runtime"] == "python3.12"
            # moto's CloudFormation drops Architectures and Layers: read them from what it was given.
            given = translated["Resources"][function]["Properties"]
            assert given["Architectures"] == ["arm64"]
            layers = [translated["Resources"][layer["Ref"]]["Type"] for layer in given["Layers"]]
            assert layers == ["AWS::Lambda::LayerVersion"] * 2
        logs = session.client("logs").describe_log_groups(logGroupNamePrefix="/aws/lambda/")["logGroups"]
        assert len(logs) == 7 and {g["retentionInDays"] for g in logs} == {30}
        dead_letter = session.client("sqs").get_queue_attributes(
            QueueUrl=outputs["SendQueueUrl"], AttributeNames=["RedrivePolicy"]
        )["Attributes"]["RedrivePolicy"]
        assert json.loads(dead_letter)["maxReceiveCount"] == 5
