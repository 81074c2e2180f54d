"""What the wallboard tests serve: the real HTTP app over a real engine fed from real captures.

:class:`ReplayView` implements the ``LiveView`` protocol of :mod:`pbx_bridge.web.app` the way the
daemon does (``Board.snapshot(tracker, now)`` plus ``"ui"``), but its clock is the test's: the
capture's own timestamps while replaying, then whatever :meth:`ReplayView.advance` sets.
:class:`Server` runs :func:`pbx_bridge.web.app.create_app` on 127.0.0.1 and can stop and start
again on the same port (the reconnect test).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from pbx_bridge.ami.capture import CaptureReader
from pbx_bridge.ami.events import AmiEvent, StreamStart
from pbx_bridge.board import Board
from pbx_bridge.daemon import live_message
from pbx_bridge.engine.hours import ServiceCalendar
from pbx_bridge.engine.model import CallEnded, LiveViolation, Output
from pbx_bridge.engine.policy import PolicySet
from pbx_bridge.engine.tracker import CallTracker
from pbx_bridge.hub import Hub
from pbx_bridge.web.app import create_app

TRACES = Path(__file__).resolve().parents[1] / "fixtures" / "traces"

Until = Callable[[AmiEvent], bool]


class ReplayView:
    """A ``LiveView`` over a real ``CallTracker`` + ``Board`` with a controllable clock.

    The tracker treats every call as inside service hours (the captures were recorded at night,
    local time), as ``pbx-bridge replay --ignore-hours`` does; the board dates days in
    Asia/Shanghai like the default calendar.
    """

    def __init__(
        self,
        *,
        lang: str = "zh-CN",
        title: str = "客服中心 · 实时看板",
        masked: bool = True,
        connected: bool | None = True,
    ) -> None:
        self.registry = CollectorRegistry()
        self.hub = Hub()
        self.policies = PolicySet()
        self.tracker = CallTracker(self.policies)
        self.board = Board(self.policies, ServiceCalendar().service_day, mask_numbers=masked)
        self.ui: dict[str, Any] = {"lang": lang, "title": title, "masked": masked}
        self.connected = connected
        self.now = 0.0
        # Tests set this to prove the page colours holds from its own timer, not the server's field.
        self.hold_state_override: str | None = None
        self._streams: dict[str, Iterator[AmiEvent | StreamStart]] = {}

    # ------------------------------------------------------------------ feeding

    def replay(self, capture: str, until: Until | None = None) -> AmiEvent | None:
        """Feed a capture event by event; stop right after the first event ``until`` accepts.

        A later call with the same capture carries on where the last one stopped. The clock follows
        the events. Returns the event it stopped at (``None``: the rest of the capture was fed).
        """
        stream = self._streams.get(capture)
        if stream is None:
            stream = self._streams[capture] = iter(CaptureReader(TRACES / f"{capture}.ami"))
        for item in stream:
            self._dispatch(self.tracker.feed(item))
            if isinstance(item, StreamStart):
                continue
            if item.stamped:
                self.now = max(self.now, item.ts)
            if until is not None and until(item):
                return item
        del self._streams[capture]
        return None

    def advance(self, now: float) -> None:
        """Set the clock, raise the live breaches due by then (as the daemon's ticker does)."""
        self.now = now
        self._dispatch(self.tracker.tick(now))
        self.hub.publish({"type": "tick", "ts": now})

    def _dispatch(self, outputs: list[Output]) -> None:
        for out in outputs:
            if isinstance(out, CallEnded):
                self.board.add_record(out.record)
            elif isinstance(out, LiveViolation):
                self.board.add_live_violation(out)
            self.hub.publish(live_message(out))

    # ------------------------------------------------------------------ LiveView

    def snapshot(self) -> dict[str, Any]:
        snap = self.board.snapshot(self.tracker, self.now, connected=self.connected)
        snap["ui"] = dict(self.ui)
        if self.hold_state_override is not None:
            for hold in snap["holds"]:
                hold["state"] = self.hold_state_override
        return snap

    def health(self) -> dict[str, Any]:
        return {"ok": True, "events": self.tracker.stats.events}


class StaticView:
    """A ``LiveView`` serving a fixed snapshot (layout checks with a made-up floor)."""

    def __init__(self, snap: dict[str, Any]) -> None:
        self.registry = CollectorRegistry()
        self.hub = Hub()
        self.snap = snap

    def snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(self.snap)

    def health(self) -> dict[str, Any]:
        return {"ok": True}


class Server:
    """The real aiohttp app on 127.0.0.1; ``stop()`` and ``start()`` again keep the port."""

    def __init__(self, view: Any) -> None:
        self.view = view
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def start(self) -> None:
        # shutdown_timeout: an open event stream never ends by itself; do not wait 60 s for it.
        runner = web.AppRunner(create_app(self.view), access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = runner.addresses[0][1]
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
