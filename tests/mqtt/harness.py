"""A live view fed by real captures, and an MQTT subscriber that records what it receives."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import aiomqtt

from pbx_bridge.ami.capture import CaptureReader
from pbx_bridge.ami.events import AmiEvent, StreamStart
from pbx_bridge.board import Board
from pbx_bridge.config import MqttSettings, Settings
from pbx_bridge.daemon import TICK_S, live_message
from pbx_bridge.engine.model import CallEnded, CallRecord, LiveViolation, Output
from pbx_bridge.hub import Hub
from pbx_bridge.mqtt import MqttPublisher
from pbx_bridge.replay import build_tracker

TRACES = Path(__file__).resolve().parents[1] / "fixtures" / "traces"
PREFIX = "pbx-test"
SITE = "hq"
ROOT = f"{PREFIX}/{SITE}"


class ReplayView:
    """What the daemon gives the publisher, built the daemon's way from a real tracker, board and hub.

    Every hour counts as service hours, so the captures' calls are measured against every rule.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.tracker = build_tracker(self.settings, ignore_hours=True)
        self.board = Board(self.settings.policies, self.settings.calendars.default.service_day)
        self.hub = Hub()
        self.now = 0.0  # the stream's clock: the last event's timestamp
        self._ticked = 0.0
        self.records: list[CallRecord] = []
        self.outputs: list[Output] = []

    def snapshot(self) -> dict[str, Any]:
        return self.board.snapshot(self.tracker, self.now, connected=True)

    @staticmethod
    def open(name: str) -> Iterator[AmiEvent | StreamStart]:
        """The events of one capture, to feed in parts with :meth:`feed`."""
        return iter(CaptureReader(TRACES / f"{name}.ami"))

    async def feed(self, events: Iterator[AmiEvent | StreamStart], count: int | None = None) -> list[CallRecord]:
        """Feed ``count`` events (all when None; the end of the capture closes its open calls)."""
        first = len(self.records)
        for n, item in enumerate(events, 1):
            if isinstance(item, AmiEvent) and item.stamped:
                self.now = max(self.now, item.ts)
            self.dispatch(self.tracker.feed(item))
            if self.now - self._ticked >= TICK_S:
                # The daemon's ticker, on the stream's clock: live breaches (a hold past its limit).
                self._ticked = self.now
                self.dispatch(self.tracker.tick(self.now))
                self.hub.publish({"type": "tick", "ts": self.now})
            if n % 50 == 0:
                await asyncio.sleep(0)  # the daemon's consumer yields to other tasks too
            if count is not None and n >= count:
                break
        else:
            self.dispatch(self.tracker.close_all())
        await asyncio.sleep(0)
        return self.records[first:]

    async def replay(self, *names: str) -> list[CallRecord]:
        """Feed whole captures in order; return the records they finished."""
        records: list[CallRecord] = []
        for name in names:
            records += await self.feed(self.open(name))
        return records

    def dispatch(self, outputs: list[Output]) -> None:
        """The daemon's ``_dispatch``, without store and metrics."""
        for out in outputs:
            self.outputs.append(out)
            if isinstance(out, CallEnded):
                self.board.add_record(out.record)
                self.records.append(out.record)
            elif isinstance(out, LiveViolation):
                self.board.add_live_violation(out)
            self.hub.publish(live_message(out))


def mqtt_settings(url: str, **changes: Any) -> MqttSettings:
    return MqttSettings(enabled=True, url=url, prefix=PREFIX, site=SITE, **changes)


def make_publisher(url: str, view: ReplayView, *, mask_numbers: bool = True, **kwargs: Any) -> MqttPublisher:
    """A publisher for ``view`` with short reconnect delays."""
    kwargs.setdefault("backoff_min_s", 0.05)
    kwargs.setdefault("backoff_max_s", 0.5)
    settings = mqtt_settings(url, mask_numbers=mask_numbers)
    return MqttPublisher(settings, view, policies=view.settings.policies, **kwargs)


@contextlib.asynccontextmanager
async def running(publisher: MqttPublisher, *, connect: bool = True) -> AsyncIterator[asyncio.Task[None]]:
    """Run the publisher as the daemon does (a task), cancel it on the way out (a clean stop)."""
    task = asyncio.create_task(publisher.run())
    try:
        if connect:
            await wait_until(lambda: publisher.connected, what="the publisher to connect")
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    payload: bytes
    retain: bool


class Subscriber:
    """A plain MQTT client that subscribes to filters and keeps every message, in arrival order."""

    def __init__(self, port: int, *filters: str, host: str = "127.0.0.1", **client: Any) -> None:
        self.client = aiomqtt.Client(host, port, **client)
        self.filters = filters or (f"{ROOT}/#",)
        self.messages: list[Received] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Subscriber:
        await self.client.__aenter__()
        for f in self.filters:
            await self.client.subscribe(f, qos=1)
        self._task = asyncio.create_task(self._collect())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.client.__aexit__(exc_type, exc, tb)

    async def _collect(self) -> None:
        with contextlib.suppress(aiomqtt.MqttError):  # the broker was killed under us
            async for m in self.client.messages:
                payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
                self.messages.append(Received(m.topic.value, payload, m.retain))

    def on(self, topic: str) -> list[bytes]:
        """Payloads received on one topic, in order."""
        return [m.payload for m in self.messages if m.topic == topic]

    def matching(self, predicate: Callable[[str], bool]) -> list[Received]:
        return [m for m in self.messages if predicate(m.topic)]


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
