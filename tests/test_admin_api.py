"""The operator's admin API: see every webhook, know why it is stuck, retry and replay it."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from relayd.edge.daemon import Relayd
from relayd.edge.store import AckOutcome, AckRecord, Store
from relayd.wire import ORDERED_PIPELINE, SKIPPED_ERROR
from tests.conftest import start_edge
from tests.db import open_db
from tests.helpers import TestHub, make_config, post, wait_for


async def api(edge: Relayd, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://{edge.addresses.admin}") as client:
        return await client.request(method, path, **kwargs)


async def ingest(edge: Relayd, endpoint_id: str, body: bytes = b"{}", **kwargs: Any) -> str:
    response = await post(edge.addresses.ingress, endpoint_id, body, **kwargs)
    assert response.status_code == 202
    webhook_id: str = response.json()["id"]
    return webhook_id


async def acks_written(edge: Relayd, count: int) -> None:
    await wait_for(lambda: edge.ack_writer.applied >= count)


async def fail(hub: TestHub, webhook_id: str, *, permanent: bool = True) -> None:
    await hub.ack(webhook_id, success=False, status_code=410 if permanent else 503,
                  error="HTTP 410 Gone" if permanent else "HTTP 503 Service Unavailable",
                  permanent=permanent)


# -- listing ---------------------------------------------------------------------------------

async def test_list_is_newest_first_filtered_and_paged_without_gaps(edge: Relayd) -> None:
    alpha = [await ingest(edge, "alpha", f"a{i}".encode()) for i in range(5)]
    beta = [await ingest(edge, "beta", f"b{i}".encode()) for i in range(3)]
    async with TestHub.connected(edge.addresses.grpc, endpoint_ids=["alpha"]) as hub:
        first = await hub.recv_webhook()
        await fail(hub, first.id)  # alpha[0] failed
        second = await hub.recv_webhook()
        await hub.ack(second.id)  # alpha[1] delivered
        await acks_written(edge, 2)
        third = await hub.recv_webhook()  # alpha[2] in flight

        doc = (await api(edge, "GET", "/api/webhooks")).json()
        assert [w["id"] for w in doc["webhooks"]] == [*reversed(beta), *reversed(alpha)]
        assert doc["next"] is None
        by_id = {w["id"]: w for w in doc["webhooks"]}
        assert by_id[alpha[0]]["status"] == "failed" and by_id[alpha[0]]["attempts"] == 1
        assert by_id[alpha[0]]["last_status_code"] == 410
        assert by_id[alpha[0]]["last_error"] == "HTTP 410 Gone"
        assert by_id[alpha[0]]["last_attempt_at"] is not None
        assert by_id[alpha[1]]["status"] == "delivered"
        assert by_id[third.id]["status"] == "in_flight"
        assert by_id[alpha[3]] == {
            "id": alpha[3], "endpoint_id": "alpha", "method": "POST", "path": "", "query": "",
            "status": "pending", "attempts": 0, "received_at": by_id[alpha[3]]["received_at"],
            "last_attempt_at": None, "next_attempt_at": None, "last_status_code": None,
            "last_error": None, "size": 2, "replay_of": None,
        }

        async def ids(query: str) -> list[str]:
            response = await api(edge, "GET", f"/api/webhooks?{query}")
            assert response.status_code == 200, response.text
            return [w["id"] for w in response.json()["webhooks"]]

        assert await ids("endpoint=beta") == list(reversed(beta))
        assert await ids("status=failed") == [alpha[0]]
        assert await ids("status=delivered&endpoint=alpha") == [alpha[1]]
        assert await ids("status=pending&endpoint=beta") == list(reversed(beta))
        assert await ids("status=delivered&endpoint=beta") == []
        assert await ids("status=&endpoint=&limit=&before=") == [*reversed(beta),
                                                                  *reversed(alpha)]
        # pages of 3: every webhook exactly once, in order, whatever the filter
        for query, expected in (("", [*reversed(beta), *reversed(alpha)]),
                                ("endpoint=alpha&", list(reversed(alpha)))):
            seen: list[str] = []
            url = f"/api/webhooks?{query}limit=3"
            while True:
                page = (await api(edge, "GET", url)).json()
                assert len(page["webhooks"]) <= 3
                seen += [w["id"] for w in page["webhooks"]]
                if page["next"] is None:
                    break
                url = f"/api/webhooks?{query}limit=3&before={page['next']}"
            assert seen == expected


@pytest.mark.parametrize(("query", "named"), [
    ("status=bogus", "status"),
    ("status=in_flight", "status"),
    ("limit=0", "limit"),
    ("limit=501", "limit"),
    ("limit=ten", "limit"),
    ("before=0", "before"),
    ("before=x", "before"),
    ("stauts=failed", "stauts"),
    ("limit=5&limit=6", "limit"),
])
async def test_list_bad_parameter_is_400_naming_it(edge: Relayd, query: str, named: str) -> None:
    response = await api(edge, "GET", f"/api/webhooks?{query}")
    assert response.status_code == 400
    assert response.json()["error"].startswith(f"{named}: ")


async def test_show_has_request_line_headers_and_body(edge: Relayd) -> None:
    async with httpx.AsyncClient(base_url=f"http://{edge.addresses.ingress}") as client:
        text_id = (await client.put("/h/alpha/a/b?x=1%202", content="héllo".encode(),
                                    headers={"X-Sig": "abc"})).json()["id"]
        binary = bytes(range(256))
        binary_id = (await client.post("/h/beta", content=binary)).json()["id"]
    doc = (await api(edge, "GET", f"/api/webhooks/{text_id}")).json()
    assert (doc["method"], doc["path"], doc["query"]) == ("PUT", "/a/b", "x=1%202")
    assert doc["body_text"] == "héllo" and base64.b64decode(doc["body_base64"]) == "héllo".encode()
    assert doc["size"] == len("héllo".encode()) and doc["remote_addr"] == "127.0.0.1"
    assert ["x-sig", "abc"] in doc["headers"]
    doc = (await api(edge, "GET", f"/api/webhooks/{binary_id}")).json()
    assert doc["body_text"] is None and base64.b64decode(doc["body_base64"]) == binary
    missing = await api(edge, "GET", "/api/webhooks/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]


# -- retry -----------------------------------------------------------------------------------

async def test_retry_of_a_failed_webhook_is_sent_again_in_its_place_while_the_hub_stays(
    edge: Relayd, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="relayd")
    a = await ingest(edge, "alpha", b"A")
    b = await ingest(edge, "alpha", b"B")
    async with TestHub.connected(edge.addresses.grpc) as hub:
        assert (await hub.recv_webhook()).id == a
        await fail(hub, a)
        assert (await hub.recv_webhook()).id == b
        await hub.ack(b)  # a later one delivered: the endpoint's cursor is past a
        await acks_written(edge, 2)
        response = await api(edge, "POST", f"/api/webhooks/{a}/retry")
        assert response.status_code == 200, response.text
        assert response.json()["previous_status"] == "failed"
        assert response.json()["queued"]["id"] == a
        assert response.json()["queued"]["status"] in ("pending", "in_flight")
        again = await hub.recv_webhook()
        assert (again.id, again.attempt, again.payload) == (a, 2, b"A")
        await hub.ack(a)
        await acks_written(edge, 3)
    assert (await edge.store.get(a))["status"] == "delivered"  # type: ignore[index]
    assert f"webhook retried webhook_id={a} endpoint=alpha previous_status=failed " \
           "by=admin API" in caplog.text


async def test_retried_webhook_goes_before_what_came_after_it(edge: Relayd) -> None:
    a = await ingest(edge, "alpha", b"A")
    b = await ingest(edge, "alpha", b"B")
    async with TestHub.connected(edge.addresses.grpc) as hub:
        assert (await hub.recv_webhook()).id == a
        await fail(hub, a)
        assert (await hub.recv_webhook()).id == b  # in flight while we retry a
        c = await ingest(edge, "alpha", b"C")  # after a, not sent yet
        assert (await api(edge, "POST", f"/api/webhooks/{a}/retry")).status_code == 200
        await hub.ack(b)
        assert [(await hub.recv_webhook()).id for _ in range(1)] == [a]
        await hub.ack(a)
        assert (await hub.recv_webhook()).id == c


async def test_retry_with_later_ones_in_flight_sends_none_of_them_twice(
    edge: Relayd,
) -> None:
    a, b, c = [await ingest(edge, "alpha", body) for body in (b"A", b"B", b"C")]
    async with TestHub.connected(edge.addresses.grpc, capabilities=[ORDERED_PIPELINE]) as hub:
        assert [(await hub.recv_webhook()).id for _ in range(3)] == [a, b, c]
        await fail(hub, a)
        await acks_written(edge, 1)
        assert (await api(edge, "POST", f"/api/webhooks/{a}/retry")).status_code == 200
        d = await ingest(edge, "alpha", b"D")
        # a again, then d: not b or c, which the hub still has
        assert [(await hub.recv_webhook()).id for _ in range(2)] == [a, d]
        for webhook_id in (b, c, a, d):
            await hub.ack(webhook_id)
        await acks_written(edge, 5)
    assert (await edge.store.counts())["delivered"] == 4


async def test_a_rewind_behind_a_retried_webhook_sends_it_again_first(edge: Relayd) -> None:
    a, b, c = [await ingest(edge, "alpha", body) for body in (b"A", b"B", b"C")]
    async with TestHub.connected(edge.addresses.grpc, capabilities=[ORDERED_PIPELINE]) as hub:
        assert [(await hub.recv_webhook()).id for _ in range(3)] == [a, b, c]
        await fail(hub, a)
        await acks_written(edge, 1)
        assert (await api(edge, "POST", f"/api/webhooks/{a}/retry")).status_code == 200
        assert (await hub.recv_webhook()).id == a  # sent after b and c: hub has b, c, a
        # b fails: an ordered-pipeline hub skips what it got after b (c, then a)
        await fail(hub, b, permanent=False)
        for skipped in (c, a):
            await hub.ack(skipped, success=False, status_code=0, error=SKIPPED_ERROR)
        await acks_written(edge, 4)
        # a (first in order, no backoff), then b after its backoff, then c
        assert [(await hub.recv_webhook()).id for _ in range(3)] == [a, b, c]


async def test_retry_never_resends_one_whose_success_ack_is_not_yet_written(
    nursery: trio.Nursery, tmp_path: Path,
) -> None:
    held = {"ids": set[str](), "gate": trio.Event()}

    class SlowAckStore(Store):
        """Writes the acks of the webhooks in ``held`` only once the gate opens."""

        async def apply_acks(self, records: Sequence[AckRecord], now: float
                             ) -> list[AckOutcome]:
            if any(r.webhook_id in held["ids"] for r in records):
                await held["gate"].wait()  # type: ignore[attr-defined]
            return await super().apply_acks(records, now)

    edge = Relayd(make_config(tmp_path), store_type=SlowAckStore)
    await nursery.start(edge.run)
    a, b, c = [await ingest(edge, "alpha", body) for body in (b"A", b"B", b"C")]
    async with TestHub.connected(edge.addresses.grpc) as hub:
        assert (await hub.recv_webhook()).id == a
        await fail(hub, a)
        assert (await hub.recv_webhook()).id == b
        held["ids"].add(b)  # type: ignore[attr-defined]
        await hub.ack(b)  # arrived (its slot is free), not written: b is still pending
        assert (await hub.recv_webhook()).id == c
        assert (await api(edge, "POST", f"/api/webhooks/{a}/retry")).status_code == 200
        await hub.ack(c)
        assert (await hub.recv_webhook()).id == a
        await hub.ack(a)
        e = await ingest(edge, "alpha", b"E")
        assert (await hub.recv_webhook()).id == e  # not b again
        held["gate"].set()  # type: ignore[attr-defined]
        await hub.ack(e)
        await acks_written(edge, 5)
    assert (await edge.store.counts())["delivered"] == 4


async def test_retry_answers_404_and_409_plainly(edge: Relayd) -> None:
    delivered = await ingest(edge, "alpha")
    flying = await ingest(edge, "alpha")
    async with TestHub.connected(edge.addresses.grpc) as hub:
        assert (await hub.recv_webhook()).id == delivered
        await hub.ack(delivered)
        await acks_written(edge, 1)
        assert (await hub.recv_webhook()).id == flying
        response = await api(edge, "POST", f"/api/webhooks/{delivered}/retry")
        assert response.status_code == 409
        assert "delivered" in response.json()["error"] and "replay" in response.json()["error"]
        response = await api(edge, "POST", f"/api/webhooks/{flying}/retry")
        assert response.status_code == 409 and "in flight" in response.json()["error"]
    for path in ("/api/webhooks/nope/retry", "/api/webhooks/nope/replay",
                 "/api/endpoints/nope/retry"):
        response = await api(edge, "POST", path)
        assert response.status_code == 404 and "nope" in response.json()["error"]
    response = await api(edge, "GET", f"/api/webhooks/{delivered}/retry")
    assert response.status_code == 405


async def test_retry_of_a_pending_webhook_ends_its_backoff(
    nursery: trio.Nursery, tmp_path: Path,
) -> None:
    edge = await start_edge(nursery, tmp_path, retry_initial=3600, retry_max=3600)
    a = await ingest(edge, "alpha")
    async with TestHub.connected(edge.addresses.grpc) as hub:
        assert (await hub.recv_webhook()).id == a
        await fail(hub, a, permanent=False)  # next attempt in an hour
        await acks_written(edge, 1)
        listed = (await api(edge, "GET", "/api/webhooks")).json()["webhooks"][0]
        assert listed["status"] == "pending" and listed["next_attempt_at"] is not None
        response = await api(edge, "POST", f"/api/webhooks/{a}/retry")
        assert response.json()["previous_status"] == "pending"
        assert (await hub.recv_webhook()).id == a


async def test_retried_dead_letter_gets_a_new_max_age(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "relayd.db") as store:
        from relayd.edge.store import NewWebhook

        long_ago = time.time() - 30 * 24 * 3600.0
        await store.insert_webhooks([NewWebhook("old", "alpha", "POST", [], b"x", long_ago)])
        assert await store.expire_pending(time.time()) == ["old"]
        retried = await store.retry_webhook("old", time.time())
        assert retried is not None and retried.previous_status == "dead_letter"
        # the sweep leaves it pending, and a transient failure schedules a retry
        assert await store.expire_pending(time.time()) == []
        [outcome] = await store.apply_acks([AckRecord("old", False, 503, "busy", False)],
                                           time.time())
        assert outcome.outcome == "retry"


# -- replay and endpoint retry ---------------------------------------------------------------

async def test_replay_copies_any_webhook_as_a_new_one_at_the_end(
    edge: Relayd, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="relayd")
    async with httpx.AsyncClient(base_url=f"http://{edge.addresses.ingress}") as client:
        original = (await client.put("/h/alpha/x?y=1", content=b"payload",
                                     headers={"X-Sig": "s"})).json()["id"]
    later = await ingest(edge, "alpha", b"later")
    async with TestHub.connected(edge.addresses.grpc) as hub:
        for expected in (original, later):
            assert (await hub.recv_webhook()).id == expected
            await hub.ack(expected)
        await acks_written(edge, 2)
        response = await api(edge, "POST", f"/api/webhooks/{original}/replay")
        assert response.status_code == 200, response.text
        copy = response.json()["queued"]
        assert copy["id"] != original and copy["replay_of"] == original
        assert (copy["method"], copy["path"], copy["query"], copy["status"]) == \
            ("PUT", "/x", "y=1", "pending")
        sent = await hub.recv_webhook()
        assert (sent.id, sent.payload, sent.method, sent.path, sent.query) == \
            (copy["id"], b"payload", "PUT", "/x", "y=1")
        assert sent.headers["x-sig"] == "s"
    listed = (await api(edge, "GET", "/api/webhooks?limit=1")).json()["webhooks"]
    assert listed[0]["id"] == copy["id"] and listed[0]["replay_of"] == original
    assert f"webhook replayed webhook_id={copy['id']} replay_of={original} endpoint=alpha " \
           "by=admin API" in caplog.text


async def test_endpoint_retry_sends_its_failures_again_in_their_order(edge: Relayd) -> None:
    ids = [await ingest(edge, "alpha", f"{i}".encode()) for i in range(5)]
    other = await ingest(edge, "beta")
    async with TestHub.connected(edge.addresses.grpc, endpoint_ids=["alpha"]) as hub:
        for webhook_id in ids:
            assert (await hub.recv_webhook()).id == webhook_id
            if webhook_id in (ids[1], ids[4]):
                await hub.ack(webhook_id)
            else:
                await fail(hub, webhook_id)
        await acks_written(edge, 5)
    # ids[2] becomes a dead letter (expired while pending: retried first, then swept)
    await edge.store.retry_webhook(ids[2], time.time())
    assert await edge.store.expire_pending(time.time() + 30 * 24 * 3600.0) == [ids[2], other]
    await edge.store.retry_webhook(other, time.time())
    bad = await api(edge, "POST", "/api/endpoints/alpha/retry", content=b'{"status": ["x"]}')
    assert bad.status_code == 400 and bad.json()["error"].startswith("status: ")
    bad = await api(edge, "POST", "/api/endpoints/alpha/retry", content=b'{"statuses": []}')
    assert bad.status_code == 400 and bad.json()["error"].startswith("statuses: ")
    only_dead = await api(edge, "POST", "/api/endpoints/alpha/retry",
                          json={"status": ["dead_letter"]})
    assert only_dead.json() == {"endpoint_id": "alpha", "statuses": ["dead_letter"],
                                "count": 1, "ids": [ids[2]], "ids_truncated": False}
    everything = await api(edge, "POST", "/api/endpoints/alpha/retry")
    assert everything.json()["count"] == 2
    assert everything.json()["ids"] == [ids[0], ids[3]]
    async with TestHub.connected(edge.addresses.grpc, endpoint_ids=["alpha"]) as hub:
        for expected in (ids[0], ids[2], ids[3]):
            webhook = await hub.recv_webhook()
            assert webhook.id == expected
            await hub.ack(webhook.id)


# -- status ----------------------------------------------------------------------------------

async def test_status_says_per_endpoint_why_its_queue_waits(
    nursery: trio.Nursery, tmp_path: Path,
) -> None:
    edge = await start_edge(nursery, tmp_path, retry_initial=3600, retry_max=3600)
    ok = await ingest(edge, "beta")
    stuck = await ingest(edge, "alpha")
    await ingest(edge, "alpha")
    async with TestHub.connected(edge.addresses.grpc) as hub:
        for _ in range(2):
            webhook = await hub.recv_webhook()
            if webhook.id == ok:
                await hub.ack(ok)
            else:
                await fail(hub, stuck, permanent=False)
        await acks_written(edge, 2)
        before = time.time()
        doc = (await api(edge, "GET", "/api/status")).json()
    alpha, beta, gamma = doc["endpoints"]
    assert alpha["id"] == "alpha" and alpha["hub_serves"] is True
    assert (alpha["pending"], alpha["in_flight"], alpha["delivered"]) == (2, 0, 0)
    assert alpha["oldest_pending_age_seconds"] >= 0
    assert alpha["last_delivered_at"] is None
    assert alpha["last_error"]["webhook_id"] == stuck
    assert alpha["last_error"]["status_code"] == 503
    assert alpha["last_error"]["message"] == "HTTP 503 Service Unavailable"
    from datetime import datetime
    next_at = datetime.fromisoformat(alpha["next_attempt_at"]).timestamp()
    assert before + 3000 < next_at < before + 3700
    assert (beta["pending"], beta["delivered"], beta["last_error"]) == (0, 1, None)
    assert beta["last_delivered_at"] is not None and beta["next_attempt_at"] is None
    assert (gamma["pending"], gamma["oldest_pending_age_seconds"]) == (0, None)
    assert doc["queue"]["pending"] == 2 and doc["queue"]["delivered"] == 1


async def test_a_retry_the_database_refuses_is_503_and_holds_nothing_back(
    nursery: trio.Nursery, tmp_path: Path,
) -> None:
    edge = await start_edge(nursery, tmp_path, store={"busy_timeout": 0.1})
    a = await ingest(edge, "alpha")
    async with TestHub.connected(edge.addresses.grpc) as hub:
        assert (await hub.recv_webhook()).id == a
        await fail(hub, a)
        await acks_written(edge, 1)
        with open_db(edge.config.store.path) as other:  # another program holds the writer
            other.execute("BEGIN EXCLUSIVE")
            response = await api(edge, "POST", f"/api/webhooks/{a}/retry")
            other.execute("ROLLBACK")
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert response.json()["error"].startswith("storage unavailable: OperationalError")
        # alpha is not left held: the retry goes through once the database takes it
        assert (await api(edge, "POST", f"/api/webhooks/{a}/retry")).status_code == 200
        assert (await hub.recv_webhook()).id == a


async def test_status_and_endpoint_retry_follow_a_config_reload(
    nursery: trio.Nursery, tmp_path: Path,
) -> None:
    from tests.test_reload import start as start_from_file
    from tests.test_reload import write_config

    config = write_config(tmp_path, {"alpha": "http://127.0.0.1:9/alpha"})
    edge = await start_from_file(nursery, config)
    write_config(tmp_path, {"alpha": "http://127.0.0.1:9/alpha",
                            "delta": "http://127.0.0.1:9/delta"})
    edge.reload()
    status = (await api(edge, "GET", "/api/status")).json()
    assert [ep["id"] for ep in status["endpoints"]] == ["alpha", "delta"]
    response = await api(edge, "POST", "/api/endpoints/delta/retry")
    assert response.status_code == 200 and response.json()["count"] == 0
