"""The live AMI connection: panoramisk's Manager behind a thin wrapper that fixes its defects.

Theory of operation
-------------------
panoramisk 1.4 (see ``AMI_NOTES.md``) decodes each TCP chunk on its own (losing split UTF-8),
parses quadratically, runs callbacks as detached tasks, never checks its pings, retries a
rejected login forever and reconnects at a fixed delay. We keep its Manager (connection,
login, action futures) and replace the rest:

* :class:`BridgeProtocol`, our ``protocol_factory``, parses bytes with :class:`FrameParser`.
  Plain events go straight into a bounded queue, in batches, without building panoramisk
  ``Message`` objects; responses, list events carrying an ``ActionID`` and the few events the
  Manager needs (``FullyBooted``, ``Shutdown``) are handed to panoramisk as usual. Nothing
  raises out of ``data_received`` (an exception there would drop the connection and the rest
  of the chunk). Events the engine reads by name only (:data:`SKIM_EVENTS`: dialplan noise,
  ``VarSet`` except ``MIXMONITOR_FILENAME``) are *skimmed*: their frames carry only ``Event``
  and ``Timestamp``, which is all the consumer reads of them (decoder, per-name event counts,
  engine), and about half of a real PBX's stream skips the cost of a header dictionary.
* One consumer (the daemon) reads the queue in order. When the queue is full, events are
  dropped and counted; a :class:`Gap` marker then tells the engine its open calls are partial.
* A watchdog pings every ``ping_interval_s`` with a deadline and aborts the transport of a
  silent peer; panoramisk then reconnects.
* The reconnect delay grows exponentially (capped) and resets after a successful login.
* A rejected login is reported once per attempt; at start-up it is fatal.
* On every login the client asks ``CoreShowChannels`` and enqueues a :class:`Resync`, so the
  engine closes calls that ended while we were away.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from panoramisk import Manager
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

from pbx_bridge.ami.frames import DEFAULT_MAX_FRAME_BYTES, Banner, Frame, FrameParser
from pbx_bridge.engine.tracker import NAME_ONLY_EVENTS, NAME_ONLY_UNLESS
from pbx_bridge.errors import AmiLoginError, AmiTimeout

log = structlog.get_logger(__name__)

# Events panoramisk's Manager itself reacts to (awaiting actions, Shutdown handling).
_MANAGER_EVENTS = frozenset({"FullyBooted", "Shutdown"})
# Action-list events the protocol gathers into a Resync / QueueMembers item.
_LIST_EVENTS = frozenset({"CoreShowChannel", "CoreShowChannelsComplete", "QueueMember", "QueueStatusComplete"})
# Events whose frames need only Event and Timestamp (the Manager's own events are parsed in full).
SKIM_EVENTS = NAME_ONLY_EVENTS - _MANAGER_EVENTS
SKIM_UNLESS = NAME_ONLY_UNLESS


def engine_parser(max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> FrameParser:
    """A parser that skims the events the engine reads by name only (the daemon's and ``replay``'s)."""
    return FrameParser(max_frame_bytes=max_frame_bytes, skim=SKIM_EVENTS, skim_unless=SKIM_UNLESS)


@dataclass(frozen=True, slots=True)
class Gap:
    """Events were dropped (queue overflow): open calls can no longer be trusted."""

    dropped: int


@dataclass(frozen=True, slots=True)
class Resync:
    """The channels Asterisk reports as up (CoreShowChannels), in stream order, with the wall clock."""

    uniqueids: frozenset[str]
    ts: float


@dataclass(frozen=True, slots=True)
class QueueMembers:
    """Queue members as QueueStatus reports them, each in the shape of a QueueMemberStatus event."""

    members: tuple[dict[str, str], ...]


QueueItem = list[Frame | Banner] | Gap | Resync | QueueMembers


@dataclass(slots=True)
class AmiCounters:
    """What the connection did; exported as metrics."""

    frames: int = 0
    dropped: int = 0
    parse_errors: int = 0
    protocol_errors: int = 0
    reconnects: int = 0
    logins: int = 0
    login_failures: int = 0
    watchdog_aborts: int = 0
    connected: bool = False
    last_frame_at: float = 0.0  # monotonic
    last_error: str | None = None


@dataclass(slots=True)
class EventSink:
    """The bounded hand-off between the socket and the one consumer (O(1), never blocks)."""

    limit: int
    queue: asyncio.Queue[QueueItem] = field(default_factory=asyncio.Queue)
    counters: AmiCounters = field(default_factory=AmiCounters)
    pending: int = 0  # frames queued and not yet taken by the consumer
    _gap: int = 0

    def put_frames(self, frames: list[Frame | Banner]) -> None:
        if self.pending + len(frames) > self.limit:
            self.counters.dropped += len(frames)
            self._gap += len(frames)
            return
        if self._gap:
            self.queue.put_nowait(Gap(self._gap))
            self._gap = 0
        self.pending += len(frames)
        self.queue.put_nowait(frames)

    def put(self, item: Gap | Resync | QueueMembers) -> None:
        self.queue.put_nowait(item)

    async def get(self) -> QueueItem:
        item = await self.queue.get()
        if isinstance(item, list):
            self.pending -= len(item)
        return item

    def get_nowait(self) -> QueueItem | None:
        try:
            item = self.queue.get_nowait()
        except asyncio.QueueEmpty:
            return None
        if isinstance(item, list):
            self.pending -= len(item)
        return item


class BridgeProtocol(AMIProtocol):  # type: ignore[misc]
    """panoramisk's protocol with our byte-level parser and a direct path to the sink."""

    def __init__(self, sink: EventSink, max_frame_bytes: int) -> None:
        super().__init__()
        self._sink = sink
        self._parser = self._new_parser(max_frame_bytes)

    @staticmethod
    def _new_parser(max_frame_bytes: int) -> FrameParser:
        return engine_parser(max_frame_bytes)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._parser = self._new_parser(self._parser.max_frame_bytes)
        self._channels: list[str] = []
        self._members: list[dict[str, str]] = []

    def _collect_list(self, event: str, h: dict[str, str], batch: list[Frame | Banner]) -> list[Frame | Banner]:
        """Gather CoreShowChannels / QueueStatus lists; hand each over where it completes.

        The snapshot is put in the queue at the point of the stream where Asterisk finished
        it, after the events before it and before the events after it. A call that starts
        after the list was taken is then never closed by it.
        """
        if event == "CoreShowChannel":
            if uid := h.get("Uniqueid"):
                self._channels.append(uid)
            return batch
        if event == "QueueMember":
            self._members.append(_member(h))
            return batch
        if batch:
            self._sink.put_frames(batch)
        if event == "CoreShowChannelsComplete":
            self._sink.put(Resync(frozenset(self._channels), time.time()))
            self._channels = []
        else:  # QueueStatusComplete
            self._sink.put(QueueMembers(tuple(self._members)))
            self._members = []
        return []

    def data_received(self, data: bytes) -> None:
        counters = self._sink.counters
        frames = 0
        try:
            parser = self._parser
            errors_before = parser.stats.errors
            items = parser.feed(data)
            counters.parse_errors += parser.stats.errors - errors_before
            if not items:
                return
            counters.last_frame_at = time.monotonic()
            batch: list[Frame | Banner] = []
            append = batch.append
            for item in items:
                if isinstance(item, Banner):
                    self.version = item.version
                    append(item)
                    continue
                h = item.headers
                event = h.get("Event")
                if event is None or "ActionID" in h:
                    if event in _LIST_EVENTS:
                        batch = self._collect_list(event, h, batch)
                        append = batch.append
                    self.handle_message(Message(h))  # responses and action lists: futures
                    continue
                frames += 1
                append(item)
                if event in _MANAGER_EVENTS:
                    self.handle_message(Message(h))
            if batch:
                self._sink.put_frames(batch)
        except Exception as exc:  # never let a bad frame kill the connection
            counters.protocol_errors += 1
            counters.last_error = repr(exc)
            log.exception("ami_protocol_error")
        finally:
            counters.frames += frames


