"""Bounce reasons: the command a reply answered and the status code weigh with the words, and
reports in other languages or in non-standard shapes are still read as reports."""

from __future__ import annotations

import json
from email.message import EmailMessage

import pytest

from sendwell.bounce_reasons import Failure, find, preferred_status, smtp_command
from sendwell.inbound import InboundKind, bounce_reason, classify_inbound


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        # The same words, three meanings, decided by the command they answered.
        (Failure("5.0.0", "550 Unknown user kijitora@example.jp", command="RCPT"), "userunknown"),
        (Failure("5.0.0", "550 Unknown user kijitora@example.jp", command="DATA"), "filtered"),
        (Failure("5.0.0", "550 Unknown user kijitora@example.jp"), "userunknown"),  # unsaid: as worded
        (Failure("5.1.8", "553 5.1.8 Domain of sender address nyaan@example.jp does not exist"), "rejected"),
        (Failure("5.0.0", "550 Rejected", command="EHLO"), "blocked"),
        (Failure("5.0.0", "554 mx.example.net ESMTP not accepting connections", command="CONN"), "blocked"),
        # The status code where it is specific, unless the words contradict it.
        (Failure("5.2.2", "552 sorry"), "mailboxfull"),
        (Failure("5.1.1", "550 5.1.1 Mailbox full"), "mailboxfull"),
        (Failure("5.7.1", "550 5.7.1 Service unavailable; client host blocked using zen.spamhaus.org"), "blocked"),
        (Failure("5.7.26", "550 5.7.26 unauthenticated email is not accepted"), "authfailure"),
        (Failure("4.4.7", "", action="delayed"), "expired"),
        (Failure("2.1.5", "250 ok"), "delivered"),
        (Failure(None, "", action="failed"), "undefined"),
    ],
)
def test_reasons_follow_words_command_and_code(failure: Failure, reason: str) -> None:
    assert find(failure) == reason


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        # Yahoo says "user unknown" its own way, after DATA: its table knows, by its servers' names.
        (
            Failure(
                "5.0.0",
                "554 delivery error: dd This user doesn't have a yahoo.com account",
                command="DATA",
                recipient_domain="yahoo.com",
                hosts=("mta7.am0.yahoodns.net",),
            ),
            "userunknown",
        ),
        # Orange and La Poste put a code at the end: LPN007_416 is an unknown recipient.
        (
            Failure(
                "5.5.0",
                "550 5.5.0 Adresse destinataire invalide. Invalid recipient. LPN007_416",
                recipient_domain="orange.fr",
            ),
            "userunknown",
        ),
        (Failure("5.7.1", "554 5.7.1 ... AUP#CXBL ...", hosts=("cdptpa-smtpin01.mail.cox.net",)), "blocked"),
        # Google's rules need the reply code and the status as well as the words.
        (
            Failure(
                "5.7.26",
                "550-5.7.26 This mail is unauthenticated, senders to authenticate with either spf or dkim",
                hosts=("gmail-smtp-in.l.google.com",),
            ),
            "authfailure",
        ),
        # The same words from a server no table knows are read by the general rules.
        (
            Failure("5.0.0", "554 delivery error: dd This user doesn't have a yahoo.com account", command="DATA"),
            "filtered",
        ),
    ],
)
def test_providers_replies_are_read_by_their_own_tables(failure: Failure, reason: str) -> None:
    assert find(failure) == reason


@pytest.mark.parametrize(
    ("field", "in_message", "reply", "preferred"),
    [
        ("5.0.0", "5.1.1", "550", "5.1.1"),  # the generic field gives way to the specific code
        ("5.1.1", "5.2.2", "552", "5.2.2"),  # Status: 5.1.1 over a "552 5.2.2 Over quota"
        ("4.4.7", "5.1.1", "550", "5.1.1"),  # the reply code says which class is right
        ("5.1.1", "", None, "5.1.1"),
    ],
)
def test_the_status_believed_is_sisimai_s_choice(
    field: str, in_message: str, reply: str | None, preferred: str
) -> None:
    assert preferred_status(field, in_message, reply) == preferred


@pytest.mark.parametrize(
    ("report", "command"),
    [
        ("<a@b.jp>: host mx[192.0.2.1] said: 550 Unknown user (in reply to RCPT TO command)", "RCPT"),
        ("<a@b.jp>: host mx[192.0.2.1] said: 550 Unknown user (in reply to end of DATA command)", "DATA"),
        ("SMTP error from remote mail server after MAIL FROM:<x@y.jp> SIZE=1024:", "MAIL"),
        ("... while talking to mx.example.jp.:\n>>> MAIL From:<x@y.jp>\n>>> RCPT To:<a@b.jp>\n>>> DATA", "DATA"),
        ("host mx.example.jp[192.0.2.1] refused to talk to me: 421 Service not available", "CONN"),
        ("The user's mailbox is full.", None),
    ],
)
def test_the_command_a_reply_answered(report: str, command: str | None) -> None:
    assert smtp_command(report) == command


