"""What `relayctl` prints for a person: the admin API's JSON as lines that fit 80 columns.

Each function takes an API document (see `relayd.edge.admin`) and the current time, and
returns text; `relayd.edge.ctl` does the asking and the printing.
"""

from __future__ import annotations

import base64
import textwrap
from datetime import datetime
from typing import Any

__all__ = [
    "WIDTH",
    "duration",
    "endpoint_retry_text",
    "list_text",
    "replay_text",
    "retry_text",
    "show_text",
    "status_text",
]

# Columns of the terminal the output is written for.
WIDTH = 80
# Longest error message quoted on a status line.
ERROR_CHARS = 40
# The webhook table: header, and the width of the columns after the 32-character id.
TABLE = "{id:<32}  {endpoint:<10}  {status:<11}  {tries:>5}  {age:>5}  {code:>4}"


def _ts(value: str | None) -> float | None:
    return None if value is None else datetime.fromisoformat(value).timestamp()


def duration(seconds: float) -> str:
    """``41 s``, ``5 min``, ``3 h``, ``2 d``: how a person reads an age or a delay."""
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f} {unit}"
    return f"{seconds:.0f} s"


def _ago(value: str | None, now: float) -> str:
    ts = _ts(value)
    return "" if ts is None else f"{duration(now - ts)} ago"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def status_text(doc: dict[str, Any], now: float) -> str:
    """``relayctl status``: the hub, the queue, then one entry per endpoint."""
    queue = doc["queue"]
    lines = []
    if doc["connected"]:
        lines.append(f"hub:         connected ({doc['hub_id']} from {doc['peer']})")
        lines.append(f"since:       {doc['connected_since']}")
        lines.append(f"last seen:   {doc['last_seen_at']}")
    else:
        lines.append("hub:         disconnected")
    age = queue["oldest_pending_age_seconds"]
    lines.append(f"pending:     {queue['pending']}"
                 + (f" (oldest {age:.0f}s)" if age is not None else ""))
    lines.append(f"in flight:   {queue['in_flight']}")
    lines.append(f"delivered:   {queue['delivered']}")
    lines.append(f"failed:      {queue['failed']}")
    lines.append(f"dead letter: {queue['dead_letter']}")
    endpoints = doc.get("endpoints", [])
    if endpoints:
        lines.append("endpoints:")
        for endpoint in endpoints:
            lines += textwrap.wrap(", ".join(_endpoint_facts(endpoint, doc["connected"], now)),
                                   WIDTH, initial_indent=f"  {endpoint['id']}: ",
                                   subsequent_indent="      ", break_on_hyphens=False)
    return "\n".join(lines)


def _endpoint_facts(ep: dict[str, Any], connected: bool, now: float) -> list[str]:
    """What is waiting at ``ep``, and why it waits."""
    facts = []
    waiting = ep["pending"] + ep["in_flight"]
    if waiting:
        queue = f"{ep['pending']} pending"
        if ep["in_flight"]:
            queue += f", {ep['in_flight']} in flight"
        if ep["oldest_pending_age_seconds"] is not None:
            queue += f" (oldest {duration(ep['oldest_pending_age_seconds'])})"
        facts.append(queue)
    else:
        facts.append("nothing pending")
    if ep["failed"]:
        facts.append(f"{ep['failed']} failed")
    if ep["dead_letter"]:
        facts.append(f"{ep['dead_letter']} dead letter{'s' if ep['dead_letter'] > 1 else ''}")
    if waiting and not connected:
        facts.append("waiting for the hub to connect")
    elif waiting and not ep["hub_serves"]:
        facts.append("the connected hub does not serve it (its endpoint_ids)")
    next_at = _ts(ep["next_attempt_at"])
    if next_at is not None:
        facts.append(f"next retry in {duration(next_at - now)}")
    error = ep["last_error"]
    delivered_at = _ts(ep["last_delivered_at"])
    troubled = waiting or ep["failed"] or ep["dead_letter"]
    if error is not None and troubled \
            and (delivered_at is None or (_ts(error["at"]) or now) >= delivered_at):
        what = str(error["status_code"]) if error["status_code"] is not None \
            else _clip(error["message"], ERROR_CHARS)
        facts.append(f"last error {what} from {ep['destination_url']} "
                     f"{_ago(error['at'], now)}")
    if delivered_at is not None:
        facts.append(f"last delivery {_ago(ep['last_delivered_at'], now)}")
    return facts


