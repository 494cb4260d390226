"""What ops get once deployed, on moto: the counting mailer's metrics as SES accepts and refuses
notices, and the transformed template created by moto's CloudFormation, as far as moto supports its
types. (The template's alarms, dashboard and dependencies: ``tests/unit/test_operations.py``.)
"""

from __future__ import annotations

import copy
import io
import json
import re
import warnings
import zipfile
from typing import Any

import boto3
import pytest
from aws_lambda_powertools import Metrics
from botocore.exceptions import ClientError
from moto import mock_aws

from local.cfn import ROOT, resources_of_type
from sendwell.adapters.aws import SesMailer
from sendwell.observability import NAMESPACE, CountingMailer, Metric
from sendwell.ports.platform import Email
from tests.deployment import emitted
from tests.template import PARAMETERS, REGION, TEMPLATE
from tests.unit.test_operations import _translate, alarms, referenced

OWNER = "dana.ops@client.example"


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
        functions = resources_of_type(TEMPLATE, "AWS::Serverless::Function")
        assert len(logs) == len(functions) == 10 and {g["retentionInDays"] for g in logs} == {30}
        dead_letter = session.client("sqs").get_queue_attributes(
            QueueUrl=outputs["SendQueueUrl"], AttributeNames=["RedrivePolicy"]
        )["Attributes"]["RedrivePolicy"]
        assert json.loads(dead_letter)["maxReceiveCount"] == 5