def test_a_sender_side_reason_is_never_a_hard_bounce() -> None:
    for diagnostic in (
        "550 5.7.1 Message rejected as spam by Content Filtering",
        "550 5.7.1 Email rejected per DMARC policy for example.com",
        "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using b.barracudacentral.org",
        "550 5.7.25 The IP address sending this message does not have a PTR record setup",
        "553 5.1.8 Domain of sender address nyaan@example.jp does not exist",
    ):
        assert bounce_reason("5.7.1", diagnostic)[1] is InboundKind.SENDER_BLOCKED, diagnostic


# A report written for people, in the sender's language, from a daemon with a null envelope
# sender: the subject, the words saying it failed, and the words saying why.
LOCALISED = {
    "en": ("Mail delivery failed", "Your message could not be delivered.", "user unknown"),
    "de": ("Unzustellbar: Angebot", "Ihre Nachricht konnte nicht zugestellt werden.", "Benutzer unbekannt"),
    "fr": ("Non remis : Offre", "Votre message n'a pas pu être remis.", "Utilisateur inconnu"),
    "es": ("No se puede entregar: Oferta", "No se ha podido entregar el mensaje.", "usuario desconocido"),
    "pt": ("Não entregue: Oferta", "Não foi possível entregar a mensagem.", "usuário desconhecido"),
    "it": ("Non recapitabile: Offerta", "Non è stato possibile recapitare il messaggio.", "utente sconosciuto"),
    "nl": ("Onbestelbaar: Aanbod", "Het bericht kon niet worden bezorgd.", "gebruiker onbekend"),
    "ru": ("Недоставленное сообщение", "Сообщение не может быть доставлено.", "пользователь не найден"),
    "ja": ("メール配信エラー", "メッセージを配信できませんでした。", "ユーザが存在しません"),
    "zh": ("系统退信", "您的邮件无法投递。", "用户不存在"),
}


def _report(subject: str, *lines: str, sender: str = "MAILER-DAEMON@mx.example.jp") -> EmailMessage:
    message = EmailMessage()
    message["Return-Path"] = "<>"
    message["From"] = sender
    message["To"] = "owner@send.sendwell.test"
    message["Subject"] = subject
    message.set_content("\n".join(lines) + "\n")
    return message


@pytest.mark.parametrize("language", sorted(LOCALISED))
def test_localised_reports_are_hard_bounces(language: str) -> None:
    subject, failed, why = LOCALISED[language]
    verdict = classify_inbound(_report(subject, failed, "", f"<kijitora@example.jp>: {why}"), is_ours=lambda _: False)
    assert (verdict.kind, verdict.recipients) == (InboundKind.BOUNCE, ("kijitora@example.jp",))


@pytest.mark.parametrize("language", sorted(LOCALISED))
def test_a_localised_report_is_a_report_by_its_words_alone(language: str) -> None:
    _subject, failed, _why = LOCALISED[language]
    verdict = classify_inbound(_report("Nachricht / Message / 通知", failed), is_ours=lambda _: False)
    assert verdict.kind in (InboundKind.BOUNCE, InboundKind.SOFT_BOUNCE, InboundKind.SENDER_BLOCKED)


def test_the_same_words_from_a_person_are_not_a_report() -> None:
    message = _report(
        "Mail delivery failed", "Your message could not be delivered, says my IT.", sender="ana@example.jp"
    )
    del message["Return-Path"]
    message["In-Reply-To"] = "<step-1@send.sendwell.test>"
    verdict = classify_inbound(message, is_ours=lambda mid: mid.endswith("@send.sendwell.test"))
    assert verdict.kind is InboundKind.REPLY


@pytest.mark.parametrize(
    "subject",
    [
        "Automatic reply: Offer",
        "Automatische Antwort: Angebot",
        "Réponse automatique : Offre",
        "Respuesta automática: Oferta",
        "Resposta automática: Oferta",
        "Risposta automatica: Offerta",
        "Automatisch antwoord: Aanbod",
        "Автоответ: Предложение",
        "自動応答: ご提案",
        "自动回复\uff1a报价",  # a full-width colon
    ],
)
def test_localised_automatic_replies(subject: str) -> None:
    message = EmailMessage()
    message["From"] = "ana@example.jp"
    message["Subject"] = subject
    message["In-Reply-To"] = "<step-1@send.sendwell.test>"
    message.set_content("I am away until Monday.\n")
    verdict = classify_inbound(message, is_ours=lambda mid: mid.endswith("@send.sendwell.test"))
    assert verdict.kind is InboundKind.AUTO_REPLY


