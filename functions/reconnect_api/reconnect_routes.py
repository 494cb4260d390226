"""The reconnect link's routes: open the link, the landing page, OAuth start and callback, password."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter
from aws_lambda_powertools.metrics import MetricUnit
from reconnect_pages import Pages, landing, owner_page, parse_form

from sendwell import wiring
from sendwell.clock import utcnow
from sendwell.observability import Metric
from sendwell.services import links, owner_links, reconnect
from sendwell.wiring import NOTICE_FAILURES, logger, metrics

router = APIGatewayHttpRouter()


def _parts() -> wiring.Reconnect:
    """The function's wired parts, handed to every route through the resolver's context."""
    parts: wiring.Reconnect = router.context["parts"]
    return parts


def _pages() -> Pages:
    pages: Pages = router.context["pages"]
    return pages


@router.get("/r/<token>")
def open_link(token: str) -> Response[str]:
    opened, link = reconnect.open_link(_parts().context, token, now=utcnow())
    owner = links.owner_of(link) is not None
    logger.info("reconnect link opened", extra={"link_id": link.link_id, "owner_link": owner})
    cookie = _pages().session_cookie(opened.cookie, max_age=opened.max_age, owner=owner)
    return _pages().redirect(f"{_pages().public_base_url}/{'inboxes' if owner else 'connect'}", cookies=[cookie])


@router.get("/inboxes")
def owner_inboxes() -> Response[str]:
    visit = owner_links.load_owner_visit(_parts().context, _owner_cookie(), now=utcnow())
    return _pages().page(200, "inboxes", **owner_page(visit))


@router.post("/inboxes/start")
def start_owner_inbox() -> Response[str]:
    form = _form()
    opened, link = owner_links.start_inbox(
        _parts().context, _owner_cookie(), form.get("csrf_token", ""), form.get("inbox_id", ""), now=utcnow()
    )
    logger.info("reconnect started from an owner link", extra={"link_id": link.link_id, "inbox_id": link.inbox_id})
    cookie = _pages().session_cookie(opened.cookie, max_age=opened.max_age)
    return _pages().redirect(f"{_pages().public_base_url}/connect", cookies=[cookie])


@router.get("/connect")
def connect() -> Response[str]:
    return _pages().page(
        200, "landing", **landing(reconnect.load_visit(_parts().context, session_cookie(), now=utcnow()))
    )


@router.post("/connect/oauth")
def start_oauth() -> Response[str]:
    csrf_token = _form().get("csrf_token", "")
    return _pages().redirect(
        reconnect.start_authorization(_parts().context, session_cookie(), csrf_token, now=utcnow())
    )


@router.get("/oauth/callback/<provider>")
def oauth_callback(provider: str) -> Response[str]:
    answer = dict(router.current_event.query_string_parameters or {})
    return _reconnected(
        reconnect.finish_authorization(_parts().context, session_cookie(), provider, answer, now=utcnow())
    )


@router.post("/connect/password")
def submit_password() -> Response[str]:
    form = _form()
    csrf_token, password = form.get("csrf_token", ""), form.get("password", "")
    return _reconnected(
        reconnect.submit_password(_parts().context, session_cookie(), csrf_token, password, now=utcnow())
    )


def _reconnected(started: reconnect.ReconnectStarted) -> Response[str]:
    """The new sign-in is stored: have the worker finish the reconnect, and tell the owner at once."""
    metrics.add_metric(name=Metric.LINKS_USED, unit=MetricUnit.Count, value=1)
    extra = {"inbox_id": started.inbox.inbox_id, "link_id": started.link.link_id, "renewed": started.renewed}
    try:
        _parts().reconnect_tasks.send_batch([started.task.to_message()])
    except NOTICE_FAILURES:
        # Stored already: the reminders function finds the unfinished reconnect and queues it.
        logger.exception("reconnect task not queued; the reminders function will queue it", extra=extra)
    logger.info("reconnect started", extra=extra)
    return _pages().page(
        200,
        "success",
        cookies=[_pages().cleared_cookie()],
        inbox_address=started.inbox.address,
        next_steps=started.next_steps(),
        owner_page=_owner_cookie() is not None,
    )


def session_cookie() -> str | None:
    return _pages().read_session(router.current_event.cookies or [])


def _owner_cookie() -> str | None:
    return _pages().read_session(router.current_event.cookies or [], owner=True)


def _form() -> dict[str, str]:
    return parse_form(router.current_event.decoded_body or "")
