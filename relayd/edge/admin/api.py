"""The operator's webhook API: list, show, retry and replay (JSON).

- ``GET /api/webhooks?status=&endpoint=&limit=&before=``: newest first, ``limit`` (default
  `DEFAULT_LIMIT`, at most `MAX_LIMIT`) per page; ``next`` is the ``before`` of the
  following page (a seq: keyset pagination, so a deep page costs what the first does), or
  null on the last one. An empty parameter counts as not given.
- ``GET /api/webhooks/{id}``: one webhook with its headers and body.
- ``POST /api/webhooks/{id}/retry``: send a webhook again as itself, now, in its place in
  its endpoint's order (a pending one loses its backoff; a failed or dead-lettered one
  is pending again). 409 when it is delivered (replay it) or in flight.
- ``POST /api/webhooks/{id}/replay``: copy any webhook as a new one (``replay_of``) at the
  end of its endpoint's queue.
- ``POST /api/endpoints/{id}/retry``, body ``{"status": [...]}`` (optional; default
  ``["failed", "dead_letter"]``; ``"pending"`` takes those waiting out a backoff): all of
  them, in their order.

Errors are ``{"error": "..."}``: 400 naming the parameter, 404, 409. Each retry and replay
is logged at INFO, one line per webhook, with ``by=admin API``. The JSON shapes are in
`documents`.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from relayd.edge.admin.context import AdminContext
from relayd.edge.admin.documents import webhook_detail, webhook_item
from relayd.edge.store import (
    DEAD_LETTER,
    DELIVERED,
    FAILED,
    RETRYABLE,
    STATUSES,
    Requeued,
)

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "routes"]

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
LIST_PARAMETERS = ("status", "endpoint", "limit", "before")
# What an endpoint retry takes when the body names no status.
DEFAULT_RETRY_STATUSES = (FAILED, DEAD_LETTER)
# Largest body an endpoint retry reads (``{"status": [...]}`` is a few dozen bytes).
MAX_BODY_BYTES = 4096
# Ids an endpoint retry lists in its answer (its count is always complete).
MAX_IDS_IN_ANSWER = 1000
# Who the log lines name as having asked.
WHO = "admin API"


class BadRequest(Exception):
    """A parameter or body the API cannot take (400); the message names it."""


def _error(status_code: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status_code)


def _int_parameter(params: Mapping[str, str], name: str, low: int, high: int | None
                   ) -> int | None:
    value = params.get(name) or None
    if value is None:
        return None
    bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"{name}: must be an integer {bounds} (got {value!r})") from None
    if number < low or (high is not None and number > high):
        raise BadRequest(f"{name}: must be an integer {bounds} (got {number})")
    return number


def _list_parameters(request: Request) -> tuple[str | None, str | None, int, int | None]:
    params = request.query_params
    for name in params:
        if name not in LIST_PARAMETERS:
            raise BadRequest(f"{name}: unknown parameter (known: {', '.join(LIST_PARAMETERS)})")
        if len(params.getlist(name)) > 1:
            raise BadRequest(f"{name}: given more than once")
    status = params.get("status") or None
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status: must be one of {', '.join(STATUSES)} (got {status!r})")
    limit = _int_parameter(params, "limit", 1, MAX_LIMIT)
    before = _int_parameter(params, "before", 1, None)
    return status, params.get("endpoint") or None, limit or DEFAULT_LIMIT, before


async def _retry_statuses(request: Request) -> tuple[str, ...]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise BadRequest(f"body: larger than {MAX_BODY_BYTES} bytes")
    if not body.strip():
        return DEFAULT_RETRY_STATUSES
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadRequest("body: must be JSON such as {\"status\": [\"failed\"]}") from None
    if not isinstance(doc, dict):
        raise BadRequest("body: must be a JSON object such as {\"status\": [\"failed\"]}")
    for key in doc:
        if key != "status":
            raise BadRequest(f"{key}: unknown field (known: status)")
    statuses = doc.get("status", list(DEFAULT_RETRY_STATUSES))
    if not isinstance(statuses, list) or not statuses \
            or any(s not in RETRYABLE for s in statuses):
        raise BadRequest(f"status: must be a non-empty list of {', '.join(RETRYABLE)} "
                         f"(got {json.dumps(statuses)})")
    return tuple(dict.fromkeys(statuses))


def _log_retried(requeued: Sequence[Requeued]) -> None:
    for webhook in requeued:
        log.info("webhook retried webhook_id=%s endpoint=%s previous_status=%s by=%s",
                 webhook.id, webhook.endpoint_id, webhook.previous_status, WHO)


def routes(ctx: AdminContext) -> list[BaseRoute]:
    def in_flight_ids() -> set[str]:
        return {i for ids in ctx.dispatch.in_flight().values() for i in ids}

    async def list_webhooks(request: Request) -> Response:
        try:
            status, endpoint_id, limit, before = _list_parameters(request)
        except BadRequest as exc:
            return _error(400, str(exc))
        # one more than asked: whether there is a next page
        rows = await ctx.store.list_webhooks(status=status, endpoint_id=endpoint_id,
                                             before=before, limit=limit + 1)
        flying = in_flight_ids()
        return JSONResponse({
            "webhooks": [webhook_item(row, flying) for row in rows[:limit]],
            "next": rows[limit - 1].seq if len(rows) > limit else None,
        })

    async def show_webhook(request: Request) -> Response:
        webhook_id = request.path_params["webhook_id"]
        detail = await ctx.store.webhook_detail(webhook_id)
        if detail is None:
            return _error(404, f"no webhook {webhook_id}")
        return JSONResponse(webhook_detail(detail, in_flight_ids()))

    async def retry_webhook(request: Request) -> Response:
        webhook_id = request.path_params["webhook_id"]
        info = await ctx.store.webhook_info(webhook_id)
        done: Requeued | None = None
        if info is not None and info.status != DELIVERED:
            with ctx.dispatch.requeueing(info.endpoint_id) as requeued:
                # checked while the endpoint is held: nothing can be sent meanwhile
                if webhook_id in ctx.dispatch.in_flight().get(info.endpoint_id, ()):
                    return _error(409, f"webhook {webhook_id} is in flight: the hub has it "
                                       "and has not answered yet")
                done = await ctx.store.retry_webhook(webhook_id, ctx.clock())
                if done is not None:
                    requeued(done.seq)
            info = await ctx.store.webhook_info(webhook_id)
        if info is None:
            return _error(404, f"no webhook {webhook_id}")
        if done is None:  # delivered (perhaps while we asked)
            return _error(409, f"webhook {webhook_id} is delivered: a retry sends only what "
                               f"was not; replay it to send a copy (POST /api/webhooks/"
                               f"{webhook_id}/replay, relayctl replay {webhook_id})")
        _log_retried([done])
        return JSONResponse({"queued": webhook_item(info, in_flight_ids()),
                             "previous_status": done.previous_status})

    async def replay_webhook(request: Request) -> Response:
        webhook_id = request.path_params["webhook_id"]
        copy = await ctx.store.replay(webhook_id, uuid.uuid4().hex, ctx.clock())
        if copy is None:
            return _error(404, f"no webhook {webhook_id}")
        ctx.dispatch.reread(copy.endpoint_id)
        log.info("webhook replayed webhook_id=%s replay_of=%s endpoint=%s by=%s",
                 copy.id, webhook_id, copy.endpoint_id, WHO)
        return JSONResponse({"queued": webhook_item(copy)})

    async def retry_endpoint(request: Request) -> Response:
        endpoint_id = request.path_params["endpoint_id"]
        if ctx.live_config().endpoint(endpoint_id) is None:
            return _error(404, f"no endpoint {endpoint_id} in relayd's configuration")
        try:
            statuses = await _retry_statuses(request)
        except BadRequest as exc:
            return _error(400, str(exc))
        ids: list[str] = []
        with ctx.dispatch.requeueing(endpoint_id) as requeued:
            def on_chunk(chunk: list[Requeued]) -> None:
                _log_retried(chunk)
                requeued(chunk[0].seq)  # a chunk is in seq order
                ids.extend(w.id for w in chunk[:MAX_IDS_IN_ANSWER - len(ids)])

            count = await ctx.store.retry_endpoint(endpoint_id, statuses, ctx.clock(),
                                                   on_chunk)
        answer: dict[str, Any] = {"endpoint_id": endpoint_id, "statuses": list(statuses),
                                  "count": count, "ids": ids, "ids_truncated": count > len(ids)}
        return JSONResponse(answer)

    return [
        Route("/api/webhooks", list_webhooks, methods=["GET"]),
        Route("/api/webhooks/{webhook_id}", show_webhook, methods=["GET"]),
        Route("/api/webhooks/{webhook_id}/retry", retry_webhook, methods=["POST"]),
        Route("/api/webhooks/{webhook_id}/replay", replay_webhook, methods=["POST"]),
        Route("/api/endpoints/{endpoint_id}/retry", retry_endpoint, methods=["POST"]),
    ]
