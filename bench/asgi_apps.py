"""Two tiny ASGI apps on relayd's own HTTP stack (hypercorn on trio, same settings):

- ``hello``: reads the body and answers 202 ``{"id": "x"}`` (the ingress baseline);
- ``destination``: answers 200 at once (where relay-hub delivers in the full-system run).

``python bench/asgi_apps.py hello|destination --port P``
"""

from __future__ import annotations

import argparse

import trio

from relayd.edge.config import ListenAddress
from relayd.edge.http import Receive, Scope, Send, handle_lifespan, send_json, serve_http


def make_app(status: int):  # type: ignore[no-untyped-def]
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await handle_lifespan(receive, send)
            return
        while (await receive()).get("more_body"):
            pass
        await send_json(send, status, {"id": "x"})

    return app


async def main(args: argparse.Namespace) -> None:
    app = make_app(202 if args.app == "hello" else 200)
    await serve_http(app, ListenAddress("127.0.0.1", args.port), name=args.app,
                     shutdown_trigger=trio.sleep_forever, graceful_seconds=0.1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("app", choices=["hello", "destination"])
    parser.add_argument("--port", type=int, required=True)
    trio.run(main, parser.parse_args())
