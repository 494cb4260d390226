"""Thin adapters over SQS, SNS, SES and KMS. Their boto3 clients are created once, in ``sendwell.wiring``."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from botocore.exceptions import ConnectionClosedError, ReadTimeoutError

from sendwell.ports.messages import AuthFailureReport, QueuedMessage
from sendwell.ports.platform import DeliveryUnknown, Email

SQS_BATCH_LIMIT = 10
MAX_VISIBILITY_SECONDS = 43_200


class QueueDeliveryError(Exception):
    """The queue refused some messages (they were not enqueued)."""


class SqsQueue:
    def __init__(self, client: Any, queue_url: str) -> None:
        self._client = client
        self._url = queue_url

    def send_batch(self, messages: Sequence[QueuedMessage]) -> None:
        for start in range(0, len(messages), SQS_BATCH_LIMIT):
            chunk = messages[start : start + SQS_BATCH_LIMIT]
            entries: list[dict[str, Any]] = []
            for index, message in enumerate(chunk):
                entry: dict[str, Any] = {"Id": str(index), "MessageBody": message.body}
                if message.group_id is not None:
                    entry["MessageGroupId"] = message.group_id
                if message.deduplication_id is not None:
                    entry["MessageDeduplicationId"] = message.deduplication_id
                if message.delay_seconds is not None:
                    entry["DelaySeconds"] = max(0, min(message.delay_seconds, 900))
                entries.append(entry)
            response = self._client.send_message_batch(QueueUrl=self._url, Entries=entries)
            if response.get("Failed"):
                codes = sorted({failure["Code"] for failure in response["Failed"]})
                raise QueueDeliveryError(f"{len(response['Failed'])} messages refused: {', '.join(codes)}")

    def retry_in(self, receipt_handle: str, seconds: int) -> None:
        """Bring a received message back in ``seconds`` (SQS allows at most 12 hours)."""
        self._client.change_message_visibility(
            QueueUrl=self._url, ReceiptHandle=receipt_handle, VisibilityTimeout=min(seconds, MAX_VISIBILITY_SECONDS)
        )


class SnsPublisher:
    def __init__(self, client: Any, topic_arn: str) -> None:
        self._client = client
        self._topic_arn = topic_arn

    def publish(self, event_type: str, detail: Mapping[str, Any], *, dedup_key: str) -> None:
        body = {"type": event_type, "dedup_key": dedup_key, **detail}
        attributes = {"event_type": {"DataType": "String", "StringValue": event_type}}
        for key in ("provider", "inbox_id"):
            if key in detail:
                attributes[key] = {"DataType": "String", "StringValue": str(detail[key])}
        self._client.publish(
            TopicArn=self._topic_arn,
            Message=json.dumps(body, sort_keys=True, default=str),
            MessageAttributes=attributes,
        )


class SesMailer:
    """Sends notices through SES. ``copy_to`` (local runs only) also writes each one as an .eml file
    there, so a person running the demo can open the notices an inbox owner would receive."""

    def __init__(self, client: Any, sender: str, *, copy_to: str | None = None) -> None:
        self._client = client
        self._sender = sender
        self._copy_to = Path(copy_to) if copy_to else None

    def send(self, email: Email) -> str:
        try:
            response = self._send(email)
        except (ReadTimeoutError, ConnectionClosedError) as error:
            # SES takes no idempotency key: a request whose answer was lost may have been sent.
            raise DeliveryUnknown(type(error).__name__) from error
        message_id: str = response["MessageId"]
        if self._copy_to is not None:
            self._write_copy(email, message_id)
        return message_id

    def _send(self, email: Email) -> Any:
        return self._client.send_email(
            Source=self._sender,
            Destination={"ToAddresses": list(email.to)},
            ReplyToAddresses=list(email.reply_to),
            Message={
                "Subject": {"Data": email.subject, "Charset": "UTF-8"},
                "Body": {
                    "Text": {"Data": email.text, "Charset": "UTF-8"},
                    "Html": {"Data": email.html, "Charset": "UTF-8"},
                },
            },
        )

    def _write_copy(self, email: Email, message_id: str) -> None:
        assert self._copy_to is not None
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = self._sender, ", ".join(email.to), email.subject
        message["Message-ID"] = f"<{message_id}@local.sendwell>"
        message.set_content(email.text)
        message.add_alternative(email.html, subtype="html")
        self._copy_to.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        (self._copy_to / f"{stamp}-{email.to[0]}.eml").write_bytes(message.as_bytes())


class KmsCipher:
    """KMS Encrypt and Decrypt themselves (the ``Cipher`` port); credentials are sealed instead
    (``sendwell.adapters.envelope``), and this reads those stored before they were."""

    def __init__(self, client: Any, key_id: str) -> None:
        self._client = client
        self._key_id = key_id

    def encrypt(self, plaintext: bytes, *, context: Mapping[str, str]) -> bytes:
        response = self._client.encrypt(KeyId=self._key_id, Plaintext=plaintext, EncryptionContext=dict(context))
        blob: bytes = response["CiphertextBlob"]
        return blob

    def decrypt(self, ciphertext: bytes, *, context: Mapping[str, str]) -> bytes:
        response = self._client.decrypt(CiphertextBlob=ciphertext, EncryptionContext=dict(context))
        plaintext: bytes = response["Plaintext"]
        return plaintext


class SqsAuthFailureReporter:
    """Auth failures go through their own queue, so one handler decides, once, what they mean."""

    def __init__(self, queue: SqsQueue) -> None:
        self._queue = queue

    def report(self, report: AuthFailureReport, *, delay_seconds: int | None = None) -> None:
        self._queue.send_batch([QueuedMessage(body=report.to_json(), delay_seconds=delay_seconds)])
