"""The daemon's HTTP server: ``/metrics``, ``/healthz``, the wallboard at ``/`` and its live stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from importlib import resources
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from pbx_bridge.hub import Hub

STREAM_MIN_INTERVAL_S = 0.25  # pushes within 1 s of an event, without flooding on bursts
STREAM_HEARTBEAT_S = 1.0  # timers tick in the page; a snapshot each second keeps it exact


class LiveView(Protocol):
    """What the HTTP layer reads from the daemon."""

    registry: CollectorRegistry
    hub: Hub

    def snapshot(self) -> dict[str, Any]: ...

    def health(self) -> dict[str, Any]: ...


VIEW: web.AppKey[LiveView] = web.AppKey("view", LiveView)
STOPPING: web.AppKey[asyncio.Event] = web.AppKey("stopping", asyncio.Event)


def create_app(view: LiveView, extra: Callable[[web.Application], None] | None = None) -> web.Application:
    """The aiohttp application; ``extra`` adds routes (the QA API)."""
    app = web.Application()
    app[VIEW] = view
    app[STOPPING] = asyncio.Event()
    app.on_shutdown.append(_end_streams)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/live", live)
    app.router.add_get("/api/live/stream", stream)
    app.router.add_get("/", wallboard)
    app.router.add_get("/wallboard.js", static_file)
    app.router.add_get("/wallboard.css", static_file)
    if extra is not None:
        extra(app)
    return app


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[VIEW].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    health = request.app[VIEW].health()
    return web.json_response(health, status=200 if health.get("ok") else 503)


async def live(request: web.Request) -> web.Response:
    return web.json_response(request.app[VIEW].snapshot(), dumps=_dumps)


async def stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: a snapshot on every change (at most 4/s) and at least once a second."""
    view = request.app[VIEW]
    stopping = request.app[STOPPING]
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await resp.prepare(request)
    with contextlib.suppress(ConnectionResetError):
        await resp.write(b"retry: 2000\n\n")
        while not stopping.is_set():
            await resp.write(f"event: snapshot\ndata: {_dumps(view.snapshot())}\n\n".encode())
            await view.hub.changed(STREAM_HEARTBEAT_S)
            await asyncio.sleep(STREAM_MIN_INTERVAL_S)
    return resp


async def _end_streams(app: web.Application) -> None:
    """Server shutdown: end the event streams (browsers reconnect) instead of waiting for them."""
    app[STOPPING].set()


async def wallboard(request: web.Request) -> web.Response:
    return _static("index.html", "text/html")


async def static_file(request: web.Request) -> web.Response:
    name = request.path.lstrip("/")
    return _static(name, "text/javascript" if name.endswith(".js") else "text/css")


def _static(name: str, content_type: str) -> web.Response:
    try:
        body = resources.files("pbx_bridge.web").joinpath("static", name).read_bytes()
    except FileNotFoundError:
        raise web.HTTPNotFound(text=f"{name} is not built into this package") from None
    return web.Response(body=body, content_type=content_type, charset="utf-8")


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))