@dataclass(frozen=True, slots=True)
class AmiOptions:
    host: str
    port: int
    username: str
    secret: str = field(repr=False)
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 30.0
    ping_interval_s: float = 10.0
    ping_timeout_s: float = 5.0
    action_timeout_s: float = 10.0
    queue_size: int = 10_000
    max_frame_bytes: int = 1 << 20


class AmiClient:
    """Connects, logs in, keeps the connection alive and feeds :class:`EventSink`."""

    def __init__(self, options: AmiOptions, sink: EventSink, clock: Callable[[], float] = time.time) -> None:
        self.options = options
        self.sink = sink
        self._clock = clock
        self._delay = options.reconnect_min_s
        self._first_login: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.manager = Manager(
            host=options.host,
            port=options.port,
            username=options.username,
            secret=options.secret,
            events="on",
            encoding="utf-8",
            # panoramisk's own pinger never checks answers; ours does (watchdog), so park it.
            ping_delay=10**7,
            ping_interval=10**7,
            reconnect_timeout=options.reconnect_min_s,
            protocol_factory=functools.partial(BridgeProtocol, sink, options.max_frame_bytes),
            forgetable_actions=("ping", "login", "coreshowchannels", "queuestatus"),
            on_connect=self._on_connect,
            on_login=self._on_login,
            on_disconnect=self._on_disconnect,
        )

    async def first_login(self) -> None:
        """Wait for the first login after :meth:`start`.

        Raises:
            AmiLoginError: Asterisk rejected the credentials.
        """
        if self._first_login is not None:
            await self._first_login

    @property
    def counters(self) -> AmiCounters:
        return self.sink.counters

    async def start(self, wait_login_s: float | None = None) -> None:
        """Open the connection. With ``wait_login_s``, wait that long for the first login.

        Raises:
            AmiLoginError: Asterisk rejected the credentials on the first attempt.
            AmiTimeout: no successful login within ``wait_login_s``.
        """
        loop = asyncio.get_running_loop()
        self.manager.loop = loop
        self._first_login = loop.create_future()
        task = self.manager.connect()
        # The first connect raises if nobody listens yet; panoramisk keeps retrying on its own.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        if wait_login_s is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._first_login), wait_login_s)
        except TimeoutError as exc:
            raise AmiTimeout(
                f"no AMI login to {self.options.host}:{self.options.port} within {wait_login_s:g} s"
            ) from exc

    async def watchdog(self) -> None:
        """Ping with a deadline; abort a connection whose peer stopped answering."""
        opts = self.options
        while True:
            await asyncio.sleep(opts.ping_interval_s)
            if not self.manager.authenticated or self.manager.protocol is None:
                continue
            try:
                await self.action({"Action": "Ping"}, timeout=opts.ping_timeout_s)
            except AmiTimeout:
                self.counters.watchdog_aborts += 1
                log.warning("ami_silent_peer", timeout_s=opts.ping_timeout_s)
                transport = getattr(self.manager.protocol, "transport", None)
                if transport is not None:
                    transport.abort()

    async def action(self, action: dict[str, str], timeout: float | None = None) -> Any:
        """Send an action and wait for its response, with a deadline (panoramisk has none)."""
        if self.manager.protocol is None:
            raise AmiTimeout(f"{action.get('Action')}: not connected")
        future = self.manager.send_action(action)
        try:
            return await asyncio.wait_for(future, timeout or self.options.action_timeout_s)
        except TimeoutError as exc:
            raise AmiTimeout(f"{action.get('Action')}: no response in time") from exc

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        # Stop panoramisk's reconnect loop before closing the socket.
        self.manager.connection_lost = lambda exc: None
        self.manager.close()
        self.counters.connected = False

    # ------------------------------------------------------------------ panoramisk callbacks

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_connect(self, manager: Manager) -> None:
        future = manager.authenticated_future
        if future is not None:
            future.add_done_callback(self._check_login)

    def _check_login(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        resp = None if exc is not None else future.result()
        if resp is not None and resp.success:
            return
        self.counters.login_failures += 1
        message = (resp.get("Message") if resp is not None else None) or repr(exc)
        self.counters.last_error = f"login rejected: {message}"
        log.error("ami_login_rejected", host=self.options.host, user=self.options.username, message=message)
        if self._first_login is not None and not self._first_login.done():
            self._first_login.set_exception(
                AmiLoginError(f"Asterisk rejected the AMI login of user {self.options.username!r}: {message}")
            )
        self._back_off()

    def _on_login(self, manager: Manager) -> None:
        self.counters.logins += 1
        self.counters.connected = True
        self._delay = self.options.reconnect_min_s
        manager.reconnect_timeout = self._delay
        log.info("ami_logged_in", host=self.options.host, version=getattr(manager.protocol, "version", None))
        if self._first_login is not None and not self._first_login.done():
            self._first_login.set_result(None)
        self._spawn(self._resync())

    def _on_disconnect(self, manager: Manager, exc: object) -> None:
        if self.counters.connected or self.counters.logins:
            self.counters.reconnects += 1
        self.counters.connected = False
        log.warning("ami_disconnected", reason=repr(exc) if exc else None, retry_in_s=self._delay)
        self._back_off()

    def _back_off(self) -> None:
        # Capped exponential back-off: 1, 2, 4 … reconnect_max_s; reset on login.
        self.manager.reconnect_timeout = self._delay
        self._delay = min(self._delay * 2, self.options.reconnect_max_s)

    async def _resync(self) -> None:
        """Ask for the channels up and the queue members; the protocol queues the answers in order."""
        for action in ("CoreShowChannels", "QueueStatus"):
            try:
                await self.action({"Action": action})
            except AmiTimeout as exc:  # agent states then wait for the next QueueMember* event
                log.warning("ami_resync_failed", action=action, error=str(exc))
                continue
        log.info("ami_resynced")


def _member(m: Any) -> dict[str, str]:
    """A QueueStatus ``QueueMember`` entry in the shape of a ``QueueMemberStatus`` event."""
    headers = {str(k): str(v) for k, v in dict(m).items()}
    # QueueStatus names the member ``Name`` at ``Location``; the events say MemberName / Interface.
    headers.setdefault("MemberName", headers.get("Name", ""))
    headers.setdefault("Interface", headers.get("Location", ""))
    return headers


def _as_list(replies: Any) -> list[Any]:
    if isinstance(replies, list | deque):
        return list(replies)
    return [replies]
