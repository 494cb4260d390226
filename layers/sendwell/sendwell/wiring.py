"""The one place adapters and contexts are built: each function's parts, once per container.

A handler calls its function's builder at import (that is, once per warm container) and passes
what it gets to the services. Each builder reads only its function's settings (``sendwell.config``)
and creates each boto3 client once. The Powertools logger, tracer and metrics are created here,
once, with secret redaction installed on the logger.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyPersistenceLayerError,
)
from aws_lambda_powertools.utilities.parameters import get_parameter
from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.exceptions import PynamoDBConnectionError, PynamoDBException

from sendwell.adapters.aws import (
    KmsCipher,
    QueueDeliveryError,
    SesMailer,
    SnsPublisher,
    SqsAuthFailureReporter,
    SqsQueue,
)
from sendwell.adapters.confirming import ConfirmingMailboxes
from sendwell.adapters.credentials import CredentialStore
from sendwell.adapters.http import http_session
from sendwell.adapters.mailboxes import ParameterStoreSecrets, ProviderMailboxes
from sendwell.adapters.oauth import GoogleAuthorizer, LiveLoginCheck, MicrosoftAuthorizer
from sendwell.adapters.once import IdempotentRunner
from sendwell.cache import TtlCache
from sendwell.config import (
    AdminSettings,
    AuthFailureSettings,
    CoreSettings,
    CredentialsSettings,
    DispatchSettings,
    IdempotencySettings,
    IncidentSettings,
    NoticeSettings,
    PollScheduleSettings,
    PollSettings,
    ProviderSettings,
    ReconnectSettings,
    ReconnectWorkerSettings,
    RemindersSettings,
    SendSettings,
    load,
)
from sendwell.failures import Provider
from sendwell.models import Campaign, Models, bind_models
from sendwell.observability import CountingMailer, install_redaction
from sendwell.ports.platform import SealBroken
from sendwell.ports.signin import Authorizer
from sendwell.services.auth_failures import IncidentContext
from sendwell.services.breaker import BreakerSettings
from sendwell.services.catch_up import CatchUpContext
from sendwell.services.clocks import Clocks
from sendwell.services.polling import PollContext
from sendwell.services.reconnect import ReconnectContext
from sendwell.services.sending import SendContext
from sendwell.writes import WriteNotDone

logger = Logger()
install_redaction(logger)
tracer = Tracer()
metrics = Metrics()

# What a notice or a queued task can fail with (SES, SNS, SQS, DynamoDB, the idempotency table, a
# write that kept failing): it is retried later. Anything else is a bug.
NOTICE_FAILURES: tuple[type[Exception], ...] = (
    BotoCoreError,
    ClientError,
    QueueDeliveryError,
    PynamoDBConnectionError,
    WriteNotDone,
    IdempotencyAlreadyInProgressError,
    IdempotencyPersistenceLayerError,
)
# What one inbox's poll can fail with from the platform (KMS refusing its credentials, a sealed
# sign-in that does not open, DynamoDB faults): that inbox is retried next time, and the run goes
# on with the others.
PLATFORM_FAILURES: tuple[type[Exception], ...] = (*NOTICE_FAILURES, PynamoDBException, SealBroken)

# Campaign definitions change rarely; a minute-old copy is fine and saves a read per email.
CAMPAIGN_CACHE_SECONDS = 60


class _Aws:
    """One boto3 client per service, for the function's region."""

    def __init__(self, region: str) -> None:
        self._region = region
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = boto3.client(service, region_name=self._region)
        return self._clients[service]

    def later(self, service: str) -> Any:
        """The same client, made at its first call: for what a function does only now and then (a
        notice, an event, a report), so that its cold start does not pay for it."""
        return _LaterClient(lambda: self.client(service))


