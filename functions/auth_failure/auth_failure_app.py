"""Auth-failure handler: each report is classified already; disconnect once, notify once.

A record whose notices could not all be sent (SES or SNS failing, another invocation busy with the
same notice) fails; SQS delivers it again and the retry sends only what is missing. A record that
keeps failing ends in the queue's dead-letter queue; the inbox's state never depends on it.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.parameters import get_parameter
from aws_lambda_powertools.utilities.typing import LambdaContext

from sendwell.adapters.aws import SesMailer, SnsPublisher
from sendwell.adapters.once import IdempotentRunner
from sendwell.clock import utcnow
from sendwell.config import Settings
from sendwell.failures import FailureKind
from sendwell.models import bind_models
from sendwell.observability import AUTH_FAILURE_METRICS, CountingMailer, install_redaction
from sendwell.ports import AuthFailureReport
from sendwell.services.auth_failures import IncidentContext, Verdict, handle_report

SETTINGS = Settings.from_env(os.environ, read_parameter=get_parameter)
MODELS = bind_models(SETTINGS.tables, region=SETTINGS.region)
CONTEXT = IncidentContext(
    models=MODELS,
    mailer=CountingMailer(
        SesMailer(
            boto3.client("ses", region_name=SETTINGS.region), SETTINGS.sender_address, copy_to=SETTINGS.outbox_dir
        )
    ),
    events=SnsPublisher(boto3.client("sns", region_name=SETTINGS.region), SETTINGS.inbox_events_topic_arn),
    once=(ONCE := IdempotentRunner(SETTINGS.idempotency_table)),
    workspace_name=SETTINGS.workspace_name,
    admin_emails=SETTINGS.admin_emails,
    public_base_url=SETTINGS.public_base_url,
)

logger = Logger()
install_redaction(logger)
tracer = Tracer()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS)


@tracer.capture_method
def handle_record(record: SQSRecord) -> None:
    report = AuthFailureReport.from_json(record.body)
    logger.append_keys(inbox_id=report.inbox_id, code=report.code)
    verdict = handle_report(CONTEXT, report, now=utcnow())
    # Counted once handled, so a redelivered report is not counted twice.
    metrics.add_metric(name="AuthFailures", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name=AUTH_FAILURE_METRICS[FailureKind(report.kind)], unit=MetricUnit.Count, value=1)
    if verdict is Verdict.DISCONNECTED:
        metrics.add_metric(name="InboxesDisconnected", unit=MetricUnit.Count, value=1)
    elif verdict is Verdict.APP_CONFIG:
        metrics.add_metric(name="AppConfigErrors", unit=MetricUnit.Count, value=1)
    logger.info("auth failure handled", extra={"verdict": verdict.value, "kind": report.kind})


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    ONCE.register_lambda_context(context)
    return process_partial_response(event=event, record_handler=handle_record, processor=processor, context=context)
