"""Render a sequence step (subject, text and optional HTML) from user-written Jinja templates.

Templates are input from campaign authors, so they run in Jinja's sandbox: no attribute access to
dunders, no unbounded ranges. Undefined variables are errors, never silently empty: a cold email
that says "Hi ," is worse than one that is not sent.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

# jinja2 is loaded at the first template a function reads, not when it starts: most never read one.
if TYPE_CHECKING:
    import jinja2
    from jinja2 import nodes
    from jinja2.sandbox import SandboxedEnvironment

# Filters that make an undefined variable safe to use: `{{ first_name | default("there") }}`.
_DEFAULT_FILTERS = frozenset({"default", "d"})


@functools.cache
def _environment(*, html: bool) -> SandboxedEnvironment:
    """Configured once and never changed: environments hold no per-render state."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=html)


class RenderError(Exception):
    """A template could not be rendered; the message says why, in words for the author."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


class TemplateVariableMissing(RenderError):
    """A template uses a variable the prospect does not have (and gave it no default)."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"the template uses {{{{ {name} }}}} but no value was given for {name!r}; "
            f'add it to the prospect or write {{{{ {name} | default("...") }}}}'
        )
        self.name = name


@dataclass(frozen=True, slots=True)
class RenderedStep:
    subject: str
    text: str
    html: str | None


def render_step(subject_tpl: str, text_tpl: str, html_tpl: str | None, variables: Mapping[str, str]) -> RenderedStep:
    """Render one step; raise :class:`RenderError` (or its subclass) on any template problem."""
    return RenderedStep(
        subject=_render(subject_tpl, variables, part="subject", html=False).strip(),
        text=_render(text_tpl, variables, part="text", html=False),
        html=None if html_tpl is None else _render(html_tpl, variables, part="HTML", html=True),
    )


def required_variables(template_source: str) -> set[str]:
    """Variables a template cannot render without: those it uses other than through `default`."""
    return set(_required_variables(template_source))


@functools.lru_cache(maxsize=512)
def _required_variables(template_source: str) -> frozenset[str]:
    import jinja2
    from jinja2 import meta

    try:
        ast = _environment(html=False).parse(template_source)
    except jinja2.TemplateSyntaxError as exc:
        raise _syntax_error(exc, part="template") from exc
    # find_undeclared_variables knows Jinja's scoping (loop variables, {% set %}); the walk below
    # removes the names whose every use is guarded by a default filter.
    undeclared = meta.find_undeclared_variables(ast)
    return frozenset(undeclared & set(_names_used_without_default(ast)))


def _names_used_without_default(node: nodes.Node) -> Iterator[str]:
    from jinja2 import nodes

    if isinstance(node, nodes.Name) and node.ctx == "load":
        yield node.name
        return
    for child in node.iter_child_nodes():
        if (
            isinstance(node, nodes.Filter)
            and node.name in _DEFAULT_FILTERS
            and child is node.node
            and isinstance(child, nodes.Name)
        ):
            continue
        yield from _names_used_without_default(child)


@functools.lru_cache(maxsize=512)
def _compile(source: str, *, html: bool) -> jinja2.Template:
    return _environment(html=html).from_string(source)


def _render(source: str, variables: Mapping[str, str], *, part: str, html: bool) -> str:
    import jinja2

    try:
        template = _compile(source, html=html)
    except jinja2.TemplateSyntaxError as exc:
        raise _syntax_error(exc, part=part) from exc
    # Checked up front (rather than from Jinja's UndefinedError text) so the error names the
    # variable, and so "required" means the same here as in the import-time check.
    missing = sorted(_required_variables(source) - variables.keys())
    if missing:
        raise TemplateVariableMissing(missing[0])
    try:
        return template.render(dict(variables))
    except jinja2.exceptions.SecurityError as exc:
        raise RenderError(f"the {part} template tries something not allowed: {exc}") from exc
    except (jinja2.TemplateError, ArithmeticError, TypeError, ValueError) as exc:
        raise RenderError(f"the {part} template failed to render: {exc}") from exc


def _syntax_error(exc: jinja2.TemplateSyntaxError, *, part: str) -> RenderError:
    message = f"the {part} template has an error on line {exc.lineno}: {exc.message}"
    return RenderError(message, line=exc.lineno)
