"""What ops see, checked against template.yaml itself and against the code, with nothing deployed.

- Alarms, log groups and the dashboard are read from the template (``Fn::ForEach`` expanded as the
  AWS::LanguageExtensions transform does): every function has its error and throttle alarms, every
  queue with a dead-letter queue a depth alarm, and every alarm tells the encrypted ops topic both
  when it fires and when it recovers. A function or queue added without them fails here.
- Every metric is named from the observability module, every function installs the log redaction,
  and the transformed template has no dependency cycle.

The same template deployed on moto: ``tests/service/test_operations_deploy.py``; a whole scenario
through the real handlers, its metrics and its logs: ``tests/e2e/test_operations_story.py``.
"""

from __future__ import annotations

import ast
import copy
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools import Logger

from local.cfn import ROOT, expand_language_extensions, resources_of_type
from sendwell.observability import NAMESPACE, REDACTED, Metric, install_redaction
from tests.template import PARAMETERS, REGION, TEMPLATE

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
        # A metric-math alarm (a rate) watches its expression: here, its first metric, the numerator.
        stats = [q for q in props["Metrics"] if "MetricStat" in q]
        returned = [q for q in stats if q.get("ReturnData", True)]
        query = (returned or stats)[0]
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
    """Each function's Errors alarm; and its throttles watched by the account-wide alarm, which
    covers it only while no function has concurrency of its own (the account's limit is shared)."""
    have = {
        (w.metric, referenced(w.dimensions.get("FunctionName")) if w.dimensions else "every function")
        for w in map(watched, alarms(template).values())
        if w.namespace == "AWS/Lambda"
    }
    functions = resources_of_type(template, "AWS::Serverless::Function")
    missing = [f"{function} Errors" for function in functions if ("Errors", function) not in have]
    for function, resource in functions.items():
        reserved = "ReservedConcurrentExecutions" in resource.get("Properties", {})
        if reserved or ("Throttles", "every function") not in have:
            missing.append(f"{function} Throttles")
    return missing


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
    assert missing_function_alarms(grown) == ["ExportFunction Errors"]
    grown["Resources"]["ExportFunction"]["Properties"]["ReservedConcurrentExecutions"] = 5  # throttled alone
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
    every = list(map(watched, alarms(TEMPLATE).values()))
    found = {(w.namespace, w.metric): w for w in every}
    aged = {referenced(w.dimensions["QueueName"]) for w in every if w.metric == "ApproximateAgeOfOldestMessage"}
    assert aged == {"SendQueue", "DispatchQueue", "PollQueue"}  # sends waiting; batches no worker has taken
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


@pytest.mark.parametrize(
    ("alarm", "numerator", "period", "minimum_sent", "threshold"),
    [
        ("BounceRateAlarm", Metric.HARD_BOUNCES, 6 * 3600, 50, 5),
        ("ComplaintRateAlarm", Metric.COMPLAINTS, 86400, 100, 0.1),
    ],
)
def test_the_rate_alarms_divide_by_emails_sent_above_a_minimum_volume(
    alarm: str, numerator: Metric, period: int, minimum_sent: int, threshold: float
) -> None:
    props = TEMPLATE["Resources"][alarm]["Properties"]
    queries = {q["Id"]: q for q in props["Metrics"]}
    stats = {i: q["MetricStat"] for i, q in queries.items() if "MetricStat" in q}
    (expression,) = [q for q in queries.values() if q.get("ReturnData")]
    names = {i: s["Metric"]["MetricName"] for i, s in stats.items()}
    assert sorted(names.values()) == sorted([numerator.value, Metric.EMAILS_SENT.value])
    assert {s["Period"] for s in stats.values()} == {period} and {s["Stat"] for s in stats.values()} == {"Sum"}
    assert all(s["Metric"]["Dimensions"] == [{"Name": "service", "Value": "sendwell"}] for s in stats.values())
    top = next(i for i, n in names.items() if n == numerator.value)
    bottom = next(i for i, n in names.items() if n == Metric.EMAILS_SENT.value)
    assert expression["Expression"] == f"IF({bottom} >= {minimum_sent}, 100 * {top} / {bottom}, 0)"
    assert props["Threshold"] == threshold and props["ComparisonOperator"] == "GreaterThanThreshold"
    assert props["TreatMissingData"] == "notBreaching"


def test_the_dashboard_sums_the_poll_functions_inbound_lines_by_inbox_and_campaign() -> None:
    (widget,) = [w for w in dashboard()["widgets"] if w["type"] == "log"]
    query = widget["properties"]["query"]
    assert query.startswith("SOURCE '/aws/lambda/PollWorkerFunction'")
    assert "filter message = 'inbound'" in query and "by inbox_id, campaign_id, kind" in query
    # The fields it reads are the ones the poll worker logs.
    poll_app = (ROOT / "functions/poll/poll_worker_app.py").read_text(encoding="utf-8")
    assert re.search(
        r'logger\.info\(\s*"inbound",\s*extra=\{"inbox_id".*"campaign_id".*"kind".*"count"', poll_app, re.S
    )


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
            if isinstance(line[0], dict):
                continue  # a metric-math expression over the lines beside it
            namespace, metric, _dimension, value = line[:4]
            lines.add((namespace, metric, value))
    return lines


def test_the_dashboard_shows_every_alarm_function_and_queue() -> None:
    (alarm_widget,) = [w for w in dashboard()["widgets"] if w["type"] == "alarm"]
    assert sorted(alarm_widget["properties"]["alarms"]) == sorted(f"{a}.Arn" for a in alarms(TEMPLATE))
    lines = dashboard_metrics()
    for function in resources_of_type(TEMPLATE, "AWS::Serverless::Function"):
        assert {("AWS/Lambda", "Errors", function), ("AWS/Lambda", "Throttles", function)} <= lines
    assert dead_letter_queues(TEMPLATE) == {
        "SendDeadLetterQueue",
        "AuthFailureDeadLetterQueue",
        "ReconnectDeadLetterQueue",
    }
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
        metric_mappings = {"AUTH_FAILURE_METRICS", "INBOUND_METRICS"} | {
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


# ============================================================================ the transformed template


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


def test_no_alarm_on_sendwells_metrics_takes_a_minimum_or_an_average() -> None:
    """Concurrent invocations (worker batches, send batches) each report their own part: a
    minimum or an average of their reports hides the one inbox that counts. Before: the held
    follow-ups alarm took the Minimum, and one batch without held follow-ups silenced it."""
    rows = TEMPLATE["Mappings"]["AppAlarms"]
    assert rows and {name: row["Stat"] for name, row in rows.items() if row["Stat"] in ("Minimum", "Average")} == {}
