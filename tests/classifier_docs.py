"""Writes docs/classifier.md from the classifier's own tables, so the document cannot drift from them.

    PYTHONPATH=layers/sendwell:. python -m tests.classifier_docs > docs/classifier.md

``tests/unit/test_classifier_docs.py`` fails when the committed file differs from what this writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from sendwell.classify import google, mail, microsoft, rules
from sendwell.classify.rules import HttpTable, Meaning, Rule

GOOGLE_OAUTH = (
    "[Google OAuth errors](https://developers.google.com/identity/protocols/oauth2/web-server#authorization-errors)"
)
GMAIL_API = "[Gmail API errors](https://developers.google.com/gmail/api/guides/handle-errors)"
GOOGLE_SMTP = "[Gmail SMTP errors](https://support.google.com/a/answer/3726730)"
AADSTS = "[Entra error codes](https://learn.microsoft.com/entra/identity-platform/reference-error-codes)"
GRAPH = "[Graph errors](https://learn.microsoft.com/graph/errors), Exchange response codes"
EXCHANGE_NDR = (
    "[Exchange Online NDRs](https://learn.microsoft.com/exchange/mail-flow-best-practices/"
    "non-delivery-reports-in-exchange-online/non-delivery-reports-in-exchange-online)"
)
RFC_SMTP = "RFC 5321, RFC 3463, RFC 4954"
RFC_IMAP = "RFC 5530, RFC 9051"
OAUTH_RFC = "RFC 6749 section 5.2"

# Where a row's provider or source is not the table's own.
SMTP_SOURCES: Mapping[str, tuple[str, str]] = {
    "534 5.7.9": ("Google", GOOGLE_SMTP),
    "534 5.7.14": ("Google", GOOGLE_SMTP),
    "5.4.5": ("Google", GOOGLE_SMTP),
    "535 5.7.8": ("Google, iCloud, Fastmail, others", GOOGLE_SMTP + ", " + RFC_SMTP),
    "535 5.7.139": ("Microsoft 365", EXCHANGE_NDR),
    "535 5.7.3": ("Microsoft 365", EXCHANGE_NDR),
    "5.2.0 SubmissionQuotaExceededException": ("Microsoft 365", EXCHANGE_NDR),
    "5.2.0 SendAsDeniedException": ("Microsoft 365", EXCHANGE_NDR),
    "5.2.0 OutboundSpamException": ("Microsoft 365", EXCHANGE_NDR),
    "5.7.60": ("Microsoft 365", EXCHANGE_NDR),
    "5.7.57": ("Microsoft 365", EXCHANGE_NDR),
    "5.7.501": ("Microsoft 365", EXCHANGE_NDR),
    "5.7.502": ("Microsoft 365", EXCHANGE_NDR),
    "5.7.503": ("Microsoft 365", EXCHANGE_NDR),
}
MEANING_SOURCES: Mapping[str, str] = {
    "named-properties": "msgraph-sdk-java#765, microsoft-graph-docs-contrib#3504",
    "web-login": GOOGLE_SMTP,
    "account-deleted": GOOGLE_OAUTH,
}


@dataclass(frozen=True, slots=True)
class Row:
    code: str
    provider: str
    rule: Rule
    source: str
    meaning: str = ""  # the words that select this row, where one code has several

    def cells(self) -> list[str]:
        kind = self.rule.kind.value + (" (conclusive)" if self.rule.conclusive else "")
        code = f"`{self.code}`" + (f" + {self.meaning}" if self.meaning else "")
        return [code, self.provider, self.rule.reason, kind, self.rule.fix or "-", self.source]


def _meanings(code: str, provider: str, meanings: Iterable[Meaning], default_source: str) -> Iterator[Row]:
    for meaning in meanings:
        words = f'"{meaning.words.pattern}"'
        source = MEANING_SOURCES.get(meaning.name, default_source)
        yield Row(f"{code} {meaning.name}", provider, meaning.rule, source, meaning=words)


def _http(table: HttpTable, provider: str, source: str) -> Iterator[Row]:
    for code, rule in table.by_code.items():
        yield Row(code, provider, rule, source)
        yield from _meanings(code, provider, table.meanings.get(code, ()), source)
    for status, rule in table.by_status.items():
        yield Row(f"HTTP {status} (no known code)", provider, rule, source)
    yield Row("HTTP 5xx or an error page", provider, table.unavailable, source)
    yield Row("any other code", provider, table.unknown, source)


def rows() -> dict[str, list[Row]]:
    smtp: list[Row] = []
    for code, rule in mail._SMTP.items():
        provider, source = SMTP_SOURCES.get(code, ("any server", RFC_SMTP))
        smtp.append(Row(code, provider, rule, source))
        if code == "534 5.7.9":
            smtp += _meanings(code, provider, mail._GOOGLE_534_WEB_LOGIN, GOOGLE_SMTP)
    for name, rule in mail._SENDER_BLOCKED_AT.items():
        smtp.append(
            Row("5.1.8 and other MAIL FROM blocks", name, rule, EXCHANGE_NDR if name == "microsoft" else RFC_SMTP)
        )
    smtp += [
        Row("5xx at AUTH (505 and up), no table entry", "any server", mail._SMTP_SIGN_IN_REFUSED, "RFC 4954 section 6"),
        Row("553 at MAIL FROM, or words of an address not allowed", "any server", mail._SEND_AS_REFUSED, RFC_SMTP),
        Row("other 5xx at MAIL FROM", "any server", mail._SENDER_BLOCKED, RFC_SMTP),
        Row("5xx at RCPT TO", "any server", mail._SMTP_RECIPIENT_REFUSED, RFC_SMTP),
        Row("anything else", "any server", mail._SMTP_UNKNOWN, RFC_SMTP),
    ]
    imap = [Row(f"[{code}]", "any server", rule, RFC_IMAP) for code, rule in mail._IMAP.items()]
    imap += [
        Row("NO to LOGIN/AUTHENTICATE, no known code", "any server", mail._IMAP_LOGIN_REFUSED, "RFC 9051 6.2.3"),
        *_meanings("NO to LOGIN/AUTHENTICATE", "Gmail, Zoho", mail._IMAP_LOGIN_WORDS, "Gmail IMAP answers"),
        Row(
            "User is authenticated but not connected",
            "Outlook, Microsoft 365",
            mail._IMAP_LOGIN_REFUSED,
            "Microsoft Q&A",
        ),
        Row(
            "NO to LOGIN with [UNAVAILABLE] [INUSE] [LIMIT] [SERVERBUG] [OVERQUOTA]",
            "any server",
            mail._IMAP_UNKNOWN,
            RFC_IMAP,
        ),
    ]
    google_refresh = [Row(code, "Google", rule, GOOGLE_OAUTH) for code, rule in google._GOOGLE_REFRESH.items()]
    for code, meanings in google._GOOGLE_REFRESH_MEANINGS.items():
        google_refresh += _meanings(code, "Google", meanings, GOOGLE_OAUTH)
    aadsts = [Row(f"AADSTS{code}", "Microsoft", rule, AADSTS) for code, rule in microsoft._AADSTS.items()]
    aadsts += [Row(code, "Microsoft", rule, OAUTH_RFC) for code, rule in microsoft._MSAL_ERRORS.items()]
    network = [
        Row(f"{cls.__module__}.{cls.__qualname__}", "any", rule, "-") for cls, (_, rule) in rules.NETWORK.items()
    ]
    return {
        "Google token endpoint (google-auth refresh)": google_refresh,
        "Gmail API": list(_http(google._GMAIL, "Google", GMAIL_API)),
        "Microsoft identity platform (msal)": aadsts,
        "Microsoft Graph": list(_http(microsoft._GRAPH, "Microsoft", GRAPH)),
        "SMTP (custom inboxes; Gmail and Microsoft 365 SMTP)": smtp,
        "IMAP (custom inboxes)": imap,
        "Network faults (every provider)": network,
    }


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")


def render(sections: Mapping[str, Sequence[Row]]) -> str:
    lines = [
        "# How sendwell reads provider errors",
        "",
        "Generated from the classifier's tables (`layers/sendwell/sendwell/classify/`) by",
        "`python -m tests.classifier_docs`; a test fails when this file and the tables differ.",
        "",
        "Classes: `auth_lost` and `user_action` disconnect the inbox (after a second look with fresh",
        "credentials, unless *conclusive*, and after the mass-disconnect breaker has weighed it);",
        "`app_config` raises the ops alarm and touches no inbox; `transient` is retried and never",
        "disconnects; `rate_limited` pauses the inbox until the provider's limit lifts;",
        "`recipient_rejected` bounces one prospect; `bad_message` fails one email.",
        "",
        "Order of the rules: the protocol's own meaning first (a NO to LOGIN, a 5xx at AUTH or MAIL FROM,",
        "a 5xx at RCPT TO), the provider's code in the body before the HTTP status, and where one code",
        "has two meanings, the words that tell them apart.",
    ]
    for title, section in sections.items():
        lines += [
            "",
            f"## {title}",
            "",
            "| Code | Provider | Meaning | Class | Fix | Source |",
            "|---|---|---|---|---|---|",
        ]
        lines += ["| " + " | ".join(_escape(cell) for cell in row.cells()) + " |" for row in section]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(rows()), end="")