class _LaterClient:
    """Stands for a boto3 client until its first use, and from then on is that client."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._client: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            self._client = self._make()
        return getattr(self._client, name)


def _models(settings: CoreSettings) -> Models:
    return bind_models(settings.tables, region=settings.region)


def _once(aws: _Aws, settings: IdempotencySettings) -> IdempotentRunner:
    # Given the function's client: left to itself, Powertools opens a boto3 session of its own,
    # which loads botocore's data a second time at every cold start. Made at the first run.
    return IdempotentRunner(settings.idempotency_table, boto3_client=aws.later("dynamodb"))


def _credentials(aws: _Aws, settings: CredentialsSettings, models: Models) -> CredentialStore:
    """Inbox credentials for a function's warm life: opened once per (inbox, version), their data
    keys decrypted once per container, not a KMS call per send or poll."""
    return CredentialStore.with_kms(models, aws.client("kms"), settings.credentials_key_id)


def _mailboxes(settings: ProviderSettings, models: Models, store: CredentialStore) -> ConfirmingMailboxes:
    """Every send and poll confirms a permission loss once before reporting it."""
    inner = ProviderMailboxes(settings, store, secrets=ParameterStoreSecrets())
    return ConfirmingMailboxes(inner, models, wait_seconds=settings.confirm_wait_seconds)


def _mailer(aws: _Aws, settings: NoticeSettings) -> CountingMailer:
    return CountingMailer(SesMailer(aws.later("ses"), settings.sender_address, copy_to=settings.outbox_dir), metrics)


def _poll_context(
    aws: _Aws, settings: PollSettings, models: Models, store: CredentialStore, once: IdempotentRunner
) -> PollContext:
    return PollContext(
        models=models,
        mailboxes=_mailboxes(settings, models, store),
        auth_failures=SqsAuthFailureReporter(SqsQueue(aws.later("sqs"), settings.auth_failure_queue_url)),
        events=SnsPublisher(aws.later("sns"), settings.inbox_events_topic_arn),
        once=once,
        isolated=PLATFORM_FAILURES,
        mailer=_mailer(aws, settings),
        admin_emails=settings.admin_emails,
        workspace_name=settings.workspace_name,
    )


def _incident_context(aws: _Aws, settings: IncidentSettings, models: Models, once: IdempotentRunner) -> IncidentContext:
    return IncidentContext(
        models=models,
        mailer=_mailer(aws, settings),
        events=SnsPublisher(aws.later("sns"), settings.inbox_events_topic_arn),
        once=once,
        workspace_name=settings.workspace_name,
        admin_emails=settings.admin_emails,
        public_base_url=settings.public_base_url,
        breaker=BreakerSettings(
            min_inboxes=settings.breaker_min_inboxes,
            min_share=settings.breaker_min_share,
            window=timedelta(minutes=settings.breaker_window_minutes),
            settle=timedelta(seconds=settings.breaker_settle_seconds),
        ),
    )


# ---------------------------------------------------------------------------------------------
# One builder per function


@dataclass(frozen=True, slots=True)
class Dispatch:
    models: Models
    send_queue: SqsQueue
    work_queue: SqsQueue  # the scheduler's batches of inboxes, for the dispatch workers


def dispatch(env: Mapping[str, str]) -> Dispatch:
    settings = load(DispatchSettings, env)
    sqs = _Aws(settings.region).client("sqs")
    return Dispatch(
        models=_models(settings),
        send_queue=SqsQueue(sqs, settings.send_queue_url),
        work_queue=SqsQueue(sqs, settings.dispatch_queue_url),
    )


@dataclass(frozen=True, slots=True)
class Send:
    context: SendContext
    send_queue: SqsQueue  # to bring a deferred message back when its inbox can send again
    dead_letters: SqsQueue  # where a malformed message goes at once, alone


def send(env: Mapping[str, str]) -> Send:
    settings = load(SendSettings, env, read_parameter=get_parameter)
    aws, models = _Aws(settings.region), _models(settings)
    campaigns: TtlCache[str, Campaign] = TtlCache(ttl=CAMPAIGN_CACHE_SECONDS, max_entries=256)
    context = SendContext(
        models=models,
        mailboxes=_mailboxes(settings, models, _credentials(aws, settings, models)),
        auth_failures=SqsAuthFailureReporter(SqsQueue(aws.later("sqs"), settings.auth_failure_queue_url)),
        unsubscribe_base_url=f"{settings.public_base_url}/u",
        campaigns=lambda campaign_id: campaigns.get(campaign_id, lambda: models.campaign.get(campaign_id)),
    )
    return Send(
        context=context,
        send_queue=SqsQueue(aws.later("sqs"), settings.send_queue_url),
        dead_letters=SqsQueue(aws.later("sqs"), settings.send_dead_letter_queue_url),
    )


@dataclass(frozen=True, slots=True)
class PollSchedule:
    """The poll scheduler's parts: the poll index, and the queue of batches for the poll workers."""

    models: Models
    work_queue: SqsQueue


def poll_schedule(env: Mapping[str, str]) -> PollSchedule:
    settings = load(PollScheduleSettings, env)
    return PollSchedule(
        models=_models(settings), work_queue=SqsQueue(_Aws(settings.region).client("sqs"), settings.poll_queue_url)
    )


@dataclass(frozen=True, slots=True)
class Poll:
    context: PollContext
    once: IdempotentRunner
    work_queue: SqsQueue  # where a worker short of time hands the rest of its batch


