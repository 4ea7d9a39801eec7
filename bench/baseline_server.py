"""The ingest baseline: the least an aiohttp service can do with an event and still answer.

It reads the body, ``json.loads`` it and answers 202 with a small JSON document: no
authentication, validation, storage or delivery. The gateway's ingest throughput is reported as
a fraction of this server's, measured with the same load in the same run. Run as
``python -m bench.baseline_server --port P``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from aiohttp import web


async def post_event(request: web.Request) -> web.Response:
    event = json.loads(await request.read())
    return web.json_response({"outcome": "accepted", "event_id": event["id"]}, status=202)


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app() -> web.Application:
    app = web.Application()
    app.add_routes([web.post("/v1/events", post_event), web.get("/healthz", healthz)])
    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    # like the gateway: no access log; run_app turns SIGTERM into a graceful exit
    web.run_app(create_app(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
