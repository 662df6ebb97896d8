"""Make docs/dashboard.png: the dashboard of a real relayd with a few webhooks in every state.

    .venv/bin/python docs/dashboard_screenshot.py [--phone PATH]

Runs relayd in this process (loopback, a temporary store), a test hub that delivers some
webhooks and fails others, and Debian's chromium through Playwright (tests/browser.py).
``--phone PATH`` also saves the page as a phone shows it (390 x 844 CSS pixels).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import httpx
import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from relayd.edge.config import Endpoint  # noqa: E402
from relayd.edge.daemon import Relayd  # noqa: E402
from tests.browser import PHONE, Browser, require_browser  # noqa: E402
from tests.helpers import TestHub, make_config, post, wait_for  # noqa: E402

ENDPOINTS = ("github", "stripe", "home-assistant")
ACKS = 6  # what `populate` acknowledges


def push(n: int) -> bytes:
    return json.dumps({"ref": "refs/heads/main", "after": f"{n:040x}",
                       "repository": {"full_name": "me/dotfiles"}}).encode()


async def populate(edge: Relayd) -> None:
    """Delivered, failed, retrying, in flight and replayed webhooks, on three endpoints."""
    ingress = edge.addresses.ingress
    json_headers = {"Content-Type": "application/json"}
    async with TestHub.connected(edge.addresses.grpc) as hub:
        delivered = []
        for n in range(3):
            await post(ingress, "github", push(n),
                       headers={**json_headers, "X-GitHub-Event": "push"})
            delivered.append((await hub.recv_webhook()).id)
            await hub.ack(delivered[-1], status_code=204)
        await post(ingress, "home-assistant/api/webhook/garage-door", b'{"state": "open"}',
                   headers=json_headers)
        gone = await hub.recv_webhook()
        await hub.ack(gone.id, success=False, status_code=410,
                      error="HTTP 410 Gone", permanent=True)
        await post(ingress, "stripe", b'{"type": "invoice.paid", "id": "evt_1"}',
                   headers={**json_headers, "Stripe-Signature": "t=1,v1=5257a869e7ec"})
        busy = await hub.recv_webhook()
        await hub.ack(busy.id, success=False, status_code=503, error="HTTP 503 Service Unavailable")
        async with httpx.AsyncClient(base_url=f"http://{edge.addresses.admin}") as admin:
            await admin.post(f"/api/webhooks/{delivered[0]}/replay")
        await hub.ack((await hub.recv_webhook()).id, status_code=204)
        await post(ingress, "github", push(9),
                   headers={**json_headers, "X-GitHub-Event": "push"})
        await hub.recv_webhook()  # left in flight
        await wait_for(lambda: edge.ack_writer.applied == ACKS)
        await trio.sleep_forever()


async def main(phone: Path | None) -> None:
    require_browser()
    with tempfile.TemporaryDirectory() as tmp:
        config = make_config(Path(tmp), retry_initial=60)
        config = replace(config, endpoints=tuple(
            Endpoint(e, f"http://127.0.0.1:{port}/hooks/{e}")
            for e, port in zip(ENDPOINTS, (3000, 8080, 8123), strict=True)))
        edge = Relayd(config)
        async with trio.open_nursery() as nursery:
            await nursery.start(edge.run)
            nursery.start_soon(populate, edge)
            await wait_for(lambda: edge.ack_writer.applied == ACKS, within=20)
            async with Browser.launch(Path(tmp) / "profile") as browser:
                page = await browser.new_page()
                await browser.run(lambda: page.goto(f"http://{edge.addresses.admin}/"))
                await browser.run(lambda: page.locator("#webhooks tbody tr").nth(5).wait_for())
                await browser.run(lambda: page.wait_for_timeout(2500))  # one more poll
                out = ROOT / "docs" / "dashboard.png"
                await browser.run(lambda: page.screenshot(path=str(out), full_page=True))
                print(out)
                if phone is not None:
                    await browser.run(lambda: page.set_viewport_size(PHONE))
                    await browser.run(lambda: page.wait_for_timeout(500))
                    await browser.run(lambda: page.screenshot(path=str(phone), full_page=True))
                    print(phone)
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phone", type=Path, help="also save the phone-sized page here")
    trio.run(main, parser.parse_args().phone)
