"""Notices people receive: rendered from jinja2 templates (HTML autoescaped, plus a text part)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jinja2

from sendwell.ports import Email

# Module-level but immutable: the loader and filters are fixed at import; rendering is pure.
_PAGES = jinja2.Environment(
    loader=jinja2.PackageLoader("sendwell", "templates/notices"),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=True),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_TEXT = jinja2.Environment(
    loader=jinja2.PackageLoader("sendwell", "templates/notices"),
    autoescape=False,  # noqa: S701 - the plain-text part; HTML escaping would corrupt it
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)

PROVIDER_NAMES = {"gmail": "Google", "outlook": "Microsoft 365", "custom": "your mail server"}


def compose(template: str, *, to: Sequence[str], subject: str, variables: Mapping[str, Any]) -> Email:
    values = {**variables, "subject": subject}
    return Email(
        to=tuple(to),
        subject=subject,
        text=_TEXT.get_template(f"{template}.txt").render(values),
        html=_PAGES.get_template(f"{template}.html").render(values),
    )


def provider_name(provider: str) -> str:
    return PROVIDER_NAMES.get(provider, provider)
