"""Send function: one SQS FIFO batch of due steps; each record is one step sent at most once."""

from __future__ import annotations

import os
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from sendwell.adapters.aws import CachingCipher, KmsCipher, SqsAuthFailureReporter, SqsQueue
from sendwell.adapters.mailboxes import ParameterStoreSecrets, ProviderMailboxes
from sendwell.cache import TtlCache
from sendwell.clock import utcnow
from sendwell.config import Settings
from sendwell.models import Campaign, bind_models
from sendwell.services.dispatch import SendRequest
from sendwell.services.sending import RetryLater, SendContext, send_step

SETTINGS = Settings.from_env(os.environ)
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

logger = Logger()
tracer = Tracer()
metrics = Metrics()
processor = SqsFifoPartialProcessor()


@tracer.capture_method
def send_record(record: SQSRecord) -> None:
    request = SendRequest.from_json(record.body)
    logger.append_keys(inbox_id=request.inbox_id, enrollment_id=request.enrollment_id, step=request.step_index)
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
        metrics.add_metric(name="SendDeferred", unit=MetricUnit.Count, value=1)
        logger.info("send deferred", extra={"reason": str(later), "delay_seconds": later.delay_seconds})
        raise
    metrics.add_metric(name=f"Send_{outcome.value}", unit=MetricUnit.Count, value=1)
    logger.info("send finished", extra={"outcome": outcome.value})


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=send_record, processor=processor, context=context)
