"""Send function: one SQS FIFO batch of due steps; each record is one step sent at most once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.parameters import get_parameter
from aws_lambda_powertools.utilities.typing import LambdaContext

from sendwell.adapters.aws import CachingCipher, KmsCipher, SqsAuthFailureReporter, SqsQueue
from sendwell.adapters.mailboxes import ParameterStoreSecrets, ProviderMailboxes
from sendwell.cache import TtlCache
from sendwell.clock import utcnow
from sendwell.config import Settings
from sendwell.failures import FailureKind
from sendwell.models import Campaign, bind_models
from sendwell.observability import Metric, install_redaction
from sendwell.services.dispatch import SendRequest
from sendwell.services.sending import Outcome, RetryLater, SendContext, send_step, step_message_id

SETTINGS = Settings.from_env(os.environ, read_parameter=get_parameter)
MODELS = bind_models(SETTINGS.tables, region=SETTINGS.region)
SQS = boto3.client("sqs", region_name=SETTINGS.region)
# Campaign definitions change rarely; a minute-old copy is fine and saves a read per email.
CAMPAIGNS: TtlCache[str, Campaign] = TtlCache(ttl=60, max_entries=256)
CONTEXT = SendContext(
    models=MODELS,
    mailboxes=ProviderMailboxes.from_settings(
        SETTINGS,
        MODELS,
        # One KMS call per inbox per warm container, not one per email.
        CachingCipher(KmsCipher(boto3.client("kms", region_name=SETTINGS.region), SETTINGS.credentials_key_id)),
        ParameterStoreSecrets(),
    ),
    auth_failures=SqsAuthFailureReporter(SqsQueue(SQS, SETTINGS.auth_failure_queue_url)),
    unsubscribe_base_url=f"{SETTINGS.public_base_url}/u",
    campaigns=lambda campaign_id: CAMPAIGNS.get(campaign_id, lambda: MODELS.campaign.get(campaign_id)),
)

# One fixed metric per outcome: failures by class, and the outcomes that sent nothing.
OUTCOME_METRICS: Mapping[Outcome, Metric] = {
    Outcome.SENT: Metric.EMAILS_SENT,
    Outcome.RECONCILED: Metric.SENDS_RECONCILED,
    Outcome.STALE: Metric.SENDS_SKIPPED,
    Outcome.INBOX_UNAVAILABLE: Metric.SENDS_SKIPPED,
    Outcome.RECIPIENT_REJECTED: Metric.SEND_RECIPIENT_REJECTED_FAILURES,
    Outcome.FAILED: Metric.SEND_BAD_MESSAGE_FAILURES,
    Outcome.AUTH_FAILURE: Metric.SEND_AUTH_FAILURES,
}

logger = Logger()
install_redaction(logger)
tracer = Tracer()
metrics = Metrics()
# A deferred step only holds back its own inbox's group: FIFO order matters within an inbox, and
# other inboxes in the same batch go on.
processor = SqsFifoPartialProcessor(skip_group_on_error=True)
# A batch whose every step was deferred is normal (gaps, caps), not an error: report the items.
processor.raise_on_entire_batch_failure = False


@tracer.capture_method
def send_record(record: SQSRecord) -> None:
    request = SendRequest.from_json(record.body)
    logger.append_keys(
        inbox_id=request.inbox_id,
        campaign_id=request.campaign_id or None,
        enrollment_id=request.enrollment_id,
        step=request.step_index,
        message_id=step_message_id(request.enrollment_id, request.step_index, request.inbox_address)
        if request.inbox_address
        else None,
    )
    redelivered = int(record.attributes.approximate_receive_count) > 1
    try:
        outcome = send_step(CONTEXT, request, now=utcnow(), redelivered=redelivered)
    except RetryLater as later:
        # Come back when the inbox can send again instead of after the queue's visibility timeout.
        SQS.change_message_visibility(
            QueueUrl=SETTINGS.send_queue_url,
            ReceiptHandle=record.receipt_handle,
            VisibilityTimeout=min(later.delay_seconds, 43_200),
        )
        metrics.add_metric(name=Metric.SENDS_DEFERRED, unit=MetricUnit.Count, value=1)
        if later.failure is FailureKind.TRANSIENT:
            metrics.add_metric(name=Metric.SEND_TRANSIENT_FAILURES, unit=MetricUnit.Count, value=1)
        logger.info("send deferred", extra={"reason": str(later), "delay_seconds": later.delay_seconds})
        raise
    metrics.add_metric(name=OUTCOME_METRICS[outcome], unit=MetricUnit.Count, value=1)
    logger.info("send finished", extra={"outcome": outcome.value})


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=send_record, processor=processor, context=context)