def list_text(doc: dict[str, Any], now: float) -> str:
    """``relayctl list``: one line per webhook, newest first."""
    if not doc["webhooks"]:
        return "no webhooks"
    lines = [TABLE.format(id="ID", endpoint="ENDPOINT", status="STATUS", tries="TRIES",
                          age="AGE", code="CODE")]
    for webhook in doc["webhooks"]:
        age = duration(now - (_ts(webhook["received_at"]) or now)).replace(" ", "")
        lines.append(TABLE.format(
            id=webhook["id"], endpoint=_clip(webhook["endpoint_id"], 10),
            status=webhook["status"], tries=webhook["attempts"], age=age,
            code=webhook["last_status_code"] or "-"))
    return "\n".join(lines)


def show_text(doc: dict[str, Any], now: float, *, body: bool) -> str:
    """``relayctl show``: everything about one webhook (its body with ``body``)."""
    target = f"/h/{doc['endpoint_id']}{doc['path']}" + (f"?{doc['query']}" if doc["query"] else "")
    fields = [
        ("id", doc["id"]),
        ("endpoint", doc["endpoint_id"]),
        ("status", f"{doc['status']}, {doc['attempts']} attempt"
                   f"{'' if doc['attempts'] == 1 else 's'}"),
        ("request", f"{doc['method']} {target} from {doc['remote_addr'] or '?'}"),
        ("received", f"{doc['received_at']} ({_ago(doc['received_at'], now)})"),
    ]
    if doc["last_attempt_at"] is not None:
        # a delivered webhook keeps the error of an earlier attempt: its last one succeeded
        code = doc["last_status_code"]
        result = f"{code} (delivered)" if doc["status"] == "delivered" \
            else doc["last_error"] or str(code)
        fields.append(("last attempt",
                       f"{doc['last_attempt_at']} ({_ago(doc['last_attempt_at'], now)}): "
                       f"{result}"))
    if doc["next_attempt_at"] is not None:
        wait = (_ts(doc["next_attempt_at"]) or now) - now
        fields.append(("next attempt", f"{doc['next_attempt_at']} (in {duration(wait)})"))
    if doc["delivered_at"] is not None:
        fields.append(("delivered", doc["delivered_at"]))
    if doc["replay_of"] is not None:
        fields.append(("replay of", doc["replay_of"]))
    fields.append(("size", f"{doc['size']} bytes"))
    lines = [f"{name + ':':<14}{value}" for name, value in fields]
    lines.append("headers:")
    lines += [f"  {name}: {value}" for name, value in doc["headers"]]
    if body:
        if doc["body_text"] is not None:
            lines += ["body:", doc["body_text"]]
        else:
            raw = base64.b64decode(doc["body_base64"])
            lines.append(f"body (not UTF-8 text, {len(raw)} bytes, base64):")
            lines += textwrap.wrap(doc["body_base64"], 76) or [""]
    return "\n".join(lines)


def retry_text(doc: dict[str, Any]) -> str:
    return f"retried {doc['queued']['id']} (was {doc['previous_status']})"


def replay_text(doc: dict[str, Any]) -> str:
    return f"replayed {doc['queued']['replay_of']} as {doc['queued']['id']}"


def endpoint_retry_text(doc: dict[str, Any]) -> str:
    count = doc["count"]
    return (f"retried {count} webhook{'' if count == 1 else 's'} of {doc['endpoint_id']} "
            f"({', '.join(doc['statuses'])})")