def poll(env: Mapping[str, str]) -> Poll:
    settings = load(PollSettings, env)
    aws = _Aws(settings.region)
    models = _models(settings)
    store = _credentials(aws, settings, models)
    once = _once(aws, settings)
    return Poll(
        context=_poll_context(aws, settings, models, store, once),
        once=once,
        work_queue=SqsQueue(aws.later("sqs"), settings.poll_queue_url),
    )


@dataclass(frozen=True, slots=True)
class Incidents:
    """The auth-failure handler's parts."""

    context: IncidentContext
    once: IdempotentRunner
    later: SqsAuthFailureReporter  # its own queue: a settling report comes back through it


def incidents(env: Mapping[str, str]) -> Incidents:
    settings = load(AuthFailureSettings, env, read_parameter=get_parameter)
    aws = _Aws(settings.region)
    once = _once(aws, settings)
    return Incidents(
        context=_incident_context(aws, settings, _models(settings), once),
        once=once,
        later=SqsAuthFailureReporter(SqsQueue(aws.later("sqs"), settings.auth_failure_queue_url)),
    )


@dataclass(frozen=True, slots=True)
class Reminders:
    context: IncidentContext
    once: IdempotentRunner
    reconnect_tasks: SqsQueue  # a reconnect left unfinished is queued again
    clocks: Clocks  # what runs out on a known date


def reminders(env: Mapping[str, str]) -> Reminders:
    settings = load(RemindersSettings, env, read_parameter=get_parameter)
    aws = _Aws(settings.region)
    once = _once(aws, settings)
    return Reminders(
        context=_incident_context(aws, settings, _models(settings), once),
        once=once,
        reconnect_tasks=SqsQueue(aws.later("sqs"), settings.reconnect_queue_url),
        clocks=Clocks(
            secret_expiry={
                provider.value: expires
                for provider, expires in (
                    (Provider.GMAIL, settings.google_client_secret_expires),
                    (Provider.OUTLOOK, settings.microsoft_client_secret_expires),
                )
                if expires is not None
            },
            google_testing=settings.google_publishing_status == "testing",
            idle_after=timedelta(days=settings.idle_warning_days),
        ),
    )


@dataclass(frozen=True, slots=True)
class Reconnect:
    settings: ReconnectSettings
    context: ReconnectContext
    reconnect_tasks: SqsQueue  # the worker finishes each reconnect


def reconnect(env: Mapping[str, str]) -> Reconnect:
    settings = load(ReconnectSettings, env, read_parameter=get_parameter)
    aws, models = _Aws(settings.region), _models(settings)
    context = ReconnectContext(
        models=models,
        # Pages need neither KMS nor SQS: only a finished sign-in saves credentials and queues work.
        cipher=KmsCipher(aws.later("kms"), settings.credentials_key_id),
        credentials=CredentialStore.with_kms(models, aws.later("kms"), settings.credentials_key_id),
        authorizers=_authorizers(settings),
        login_check=LiveLoginCheck(),
        public_base_url=settings.public_base_url,
    )
    return Reconnect(
        settings=settings, context=context, reconnect_tasks=SqsQueue(aws.later("sqs"), settings.reconnect_queue_url)
    )


@dataclass(frozen=True, slots=True)
class ReconnectWorker:
    context: CatchUpContext
    once: IdempotentRunner


def reconnect_worker(env: Mapping[str, str]) -> ReconnectWorker:
    settings = load(ReconnectWorkerSettings, env, read_parameter=get_parameter)
    aws, models = _Aws(settings.region), _models(settings)
    once = _once(aws, settings)
    incident = _incident_context(aws, settings, models, once)
    context = CatchUpContext(
        models=models,
        poll=_poll_context(aws, settings, models, _credentials(aws, settings, models), once),
        mailer=incident.mailer,
        events=incident.events,
        once=once,
        workspace_name=settings.workspace_name,
        admin_emails=settings.admin_emails,
    )
    return ReconnectWorker(context=context, once=once)


def _authorizers(settings: ReconnectSettings) -> dict[str, Authorizer]:
    """Sign-in for each provider whose OAuth client is configured (an empty client id disables it)."""
    http, secrets = http_session(settings.endpoints), ParameterStoreSecrets()
    found: dict[str, Authorizer] = {}
    if settings.google.client_id:
        found[Provider.GMAIL.value] = GoogleAuthorizer(settings.google, secrets, settings.endpoints, http)
    if settings.microsoft.client_id:
        found[Provider.OUTLOOK.value] = MicrosoftAuthorizer(settings.microsoft, secrets, settings.endpoints, http)
    return found


@dataclass(frozen=True, slots=True)
class Admin:
    settings: AdminSettings
    models: Models


def admin(env: Mapping[str, str]) -> Admin:
    settings = load(AdminSettings, env, read_parameter=get_parameter)
    return Admin(settings=settings, models=_models(settings))
