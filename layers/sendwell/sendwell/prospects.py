"""Import prospects from a CSV file, all or nothing.

A person fixes a bad file in a spreadsheet, so every problem is reported at once, with the row
number the spreadsheet shows (the header is row 1), and nothing is imported until all are fixed.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sendwell.mime import InvalidAddress, has_control_chars, normalize_address

EMAIL = "email"
CORE_FIELDS = (EMAIL, "first_name", "last_name", "company")
_NOT_NAME_CHARS = re.compile(r"[^0-9a-z]+")
_LINE_BREAK = re.compile(r"[\r\n\u2028\u2029\x85]")


@dataclass(frozen=True, slots=True)
class Prospect:
    email: str
    first_name: str = ""
    last_name: str = ""
    company: str = ""
    custom: Mapping[str, str] = field(default_factory=dict)  # column name -> non-empty value

    def template_variables(self) -> dict[str, str]:
        """Every non-empty field; an empty one is left out so `{{ x | default("...") }}` applies."""
        core = {EMAIL: self.email, "first_name": self.first_name, "last_name": self.last_name, "company": self.company}
        return {**self.custom, **{name: value for name, value in core.items() if value}}


@dataclass(frozen=True, slots=True)
class RowError:
    line: int | None  # spreadsheet row number (header = 1); None when about the file as a whole
    field: str | None  # column name, when the problem is one value
    message: str


class ProspectImportError(Exception):
    """The file was refused; ``errors`` lists every problem found, in file order."""

    def __init__(self, errors: Sequence[RowError]) -> None:
        self.errors = list(errors)
        first = self.errors[0]
        where = "the file" if first.line is None else f"line {first.line}"
        super().__init__(f"{len(self.errors)} problem(s) in the prospect file; at {where}: {first.message}")


def parse_prospects_csv(
    data: bytes | str,
    *,
    required_fields: Iterable[str],
    max_rows: int = 50_000,
    max_bytes: int = 5_000_000,
) -> list[Prospect]:
    """Parse a CSV with a header row holding at least ``email``; raise ProspectImportError on any problem.

    Header names are matched case-insensitively with spaces as underscores ("First Name" is
    ``first_name``); columns beyond the core ones become custom template variables.
    ``required_fields`` are the variables the sequence's templates cannot render without.
    """
    text = _decode(data, max_bytes)
    required = frozenset(required_fields)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header = next(reader, None)
    if header is None:
        raise ProspectImportError([RowError(None, None, "the file is empty; it needs a header with email")])
    columns = _columns(header, required)
    required -= {EMAIL}  # every row needs an email anyway; _check_email says what is wrong with it

    prospects: list[Prospect] = []
    errors: list[RowError] = []
    first_line_of: dict[str, int] = {}  # lowercased email -> the line it first appeared on
    line, data_rows = 1, 0
    try:
        for line, row in enumerate(reader, start=2):
            if not any(value.strip() for value in row):
                continue  # blank rows are common at the end of spreadsheet exports
            data_rows += 1
            if data_rows > max_rows:
                message = f"the file has more than {max_rows:,} prospects; split it"
                errors.append(RowError(line, None, message))
                break
            row_errors, values = _check_row(line, row, columns, required, first_line_of)
            if row_errors:
                errors.extend(row_errors)
            else:
                prospects.append(_prospect(values))
    except csv.Error as exc:
        errors.append(RowError(line + 1, None, f"the CSV is malformed here ({exc}); check its quotes"))
    if errors:
        raise ProspectImportError(errors)
    return prospects


def _decode(data: bytes | str, max_bytes: int) -> str:
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if len(raw) > max_bytes:
        message = f"the file is {len(raw):,} bytes, over the {max_bytes:,}-byte limit; split it"
        raise ProspectImportError([RowError(None, None, message)])
    try:
        return raw.decode("utf-8-sig")  # "-sig" drops the BOM spreadsheet programs write
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        message = "is not UTF-8 text; save the file as CSV (UTF-8)"
        raise ProspectImportError([RowError(line, None, message)]) from exc


def _columns(header: Sequence[str], required: frozenset[str]) -> list[str]:
    columns = [_NOT_NAME_CHARS.sub("_", name.strip().lower()).strip("_") for name in header]
    errors = [
        RowError(1, None, f"column {position} has no name")
        for position, name in enumerate(columns, start=1)
        if not name
    ]
    seen: set[str] = set()
    for name in columns:
        if name and name in seen:
            errors.append(RowError(1, name, f"the column {name} appears more than once"))
        seen.add(name)
    if EMAIL not in seen:
        errors.append(RowError(1, EMAIL, "the header has no email column"))
    errors.extend(
        RowError(1, name, f"the templates use {name} but the file has no such column")
        for name in sorted(required - seen)
    )
    if errors:
        raise ProspectImportError(errors)
    return columns


def _check_row(
    line: int,
    row: Sequence[str],
    columns: Sequence[str],
    required: frozenset[str],
    first_line_of: dict[str, int],
) -> tuple[list[RowError], dict[str, str]]:
    if len(row) != len(columns):
        return [RowError(line, None, f"has {len(row)} columns but the header has {len(columns)}")], {}
    errors: list[RowError] = []
    values: dict[str, str] = {}
    for name, raw_value in zip(columns, row, strict=True):
        value = raw_value.strip()
        if _LINE_BREAK.search(value):
            errors.append(RowError(line, name, f"{name} contains a line break"))
        elif has_control_chars(value):
            errors.append(RowError(line, name, f"{name} contains a control character"))
        elif not value and name in required:
            errors.append(RowError(line, name, f"{name} is empty but the templates use it"))
        else:
            values[name] = value
    if EMAIL in values:
        errors.extend(_check_email(line, values, first_line_of))
    return errors, values


def _check_email(line: int, values: dict[str, str], first_line_of: dict[str, int]) -> list[RowError]:
    if not values[EMAIL]:
        return [RowError(line, EMAIL, "email is empty")]
    try:
        email = normalize_address(values[EMAIL])
    except InvalidAddress as exc:
        return [RowError(line, EMAIL, f"{values[EMAIL]!r} is not a valid email address: {exc.reason}")]
    first_line = first_line_of.setdefault(email.lower(), line)
    if first_line != line:
        return [RowError(line, EMAIL, f"{email} already appears on line {first_line}")]
    values[EMAIL] = email
    return []


def _prospect(values: Mapping[str, str]) -> Prospect:
    return Prospect(
        email=values[EMAIL],
        first_name=values.get("first_name", ""),
        last_name=values.get("last_name", ""),
        company=values.get("company", ""),
        custom={name: value for name, value in values.items() if name not in CORE_FIELDS and value},
    )