def _ses(event: dict[str, object]) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "AWS Notifications <no-reply@sns.amazonaws.com>"
    message["Subject"] = "AWS Notification Message"
    message.set_content(json.dumps(event) + "\n\n--\nIf you wish to stop receiving notifications ...\n")
    return message


def test_a_report_flattened_into_text_keeps_its_delivery_status_fields() -> None:
    report = _report(
        "Returned mail: see transcript for details",
        "   ----- Transcript of session follows -----",
        "mail.local: unknown user: kijitora",
        "554 <kijitora@example.net>... Service unavailable",
        "",
        "Reporting-MTA: dns; mx.example.net",
        "",
        "Final-Recipient: RFC822; <kijitora@example.net>",
        "Action: failed",
        "Status: 5.1.1",
    )
    verdict = classify_inbound(report, is_ours=lambda _: False)
    assert (verdict.kind, verdict.recipients, verdict.status) == (
        InboundKind.BOUNCE,
        ("kijitora@example.net",),
        "5.1.1",
    )


def test_an_ses_bounce_notification_is_read_like_a_report() -> None:
    mail = {"commonHeaders": {"messageId": "<step-1@send.sendwell.test>"}}
    bounce = {
        "bounceType": "Permanent",
        "bouncedRecipients": [
            {
                "emailAddress": "Gone@Example.jp",
                "action": "failed",
                "status": "5.1.1",
                "diagnosticCode": "smtp; 550 5.1.1 user unknown",
            }
        ],
    }
    verdict = classify_inbound(
        _ses({"notificationType": "Bounce", "bounce": bounce, "mail": mail}),
        is_ours=lambda mid: mid.endswith("@send.sendwell.test"),
    )
    assert (verdict.kind, verdict.recipients, verdict.reason) == (
        InboundKind.BOUNCE,
        ("gone@example.jp",),
        "userunknown",
    )
    assert verdict.message_id == "step-1@send.sendwell.test"


def test_an_ses_complaint_notification_is_a_complaint() -> None:
    event = {"notificationType": "Complaint", "complaint": {"complainedRecipients": [{"emailAddress": "a@b.jp"}]}}
    assert classify_inbound(_ses(event), is_ours=lambda _: False).kind is InboundKind.COMPLAINT


def test_a_person_pasting_json_is_not_an_ses_notification() -> None:
    message = EmailMessage()
    message["From"] = "ana@example.jp"
    message["In-Reply-To"] = "<step-1@send.sendwell.test>"
    message.set_content('Our logs say {"notificationType": "Bounce"} - can you check?\n')
    verdict = classify_inbound(message, is_ours=lambda mid: mid.endswith("@send.sendwell.test"))
    assert verdict.kind is InboundKind.REPLY


def test_an_expired_action_without_a_status_is_a_soft_bounce_not_a_receipt() -> None:
    """SendGrid writes "Action: expired" (no RFC 3464 action) and no Status: nothing says delivered."""
    message = _report("Undelivered Mail Returned to Sender", "kijitora@example.org : Connection timed out in connect")
    message.make_mixed()
    status = EmailMessage()
    status.set_content("Final-Recipient: rfc822; kijitora@example.org\nAction: expired\n")
    status.replace_header("Content-Type", "text/plain")
    message.attach(status)
    inline = classify_inbound(message, is_ours=lambda _: False)
    assert (inline.kind, inline.recipients) == (InboundKind.SOFT_BOUNCE, ("kijitora@example.org",))


def test_a_daemon_quoting_an_smtp_error_is_a_report_whatever_its_subject() -> None:
    message = _report(
        "Re: Nyaan", "Error: Invalid user address", "", "Error message below:",
        "550 - Requested action not taken: no such user here", sender="post_master@vtext.example.com",
    )  # fmt: skip
    del message["Return-Path"]
    assert classify_inbound(message, is_ours=lambda _: False).kind is InboundKind.BOUNCE


def test_postfix_s_command_note_completes_the_reply() -> None:
    """ "Recipient address rejected." means the address only with the "(in reply to RCPT TO command)"
    that the report's text adds to the Diagnostic-Code's words."""
    message = _report(
        "Undelivered Mail Returned to Sender",
        "<neko@example.jp>: host mx.example.jp[192.0.2.1] said: 550 <neko@example.jp>:",
        "    Recipient address rejected. (in reply to RCPT TO command)",
    )
    message.make_mixed()
    status = EmailMessage()
    status.set_content(
        "Reporting-MTA: dns; mail.example.org\n\nFinal-Recipient: rfc822; neko@example.jp\nAction: failed\n"
        "Status: 5.0.0\nDiagnostic-Code: smtp; 550 <neko@example.jp>: Recipient address rejected.\n"
    )
    status.replace_header("Content-Type", "message/delivery-status")
    message.attach(status)
    verdict = classify_inbound(message, is_ours=lambda _: False)
    assert (verdict.kind, verdict.reason) == (InboundKind.BOUNCE, "userunknown")
