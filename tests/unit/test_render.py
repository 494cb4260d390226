from __future__ import annotations

import pytest

from sendwell.render import (
    RenderedStep,
    RenderError,
    TemplateVariableMissing,
    render_step,
    required_variables,
)

SUBJECT = "{{ company }} + Sendwell?"
TEXT = """Hi {{ first_name | default("there") }},

I noticed {{ company }} is hiring SDRs. Worth a 15-minute call next week?

-- Ana
"""
HTML = '<p>Hi {{ first_name | default("there") }},</p><p>I noticed {{ company }} is hiring SDRs.</p>'


def test_renders_all_three_parts() -> None:
    step = render_step(SUBJECT, TEXT, HTML, {"first_name": "Jörg", "company": "Acme GmbH"})

    assert step == RenderedStep(
        subject="Acme GmbH + Sendwell?",
        text="Hi Jörg,\n\nI noticed Acme GmbH is hiring SDRs. Worth a 15-minute call next week?\n\n-- Ana",
        html="<p>Hi Jörg,</p><p>I noticed Acme GmbH is hiring SDRs.</p>",
    )


def test_default_filter_fills_a_missing_variable() -> None:
    step = render_step(SUBJECT, TEXT, None, {"company": "Acme"})

    assert step.text.startswith("Hi there,\n")
    assert step.html is None


def test_missing_variable_is_named() -> None:
    with pytest.raises(TemplateVariableMissing) as caught:
        render_step(SUBJECT, TEXT, HTML, {"first_name": "Ana"})

    assert caught.value.name == "company"
    assert "company" in str(caught.value)
    assert isinstance(caught.value, RenderError)


def test_missing_variable_inside_a_condition_is_still_reported() -> None:
    template = "{% if title %}As {{ title }}, {% endif %}you might like this."

    with pytest.raises(TemplateVariableMissing) as caught:
        render_step("Hello", template, None, {})

    assert caught.value.name == "title"


def test_sandbox_blocks_dunder_access() -> None:
    with pytest.raises(RenderError, match="not allowed"):
        render_step("x", "{{ ''.__class__ }}", None, {})


def test_sandbox_blocks_walking_to_globals_through_a_variable() -> None:
    escape = "{{ first_name.__class__.__mro__[1].__subclasses__() }}"

    with pytest.raises(RenderError):
        render_step("x", escape, None, {"first_name": "Ana"})


def test_html_part_escapes_variables_and_text_part_keeps_them() -> None:
    company = '<script>alert("x")</script> & Co'

    step = render_step("{{ company }}", "At {{ company }}", "<p>At {{ company }}</p>", {"company": company})

    assert step.subject == company
    assert step.text == f"At {company}"
    assert step.html == "<p>At &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Co</p>"


def test_syntax_error_gives_the_line_number() -> None:
    broken = "Hi {{ first_name }},\n\nLet's talk about {{ company }.\n"

    with pytest.raises(RenderError) as caught:
        render_step("Hello", broken, None, {"first_name": "Ana", "company": "Acme"})

    assert caught.value.line == 3
    assert "line 3" in str(caught.value)
    assert "text template" in str(caught.value)


def test_runtime_error_in_a_template_is_a_render_error() -> None:
    with pytest.raises(RenderError, match="subject template"):
        render_step("{{ 10 / 0 }}", "body", None, {})


def test_required_variables_ignores_defaulted_ones() -> None:
    assert required_variables(TEXT) == {"company"}
    assert required_variables(SUBJECT) == {"company"}


def test_required_variables_counts_a_variable_used_both_with_and_without_default() -> None:
    source = "Hi {{ first_name | d('there') }}. {{ first_name }}, a question about {{ company | upper }}."

    assert required_variables(source) == {"first_name", "company"}


def test_required_variables_skips_loop_and_set_locals() -> None:
    source = "{% set greeting = 'Hi' %}{{ greeting }} {% for p in products %}{{ p }}{% endfor %}"

    assert required_variables(source) == {"products"}


def test_required_variables_reports_syntax_errors() -> None:
    with pytest.raises(RenderError, match="line 1"):
        required_variables("{% if %}")
