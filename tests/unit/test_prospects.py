from __future__ import annotations

import time

import pytest

from sendwell.prospects import Prospect, ProspectImportError, RowError, parse_prospects_csv

HEADER = "Email,First Name,Last Name,Company,Job Title\r\n"


def parse_errors(data: bytes | str, required: set[str] | None = None, **limits: int) -> list[RowError]:
    with pytest.raises(ProspectImportError) as caught:
        parse_prospects_csv(data, required_fields=required or set(), **limits)
    return caught.value.errors


def test_parses_core_and_custom_fields() -> None:
    data = (
        HEADER
        + "jorg.muller@Beispiel.DE,Jörg,Müller,Beispiel GmbH,Head of Sales\r\n"
        + 'ana@acme.io,Ana,,"Acme, Inc.",\r\n'
    )

    prospects = parse_prospects_csv(data, required_fields={"company"})

    assert prospects == [
        Prospect("jorg.muller@beispiel.de", "Jörg", "Müller", "Beispiel GmbH",
                 {"job_title": "Head of Sales"}),
        Prospect("ana@acme.io", "Ana", "", "Acme, Inc.", {}),
    ]
    assert prospects[1].template_variables() == {
        "email": "ana@acme.io", "first_name": "Ana", "company": "Acme, Inc."
    }


def test_utf8_bom_and_lf_line_endings_are_accepted() -> None:
    data = "\ufeffemail,first_name\nana@acme.io,Ana\n".encode()

    assert parse_prospects_csv(data, required_fields=set()) == [Prospect("ana@acme.io", "Ana")]


def test_blank_rows_are_skipped_but_still_counted_for_line_numbers() -> None:
    data = "email,company\r\nana@acme.io,Acme\r\n,\r\n\r\nbad-address,Acme\r\n"

    errors = parse_errors(data)

    assert [(e.line, e.field) for e in errors] == [(5, "email")]


def test_every_bad_row_is_reported_with_its_spreadsheet_line() -> None:
    data = (
        HEADER
        + "ana@acme.io,Ana,Ruiz,Acme,CEO\r\n"  # line 2: fine
        + "not-an-email,Bo,Lind,Acme,CTO\r\n"  # line 3: invalid email
        + "ANA@ACME.IO,Ana,Ruiz,Acme,CEO\r\n"  # line 4: duplicate of line 2
        + "cy@acme.io,Cy,Ng,,CFO\r\n"  # line 5: company required but empty
        + 'di@acme.io,"Di\r\nBcc: x@victim.example",Ho,Acme,VP\r\n'  # line 6: line break in a value
        + "ed@acme.io,Ed,Acme\r\n"  # line 7: too few columns
        + "fa@acme.io,Fa,Li,Acme,VP,extra\r\n"  # line 8: too many columns
        + ",Gu,Ma,Acme,VP\r\n"  # line 9: email empty
        + "ha@acme.io,Ha,Ko,Acme,VP\r\n"  # line 10: fine
    )

    errors = parse_errors(data, required={"company", "first_name"})

    assert [(e.line, e.field) for e in errors] == [
        (3, "email"),
        (4, "email"),
        (5, "company"),
        (6, "first_name"),
        (7, None),
        (8, None),
        (9, "email"),
    ]
    messages = [e.message for e in errors]
    assert "'not-an-email' is not a valid email address" in messages[0]
    assert "already appears on line 2" in messages[1]
    assert "company is empty" in messages[2]
    assert "line break" in messages[3]
    assert "has 3 columns but the header has 5" in messages[4]
    assert "has 6 columns" in messages[5]
    assert messages[6] == "email is empty"


def test_error_message_summarises_the_first_problem() -> None:
    with pytest.raises(ProspectImportError, match=r"1 problem\(s\).*line 2"):
        parse_prospects_csv("email\r\nnobody\r\n", required_fields=set())


def test_header_without_email_or_a_required_column_is_refused() -> None:
    errors = parse_errors("first_name,company\r\nAna,Acme\r\n", required={"job_title"})

    assert [(e.line, e.field) for e in errors] == [(1, "email"), (1, "job_title")]


def test_duplicate_and_unnamed_header_columns_are_refused() -> None:
    errors = parse_errors("email,Company,company,\r\nana@acme.io,Acme,Acme,\r\n")

    assert [(e.line, e.field, e.message) for e in errors] == [
        (1, None, "column 4 has no name"),
        (1, "company", "the column company appears more than once"),
    ]


def test_control_character_in_a_value_is_refused() -> None:
    errors = parse_errors("email,first_name\r\nana@acme.io,An\x00a\r\n")

    assert [(e.line, e.field, e.message) for e in errors] == [
        (2, "first_name", "first_name contains a control character")
    ]


def test_bytes_that_are_not_utf8_are_refused_with_their_line() -> None:
    data = "email,company\r\nana@acme.io,Acme\r\nbo@acme.io,Société\r\n".encode("latin-1")

    errors = parse_errors(data)

    assert len(errors) == 1
    assert errors[0].line == 3
    assert "not UTF-8" in errors[0].message


def test_oversize_input_is_refused_before_parsing() -> None:
    errors = parse_errors("email\r\n" + "ana@acme.io\r\n" * 100, max_bytes=1_000)

    assert len(errors) == 1 and errors[0].line is None
    assert "1,000-byte limit" in errors[0].message


def test_too_many_rows_are_refused() -> None:
    data = "email\r\n" + "".join(f"p{i}@acme.io\r\n" for i in range(11))

    errors = parse_errors(data, max_rows=10)

    assert [(e.line, e.message) for e in errors] == [(12, "the file has more than 10 prospects; split it")]


def test_malformed_quoting_is_reported_where_it_happens() -> None:
    errors = parse_errors('email,company\r\nana@acme.io,Acme\r\nbo@acme.io,"Acme" Inc\r\n')

    assert [(e.line, e.field) for e in errors] == [(3, None)]
    assert "malformed" in errors[0].message


def test_empty_file_is_refused() -> None:
    errors = parse_errors(b"")

    assert errors == [RowError(None, None, "the file is empty; it needs a header with email")]


def test_ten_thousand_rows_parse_quickly() -> None:
    rows = "".join(
        f"person{i}@company{i % 400}.example.com,First{i},Last{i},Company {i % 400},Title {i % 7}\r\n"
        for i in range(10_000)
    )
    data = (HEADER + rows).encode()

    started = time.perf_counter()
    prospects = parse_prospects_csv(data, required_fields={"first_name", "company"})
    elapsed = time.perf_counter() - started

    assert len(prospects) == 10_000
    assert prospects[9_999] == Prospect(
        "person9999@company399.example.com", "First9999", "Last9999", "Company 399", {"job_title": "Title 3"}
    )
    assert elapsed < 2.0
